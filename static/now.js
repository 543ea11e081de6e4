// The Now strip (above the tabs) and the 5-hour blocks section (in the Tokens tab), from
// the blocks answer (/api/me/stats/blocks) that the socket pushes as the tab "blocks".
//
// The answer is made as of a minute (as_of); between answers the strip moves on its own
// clock: the time left counts down every second, and the projection (tokens and cost at
// the block's end at the current pace) is the answer's pace times the whole seconds left.
// When the block ends the strip says so and asks the server again. A token limit is a
// per-browser setting (localStorage): a number of tokens, or "max" (the largest earlier
// block); with one set, the answer is fetched with it instead of taken from the socket.
// Every value goes into the page as text (dom.js).

import * as fmt from "./dom.js";
import { el, svg } from "./dom.js";

const LIMIT_KEY = "agnes.tokenLimit";
const BLOCK_MS = 5 * 3600 * 1000;
const $ = (id) => document.getElementById(id);

/** A stored limit: "max", a whole number of tokens as a string, or null. */
export function parseLimit(text) {
  const value = String(text ?? "").trim().toLowerCase().replaceAll(",", "");
  if (value === "") return null;
  if (value === "max" || /^[1-9][0-9]{0,15}$/.test(value)) return value;
  return undefined; // not a limit
}

/** The saved limit (localStorage may refuse, e.g. in a private window: then none is kept). */
function stored(action, value) {
  try {
    if (action === "get") return localStorage.getItem(LIMIT_KEY);
    if (action === "set") localStorage.setItem(LIMIT_KEY, value);
    else localStorage.removeItem(LIMIT_KEY);
  } catch {
    return null;
  }
  return null;
}

function stat(id, label) {
  return el(
    "div",
    { class: "now-stat", id },
    el("span", { class: "now-label" }, label),
    el("span", { class: "now-value", id: `${id}-value` }, "—"),
    el("span", { class: "now-sub muted", id: `${id}-sub` }, ""),
  );
}

