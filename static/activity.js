// /me/activity: four tabs of the caller's own activity, kept current by live.js.
//
// Deep links: ?tab=sessions|tokens|access|sync; the tokens window as &days=7|30|90|all,
// &range=month|last-month or &from=YYYY-MM-DD&to=YYYY-MM-DD; &project=KEY narrows sessions
// and tokens to one project. Every value from the server goes in as text (dom.js); nothing
// here builds HTML strings.

import { DailyChart, OUTPUT, SERIES } from "./chart.js";
import * as fmt from "./dom.js";
import { el } from "./dom.js";
import { Live } from "./live.js";
import { NowStrip } from "./now.js";

const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const PAGE = 50; // the socket's first pages hold 50 rows too
const DAY_WINDOWS = ["7", "30", "90", "all"];
const DEFAULT_RANGE = "30"; // the socket's tokens tab covers the last 30 days
const FRESH_MS = 4000;
const TAB_API = { sessions: "sessions", tokens: "tokens", access: "queries", sync: "sync" };

const $ = (id) => document.getElementById(id);
const now = new NowStrip({ tz: TZ }); // the strip above the tabs, and the blocks in Tokens

// -- REST with ETags: an unchanged tab costs a 304 and is not drawn again ------------------

const etags = new Map(); // url → {etag, body}

async function getJSON(url) {
  const known = etags.get(url);
  const response = await fetch(url, {
    cache: "no-store",
    headers: known ? { "If-None-Match": known.etag } : {},
  });
  if (response.status === 304 && known) return known.body;
  if (response.status === 401) signedOut();
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  const body = await response.json();
  const etag = response.headers.get("ETag");
  if (etag) etags.set(url, { etag, body });
  return body;
}

function signedOut() {
  fetch("/api/me", { cache: "no-store" }).then((r) => r.status === 401 && location.assign("/login"));
}

// -- state -----------------------------------------------------------------------------------

const state = {
  sessions: null,
  offset: 0,
  tokens: null,
  range: DEFAULT_RANGE, // "7" | "30" | "90" | "all" | "month" | "last-month" | "custom"
  from: null, // the custom window's days
  to: null,
  project: null, // a project's key, or null for all
  projects: [], // every project the caller has, from the tokens answer
  queries: { rows: [], cursor: null, more: false, loaded: false },
  sync: { rows: [], cursor: null, more: false, loaded: false, last_pull_at: null },
};

// Rows that arrive after the first load are highlighted for a moment.
const seen = { sessions: null, queries: null, sync: null };
const freshUntil = new Map();

function noteArrivals(table, keys, quietly = false) {
  const first = seen[table] === null;
  seen[table] ??= new Set();
  for (const key of keys) {
    if (!seen[table].has(key) && !first && !quietly) freshUntil.set(`${table}\n${key}`, Date.now() + FRESH_MS);
    seen[table].add(key);
  }
}

function markFresh(row, table, key) {
  const left = (freshUntil.get(`${table}\n${key}`) ?? 0) - Date.now();
  if (left <= 0) return row;
  row.classList.add("fresh");
  setTimeout(() => row.classList.remove("fresh"), left);
  return row;
}

// Table bodies carry their column names on every cell, so a phone can show each row as a
// card of "name: value" lines (app.css).
function fillBody(id, rows) {
  const body = $(id);
  body.replaceChildren(...rows);
  const names = [...body.closest("table").tHead.rows[0].cells].map((th) => th.dataset.label ?? th.textContent.trim());
  for (const tr of body.rows) [...tr.cells].forEach((td, i) => td.setAttribute("data-label", names[i] ?? ""));
}

// -- sessions ------------------------------------------------------------------------------

function setSessions(page, quietly = false) {
  if (page === state.sessions) return;
  state.sessions = page;
  noteArrivals("sessions", page.rows.map((r) => r.session_file), quietly);
  renderSessions();
}

