// The daily tokens charts: stacked SVG bars, one per day of the window, zero days included.
// Hovering a day or moving through the days with the arrow keys shows its values. The main
// chart stacks every kind of token; a second, shorter one shows output alone on its own
// scale, since output is what people look for and cache reads dwarf it.

import { compact, dayLabel, el, int, svg, usd } from "./dom.js";

export const SERIES = [
  ["output", "Output"],
  ["input", "Input"],
  ["cache_creation", "Cache write"],
  ["cache_read", "Cache read"],
];
export const OUTPUT = [["output", "Output"]];
const MARGIN = { top: 12, right: 8, bottom: 26, left: 52 };

/**
 * The y axis of a chart whose bars reach ``max``: ticks 1, 2 or 5 times a power of ten
 * apart, at most 5 steps, the top tick the first at or above ``max``. So bars that peak at
 * 5M get an axis to 5M (not 10M), and every tick reads round ("1M", never "3.8M").
 */
export function niceTicks(max) {
  if (!(max > 0)) return [0, 1];
  const rough = Math.max(max / 5, 1);
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((v) => v >= rough);
  const top = Math.ceil(max / step - 1e-9) * step;
  const ticks = [];
  for (let v = 0; v <= top + step / 2; v += step) ticks.push(v);
  return ticks;
}

export class DailyChart {
  /**
   * @param host the element to draw in
   * @param options series: [[key, name]] stacked from the bottom; height in px;
   *   title: what the chart shows, for its aria-label
   */
  constructor(host, { series = SERIES, height = 240, title = "Tokens per day" } = {}) {
    this.series = series;
    this.height = height;
    this.title = title;
    this.host = host;
    this.days = [];
    this.selected = -1;
    this.tip = el("div", { class: "chart-tip", role: "presentation", hidden: true });
    this.canvas = el("div", { class: "chart-canvas" });
    host.replaceChildren(this.canvas, this.tip);
    new ResizeObserver(() => this.width !== host.clientWidth && this.draw()).observe(host);
  }

  update(days) {
    this.days = days;
    this.selected = Math.min(this.selected, days.length - 1);
    this.draw();
  }