function clock(iso) {
  const d = new Date(iso);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/** 3h 05m 09s, counting down. */
function countdown(seconds) {
  const s = Math.max(0, seconds);
  const pad = (n) => String(n).padStart(2, "0");
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${pad(m)}m ${pad(s % 60)}s` : `${m}m ${pad(s % 60)}s`;
}

const percent = (value) => `${value.toLocaleString(undefined, { maximumFractionDigits: 1 })}%`;

export class NowStrip {
  constructor({ tz }) {
    this.tz = tz;
    this.answer = null;
    this.etag = null;
    this.limit = parseLimit(stored("get")) ?? null;
    this.build();
    setInterval(() => this.tick(), 1000);
  }

  build() {
    const limit = el("input", {
      id: "now-limit",
      type: "text",
      inputmode: "numeric",
      autocomplete: "off",
      placeholder: "none",
      "aria-describedby": "now-limit-hint",
      value: this.limit ?? "",
      onchange: (e) => this.setLimit(e.target),
    });
    $("now").replaceChildren(
      el(
        "div",
        { class: "now-head" },
        el("h2", {}, "Now"),
        el("span", { class: "muted", id: "now-block" }, ""),
        el(
          "label",
          { class: "now-limit", for: "now-limit" },
          "Token limit",
          limit,
          el("span", { id: "now-limit-hint", class: "sr-only" }, "A number of tokens, or max for your largest earlier block"),
        ),
      ),
      el("p", { class: "now-status", id: "now-status", role: "status" }, "Loading…"),
      el(
        "div",
        { class: "now-time", id: "now-time", hidden: true },
        el("div", { class: "now-bar", id: "now-bar", role: "progressbar", "aria-label": "Time elapsed in this block", "aria-valuemin": 0, "aria-valuemax": 100 }, el("span", { id: "now-elapsed" })),
        el("span", { class: "now-left" }, el("b", { id: "now-left" }, ""), " left"),
      ),
      el(
        "div",
        { class: "now-grid" },
        stat("now-tokens", "This block"),
        stat("now-rate", "Burn rate"),
        stat("now-projected", "At block end"),
        stat("now-today", "Today"),
        stat("now-sessions", "Active sessions"),
      ),
    );
  }

  setLimit(input) {
    const limit = parseLimit(input.value);
    input.setAttribute("aria-invalid", String(limit === undefined));
    if (limit === undefined) return;
    input.value = limit ?? "";
    this.limit = limit;
    stored(limit === null ? "remove" : "set", limit);
    this.etag = null;
    this.fetch().catch(() => {});
  }

  /** The socket's answer (no limit in it): shown as is, or fetched again with the limit. */
  set(answer) {
    if (this.limit) this.fetch().catch(() => {});
    else this.show(answer);
  }

  async fetch() {
    const params = new URLSearchParams({ tz: this.tz });
    if (this.limit) params.set("token_limit", this.limit);
    const response = await fetch(`/api/me/stats/blocks?${params}`, {
      cache: "no-store",
      headers: this.etag ? { "If-None-Match": this.etag } : {},
    });
    if (response.status === 304) return;
    if (!response.ok) throw new Error(`blocks answered ${response.status}`);
    this.etag = response.headers.get("ETag");
    this.show(await response.json());
  }

  show(answer) {
    this.answer = answer;
    this.asked = false;
    const { today, active_sessions: sessions } = answer;
    this.text("now-today-value", `${fmt.int(today.total)} tokens`);
    this.text("now-today-sub", fmt.usd(today.cost_usd));
    this.text("now-sessions-value", fmt.int(sessions.length));
    const names = sessions.map((s) => s.session_file);
    this.text("now-sessions-sub", names.length ? names.join(", ") : "none in the last 10 minutes");
    $("now-sessions-sub").title = names.join("\n");
    this.tick();
    renderBlocks(answer);
  }

  text(id, value) {
    const node = $(id);
    if (node.textContent !== value) node.textContent = value;
  }

  tick() {
    const answer = this.answer;
    if (!answer) return;
    const active = answer.active;
    const seconds = active ? Math.floor((Date.parse(active.end) - Date.now()) / 1000) : 0;
    const live = active && seconds > 0;
    $("now").dataset.state = live ? "active" : "idle";
    $("now-time").hidden = !live;
    for (const id of ["now-tokens", "now-rate", "now-projected"]) $(id).hidden = !live;
    if (!live) {
      const last = answer.last_block_end;
      this.text("now-block", "");
      this.text("now-status", last ? `No active block; the last one ended at ${fmt.localTime(active?.end ?? last)}.` : "No active block yet: it starts with your next response.");
      if (active && !this.asked) {
        this.asked = true; // the block just ended: the server's view of what comes next
        this.fetch().catch(() => {});
      }
      return;
    }
    const block = answer.blocks.find((b) => b.start === active.start) ?? answer.blocks[0];
    const start = Date.parse(active.start);
    const elapsed = Math.min(100, Math.max(0, ((Date.now() - start) / BLOCK_MS) * 100));
    this.text("now-status", "");
    this.text("now-block", `Current block ${clock(active.start)}–${clock(active.end)}`);
    $("now-elapsed").style.width = `${elapsed.toFixed(2)}%`;
    $("now-bar").setAttribute("aria-valuenow", String(Math.round(elapsed)));
    const left = $("now-left");
    left.dataset.seconds = String(seconds);
    this.text("now-left", countdown(seconds));

    this.text("now-tokens-value", `${fmt.int(block.total)} tokens`);
    this.text("now-tokens-sub", `${fmt.usd(block.cost_usd)} · ${fmt.int(block.entries)} responses`);
    const rate = active.tokens_per_minute;
    this.text("now-rate-value", rate === null ? "—" : `${fmt.int(Math.round(rate))} tokens/min`);
    this.text("now-rate-sub", active.cost_per_hour === null ? "needs two responses" : `${fmt.usd(active.cost_per_hour)}/h`);
    // At this pace until the end: the answer's pace over the whole seconds left now.
    const projected = rate === null ? null : Math.round(block.total + (rate * seconds) / 60);
    const cost = active.cost_per_hour === null || block.cost_usd === null ? null : block.cost_usd + (active.cost_per_hour * seconds) / 3600;
    const projectedNode = $("now-projected-value");
    projectedNode.dataset.tokens = projected === null ? "" : String(projected);
    this.text("now-projected-value", projected === null ? "—" : `${fmt.int(projected)} tokens`);
    const limit = answer.token_limit;
    const parts = [fmt.usd(cost)];
    if (limit) {
      parts.push(`${percent((block.total / limit) * 100)} of limit now`);
      if (projected !== null) parts.push(`${percent((projected / limit) * 100)} at end`);
    }
    this.text("now-projected-sub", parts.join(" · "));
    $("now").classList.toggle("over-limit", Boolean(limit && projected !== null && projected > limit));
  }
}

// -- the blocks section in the Tokens tab -----------------------------------------------------

const CHART_H = 90;

function renderBlocks(answer) {
  const host = $("blocks-section");
  if (!host) return;
  const blocks = [...answer.blocks].reverse(); // oldest first, left to right
  const top = Math.max(1, ...blocks.map((b) => b.total));
  const width = 100 / Math.max(blocks.length, 1);
  const bars = blocks.map((b, i) =>
    svg(
      "rect",
      {
        class: b.is_active ? "bar active" : "bar",
        x: `${i * width + width * 0.15}%`,
        width: `${width * 0.7}%`,
        y: CHART_H - Math.max(2, (b.total / top) * CHART_H),
        height: Math.max(2, (b.total / top) * CHART_H),
      },
      svg("title", {}, `${fmt.localTime(b.start)}: ${fmt.int(b.total)} tokens, ${fmt.usd(b.cost_usd)}`),
    ),
  );
  const rows = answer.blocks.map((b) =>
    el(
      "tr",
      { class: b.is_active ? "active" : null },
      el("td", { "data-label": "Start" }, fmt.timeEl(b.start)),
      el("td", { "data-label": "Last activity" }, fmt.timeEl(b.last_activity)),
      el("td", { "data-label": "Status" }, b.is_active ? el("span", { class: "badge badge-ok" }, "active") : el("span", { class: "muted" }, "ended")),
      el("td", { "data-label": "Models" }, b.models.join(", ") || "—"),
      el("td", { class: "num", "data-label": "Responses" }, fmt.int(b.entries)),
      el("td", { class: "num", "data-label": "Tokens" }, fmt.int(b.total)),
      el("td", { class: "num", "data-label": "Cost" }, fmt.usd(b.cost_usd)),
    ),
  );
  const empty = answer.blocks.length === 0;
  host.replaceChildren(
    el("div", { class: "panel-head" }, el("h3", { id: "blocks-title" }, "5-hour blocks"), el("span", { class: "muted" }, `last ${answer.days} days`)),
    empty
      ? el("p", { class: "muted", id: "blocks-empty" }, "No block in these days.")
      : el(
          "div",
          { class: "card blocks-chart" },
          svg("svg", { width: "100%", height: CHART_H, role: "img", "aria-label": `Tokens per block, last ${answer.days} days`, preserveAspectRatio: "none" }, ...bars),
        ),
    empty
      ? null
      : el(
          "div",
          { class: "table-wrap" },
          el(
            "table",
            {},
            el("thead", {}, el("tr", {}, ...["Start", "Last activity", "Status", "Models", "Responses", "Tokens", "Cost"].map((h, i) => el("th", { scope: "col", class: i >= 4 ? "num" : null }, h)))),
            el("tbody", { id: "blocks-rows" }, ...rows),
          ),
        ),
  );
}