function sessionsQuery() {
  const query = new URLSearchParams({ limit: PAGE, offset: state.offset });
  if (state.project !== null) query.set("project", state.project);
  return query;
}

async function fetchSessions(quietly = false) {
  setSessions(await getJSON(`/api/me/stats/sessions?${sessionsQuery()}`), quietly);
}

const STATUS_TEXT = { pending: "pending", processed: "processed", error: "error" };

/** A file that was read but holds no conversation (only summary lines, say): no session. */
const withoutMessages = (row) => row.pipeline_status === "processed" && !row.started_at && !row.tokens_total;

function statusBadge(row) {
  if (withoutMessages(row)) {
    return el("span", { class: "badge", title: "This file holds no messages (only summary lines, for example): it is not a session and counts no tokens" }, "no messages");
  }
  const status = STATUS_TEXT[row.pipeline_status] ? row.pipeline_status : "pending";
  const badge = el("span", { class: `badge badge-${status}` }, STATUS_TEXT[status]);
  if (status !== "error") return badge;
  return el("span", { class: "status-error" }, badge, el("span", { class: "reason" }, row.error || "unknown error"));
}

/** "churn-model" for "/home/ana/work/churn-model", with the whole path on hover. */
export function projectName(path) {
  if (!path) return "";
  const parts = String(path).split(/[\\/]+/).filter(Boolean);
  return parts[parts.length - 1] || String(path);
}

function sessionCell(row) {
  const file = el("span", { class: "file-name", title: row.session_file }, row.session_file);
  const project = row.project ? el("span", { class: "project", title: row.project }, projectName(row.project)) : null;
  return el("td", { class: "c-session" }, file, project);
}

function renderSessions() {
  const page = state.sessions;
  fillBody(
    "sessions-rows",
    page.rows.map((row) => {
      const href = fmt.safeHref(row.download_url);
      const counted = row.pipeline_status === "processed"; // else the numbers are not known yet
      const num = (cls, format, value, extra = null) =>
        el("td", { class: `num ${cls}` }, counted ? format(value) : "—", counted && extra ? el("span", { class: "sub" }, extra) : null);
      return markFresh(
        el(
          "tr",
          {},
          el("td", { class: "c-started" }, fmt.timeEl(row.started_at)),
          sessionCell(row),
          el("td", { class: "c-model" }, row.primary_model ?? "—"),
          num("c-active", fmt.duration, row.active_seconds, `of ${fmt.duration(row.wall_seconds)}`),
          num("c-prompts", fmt.int, row.user_messages),
          num("c-tools", fmt.int, row.tool_calls, row.tool_errors ? `${fmt.int(row.tool_errors)} failed` : null),
          num("c-tokens", fmt.int, row.tokens_total),
          num("c-cost", fmt.usd, row.cost_usd),
          el("td", { class: "c-status" }, statusBadge(row)),
          el(
            "td",
            { class: "c-download" },
            href ? el("a", { href, download: row.session_file, "aria-label": `Download ${row.session_file}`, title: "Download the transcript" }, el("span", { "aria-hidden": "true" }, "↓"), el("span", { class: "label" }, " Download")) : "—",
          ),
        ),
        "sessions",
        row.session_file,
      );
    }),
  );
  const empty = page.total === 0;
  $("sessions-empty").hidden = !empty || state.project !== null;
  $("sessions-none").hidden = !(empty && state.project !== null);
  $("sessions-table").hidden = empty;
  const last = Math.min(page.offset + page.rows.length, page.total);
  $("sessions-range").textContent = empty ? "" : `${fmt.int(page.offset + 1)}–${fmt.int(last)} of ${fmt.int(page.total)}`;
  $("sessions-prev").disabled = page.offset <= 0;
  $("sessions-next").disabled = last >= page.total;
  $("sessions-pager").hidden = empty || page.total <= PAGE;
  const plural = (n, word) => `${fmt.int(n)} ${word}${n === 1 ? "" : "s"}`;
  let count = empty ? "" : plural(page.total, "session file");
  const blank = page.rows.filter(withoutMessages).length;
  if (blank && page.rows.length === page.total) {
    count = `${plural(page.total - blank, "session")} · ${plural(blank, "file")} without messages`;
  }
  $("sessions-count").textContent = count;
  $("sessions-csv").setAttribute("href", csvHref("sessions", sessionsQuery()));
}

