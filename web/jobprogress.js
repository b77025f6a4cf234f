// jobprogress.js: follow a job's progress from any page. An ES module, no build step, no
// dependencies:
//
//   import { watchJob } from "https://progress.example.com/client/jobprogress.js";
//   const handle = watchJob(jobId, {
//     getToken: async () => (await fetch("/my/jobprogress-token")).text(),
//     on: { progress: (data) => bar.value = data.progress, log: (data) => print(data.line) },
//     onState: (state) => badge.textContent = state,   // connecting, live, reconnecting, closed
//     onError: (error) => console.warn(error.code, error.message),
//   });
//   handle.stop();
//
// The stream is read with fetch rather than EventSource, so that a token travels in the
// Authorization header (never in a URL), every (re)connect asks for a fresh one, the
// server's answer is seen (a 404 is reported, a 204 ends the watch) and its `retry:` is
// honoured. Resume is exact: each reconnect asks for what follows the last event id
// received (?lastEventId=), so nothing is missed and nothing is seen twice.

const TERMINAL = new Set(["complete", "failed", "cancelled"]);
// Where this module was loaded from: progress-service, unless the page says otherwise.
const HOME = new URL("../", import.meta.url).href;
const DEFAULTS = {
  retryMs: 3000, // until the server's `retry:` says otherwise
  maxRetryMs: 10000, // the longest wait between two attempts in a row that failed
  stallTimeoutMs: 45000, // nothing at all (not even a heartbeat) for this long: reconnect
};

/** What went wrong: `status` is the HTTP status (0 when none came back), `code` the
 * server's error code (`not_found`, `unauthorized`...) or `network`, `token`, `bad_event`,
 * `http`; `fatal` tells whether the watch has stopped because of it. */
export class JobProgressError extends Error {
  constructor(message, { status = 0, code = "http", details = null, fatal = false } = {}) {
    super(message);
    this.name = "JobProgressError";
    this.status = status;
    this.code = code;
    this.details = details;
    this.fatal = fatal;
  }
}

function baseOf(baseUrl) {
  const base = new URL(baseUrl ?? HOME, globalThis.document?.baseURI ?? HOME).href;
  return base.endsWith("/") ? base : `${base}/`;
}

async function credentialOf(options) {
  if (options.getToken) {
    try {
      return (await options.getToken()) || null;
    } catch (cause) {
      throw new JobProgressError(`getToken failed: ${cause?.message ?? cause}`, { code: "token" });
    }
  }
  return options.token || null;
}

function requestInit(token, signal, accept) {
  const headers = { Accept: accept };
  if (token) headers.Authorization = `Bearer ${token}`;
  // Cookies go along to the page's own origin only (fetch's default): never cross-site.
  return { headers, signal, cache: "no-store", credentials: "same-origin" };
}

async function errorOf(response, fatal) {
  let error = null;
  try {
    error = (await response.json()).error ?? null;
  } catch {
    // not our JSON: a proxy's page, say
  }
  return new JobProgressError(error?.message || `HTTP ${response.status}`, {
    status: response.status,
    code: error?.code || "http",
    details: error?.details ?? null,
    fatal,
  });
}

function networkError(cause) {
  return new JobProgressError(
    `progress-service unreachable, or it does not allow this origin (${cause?.message ?? cause})`,
    { code: "network" },
  );
}

/** The job's state (`GET /api/jobs/{id}`), with the same `baseUrl`, `token`/`getToken` and
 * `share` options as {@link watchJob}. Rejects with a {@link JobProgressError}. */
export async function fetchJob(jobId, options = {}) {
  const url = new URL(`api/jobs/${encodeURIComponent(jobId)}`, baseOf(options.baseUrl));
  if (options.share) url.searchParams.set("share", options.share);
  const token = await credentialOf(options);
  let response;
  try {
    response = await fetch(url, requestInit(token, options.signal, "application/json"));
  } catch (cause) {
    throw networkError(cause);
  }
  if (!response.ok) throw await errorOf(response, false);
  return response.json();
}

