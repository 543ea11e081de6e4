// The daily tokens chart: stacked SVG bars, one per day of the window, zero days included.
// Hovering a day or moving through the days with the arrow keys shows its values.

import { compact, dayLabel, el, int, svg, usd } from "./dom.js";

export const SERIES = [
  ["input", "Input"],
  ["output", "Output"],
  ["cache_creation", "Cache write"],
  ["cache_read", "Cache read"],
];
const HEIGHT = 240;
const MARGIN = { top: 12, right: 8, bottom: 26, left: 52 };

/** Round up to 1, 2 or 5 times a power of ten, so the axis reads in round numbers. */
function niceCeil(value) {
  if (value <= 4) return 4; // whole-number ticks even when the window is empty
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((v) => v >= value);
}

export class DailyChart {
  constructor(host) {
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
    const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    const top = niceCeil(Math.max(0, ...days.map((d) => d.total)));
    const y = (v) => MARGIN.top + plotH - (v / top) * plotH;
    const band = plotW / Math.max(days.length, 1);
    const barW = Math.max(1, Math.min(band * 0.72, 36));

    const grid = [0, 0.25, 0.5, 0.75, 1].map((f) =>
      svg(
        "g",
        { class: "tick" },
        svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(top * f), y2: y(top * f) }),
        svg("text", { x: MARGIN.left - 6, y: y(top * f) + 4, "text-anchor": "end" }, compact(top * f)),
      ),
    );
    const every = Math.ceil(days.length / Math.max(1, Math.floor(plotW / 64)));
    const bars = days.map((day, i) => {
      const x = MARGIN.left + i * band;
      const parts = [];
      let base = 0;
      for (const [key] of SERIES) {
        const value = day[key] || 0;
        if (value <= 0) continue;
        const h = y(base) - y(base + value);
        parts.push(svg("rect", { class: `s-${key}`, x: x + (band - barW) / 2, y: y(base + value), width: barW, height: Math.max(h, 0.5) }));
        base += value;
      }
      if (!day.total) {
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
          "aria-label": `${dayLabel(day.day, { dateStyle: "medium" })}: ${int(day.total)} tokens, ${usd(day.cost_usd)}`,
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
        "aria-label": `Tokens per day, last ${days.length} days. Use the arrow keys to move between days.`,
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