async function turnPage(delta) {
  state.offset = Math.max(0, state.offset + delta * PAGE);
  await fetchSessions(true);
  $("sessions-table").scrollIntoView({ block: "nearest" });
}

// -- tokens and their window -----------------------------------------------------------------

let chart = null;
let outputChart = null;

function setTokens(stats) {
  if (stats === state.tokens) return;
  state.tokens = stats;
  learnProjects(stats.by_project);
  renderTokens();
}

const iso = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;

/** The API's window parameters for the chosen range (local days in the browser's zone). */
function windowParams() {
  const now = new Date();
  if (state.range === "month") return { from: iso(new Date(now.getFullYear(), now.getMonth(), 1)), to: iso(now) };
  if (state.range === "last-month") {
    return { from: iso(new Date(now.getFullYear(), now.getMonth() - 1, 1)), to: iso(new Date(now.getFullYear(), now.getMonth(), 0)) };
  }
  if (state.range === "custom" && state.from && state.to) return { from: state.from, to: state.to };
  return { days: DAY_WINDOWS.includes(state.range) ? state.range : DEFAULT_RANGE };
}

function tokensQuery() {
  const query = new URLSearchParams({ ...windowParams(), tz: TZ });
  if (state.project !== null) query.set("project", state.project);
  return query;
}

function csvHref(tab, query) {
  const params = new URLSearchParams(query);
  for (const key of ["limit", "offset", "cursor"]) params.delete(key);
  params.set("format", "csv");
  return `/api/me/stats/${tab}?${params}`;
}

async function fetchTokens() {
  setTokens(await getJSON(`/api/me/stats/tokens?${tokensQuery()}`));
}

/** Whether the socket's pushed tokens answer is the one shown (the default window, all projects). */
const tokensArePushed = () => state.range === DEFAULT_RANGE && state.project === null;

const RANGE_NAMES = { 7: "Last 7 days", 30: "Last 30 days", 90: "Last 90 days", all: "All time", month: "This month", "last-month": "Last month", custom: "" };

/** "Nov 7 – Dec 6, 2026" for a window's first and last local day. */
function spanText(from, to) {
  if (!from || !to) return "";
  const year = (d) => d.slice(0, 4);
  const short = { month: "short", day: "numeric" };
  const long = { month: "short", day: "numeric", year: "numeric" };
  if (from === to) return fmt.dayLabel(from, long);
  return `${fmt.dayLabel(from, year(from) === year(to) ? short : long)} – ${fmt.dayLabel(to, long)}`;
}

function windowOf(stats) {
  const daily = stats.daily || [];
  const from = stats.window?.from ?? daily[0]?.day;
  const to = stats.window?.to ?? daily[daily.length - 1]?.day;
  const name = RANGE_NAMES[state.range] || spanText(from, to);
  return { name, span: spanText(from, to), text: name === spanText(from, to) ? name : `${name} (${spanText(from, to)})` };
}

const CARDS = [
  ["input", "Input"],
  ["output", "Output"],
  ["cache_read", "Cache read"],
  ["cache_creation", "Cache write"],
  ["total", "Total tokens"],
];

function modelCell(model, unpriced) {
  if (!unpriced.has(model)) return el("td", {}, model);
  return el("td", {}, model, " ", el("span", { class: "badge badge-warn", title: "No price is known for this model: its cost is not counted" }, "unpriced"));
}

