// jobprogress page: start a job, follow it, and a live dashboard of the user's jobs, all
// with the module any product's page can import (jobprogress.js). The dashboard and the job
// on screen come from ONE stream of the user's jobs, shared by every tab of the browser
// (watchMine with acrossTabs): eight tabs stay live within the browser's six connections
// per origin. A job that stream does not carry (one that ended before it opened, or a
// share link's) is read once through its own stream. Every piece of job data is rendered
// with textContent, never as HTML. The job's steps, log, charts, artifacts and annotations
// are views.js's: each job's detail is a model its events fold into.
import { watchJob, watchMine } from "./jobprogress.js";
import { foldDetail, newDetail } from "./detail.js";
import { DetailView, formatClock } from "./views.js";
import { enableNotifications, enablePush, notifyJobEnded } from "./notify.js";

const MAX_ROWS = 50;
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
const $ = (id) => document.getElementById(id);
let watching = null; // the handle of the job's own stream, when it has one
let current = null; // the job watched
let timing = { started: null, finished: null };
let ticker = null;
const view = new DetailView();

function setConnection(state) {
  const el = $("connection");
  el.dataset.state = state;
  el.textContent = state;
}

function showProgress(data) {
  if (typeof data.progress === "number") {
    $("progress").setAttribute("aria-valuenow", String(data.progress));
    $("progress").setAttribute("aria-valuetext", `${data.progress}% ${data.status ?? ""}`.trim());
    $("progress-fill").style.width = `${data.progress}%`;
    $("percent").textContent = `${data.progress}%`;
  }
  if (data.status) {
    $("status").textContent = data.status;
    if (data.status === "PROCESSING" && !timing.started) timing.started = data.startedAt ?? data.ts;
    if (TERMINAL.has(data.status)) {
      timing.finished = timing.finished ?? data.finishedAt ?? data.ts;
      $("cancel").hidden = true;
    }
  }
  if (data.startedAt) timing.started = data.startedAt;
  if (data.message) $("message").textContent = data.message;
  showElapsed();
}

function showElapsed() {
  const start = timing.started ? Date.parse(timing.started) : NaN;
  const end = timing.finished ? Date.parse(timing.finished) : Date.now();
  const seconds = Number.isNaN(start) ? 0 : Math.max(0, Math.round((end - start) / 1000));
  $("elapsed").textContent = formatClock(seconds);
  $("elapsed").setAttribute("datetime", `PT${seconds}S`);
}

function showOutcome(text, kind) {
  const el = $("outcome");
  el.hidden = false;
  el.className = `outcome ${kind}`;
  el.textContent = text;
}

function note(text) {
  $("action-note").hidden = !text;
  $("action-note").textContent = text;
}


// The user's jobs, by id: what the dashboard shows, and for the jobs the stream of their
// jobs carries (`carried`), their detail too (steps, log...), so that opening one needs no
// connection.
const jobs = new Map();
const FIELDS = ["name", "type", "status", "progress", "message", "step", "totalSteps", "result", "error",
  "createdAt", "startedAt", "finishedAt"];
const ENDS = { complete: "COMPLETED", failed: "FAILED", cancelled: "CANCELLED" };
// The events that carry the job's own fields (a step's or an artifact's `name` and `status`
// are theirs, not the job's).
const STATE_EVENTS = new Set(["status", "progress", "reset", ...Object.keys(ENDS)]);
let mine = null; // the stream of the user's jobs, shared by the browser's tabs
let mineState = "connecting";
let opened; // resolves once that stream has been live: from then on it carries every unfinished job
const mineOpen = new Promise((resolve) => (opened = resolve));
let fromMine = false; // the job on screen is shown from that stream (else: from its own, or none)

function jobOf(jobId) {
  let job = jobs.get(jobId);
  if (!job) {
    job = { jobId, status: "QUEUED", progress: 0, message: "", detail: newDetail(), carried: false, described: false };
    jobs.set(jobId, job);
  }
  return job;
}

