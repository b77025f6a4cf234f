// A job's detail: a plain model of its steps, its log by group, its metrics' points, its
// artifacts, annotations and time left, that its events fold into (`foldDetail`) and a
// reset's snapshot replaces. Kept per job in memory, so a job opened again (a dashboard
// switch) is drawn at once, as its replay would draw it.

export const MAX_LOG_LINES = 1000;
const MAX_POINTS = 1000; // per metric key: the oldest go first
const ENDED = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
const ENDS = new Set(["complete", "failed", "cancelled"]);

export function newDetail() {
  return {
    steps: new Map(), // by stepId, in order of first report
    running: [], // the ids of the steps running, innermost last
    groups: [], // the log's groups in order: {key, stepId} (stepId null: lines outside steps)
    log: [], // {level, line, ts, group}
    metrics: new Map(), // key -> [{x, y}]
    artifacts: [],
    annotations: [],
    earlier: { artifacts: 0, annotations: 0 }, // counted by a reset's snapshot, not listed
    eta: null,
    finishedAt: null,
  };
}

function stepGroup(detail, stepId) {
  const key = `step:${stepId}`;
  if (!detail.groups.some((group) => group.key === key)) detail.groups.push({ key, stepId });
  return key;
}

/** The group a log line arriving now belongs to: the innermost running step's, else lines
 * outside steps (a group of its own after each step). */
function groupNow(detail) {
  const stepId = detail.running.at(-1);
  if (stepId !== undefined) return stepGroup(detail, stepId);
  const last = detail.groups.at(-1);
  if (last && last.stepId === null) return last.key;
  const key = `general:${detail.groups.length}`;
  detail.groups.push({ key, stepId: null });
  return key;
}

function foldStep(detail, data) {
  const known = detail.steps.get(data.stepId);
  const step = {
    stepId: data.stepId,
    name: data.name ?? known?.name ?? data.stepId,
    status: data.status,
    startedAt: data.startedAt ?? known?.startedAt ?? (data.status === "running" ? data.ts : null),
    endedAt: data.endedAt ?? (data.status === "running" ? null : data.ts ?? null),
  };
  detail.steps.set(step.stepId, step);
  detail.running = detail.running.filter((id) => id !== step.stepId);
  if (step.status === "running") detail.running.push(step.stepId);
  if (step.status === "running") stepGroup(detail, step.stepId); // its log lines' group
  return step;
}

function foldMetric(detail, data) {
  for (const { key, value } of data.metrics ?? []) {
    const points = detail.metrics.get(key) ?? [];
    const x = typeof data.step === "number" ? data.step : (points.at(-1)?.x ?? 0) + 1;
    points.push({ x, y: value });
    if (points.length > MAX_POINTS) points.shift();
    detail.metrics.set(key, points);
  }
}

/** A reset's snapshot (the job's state) in place of all that was folded before. */
function foldSnapshot(detail, job) {
  Object.assign(detail, newDetail());
  for (const step of Array.isArray(job.steps) ? job.steps : []) foldStep(detail, step);
  const metrics = job.metrics && typeof job.metrics === "object" && !Array.isArray(job.metrics) ? job.metrics : {};
  for (const [key, latest] of Object.entries(metrics)) {
    if (typeof latest?.value !== "number") continue;
    detail.metrics.set(key, [{ x: typeof latest.step === "number" ? latest.step : 1, y: latest.value }]);
  }
  const count = (value) => (typeof value === "number" ? value : 0);
  detail.earlier = { artifacts: count(job.artifacts), annotations: count(job.annotations) };
  detail.eta = job.etaSeconds ?? null;
  if (ENDED.has(job.status)) detail.finishedAt = job.finishedAt ?? job.ts;
}

/** What an event changes in a job's detail. */
export function foldDetail(detail, type, data) {
  if (type === "log") {
    detail.log.push({ level: data.level || "info", line: data.line, ts: data.ts, group: groupNow(detail) });
    if (detail.log.length > MAX_LOG_LINES) detail.log.shift();
  } else if (type === "step") {
    foldStep(detail, data);
  } else if (type === "metric") {
    foldMetric(detail, data);
  } else if (type === "artifact") {
    detail.artifacts.push(data);
  } else if (type === "annotation") {
    detail.annotations.push(data);
  } else if (type === "progress") {
    detail.eta = typeof data.etaSeconds === "number" ? data.etaSeconds : null;
  } else if (type === "reset") {
    foldSnapshot(detail, data);
  }
  if (ENDS.has(type) || ENDED.has(data.status)) {
    detail.finishedAt = detail.finishedAt ?? data.finishedAt ?? data.ts;
    detail.eta = null;
  }
}
