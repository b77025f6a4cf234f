// jobprogress page: start a job, then follow its events over SSE.
// Every piece of job data is rendered with textContent, never as HTML.
"use strict";

const MAX_LOG_LINES = 1000;
const $ = (id) => document.getElementById(id);
let source = null;

function setConnection(state) {
  const el = $("connection");
  el.dataset.state = state;
  el.textContent = state;
}

function showProgress(data) {
  if (typeof data.progress === "number") {
    $("progress").setAttribute("aria-valuenow", String(data.progress));
    $("progress-fill").style.width = `${data.progress}%`;
    $("percent").textContent = `${data.progress}%`;
  }
  if (data.status) $("status").textContent = data.status;
  if (data.message) $("message").textContent = data.message;
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

function resetView(jobId) {
  $("job").hidden = false;
  $("job-id").textContent = jobId;
  $("log").replaceChildren();
  $("outcome").hidden = true;
  showProgress({ progress: 0, status: "QUEUED", message: "" });
}

function watch(jobId) {
  if (source) source.close();
  resetView(jobId);
  setConnection("connecting");
  source = new EventSource(`/api/progress/${encodeURIComponent(jobId)}`);
  const on = (type, handler) =>
    source.addEventListener(type, (event) => handler(JSON.parse(event.data)));
  source.onopen = () => setConnection("live");
  source.onerror = () => {
    setConnection(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  };
  on("status", showProgress);
  on("progress", showProgress);
  on("log", appendLog);
  on("reset", (job) => {
    $("log").replaceChildren();
    showProgress(job);
  });
  const finish = (text, kind) => (data) => {
    showProgress(data);
    showOutcome(text(data), kind);
    source.close();
    setConnection("closed");
  };
  on("complete", finish((d) => `Completed: ${d.result ?? ""}`, "success"));
  on("failed", finish((d) => `Failed: ${d.error ?? ""}`, "failure"));
  on("cancelled", finish(() => "Cancelled", "failure"));
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
  error.hidden = true;
  try {
    const response = await fetch("/api/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error ? answer.error.message : response.statusText);
    const url = new URL(window.location.href);
    url.searchParams.set("job", answer.jobId);
    history.pushState({ job: answer.jobId }, "", url);
    watch(answer.jobId);
  } catch (err) {
    error.textContent = `Could not start the job: ${err.message}`;
    error.hidden = false;
  }
}

function watchFromUrl() {
  const jobId = new URL(window.location.href).searchParams.get("job");
  if (jobId) watch(jobId);
}

$("job-form").addEventListener("submit", startJob);
window.addEventListener("popstate", watchFromUrl);
watchFromUrl();