/** What an event changes in a job's state. */
function fold(job, type, data) {
  if (job.carried) foldDetail(job.detail, type, data); // else the screen's own (openStream)
  if (!STATE_EVENTS.has(type)) return;
  for (const name of FIELDS) if (data[name] !== undefined && data[name] !== null) job[name] = data[name];
  if (ENDS[type]) job.status = data.status ?? ENDS[type];
  if (type === "status" && data.status === "QUEUED") job.createdAt = job.createdAt ?? data.ts;
  if (job.status === "PROCESSING") job.startedAt = job.startedAt ?? data.ts;
  if (TERMINAL.has(job.status)) job.finishedAt = job.finishedAt ?? data.ts;
}

function onMineEvent(data, event) {
  const job = jobOf(data.jobId);
  job.carried = true; // from the start of its log (or a reset): all of it is here
  fold(job, event.type, data);
  if (ENDS[event.type]) notifyJobEnded({ ...data, name: job.name }).catch(() => {});
  if (!job.described) describe(job);
  showRow(job);
  if (fromMine && current === job.jobId) showEvent(event.type, data);
}

function onMineState(state) {
  mineState = state;
  const badge = $("mine-connection");
  badge.textContent = state;
  badge.dataset.state = state;
  badge.dataset.role = mine?.role ?? "";
  if (fromMine && !TERMINAL.has(jobs.get(current)?.status)) setConnection(state);
  if (state === "live") opened();
}

// A tab that joins, or a new holder of the stream: its events come again from the start.
function onMineReplay() {
  for (const job of jobs.values()) if (job.carried) job.detail = newDetail();
  if (fromMine && jobs.has(current)) view.show(jobs.get(current).detail);
}

function openMine() {
  mine = watchMine({
    acrossTabs: true,
    on: { any: onMineEvent },
    onState: onMineState,
    onReplay: onMineReplay,
    onError: (error) => error.fatal && ($("mine-connection").textContent = `closed: ${error.message}`),
  });
  // Without it (refused), each job is read through its own stream, as a share link's is.
  mine.done.then(() => {
    mine = null;
    opened();
  });
}

// The user's latest jobs: loaded once the stream is open, so that a job still running then is
// one it carries, and none stays at a stale status.
const listed = mineOpen.then(loadRecent);

// The name and creation time the events do not carry, asked once (unless the list had them).
async function describe(job) {
  job.described = true;
  await listed;
  if (jobs.get(job.jobId) !== job || job.name !== undefined) return;
  try {
    const answer = await api("GET", `/api/jobs/${encodeURIComponent(job.jobId)}`);
    for (const name of job.carried ? ["name", "type", "createdAt"] : FIELDS) job[name] = answer[name];
    showRow(job);
  } catch {
    job.described = false; // asked again with its next event
  }
}

/** The finished jobs on the dashboard, and the names of all. */
async function loadRecent() {
  let answer;
  try {
    answer = await api("GET", "/api/jobs?limit=10");
  } catch {
    return; // the list is a convenience: the page works without it
  }
  for (const found of answer.jobs) {
    const job = jobOf(found.jobId);
    for (const name of job.carried ? ["name", "type", "createdAt"] : FIELDS) job[name] = found[name];
    job.described = true;
    showRow(job);
  }
}

function rowOf(job) {
  const row = document.createElement("li");
  row.dataset.jobId = job.jobId;
  const link = document.createElement("a");
  link.href = `?job=${encodeURIComponent(job.jobId)}`;
  link.addEventListener("click", (event) => {
    event.preventDefault();
    history.pushState({ job: job.jobId }, "", link.href);
    watch(job.jobId);
  });
  // A native progress bar: the progressbar role, and its values, without a line of ARIA.
  const bar = document.createElement("progress");
  bar.className = "row-progress";
  bar.max = 100;
  const status = document.createElement("span");
  status.className = "row-status";
  const step = document.createElement("span");
  step.className = "row-step";
  row.append(link, bar, status, step);
  return row;
}

const order = (job) => Date.parse(job.createdAt ?? "") || Number.MAX_SAFE_INTEGER;

