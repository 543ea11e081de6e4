// Building the page from server data, and formatting values for people.
//
// Every value from the server reaches the page through el()/svg(): children become Text
// nodes and attributes are set with setAttribute, so nothing is ever parsed as HTML. The
// one attribute that could run code, a link's href, only ever gets safeHref()'s answer.

export function el(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs, ...children) {
  return fill(document.createElementNS("http://www.w3.org/2000/svg", tag), attrs, children);
}

function fill(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.setAttribute("class", value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A same-origin http(s) URL, or null: server data never becomes a javascript: link. */
export function safeHref(url) {
  try {
    const parsed = new URL(url, location.origin);
    const ok = parsed.origin === location.origin && /^https?:$/.test(parsed.protocol);
    return ok ? parsed.pathname + parsed.search : null;
  } catch {
    return null;
  }
}

const integer = new Intl.NumberFormat();
const compactNumber = new Intl.NumberFormat(undefined, {
  notation: "compact",
  maximumFractionDigits: 1,
});
const dollars = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD" });
const cents = new Intl.NumberFormat(undefined, {
  style: "currency",
  currency: "USD",
  maximumFractionDigits: 4,
});

export const int = (n) => integer.format(n ?? 0);
export const compact = (n) => compactNumber.format(n ?? 0);

/** "$12.34"; under a cent, up to four decimals so small costs do not read as zero. */
export function usd(value) {
  if (value === null || value === undefined) return "—";
  return value > 0 && value < 0.01 ? cents.format(value) : dollars.format(value);
}

const pad = (n) => String(n).padStart(2, "0");

/** "2026-03-01 15:30" in the browser's time zone. */
export function localTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return `${date} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

const exactFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

export function exactTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : exactFormat.format(d);
}

/** A <time> showing the local time, with the exact moment on hover. */
export function timeEl(iso) {
  if (!iso) return el("span", { class: "muted" }, "—");
  return el("time", { datetime: iso, title: exactTime(iso) }, localTime(iso));
}

/** 45 → "45s", 725 → "12m 05s", 3900 → "1h 05m". */
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds ?? 0));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
}

export function milliseconds(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const UNITS = [
  ["year", 31536000],
  ["month", 2592000],
  ["day", 86400],
  ["hour", 3600],
  ["minute", 60],
  ["second", 1],
];

/** "12 minutes ago", "yesterday", "just now". */
export function ago(iso, now = Date.now()) {
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  if (Math.abs(seconds) < 10) return "just now";
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) return relative.format(Math.trunc(seconds / size), unit);
  }
  return relative.format(seconds, "second");
}

/** "Mar 5" for a calendar day "2026-03-05" (a day, not an instant: no time zone shift). */
export function dayLabel(day, options = { month: "short", day: "numeric" }) {
  const [y, m, d] = day.split("-").map(Number);
  const format = new Intl.DateTimeFormat(undefined, { ...options, timeZone: "UTC" });
  return format.format(new Date(Date.UTC(y, m - 1, d)));
}
