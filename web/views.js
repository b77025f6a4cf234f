// The richer views of the job on screen: its steps (status icons, durations), its log grouped
// by step (time, level, ANSI colours), a live chart per metric, its artifacts, annotations
// and the time left. The `DetailView` draws a job's detail (detail.js) and, event by event,
// what each changes. Every piece of job data is set with textContent or as an attribute,
// never parsed as HTML.
import { appendAnsi } from "./ansi.js";
import { LineChart } from "./chart.js";
import { MAX_LOG_LINES, newDetail } from "./detail.js";

const ICONS = { running: "◔", completed: "✓", failed: "✕", skipped: "↷", cancelled: "⊘" };
const TAGS = { debug: "debug", info: "info", warning: "warn", error: "error" };
const SAFE_SCHEMES = new Set(["http:", "https:"]);

/** `m:ss`, or `h:mm:ss` from an hour. */
export function formatClock(seconds) {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** "about 2 min left", from an estimate in seconds. */
export function formatEta(seconds) {
  if (seconds < 60) return "less than a minute left";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `about ${minutes} min left`;
  const hours = Math.floor(minutes / 60);
  return minutes % 60 ? `about ${hours} h ${minutes % 60} min left` : `about ${hours} h left`;
}

function formatSize(bytes) {
  if (typeof bytes !== "number") return "";
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

/** The URL when it is http or https, else null: nothing else becomes a link or an image. */
export function safeUrl(text) {
  try {
    const url = new URL(text);
    return SAFE_SCHEMES.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

const seconds = (from, to) => Math.max(0, Math.round((Date.parse(to) - Date.parse(from)) / 1000));

function element(name, className, text) {
  const el = document.createElement(name);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A step's icon, status (for screen readers), name and duration, into `el`. */
function fillStep(el, step, detail) {
  const icon = element("span", "step-icon", ICONS[step.status] ?? "•");
  icon.setAttribute("aria-hidden", "true");
  const parts = [icon, element("span", "visually-hidden", `${step.status}: `), element("span", "step-name", step.name)];
  if (step.startedAt) {
    const end = step.endedAt ?? detail.finishedAt ?? new Date().toISOString();
    const took = seconds(step.startedAt, end);
    const time = element("time", "step-duration", formatClock(took));
    time.setAttribute("datetime", `PT${took}S`);
    parts.push(time);
  }
  el.dataset.status = step.status;
  el.replaceChildren(...parts);
}

function timeOf(ts) {
  const at = new Date(ts);
  return Number.isNaN(at.getTime()) ? "" : at.toLocaleTimeString("en-GB", { hour12: false });
}

export class DetailView {
  constructor() {
    const $ = (id) => document.getElementById(id);
    this.el = {
      steps: $("steps"), stepsView: $("steps-view"), charts: $("charts"), chartsView: $("charts-view"),
      artifacts: $("artifacts"), artifactsView: $("artifacts-view"), annotations: $("annotations"),
      log: $("log"), eta: $("eta"),
    };
    this.detail = newDetail();
    this.ticker = null;
    // The log follows its end while the reader is there (it was, or they scrolled back down);
    // known from scroll events, so that appending a line never forces a layout.
    this.following = true;
    this.scrolling = false;
    this.el.log.addEventListener("scroll", () => {
      const log = this.el.log;
      this.following = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    });
  }

  /** To the end of the log, once per frame however many lines came. */
  follow() {
    if (!this.following || this.scrolling) return;
    this.scrolling = true;
    requestAnimationFrame(() => {
      this.scrolling = false;
      this.el.log.scrollTop = this.el.log.scrollHeight;
    });
  }

  /** Everything of `detail`, afresh (a job opened, a reset, a replay). */
  show(detail) {
    this.detail = detail;
    this.groups = new Map();
    this.lines = [];
    this.charts = new Map();
    this.el.log.replaceChildren();
    this.el.charts.replaceChildren();
    this.showSteps();
    for (const entry of detail.log) this.addLine(entry);
    for (const key of detail.metrics.keys()) this.showChart(key);
    this.el.chartsView.hidden = !detail.metrics.size;
    this.showList("artifacts", artifactItem);
    this.showList("annotations", annotationItem);
    this.showEta();
    this.following = true;
    this.follow();
  }

  clear() {
    this.show(newDetail());
  }

  /** What an event (already folded into the detail shown) changes on screen. */
  apply(type, data) {
    const detail = this.detail;
    if (type === "log") {
      this.addLine(detail.log.at(-1), true);
    } else if (type === "step") {
      this.showSteps();
    } else if (type === "metric") {
      for (const { key } of data.metrics ?? []) this.showChart(key, true);
      this.el.chartsView.hidden = false;
    } else if (type === "artifact") {
      this.addItem("artifacts", artifactItem(data));
    } else if (type === "annotation") {
      this.addItem("annotations", annotationItem(data));
    } else if (type === "reset") {
      this.show(detail);
    }
    if (detail.finishedAt) this.showSteps();
    this.showEta();
  }

  showEta() {
    const { eta, finishedAt } = this.detail;
    this.el.eta.hidden = eta === null || Boolean(finishedAt);
    this.el.eta.textContent = eta === null ? "" : formatEta(eta);
  }

  /** The step list and the log groups' headings; a ticker while a step runs. */
  showSteps() {
    const detail = this.detail;
    const items = [...detail.steps.values()].map((step) => {
      const item = element("li");
      item.dataset.stepId = step.stepId;
      fillStep(item, step, detail);
      return item;
    });
    this.el.steps.replaceChildren(...items);
    this.el.stepsView.hidden = !items.length;
    for (const group of detail.groups) if (group.stepId !== null) this.groupOf(group);
    for (const step of detail.steps.values()) {
      const group = this.groups.get(`step:${step.stepId}`);
      if (group) fillStep(group.querySelector("summary"), step, detail);
    }
    const live = detail.running.length > 0 && !detail.finishedAt;
    if (live && !this.ticker) this.ticker = setInterval(() => this.showSteps(), 1000);
    if (!live) this.stop();
  }

  stop() {
    clearInterval(this.ticker);
    this.ticker = null;
  }

  /** The element of a log group, made (in its place in the order of groups) when first needed. */
  groupOf(group) {
    let el = this.groups.get(group.key);
    if (el) return el;
    el = element("details", `log-group${group.stepId === null ? " log-general" : ""}`);
    el.open = true;
    el.dataset.group = group.key;
    const summary = element("summary", "log-heading", group.stepId === null ? "Outside steps" : "");
    el.append(summary, element("ol", "log-lines"));
    const order = this.detail.groups.findIndex((g) => g.key === group.key);
    const after = [...this.groups.entries()].find(([key]) => this.detail.groups.findIndex((g) => g.key === key) > order);
    this.el.log.insertBefore(el, after ? after[1] : null);
    this.groups.set(group.key, el);
    const step = group.stepId !== null && this.detail.steps.get(group.stepId);
    if (step) fillStep(summary, step, this.detail);
    return el;
  }

  addLine(entry, live = false) {
    const group = this.detail.groups.find((g) => g.key === entry.group) ?? { key: entry.group, stepId: null };
    const item = element("li", `log-${entry.level}`);
    item.dataset.level = entry.level;
    item.dataset.tag = TAGS[entry.level] ?? entry.level;
    item.dataset.time = timeOf(entry.ts);
    appendAnsi(item, entry.line);
    this.groupOf(group).querySelector("ol").append(item);
    this.lines.push(item);
    while (this.lines.length > MAX_LOG_LINES) {
      const oldest = this.lines.shift();
      const lines = oldest.parentElement;
      oldest.remove();
      const emptied = lines.parentElement;
      if (!lines.childElementCount && emptied.classList.contains("log-general")) {
        this.groups.delete(emptied.dataset.group);
        emptied.remove();
      }
    }
    if (live) this.follow();
  }

  showChart(key, live = false) {
    let chart = this.charts.get(key);
    const points = this.detail.metrics.get(key);
    if (!chart) {
      chart = new LineChart(key);
      this.charts.set(key, chart);
      this.el.charts.append(chart.element);
      chart.show(points);
    } else if (live) {
      chart.add(points.at(-1));
    }
  }

  /** The artifacts or annotations: the list (small, bounded by the server) drawn afresh. */
  /** The artifacts or annotations afresh, after a note of those a reset counted only. */
  showList(name, itemOf) {
    const items = this.detail[name].map(itemOf);
    const earlier = this.detail.earlier[name];
    const what = earlier === 1 ? name.slice(0, -1) : name;
    if (earlier) items.unshift(element("li", "earlier", `${earlier} earlier ${what}, from before the log was trimmed`));
    this.el[name].replaceChildren(...items);
    this.showListView(name);
  }

  /** One more (a thumbnail already shown is not loaded again). */
  addItem(name, item) {
    this.el[name].append(item);
    this.showListView(name);
  }

  showListView(name) {
    const empty = !this.el[name].childElementCount;
    if (name === "artifacts") this.el.artifactsView.hidden = empty;
    else this.el[name].hidden = empty;
  }
}

function artifactItem(artifact) {
  const item = element("li", "artifact");
  item.dataset.kind = artifact.kind;
  const url = safeUrl(artifact.url);
  const name = element("span", "artifact-name", artifact.name);
  const meta = element("span", "artifact-meta",
    [artifact.kind, artifact.mime, formatSize(artifact.size)].filter(Boolean).join(" · "));
  if (!url) {
    item.append(name, meta);
    return item;
  }
  const link = element("a", "artifact-link");
  link.href = url;
  link.rel = "noopener noreferrer";
  link.target = "_blank";
  if (artifact.kind === "image") {
    const image = element("img", "thumbnail");
    image.src = url;
    image.alt = ""; // the link is named by the artifact's name beside it
    image.loading = "lazy";
    image.addEventListener("error", () => item.classList.add("thumbnail-missing"));
    link.append(image);
  }
  link.append(name);
  item.append(link, meta);
  return item;
}

function annotationItem(annotation) {
  const item = element("li", `annotation annotation-${annotation.level}`);
  item.dataset.level = annotation.level;
  const label = annotation.level[0].toUpperCase() + annotation.level.slice(1);
  const heading = element("strong", "annotation-title", annotation.title ? `${label}: ${annotation.title}` : label);
  item.append(heading, element("span", "annotation-message", annotation.message));
  return item;
}