function showRow(job) {
  const list = $("recent-list");
  let row = list.querySelector(`li[data-job-id="${CSS.escape(job.jobId)}"]`);
  if (!row || Number(row.dataset.order) !== order(job)) {
    row = row ?? rowOf(job);
    row.dataset.order = String(order(job));
    const after = [...list.children].find((other) => other !== row && Number(other.dataset.order) < order(job));
    if (row.nextElementSibling !== after || row.parentElement !== list) list.insertBefore(row, after ?? null);
  }
  const [link, bar, status, step] = row.children;
  // Jobs of one name told apart by the start of their id.
  const label = `${job.name || job.type || "job"} ${job.jobId.slice(0, 8)}`;
  link.textContent = label;
  bar.setAttribute("aria-label", `Progress of ${label}`);
  bar.value = job.progress ?? 0;
  bar.setAttribute("aria-valuetext", `${job.progress ?? 0}% ${job.status}`);
  bar.classList.toggle("failed", job.status === "FAILED");
  row.dataset.status = job.status;
  status.textContent = job.status;
  step.textContent = job.totalSteps ? `step ${job.step ?? 0}/${job.totalSteps}` : "";
  while (list.childElementCount > MAX_ROWS) {
    const old = [...list.children].reverse().find((r) => r.dataset.jobId !== current && TERMINAL.has(r.dataset.status));
    if (!old) break;
    jobs.delete(old.dataset.jobId);
    old.remove();
  }
  $("recent").hidden = false;
}

// The job on screen, event by event, whichever stream brings it.
const DETAIL = {
  status: showProgress,
  progress: showProgress,
  reset: showProgress,
  complete: (data) => showEnd({ ...data, status: data.status ?? "COMPLETED" }),
  failed: (data) => showEnd({ ...data, status: data.status ?? "FAILED" }),
  cancelled: (data) => showEnd({ ...data, status: data.status ?? "CANCELLED" }),
};

function showEvent(type, data) {
  if (Object.hasOwn(DETAIL, type)) DETAIL[type](data);
  view.apply(type, data);
}

function showEnd(data) {
  showProgress(data);
  if (data.status === "FAILED") {
    $("progress").classList.add("failed");
    $("message").textContent = data.error ?? "Failed";
    showOutcome(`Failed: ${data.error ?? ""}`, "failure");
  } else if (data.status === "COMPLETED") {
    showOutcome(`Completed: ${data.result ?? ""}`, "success");
  } else {
    showOutcome("Cancelled", "failure");
  }
  stopWatching();
  showElapsed();
  setConnection("closed");
}

function resetView(jobId) {
  fromMine = false;
  $("job").hidden = false;
  $("progress").classList.remove("failed");
  $("job-id").textContent = jobId;
  view.clear();
  $("outcome").hidden = true;
  $("share-box").hidden = true;
  note("");
  // A share link is read-only: no cancel, no further sharing.
  $("owner-actions").hidden = Boolean(shareQuery());
  $("cancel").hidden = false;
  timing = { started: null, finished: null };
  showProgress({ progress: 0, status: "QUEUED", message: "" });
}

function stopWatching() {
  if (watching) watching.stop();
  watching = null;
  clearInterval(ticker);
  ticker = null;
  view.stop();
}

function describeError(answer, response) {
  const error = answer && answer.error;
  if (!error) return response.statusText || `HTTP ${response.status}`;
  const details = error.details && typeof error.details === "object" && !Array.isArray(error.details)
    ? Object.entries(error.details).map(([field, problems]) => `${field}: ${[].concat(problems).join(" ")}`)
    : [];
  return details.length ? `${error.message} (${details.join("; ")})` : error.message;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Accept: "application/json", ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(describeError(answer, response));
    error.status = response.status;
    throw error;
  }
  return answer;
}

// A share link (?share=...) opens someone else's job read-only: the token goes along.
function shareToken() {
  return new URL(window.location.href).searchParams.get("share");
}

function shareQuery() {
  const share = shareToken();
  return share ? `?share=${encodeURIComponent(share)}` : "";
}

