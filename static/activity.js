// /me/activity: four tabs of the caller's own activity, kept current by live.js.
//
// Deep links: ?tab=sessions|tokens|access|sync, and for the tokens tab &days=7|30|90.
// Every value from the server goes in as text (dom.js); nothing here builds HTML strings.

import { DailyChart, SERIES } from "./chart.js";
import * as fmt from "./dom.js";
import { el } from "./dom.js";
import { Live } from "./live.js";

const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const PAGE = 50; // the socket's first pages hold 50 rows too
const WINDOWS = [7, 30, 90];
const PUSHED_DAYS = 30; // the socket's tokens tab covers 30 days
const FRESH_MS = 4000;
const TAB_API = { sessions: "sessions", tokens: "tokens", access: "queries", sync: "sync" };

const $ = (id) => document.getElementById(id);

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
  days: 30,
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

async function fetchSessions(quietly = false) {
  setSessions(await getJSON(`/api/me/stats/sessions?limit=${PAGE}&offset=${state.offset}`), quietly);
}

const STATUS_TEXT = { pending: "pending", processed: "processed", error: "error" };

function statusBadge(row) {
  const status = STATUS_TEXT[row.pipeline_status] ? row.pipeline_status : "pending";
  const badge = el("span", { class: `badge badge-${status}` }, STATUS_TEXT[status]);
  if (status !== "error") return badge;
  return el("span", { class: "status-error" }, badge, el("span", { class: "reason" }, row.error || "unknown error"));
}

function renderSessions() {
  const page = state.sessions;
  fillBody(
    "sessions-rows",
    page.rows.map((row) => {
      const href = fmt.safeHref(row.download_url);
      const counted = row.pipeline_status === "processed"; // else the numbers are not known yet
      const num = (format, value) => el("td", { class: "num" }, counted ? format(value) : "—");
      return markFresh(
        el(
          "tr",
          {},
          el("td", {}, fmt.timeEl(row.started_at)),
          el("td", { class: "file" }, el("span", { title: row.session_file }, row.session_file)),
          el("td", {}, row.primary_model ?? "—"),
          num(fmt.duration, row.active_seconds),
          num(fmt.duration, row.wall_seconds),
          num(fmt.int, row.user_messages),
          num(fmt.int, row.tool_calls),
          num(fmt.int, row.tool_errors),
          num(fmt.int, row.tokens_total),
          num(fmt.usd, row.cost_usd),
          el("td", {}, statusBadge(row)),
          el("td", {}, href ? el("a", { href, download: row.session_file, "aria-label": `Download ${row.session_file}` }, "Download") : "—"),
        ),
        "sessions",
        row.session_file,
      );
    }),
  );
  const empty = page.total === 0;
  $("sessions-empty").hidden = !empty;
  $("sessions-table").hidden = empty;
  const last = Math.min(page.offset + page.rows.length, page.total);
  $("sessions-range").textContent = empty ? "" : `${fmt.int(page.offset + 1)}–${fmt.int(last)} of ${fmt.int(page.total)}`;
  $("sessions-prev").disabled = page.offset <= 0;
  $("sessions-next").disabled = last >= page.total;
  $("sessions-pager").hidden = empty || page.total <= PAGE;
  $("sessions-count").textContent = empty ? "" : `${fmt.int(page.total)} session file${page.total === 1 ? "" : "s"}`;
}

async function turnPage(delta) {
  state.offset = Math.max(0, state.offset + delta * PAGE);
  await fetchSessions(true);
  $("sessions-table").scrollIntoView({ block: "nearest" });
}

// -- tokens --------------------------------------------------------------------------------

let chart = null;

function setTokens(stats) {
  if (stats === state.tokens) return;
  state.tokens = stats;
  renderTokens();
}

