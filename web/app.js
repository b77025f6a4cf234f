// jobprogress page: start a job, then follow its events over SSE with the module any
// product's page can import (jobprogress.js). Every piece of job data is rendered with
// textContent, never as HTML.
import { watchJob } from "./jobprogress.js";

const MAX_LOG_LINES = 1000;
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
const $ = (id) => document.getElementById(id);
let watching = null; // the handle of the job's stream
let current = null; // the job watched
let timing = { started: null, finished: null };
let ticker = null;

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
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, "0");
  $("elapsed").textContent = h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  $("elapsed").setAttribute("datetime", `PT${seconds}S`);
}

function appendLog(data) {
  const item = document.createElement("li");
  item.className = `log-${data.level || "info"}`;
  item.textContent = data.line;
  const log = $("log");
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.appendChild(item);
  while (log.childElementCount > MAX_LOG_LINES) log.firstElementChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
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

function resetView(jobId) {
  $("job").hidden = false;
  $("progress").classList.remove("failed");
  $("job-id").textContent = jobId;
  $("log").replaceChildren();
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
  // The stream answers 404 or 403 before it starts, which EventSource cannot show: ask first.
  try {
    const job = await api("GET", `/api/jobs/${encodeURIComponent(jobId)}${shareQuery()}`);
    timing = { started: job.startedAt, finished: job.finishedAt };
    showProgress(job);
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
  ticker = setInterval(showElapsed, 1000);
  openStream(jobId);
}

function openStream(jobId) {
  const finish = (text, kind) => (data) => {
    showProgress(data);
    showOutcome(text(data), kind);
    stopWatching();
    showElapsed();
    loadRecent();
  };
  watching = watchJob(jobId, {
    share: shareToken(),
    onState: setConnection,
    // The stream refused on a reconnect (an expired share link, say): the watch has stopped.
    onError: (error) => error.fatal && showOutcome(error.message, "failure"),
    on: {
      status: showProgress,
      progress: showProgress,
      log: appendLog,
      reset: (job) => {
        $("log").replaceChildren();
        showProgress(job);
      },
      complete: finish((d) => `Completed: ${d.result ?? ""}`, "success"),
      failed: (data) => {
        $("progress").classList.add("failed");
        $("message").textContent = data.error ?? "Failed";
        finish((d) => `Failed: ${d.error ?? ""}`, "failure")(data);
      },
      cancelled: finish(() => "Cancelled", "failure"),
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

async function loadRecent() {
  let answer;
  try {
    answer = await api("GET", "/api/jobs?limit=10");
  } catch (err) {
    return; // the list is a convenience: the page works without it
  }
  const list = $("recent-list");
  list.replaceChildren();
  for (const job of answer.jobs) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = `?job=${encodeURIComponent(job.jobId)}`;
    link.textContent = job.name || job.type;
    link.addEventListener("click", (event) => {
      event.preventDefault();
      history.pushState({ job: job.jobId }, "", link.href);
      watch(job.jobId);
    });
    item.append(link, ` · ${job.status} · ${job.progress}%`);
    list.appendChild(item);
  }
  $("recent").hidden = answer.jobs.length === 0;
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
    loadRecent();
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
    $("job").hidden = true;
    setConnection("idle");
  }
}

$("job-form").addEventListener("submit", startJob);
$("cancel").addEventListener("click", cancelJob);
$("share").addEventListener("click", shareJob);
window.addEventListener("popstate", watchFromUrl);
watchFromUrl();
loadRecent();