async function watch(jobId) {
  stopWatching();
  current = jobId;
  resetView(jobId);
  setConnection("connecting");
  const own = !shareToken(); // a share link's job is someone else's: never on the user's stream
  // Once the user's stream is open, it carries every job of theirs still running then.
  if (own) await mineOpen;
  if (current !== jobId) return;
  if (own && mine && jobs.get(jobId)?.carried) return showFromMine(jobs.get(jobId));
  // The stream answers 404 or 403 before it starts, which EventSource cannot show: ask first.
  let job = null;
  try {
    job = await api("GET", `/api/jobs/${encodeURIComponent(jobId)}${shareQuery()}`);
  } catch (err) {
    if (err.status === 404 || err.status === 403) {
      const text = err.status === 404
        ? `No job ${jobId}: it never existed, has expired, or is not yours.`
        : err.message;
      showOutcome(text, "failure");
      $("owner-actions").hidden = true;
      setConnection("closed");
      return;
    }
    // Otherwise the stream below reconnects by itself; the status call is only a courtesy.
  }
  if (current !== jobId) return;
  if (own && mine && (jobs.get(jobId)?.carried || (job && !TERMINAL.has(job.status)))) {
    const known = jobOf(jobId);
    if (!known.carried) for (const name of FIELDS) known[name] = job[name];
    return showFromMine(known);
  }
  if (job) {
    timing = { started: job.startedAt, finished: job.finishedAt };
    showProgress(job);
  }
  ticker = setInterval(showElapsed, 1000);
  openStream(jobId);
}

/** The job from the user's stream: what it has brought so far, then each event as it comes. */
function showFromMine(job) {
  fromMine = true;
  timing = { started: job.startedAt ?? null, finished: job.finishedAt ?? null };
  showProgress(job);
  view.show(job.detail);
  if (TERMINAL.has(job.status)) {
    showEnd(job);
  } else {
    ticker = setInterval(showElapsed, 1000);
    setConnection(mineState);
  }
}

/** A job the user's stream does not carry (ended before it opened, a share link's): its own
 * stream, once, to its end. */
function openStream(jobId) {
  const detail = newDetail();
  view.show(detail);
  watching = watchJob(jobId, {
    share: shareToken(),
    onState: setConnection,
    // The stream refused on a reconnect (an expired share link, say): the watch has stopped.
    onError: (error) => error.fatal && showOutcome(error.message, "failure"),
    on: {
      any: (data, event) => {
        const job = jobs.get(jobId);
        if (job && !job.carried) {
          fold(job, event.type, data);
          showRow(job);
        }
        foldDetail(detail, event.type, data);
        showEvent(event.type, data);
      },
    },
  });
}

async function cancelJob() {
  if (!current) return;
  $("cancel").disabled = true;
  try {
    const job = await api("POST", `/api/jobs/${encodeURIComponent(current)}/cancel`);
    note(job.status === "CANCELLED" ? "Cancelled." : "Cancellation requested: the job stops at its next step.");
  } catch (err) {
    note(`Could not cancel: ${err.message}`);
  } finally {
    $("cancel").disabled = false;
  }
}

async function shareJob() {
  if (!current) return;
  try {
    const link = await api("POST", `/api/jobs/${encodeURIComponent(current)}/share`);
    $("share-url").value = new URL(link.links.page, window.location.origin).href;
    $("share-box").hidden = false;
    $("share-url").focus();
    $("share-url").select();
  } catch (err) {
    note(`Could not make a share link: ${err.message}`);
  }
}

async function startJob(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = {
    type: form.get("type"),
    steps: Number(form.get("steps")),
    durationSeconds: Number(form.get("durationSeconds")),
  };
  if (form.get("failAtStep")) body.failAtStep = Number(form.get("failAtStep"));
  const error = $("form-error");
  const button = $("start");
  error.hidden = true;
  button.disabled = true;
  try {
    const answer = await api("POST", "/api/jobs", body);
    const url = new URL(window.location.href);
    url.searchParams.set("job", answer.jobId);
    url.searchParams.delete("share");
    history.pushState({ job: answer.jobId }, "", url);
    watch(answer.jobId);
  } catch (err) {
    error.textContent = `Could not start the job: ${err.message}`;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

function watchFromUrl() {
  const jobId = new URL(window.location.href).searchParams.get("job");
  if (jobId) {
    watch(jobId);
  } else {
    stopWatching();
    current = null;
    fromMine = false;
    $("job").hidden = true;
    setConnection("idle");
  }
}

enableNotifications($("notify"));
enablePush($("push")).catch((error) => console.warn("push:", error));
$("job-form").addEventListener("submit", startJob);
$("cancel").addEventListener("click", cancelJob);
$("share").addEventListener("click", shareJob);
window.addEventListener("popstate", watchFromUrl);
openMine();
watchFromUrl();