function renderTokens() {
  const stats = state.tokens;
  const lifetime = stats.totals;
  const windowed = stats.window ?? null;
  const totals = windowed ? windowed.totals : lifetime;
  const byModel = windowed ? windowed.by_model : stats.by_model;
  const nothingEver = !lifetime.total && stats.by_model.length === 0 && state.project === null;
  $("tokens-empty").hidden = !nothingEver;
  $("tokens-body").hidden = nothingEver;
  const win = windowOf(stats);
  const plural = (n) => `${fmt.int(n)} session${n === 1 ? "" : "s"}`;
  $("tokens-window-name").textContent = win.name;
  $("tokens-window-dates").textContent = win.name === win.span ? "" : win.span;
  $("tokens-sessions").textContent = `${plural(totals.sessions)} in this window`;
  $("tokens-cards").replaceChildren(
    ...CARDS.map(([key, name]) =>
      el("div", { class: `stat stat-${key}` }, el("span", { class: "stat-label" }, name), el("span", { class: "stat-value", title: fmt.int(totals[key]) }, fmt.int(totals[key]))),
    ),
    el("div", { class: "stat stat-cost" }, el("span", { class: "stat-label" }, "Cost"), el("span", { class: "stat-value" }, fmt.usd(totals.cost_usd))),
  );
  $("tokens-lifetime").textContent = `All time${state.project !== null ? " in this project" : ""}: ${fmt.int(lifetime.total)} tokens, ${fmt.usd(lifetime.cost_usd)}, ${plural(lifetime.sessions)}.`;

  const unpriced = new Set(stats.unpriced_models);
  $("tokens-unpriced").hidden = unpriced.size === 0;
  $("tokens-unpriced-list").replaceChildren(
    ...stats.unpriced_models.flatMap((m, i) => [i ? ", " : "", el("code", {}, m)]),
  );

  const windowTotal = stats.daily.reduce((sum, d) => sum + d.total, 0);
  const windowOutput = stats.daily.reduce((sum, d) => sum + d.output, 0);
  const windowCost = stats.daily.reduce((sum, d) => sum + (d.cost_usd ?? 0), 0);
  $("tokens-chart-window").textContent = `· ${win.text}`;
  $("tokens-window-total").textContent = `${fmt.int(windowTotal)} tokens, ${fmt.usd(windowCost)}`;
  $("tokens-output-total").textContent = `· ${fmt.int(windowOutput)} in the window`;
  const emptyWindow = windowTotal === 0;
  $("tokens-charts").hidden = emptyWindow;
  $("tokens-window-empty").hidden = !emptyWindow;
  $("tokens-window-empty").textContent = emptyWindow
    ? `No usage ${win.span ? `from ${win.span}` : "in this window"}${state.project !== null ? " in this project" : ""}. ${lifetime.total ? "Choose a longer window, or All time, to see earlier use." : ""}`
    : "";
  if (!emptyWindow) {
    chart ??= new DailyChart($("tokens-chart"), { title: "Tokens per day" });
    outputChart ??= new DailyChart($("tokens-output-chart"), { series: OUTPUT, height: 130, title: "Output tokens per day" });
    chart.update(stats.daily);
    outputChart.update(stats.daily);
  }

  $("models-window").textContent = `· ${win.text}`;
  $("models-empty").hidden = byModel.length > 0;
  fillBody(
    "models-rows",
    byModel.map((m) =>
      el(
        "tr",
        {},
        modelCell(m.model, unpriced),
        ...["input", "output", "cache_read", "cache_creation", "total"].map((k) => el("td", { class: "num" }, fmt.int(m[k]))),
        el("td", { class: "num" }, fmt.usd(m.cost_usd)),
        el("td", { class: "num" }, fmt.int(m.sessions)),
      ),
    ),
  );
  fillBody(
    "top-rows",
    stats.top_sessions.map((s) =>
      el(
        "tr",
        {},
        el("td", { class: "file" }, el("span", { title: s.session_file }, s.session_file)),
        el("td", {}, fmt.timeEl(s.started_at)),
        s.primary_model ? modelCell(s.primary_model, unpriced) : el("td", {}, "—"),
        el("td", { class: "num" }, fmt.int(s.total)),
        el("td", { class: "num" }, fmt.usd(s.cost_usd)),
      ),
    ),
  );
  $("tokens-csv").setAttribute("href", csvHref("tokens", tokensQuery()));
}