async function fetchTokens() {
  setTokens(await getJSON(`/api/me/stats/tokens?days=${state.days}&tz=${encodeURIComponent(TZ)}`));
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
  const totals = stats.totals;
  const empty = !totals.total && stats.by_model.length === 0;
  $("tokens-empty").hidden = !empty;
  $("tokens-body").hidden = empty;
  const sessions = `${fmt.int(totals.sessions)} session${totals.sessions === 1 ? "" : "s"}, all time`;
  $("tokens-cards").replaceChildren(
    ...CARDS.map(([key, name]) =>
      el("div", { class: `stat stat-${key}` }, el("span", { class: "stat-label" }, name), el("span", { class: "stat-value", title: fmt.int(totals[key]) }, fmt.int(totals[key]))),
    ),
    el("div", { class: "stat stat-cost" }, el("span", { class: "stat-label" }, "Cost"), el("span", { class: "stat-value" }, fmt.usd(totals.cost_usd))),
  );
  $("tokens-sessions").textContent = sessions;

  const unpriced = new Set(stats.unpriced_models);
  $("tokens-unpriced").hidden = unpriced.size === 0;
  $("tokens-unpriced-list").replaceChildren(
    ...stats.unpriced_models.flatMap((m, i) => [i ? ", " : "", el("code", {}, m)]),
  );

  for (const button of document.querySelectorAll("#tokens-window button")) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.days) === state.days));
  }
  const windowTotal = stats.daily.reduce((sum, d) => sum + d.total, 0);
  const windowCost = stats.daily.reduce((sum, d) => sum + (d.cost_usd ?? 0), 0);
  $("tokens-window-total").textContent = `Last ${stats.days} days: ${fmt.int(windowTotal)} tokens, ${fmt.usd(windowCost)}`;
  chart ??= new DailyChart($("tokens-chart"));
  chart.update(stats.daily);

  fillBody(
    "models-rows",
    stats.by_model.map((m) =>
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
}

async function chooseWindow(days) {
  if (days === state.days) return;
  state.days = days;
  setQuery({ days: days === PUSHED_DAYS ? null : days });
  await fetchTokens();
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

function paramsText(params) {
  const text = params && Object.keys(params).length ? JSON.stringify(params) : "";
  return text.length > 2000 ? `${text.slice(0, 2000)}…` : text; // the cell shows one line of it
}

function resultBadge(result) {
  if (!result) return "—";
  const tone = /^(ok|success|succeeded|done)$/i.test(result) ? "ok" : /err|fail|denied|forbidden/i.test(result) ? "bad" : "neutral";
  return el("span", { class: `badge badge-${tone}` }, result);
}

function renderAudit(table) {
  const known = state[table];
  const rows = known.rows.map((r) => {
    const params = paramsText(r.params);
    const resource = el(
      "td",
      { class: "resource" },
      el("div", {}, el("div", {}, r.resource ?? "—"), params ? el("div", { class: "params", title: params }, params) : null),
    );
    const action = table === "sync" ? SYNC_ACTIONS[r.action] ?? r.action : r.action;
    return markFresh(
      el(
        "tr",
        {},
        el("td", {}, fmt.timeEl(r.timestamp)),
        el("td", {}, el("span", { title: r.action }, action)),
        resource,
        el("td", {}, resultBadge(r.result)),
        table === "sync" ? el("td", {}, r.client_kind ?? "—") : null,
        el("td", { class: "num" }, fmt.milliseconds(r.duration_ms)),
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
    if (state.offset === 0) setSessions(tabs.sessions);
    else fetchSessions().catch(() => {});
  }
  if (tabs.tokens) {
    if (state.days === PUSHED_DAYS) setTokens(tabs.tokens);
    else fetchTokens().catch(() => {});
  }
  if (tabs.queries) setAudit("queries", tabs.queries);
  if (tabs.sync) setAudit("sync", tabs.sync);
}

function fetchTabs(names) {
  const fetchers = { sessions: fetchSessions, tokens: fetchTokens, queries: () => fetchAudit("queries"), sync: () => fetchAudit("sync") };
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
  return tab in TAB_API ? tab : "sessions";
}

function showTab(name, focus = false) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const mine = tab.dataset.tab === name;
    tab.setAttribute("aria-selected", String(mine));
    tab.tabIndex = mine ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !mine;
    if (mine && focus) tab.focus();
  }
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
    showTab(tabFromUrl());
    const days = Number(new URLSearchParams(location.search).get("days")) || PUSHED_DAYS;
    if (days !== state.days && WINDOWS.includes(days)) {
      state.days = days;
      fetchTokens().catch(() => {});
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

  const days = Number(new URLSearchParams(location.search).get("days"));
  if (WINDOWS.includes(days)) state.days = days;
  setUpTabs();
  showTab(tabFromUrl());

  $("sessions-prev").addEventListener("click", () => turnPage(-1));
  $("sessions-next").addEventListener("click", () => turnPage(1));
  for (const table of ["queries", "sync"]) $(`${table}-more`).addEventListener("click", () => loadMore(table));
  for (const button of document.querySelectorAll("#tokens-window button")) {
    button.addEventListener("click", () => chooseWindow(Number(button.dataset.days)));
  }
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
