// A live line chart of one metric, drawn as SVG without a library. Its axes only grow, to
// rounded bounds (1, 2 or 5 times a power of ten), so the view stays steady as points arrive:
// a new point inside the bounds moves nothing but the line. Its text alternative (the SVG's
// title and label) says the latest value, the range and the number of points.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 320;
const HEIGHT = 150;
const PAD = { left: 46, right: 12, top: 10, bottom: 24 };
const TICKS = 4;
const number = new Intl.NumberFormat("en", { maximumFractionDigits: 2 });
const short = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });

/** The round step that cuts `span` into about `TICKS` parts. */
export function niceStep(span) {
  const raw = span / TICKS;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * magnitude).find((step) => step >= raw * (1 - 1e-9));
}

/** Bounds that hold `bounds` (null at first) and the range `lo`..`hi`, rounded out to a step. */
export function grow(bounds, lo, hi) {
  if (bounds && lo >= bounds.lo && hi <= bounds.hi) return bounds; // inside: nothing moves
  let low = bounds ? Math.min(bounds.lo, lo) : lo;
  let high = bounds ? Math.max(bounds.hi, hi) : hi;
  if (low === high) {
    const half = Math.abs(low) / 2 || 1;
    low -= half;
    high += half;
  }
  const step = niceStep(high - low);
  low = Math.floor(low / step + 1e-9) * step;
  high = Math.ceil(high / step - 1e-9) * step;
  return { lo: low, hi: high, step };
}

function svg(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

export class LineChart {
  constructor(key) {
    this.key = key;
    this.points = [];
    this.x = null;
    this.y = null;
    this.element = document.createElement("figure");
    this.element.className = "chart";
    this.element.dataset.key = key;
    this.caption = document.createElement("figcaption");
    this.svg = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "chart-svg" });
    this.element.append(this.caption, this.svg);
  }

  /** The chart of these points (`{x, y}`, in order of arrival), bounds grown point by point. */
  show(points) {
    this.points = [];
    this.x = this.y = null;
    for (const point of points) this.take(point);
    this.draw();
  }

  add(point) {
    this.take(point);
    this.draw();
  }

  take(point) {
    this.points.push(point);
    // The x axis starts at 0 (or below) and grows by half again as it fills: few rescales.
    const reach = this.x && point.x <= this.x.hi ? point.x : Math.max(point.x * 1.5, point.x + 1);
    this.x = grow(this.x, Math.min(0, point.x), reach);
    this.y = grow(this.y, point.y, point.y);
  }

  /** What a screen reader says of the chart, and its tooltip. */
  summary() {
    const last = this.points.at(-1);
    if (!last) return `${this.key}: no values yet`;
    const values = this.points.map((p) => p.y);
    const count = this.points.length;
    return `${this.key}: latest ${number.format(last.y)} at step ${number.format(last.x)}; `
      + `${count} ${count === 1 ? "value" : "values"} from ${number.format(Math.min(...values))} `
      + `to ${number.format(Math.max(...values))}`;
  }

  draw() {
    const { x, y } = this;
    const last = this.points.at(-1);
    this.caption.textContent = last ? `${this.key} ${number.format(last.y)}` : this.key;
    const text = this.summary();
    this.svg.setAttribute("aria-label", text);
    const nodes = [svg("title", {}, text)];
    if (last) {
      const left = PAD.left;
      const right = WIDTH - PAD.right;
      const top = PAD.top;
      const bottom = HEIGHT - PAD.bottom;
      const px = (value) => left + ((value - x.lo) / (x.hi - x.lo)) * (right - left);
      const py = (value) => bottom - ((value - y.lo) / (y.hi - y.lo)) * (bottom - top);
      for (let i = 0; i <= Math.round((y.hi - y.lo) / y.step); i += 1) {
        const value = y.lo + i * y.step;
        nodes.push(svg("line", { x1: left, x2: right, y1: py(value), y2: py(value), class: "chart-grid" }));
        nodes.push(svg("text", { x: left - 4, y: py(value) + 4, class: "chart-tick", "text-anchor": "end" },
          short.format(value)));
      }
      for (const value of [x.lo, x.hi]) {
        nodes.push(svg("text", { x: px(value), y: HEIGHT - 6, class: "chart-tick", "text-anchor": "middle" },
          short.format(value)));
      }
      const sorted = [...this.points].sort((a, b) => a.x - b.x);
      const path = sorted.map((p, i) => `${i ? "L" : "M"}${px(p.x).toFixed(1)} ${py(p.y).toFixed(1)}`).join(" ");
      nodes.push(svg("path", { d: path, class: "chart-line" }));
      nodes.push(svg("circle", { cx: px(last.x), cy: py(last.y), r: 3, class: "chart-last" }));
    }
    this.svg.replaceChildren(...nodes);
  }
}