// -- the filters: window and project, kept in the URL ---------------------------------------

function readFilters() {
  const params = new URLSearchParams(location.search);
  const days = params.get("days");
  const range = params.get("range");
  const from = params.get("from");
  const to = params.get("to");
  state.from = state.to = null;
  if (from && to && /^\d{4}-\d{2}-\d{2}$/.test(from) && /^\d{4}-\d{2}-\d{2}$/.test(to)) {
    state.range = "custom";
    state.from = from;
    state.to = to;
  } else if (range === "month" || range === "last-month") state.range = range;
  else state.range = DAY_WINDOWS.includes(days) ? days : DEFAULT_RANGE;
  state.project = params.has("project") ? params.get("project") : null;
  showFilters();
}

function showFilters() {
  $("range").value = state.range;
  $("custom-range").hidden = state.range !== "custom";
  if (state.range === "custom") {
    $("range-from").value = state.from ?? "";
    $("range-to").value = state.to ?? "";
  }
  renderProjects();
}

function learnProjects(list) {
  if (!Array.isArray(list)) return;
  const known = new Map(state.projects.map((p) => [p.key, p]));
  for (const p of list) known.set(p.key, { key: p.key, project: p.project });
  state.projects = [...known.values()].sort((a, b) => projectName(a.project).localeCompare(projectName(b.project)));
  renderProjects();
}

function renderProjects() {
  const select = $("project");
  const options = [el("option", { value: "" }, "All projects")];
  const names = new Map();
  for (const p of state.projects) names.set(projectName(p.project), (names.get(projectName(p.project)) ?? 0) + 1);
  for (const p of state.projects) {
    const short = p.project ? projectName(p.project) : "(no project)";
    const label = names.get(short) > 1 && p.project ? p.project : short; // two folders of one name: the paths
    options.push(el("option", { value: `=${p.key}`, title: p.project ?? "" }, label));
  }
  if (state.project !== null && !state.projects.some((p) => p.key === state.project)) {
    options.push(el("option", { value: `=${state.project}` }, state.project || "(no project)"));
  }
  select.replaceChildren(...options);
  select.value = state.project === null ? "" : `=${state.project}`;
  const chosen = state.projects.find((p) => p.key === state.project);
  select.title = chosen?.project ?? "";
}

function filterQuery() {
  const changes = { days: null, range: null, from: null, to: null, project: state.project };
  if (state.range === "custom") Object.assign(changes, { from: state.from, to: state.to });
  else if (state.range === "month" || state.range === "last-month") changes.range = state.range;
  else if (state.range !== DEFAULT_RANGE) changes.days = state.range;
  return changes;
}

async function filtersChanged({ sessions = false } = {}) {
  setQuery(filterQuery());
  showFilters();
  const work = [fetchTokens()];
  if (sessions) {
    state.offset = 0;
    work.push(fetchSessions(true));
  }
  await Promise.all(work);
}