/** Reads the text of an SSE stream (the WHATWG rules: fields, comments, CR/LF/CRLF). */
class SseParser {
  constructor(lastEventId, onEvent, onRetry) {
    this.buffer = "";
    this.data = [];
    this.type = "";
    this.lastEventId = lastEventId ?? "";
    this.onEvent = onEvent;
    this.onRetry = onRetry;
    this.first = true;
    this.afterCR = false;
  }

  feed(text) {
    if (this.first && text) {
      this.first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.afterCR && text) {
      // The last chunk ended with CR, already taken as a line's end: its LF is no new line.
      this.afterCR = false;
      if (text[0] === "\n") text = text.slice(1);
    }
    this.buffer += text;
    const ends = /\r\n|\r|\n/g;
    let start = 0;
    for (let match = ends.exec(this.buffer); match; match = ends.exec(this.buffer)) {
      if (this.line(this.buffer.slice(start, match.index))) return;
      start = ends.lastIndex;
      this.afterCR = match[0] === "\r" && start === this.buffer.length;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return false;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.onRetry(Number(value));
    return false;
  }

  dispatch() {
    const data = this.data.join("\n");
    const type = this.type || "message";
    const had = this.data.length > 0;
    this.data = [];
    this.type = "";
    return had ? this.onEvent({ type, id: this.lastEventId, data }) : false;
  }
}

/**
 * Watch one job until its end (or `stop()`). Options:
 * - `baseUrl`: where progress-service answers (default: where this module came from);
 * - `token` (a string) or `getToken` (async, called before every connect, so an expiring
 *   token is renewed): sent as `Authorization: Bearer`; without either, the page's own
 *   cookie (same origin only);
 * - `share`: a share-link token, instead;
 * - `lastEventId`: resume after this event (one your page kept), not from the start;
 * - `on`: callbacks per event type (`status`, `progress`, `log`, `step`, `metric`,
 *   `artifact`, `annotation`, `reset`, `complete`, `failed`, `cancelled`, any other), each
 *   called as `(data, event)` with `event = {type, id, data}`; `on.any` gets every event after
 *   its own callback;
 * - `onState(state)`: `connecting`, `live`, `reconnecting`, `closed`;
 * - `onError(error)`: a {@link JobProgressError}; when `error.fatal`, the watch has stopped;
 * - `retryMs`, `maxRetryMs`, `stallTimeoutMs` (0: off): reconnection timing.
 * Returns `{jobId, stop(), lastEventId, state, done}`; `done` resolves, once closed, to why:
 * `complete`, `failed`, `cancelled`, `ended` (204: the job had ended), `stopped`, `error`.
 */
export function watchJob(jobId, options = {}) {
  if (typeof jobId !== "string" || !jobId) throw new TypeError("watchJob needs a job id");
  const on = options.on ?? {};
  const timing = { ...DEFAULTS, ...pick(options, Object.keys(DEFAULTS)) };
  const base = baseOf(options.baseUrl);
  let lastEventId = options.lastEventId || "";
  let state = null;
  let stopped = false;
  let failures = 0;
  let controller = null;
  let wakeUp = null;
  let finish;
  const done = new Promise((resolve) => (finish = resolve));

  const setState = (next) => {
    if (next === state) return;
    state = next;
    call(options.onState, next);
  };

  let ending = null; // the job's terminal event, once it has come
  const close = (reason, error) => {
    if (stopped) return;
    stopped = true;
    reason = ending ?? reason;
    controller?.abort();
    wakeUp?.();
    removeEventListener("online", wake);
    document.removeEventListener("visibilitychange", wake);
    if (error) call(options.onError, error);
    setState("closed");
    finish(reason);
  };

  const report = (error) => {
    if (!stopped) call(options.onError, error);
  };

  function wake() {
    if (document.visibilityState !== "hidden") wakeUp?.();
  }
  addEventListener("online", wake);
  document.addEventListener("visibilitychange", wake);

  const deliver = (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      lastEventId = event.id;
      report(new JobProgressError(`event ${event.id} is not JSON`, { code: "bad_event" }));
      return false;
    }
    lastEventId = event.id;
    if (TERMINAL.has(event.type)) ending = event.type;
    const message = { type: event.type, id: event.id, data };
    call(Object.hasOwn(on, event.type) ? on[event.type] : undefined, data, message);
    if (!stopped) call(on.any, data, message);
    if (TERMINAL.has(event.type)) close(event.type);
    return stopped;
  };

