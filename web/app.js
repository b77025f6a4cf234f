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
  $("progress").classList.remove("failed");
  $("job-id").textContent = jobId;
  $("log").replaceChildren();
  $("outcome").hidden = true;
  showProgress({ progress: 0, status: "QUEUED", message: "" });
}

function stopWatching() {
  if (source) source.close();
  source = null;
}

function describeError(answer, response) {
  const error = answer && answer.error;
  if (!error) return response.statusText || `HTTP ${response.status}`;
  const details = error.details && typeof error.details === "object" && !Array.isArray(error.details)
    ? Object.entries(error.details).map(([field, problems]) => `${field}: ${[].concat(problems).join(" ")}`)
    : [];
  return details.length ? `${error.message} (${details.join("; ")})` : error.message;
}

// A share link (?share=...) opens someone else's job read-only: the token goes along.
function shareQuery() {
  const share = new URL(window.location.href).searchParams.get("share");
  return share ? `?share=${encodeURIComponent(share)}` : "";
}

async function watch(jobId) {
  stopWatching();
  resetView(jobId);
  setConnection("connecting");
  // The stream answers 404 or 403 before it starts, which EventSource cannot show: ask first.
  try {
    const response = await fetch(`/api/jobs/${encodeURIComponent(jobId)}${shareQuery()}`, {
      headers: { Accept: "application/json" },
    });
    if (response.status === 404 || response.status === 403) {
      const answer = await response.json().catch(() => null);
      const text = response.status === 404
        ? `No job ${jobId}: it never existed, has expired, or is not yours.`
        : (answer && answer.error ? answer.error.message : describeError(answer, response));
      showOutcome(text, "failure");
      setConnection("closed");
      return;
    }
  } catch (err) {
    // The stream below reconnects by itself; the status call is only a courtesy.
  }
  openStream(jobId);
}

function openStream(jobId) {
  source = new EventSource(`/api/progress/${encodeURIComponent(jobId)}${shareQuery()}`);
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
  on("failed", (data) => {
    $("progress").classList.add("failed");
    $("message").textContent = data.error ?? "Failed";
  });
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
  const button = $("start");
  error.hidden = true;
  button.disabled = true;
  try {
    const response = await fetch("/api/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => null);
    if (!response.ok) throw new Error(describeError(answer, response));
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
    $("job").hidden = true;
    setConnection("idle");
  }
}

$("job-form").addEventListener("submit", startJob);
window.addEventListener("popstate", watchFromUrl);
watchFromUrl();