function setUpFilters() {
  $("range").addEventListener("change", () => {
    const value = $("range").value;
    if (value === "custom") {
      // Dates first: the window changes when they are applied. They start as the shown one.
      const shown = state.tokens?.window ?? {};
      $("range-from").value = state.from ?? shown.from ?? iso(new Date(Date.now() - 29 * 86400000));
      $("range-to").value = state.to ?? shown.to ?? iso(new Date());
      $("custom-range").hidden = false;
      $("range-from").focus();
      return;
    }
    state.range = value;
    filtersChanged().catch(() => {});
  });
  $("custom-range").addEventListener("submit", (event) => {
    event.preventDefault();
    const from = $("range-from").value;
    const to = $("range-to").value;
    if (!from || !to) return;
    [state.from, state.to] = from <= to ? [from, to] : [to, from];
    state.range = "custom";
    filtersChanged().catch(() => {});
  });
  $("project").addEventListener("change", () => {
    const value = $("project").value;
    state.project = value === "" ? null : value.slice(1);
    filtersChanged({ sessions: true }).catch(() => {});
  });
}

// -- data access and sync: audit tables with "load more" -----------------------------------

/** Rows from a new first page joined with those already loaded, newest first, once each. */
function merge(table, page) {
  const known = state[table];
  const byId = new Map(known.rows.map((r) => [r.id, r]));
  for (const row of page.rows) byId.set(row.id, row);
  known.rows = [...byId.values()].sort((a, b) =>
    a.timestamp === b.timestamp ? (a.id < b.id ? 1 : -1) : a.timestamp < b.timestamp ? 1 : -1,
  );
  if (!known.more) known.cursor = page.next_cursor;
  known.loaded = true;
  if (table === "sync") known.last_pull_at = page.last_pull_at;
  noteArrivals(table, page.rows.map((r) => r.id));
  renderAudit(table);
}

const lastPages = {};

function setAudit(table, page) {
  if (lastPages[table] === page) return;
  lastPages[table] = page;
  merge(table, page);
}

async function fetchAudit(table) {
  setAudit(table, await getJSON(`/api/me/stats/${table}?limit=${PAGE}`));
}

async function loadMore(table) {
  const known = state[table];
  if (!known.cursor) return;
  const button = $(`${table}-more`);
  button.disabled = true;
  try {
    const page = await getJSON(`/api/me/stats/${table}?limit=${PAGE}&cursor=${encodeURIComponent(known.cursor)}`);
    noteArrivals(table, page.rows.map((r) => r.id), true);
    known.more = true;
    known.cursor = page.next_cursor;
    const ids = new Set(known.rows.map((r) => r.id));
    known.rows.push(...page.rows.filter((r) => !ids.has(r.id)));
    renderAudit(table);
  } finally {
    button.disabled = false;
  }
}

const SYNC_ACTIONS = {
  "sync.trigger": "Sync",
  "manifest.fetch": "Pull (manifest)",
  "session.upload": "Upload",
  "local_md.upload": "CLAUDE.local.md upload",
};

const SIZE_KEY = /(^|_)(size|bytes)$/i;
const CODE_KEY = /^(sql|query|statement)$/i;
const bytes = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