  draw() {
    const days = this.days;
    const hadFocus = this.canvas.contains(document.activeElement);
    this.width = this.host.clientWidth;
    const width = Math.max(this.width, 280);
    const plotW = width - MARGIN.left - MARGIN.right;
    const HEIGHT = this.height;
    const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    const sum = (day) => this.series.reduce((total, [key]) => total + (day[key] || 0), 0);
    const ticks = niceTicks(Math.max(0, ...days.map(sum)));
    const top = ticks[ticks.length - 1];
    const y = (v) => MARGIN.top + plotH - (v / top) * plotH;
    const band = plotW / Math.max(days.length, 1);
    const barW = Math.max(1, Math.min(band * 0.72, 36));

    const grid = ticks.map((value) =>
      svg(
        "g",
        { class: "tick" },
        svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(value), y2: y(value) }),
        svg("text", { x: MARGIN.left - 6, y: y(value) + 4, "text-anchor": "end" }, compact(value)),
      ),
    );
    const every = Math.ceil(days.length / Math.max(1, Math.floor(plotW / 64)));
    const bars = days.map((day, i) => {
      const x = MARGIN.left + i * band;
      const parts = [];
      let base = 0;
      for (const [key] of this.series) {
        const value = day[key] || 0;
        if (value <= 0) continue;
        const h = y(base) - y(base + value);
        parts.push(svg("rect", { class: `s-${key}`, x: x + (band - barW) / 2, y: y(base + value), width: barW, height: Math.max(h, 0.5) }));
        base += value;
      }
      const shown = sum(day);
      if (!shown) {
        parts.push(svg("rect", { class: "zero", x: x + (band - barW) / 2, y: y(0) - 2, width: barW, height: 2 }));
      }
      const label = (days.length - 1 - i) % every === 0 // counted from today, which is always labelled
        ? svg("text", { class: "day-label", x: x + band / 2, y: HEIGHT - 8, "text-anchor": "middle" }, dayLabel(day.day))
        : null;
      return svg(
        "g",
        {
          class: "day",
          tabindex: i === this.focusIndex() ? 0 : -1,
          role: "img",
          "aria-label":
            this.series.length === 1
              ? `${dayLabel(day.day, { dateStyle: "medium" })}: ${int(shown)} ${this.series[0][1].toLowerCase()} tokens`
              : `${dayLabel(day.day, { dateStyle: "medium" })}: ${int(day.total)} tokens, ${usd(day.cost_usd)}`,
          "data-index": i,
          onmouseenter: () => this.select(i, false),
          onfocus: () => this.select(i, false),
        },
        svg("rect", { class: "hit", x, y: MARGIN.top, width: band, height: plotH }),
        ...parts,
        label,
      );
    });
    const chart = svg(
      "svg",
      {
        width,
        height: HEIGHT,
        viewBox: `0 0 ${width} ${HEIGHT}`,
        role: "group",
        "aria-label": `${this.title}, ${days.length} days. Use the arrow keys to move between days.`,
        onkeydown: (e) => this.key(e),
        onmouseleave: () => this.hide(),
        onfocusout: (e) => !this.canvas.contains(e.relatedTarget) && this.hide(),
      },
      ...grid,
      ...bars,
    );
    this.canvas.replaceChildren(chart);
    if (hadFocus && this.selected >= 0) this.dayNode(this.selected)?.focus();
    else if (this.selected >= 0 && !this.tip.hidden) this.showTip(this.selected);
  }

  focusIndex() {
    return this.selected >= 0 ? this.selected : this.days.length - 1;
  }

  dayNode(i) {
    return this.canvas.querySelector(`g.day[data-index="${i}"]`);
  }

  key(event) {
    const moves = { ArrowLeft: -1, ArrowRight: 1, Home: -Infinity, End: Infinity };
    if (!(event.key in moves)) return;
    event.preventDefault();
    const last = this.days.length - 1;
    const next = Math.max(0, Math.min(last, this.focusIndex() + moves[event.key]));
    this.select(next, true);
  }

  select(i, moveFocus) {
    for (const node of this.canvas.querySelectorAll("g.day")) {
      const mine = Number(node.dataset.index) === i;
      node.setAttribute("tabindex", mine ? "0" : "-1");
      node.classList.toggle("active", mine);
    }
    this.selected = i;
    if (moveFocus) this.dayNode(i)?.focus();
    this.showTip(i);
  }

  showTip(i) {
    const day = this.days[i];
    if (!day) return;
    const rows = SERIES.map(([key, name]) =>
      el("div", { class: "tip-row" }, el("span", { class: `swatch s-${key}` }), name, el("b", {}, int(day[key]))),
    );
    this.tip.replaceChildren(
      el("div", { class: "tip-head" }, dayLabel(day.day, { weekday: "short", month: "short", day: "numeric", year: "numeric" })),
      ...rows,
      el("div", { class: "tip-row total" }, "Total", el("b", {}, int(day.total))),
      el("div", { class: "tip-row" }, "Cost", el("b", {}, usd(day.cost_usd))),
      el("div", { class: "tip-row" }, "Sessions", el("b", {}, int(day.sessions))),
    );
    this.tip.hidden = false;
    // Beside the day, on the side with more room, so the bar itself stays in view.
    const band = (this.width - MARGIN.left - MARGIN.right) / this.days.length;
    const center = MARGIN.left + (i + 0.5) * band;
    const tipW = this.tip.offsetWidth;
    const gap = band / 2 + 8;
    const left = center < this.width / 2 ? center + gap : center - gap - tipW;
    this.tip.style.left = `${Math.min(Math.max(left, 0), this.width - tipW)}px`;
  }

  hide() {
    this.tip.hidden = true;
    for (const node of this.canvas.querySelectorAll("g.day.active")) node.classList.remove("active");
  }
}