  async function connectOnce() {
    controller = new AbortController();
    const { signal } = controller;
    const url = new URL(`api/progress/${encodeURIComponent(jobId)}`, base);
    if (options.share) url.searchParams.set("share", options.share);
    if (lastEventId) url.searchParams.set("lastEventId", lastEventId);
    const token = await credentialOf(options);
    if (stopped) return null;
    let response;
    try {
      response = await fetch(url, requestInit(token, signal, "text/event-stream"));
    } catch (cause) {
      if (stopped) return null;
      throw networkError(cause);
    }
    if (response.status === 204) return "ended";
    const type = response.headers.get("Content-Type") ?? "";
    if (!response.ok || !type.startsWith("text/event-stream")) {
      const transient = response.status === 429 || response.status >= 500 || response.ok;
      const error = await errorOf(response, !transient);
      if (!transient) return error;
      const wait = Number(response.headers.get("Retry-After"));
      error.retryAfterMs = Number.isFinite(wait) && wait > 0 ? wait * 1000 : 0;
      throw error;
    }
    failures = 0;
    setState("live");
    const parser = new SseParser(lastEventId, deliver, (ms) => (timing.retryMs = ms));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let stall = null;
    const watchdog = () => {
      clearTimeout(stall);
      if (timing.stallTimeoutMs > 0) stall = setTimeout(() => controller.abort(), timing.stallTimeoutMs);
    };
    try {
      watchdog();
      for (;;) {
        const { value, done: ended } = await reader.read();
        if (ended || stopped) break;
        watchdog();
        parser.feed(value);
        if (stopped) break;
      }
    } catch {
      // a dropped connection, a stall: resumed below by the last event id
    } finally {
      clearTimeout(stall);
      reader.cancel().catch(() => {});
    }
    return null;
  }

  const pause = (ms) =>
    new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    }).finally(() => (wakeUp = null));

  async function run() {
    setState("connecting");
    while (!stopped) {
      let delay = timing.retryMs;
      try {
        const outcome = await connectOnce();
        if (outcome === "ended") return close("ended");
        if (outcome instanceof JobProgressError) return close("error", outcome);
      } catch (error) {
        if (stopped) return;
        report(error instanceof JobProgressError ? error : networkError(error));
        failures += 1;
        delay = Math.max(
          Math.min(timing.retryMs * 2 ** (failures - 1), Math.max(timing.maxRetryMs, timing.retryMs)),
          error.retryAfterMs ?? 0,
        );
      }
      if (stopped) return;
      // The stream ended without the job's end (a restart, a lifetime, an expiring token):
      // wait what the server asked, a little more so that its clients do not come back at once.
      setState("reconnecting");
      await pause(delay * (1 + Math.random() / 2));
    }
  }

  run();
  return {
    jobId,
    stop: () => close("stopped"),
    get lastEventId() {
      return lastEventId;
    },
    get state() {
      return state;
    },
    done,
  };
}

function pick(object, names) {
  const given = names.filter((name) => typeof object[name] === "number");
  return Object.fromEntries(given.map((name) => [name, object[name]]));
}

// A callback that throws is the page's bug: it is reported, and the watch goes on.
function call(callback, ...args) {
  if (typeof callback !== "function") return;
  try {
    callback(...args);
  } catch (error) {
    if (typeof reportError === "function") reportError(error);
    else
      setTimeout(() => {
        throw error;
      });
  }
}