/** 33180 → "32.4 KB" (1,024 to the kilobyte, as file managers count). */
export function byteSize(n) {
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let value = Number(n);
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${fmt.int(value)} bytes` : `${bytes.format(value)} ${units[unit]}`;
}

/** An event's params as readable fields: sizes in KB/MB, SQL in a wrapping code block. */
function paramsList(params) {
  const entries = Object.entries(params || {});
  if (!entries.length) return null;
  return el(
    "dl",
    { class: "params" },
    ...entries.flatMap(([key, value]) => {
      let shown;
      if (typeof value === "number" && SIZE_KEY.test(key)) shown = el("span", { title: `${fmt.int(value)} bytes` }, byteSize(value));
      else if (typeof value === "number") shown = fmt.int(value);
      else if (typeof value === "string" && CODE_KEY.test(key)) shown = el("code", { class: "sql" }, value);
      else if (typeof value === "string") shown = value;
      else shown = el("code", {}, JSON.stringify(value));
      return [el("dt", {}, key), el("dd", {}, shown)];
    }),
  );
}

function resultBadge(result) {
  if (!result) return "—";
  const tone = /^(ok|success|succeeded|done)$/i.test(result) ? "ok" : /err|fail|denied|forbidden/i.test(result) ? "bad" : "neutral";
  return el("span", { class: `badge badge-${tone}` }, result);
}

function renderAudit(table) {
  const known = state[table];
  const rows = known.rows.map((r) => {
    const resource = el("td", { class: "resource c-resource" }, el("div", { class: "resource-name" }, r.resource ?? "—"), paramsList(r.params));
    const action = table === "sync" ? SYNC_ACTIONS[r.action] ?? r.action : r.action;
    return markFresh(
      el(
        "tr",
        {},
        el("td", { class: "c-time" }, fmt.timeEl(r.timestamp)),
        el("td", { class: "c-action" }, el("span", { title: r.action }, action)),
        resource,
        el("td", { class: "c-result" }, resultBadge(r.result)),
        table === "sync" ? el("td", { class: "c-client" }, r.client_kind ?? "—") : null,
        el("td", { class: "num c-duration" }, fmt.milliseconds(r.duration_ms)),
      ),
      table,
      r.id,
    );
  });
  fillBody(`${table}-rows`, rows);
  const empty = known.rows.length === 0;
  $(`${table}-empty`).hidden = !empty;
  $(`${table}-table`).hidden = empty;
  $(`${table}-more`).hidden = !known.cursor;
  const count = `${fmt.int(known.rows.length)} ${known.cursor ? "most recent" : "events"}`;
  $(`${table}-count`).textContent = empty ? "" : count;
  $(`${table}-csv`).setAttribute("href", `/api/me/stats/${table}?format=csv`);
  if (table === "sync") renderLastPull();
}

function renderLastPull() {
  if (!state.sync.loaded) return;
  $("last-pull").hidden = false;
  const at = state.sync.last_pull_at;
  $("last-pull-never").hidden = Boolean(at);
  $("last-pull-seen").hidden = !at;
  if (!at) return;
  const time = $("last-pull-time");
  const text = fmt.ago(at);
  if (time.dateTime !== at) {
    time.dateTime = at;
    time.title = fmt.exactTime(at);
  }
  if (time.textContent !== text) time.textContent = text;
}

// -- applying what the server sends ----------------------------------------------------------

function applyTabs(tabs) {
  if (tabs.sessions) {
    if (state.offset === 0 && state.project === null) setSessions(tabs.sessions);
    else fetchSessions().catch(() => {});
  }
  if (tabs.tokens) {
    if (tokensArePushed()) setTokens(tabs.tokens);
    else {
      learnProjects(tabs.tokens.by_project);
      fetchTokens().catch(() => {});
    }
  }
  if (tabs.queries) setAudit("queries", tabs.queries);
  if (tabs.sync) setAudit("sync", tabs.sync);
  if (tabs.blocks) now.set(tabs.blocks);
}

function fetchTabs(names) {
  const fetchers = { sessions: fetchSessions, tokens: fetchTokens, queries: () => fetchAudit("queries"), sync: () => fetchAudit("sync"), blocks: () => now.fetch() };
  return Promise.all(names.filter((n) => fetchers[n]).map((n) => fetchers[n]()));
}

// -- tabs and the URL ------------------------------------------------------------------------

function setQuery(changes) {
  const url = new URL(location.href);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null) url.searchParams.delete(key);
    else url.searchParams.set(key, value);
  }
  history.pushState(null, "", url);
}

function tabFromUrl() {
  const tab = new URLSearchParams(location.search).get("tab");
  const known = tab === null || Object.hasOwn(TAB_API, tab);
  const notice = $("tab-notice");
  notice.hidden = known;
  notice.textContent = known ? "" : `There is no tab “${tab}”: showing Sessions. The tabs are Sessions, Tokens, Data access and Sync activity.`;
  return known && tab !== null ? tab : "sessions";
}

function showTab(name, focus = false) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const mine = tab.dataset.tab === name;
    tab.setAttribute("aria-selected", String(mine));
    tab.tabIndex = mine ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !mine;
    if (mine && focus) tab.focus();
  }
  $("filters").hidden = name !== "sessions" && name !== "tokens";
  $("range-filter").hidden = name !== "tokens";
  $("custom-range").hidden = name !== "tokens" || state.range !== "custom";
  document.title = `${document.querySelector(`[data-tab="${name}"]`).textContent} · My activity`;
}

function setUpTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  for (const tab of tabs) {
    tab.addEventListener("click", (event) => {
      if (event.metaKey || event.ctrlKey || event.shiftKey) return; // let the link open a new tab
      event.preventDefault();
      if (tab.getAttribute("aria-selected") === "true") return;
      setQuery({ tab: tab.dataset.tab });
      $("tab-notice").hidden = true;
      showTab(tab.dataset.tab);
    });
    tab.addEventListener("keydown", (event) => {
      const i = tabs.indexOf(tab);
      const next = { ArrowLeft: i - 1, ArrowRight: i + 1, Home: 0, End: tabs.length - 1 }[event.key];
      if (next === undefined) return;
      event.preventDefault();
      const target = tabs[(next + tabs.length) % tabs.length];
      setQuery({ tab: target.dataset.tab });
      showTab(target.dataset.tab, true);
    });
  }
  window.addEventListener("popstate", () => {
    const before = `${tokensQuery()}`;
    const project = state.project;
    readFilters();
    showTab(tabFromUrl());
    if (`${tokensQuery()}` !== before) fetchTokens().catch(() => {});
    if (state.project !== project) {
      state.offset = 0;
      fetchSessions(true).catch(() => {});
    }
  });
}

// -- the live indicator ------------------------------------------------------------------------

const MODES = { connecting: "Connecting…", live: "Live", polling: "Polling", offline: "Offline" };
const MODE_HINTS = {
  connecting: "Opening the live connection",
  live: "Changes arrive the moment they happen",
  polling: "The live connection cannot be held; checking for changes by polling",
  offline: "The server cannot be reached; retrying",
};
let heardAt = 0;

function showMode(mode) {
  const box = $("live");
  box.dataset.mode = mode;
  box.title = MODE_HINTS[mode];
  $("live-label").textContent = MODES[mode];
  tick();
}

function tick() {
  const seconds = Math.floor((Date.now() - heardAt) / 1000);
  let text = "";
  if (heardAt) {
    text = seconds < 2 ? "updated just now" : seconds < 60 ? `updated ${seconds}s ago` : `updated ${Math.floor(seconds / 60)} min ago`;
  }
  $("live-age").textContent = text;
  renderLastPull();
}

// -- start -----------------------------------------------------------------------------------

function start() {
  const csrf = document.cookie.split("; ").find((c) => c.startsWith("agnes_csrf="));
  $("csrf").value = csrf ? decodeURIComponent(csrf.slice("agnes_csrf=".length)) : "";
  getJSON("/api/me").then((me) => ($("who").textContent = me.email), () => {});

  readFilters();
  setUpTabs();
  setUpFilters();
  showTab(tabFromUrl());

  $("sessions-prev").addEventListener("click", () => turnPage(-1));
  $("sessions-next").addEventListener("click", () => turnPage(1));
  for (const table of ["queries", "sync"]) $(`${table}-more`).addEventListener("click", () => loadMore(table));
  $("tokens-legend").replaceChildren(...SERIES.map(([key, name]) => el("li", {}, el("span", { class: `swatch s-${key}` }), name)));

  showMode("connecting");
  const live = new Live({
    tz: TZ,
    onTabs: applyTabs,
    onChanged: fetchTabs,
    onStatus: showMode,
    onHeard: () => {
      heardAt = Date.now();
      tick();
    },
    onSignedOut: signedOut,
  });
  live.start();
  setInterval(tick, 1000);
}

start();
