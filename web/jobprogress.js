// jobprogress.js: follow jobs' progress from any page. An ES module, no build step, no
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
//
// Many jobs, one connection. `watchJobs([id, ...], options)` follows up to 50 jobs through
// one stream (GET /api/progress?job=...) until each has ended; `watchMine(options)` (or
// `watchJobs("mine", options)`) follows every job of the caller (GET /api/progress/mine),
// those submitted later too, and never ends by itself. Same options and qualities as
// watchJob; each event's data has `jobId`; the last id is the stream's compound id, which
// resumes every job at once.
//
// One connection for every tab. A browser opens at most six HTTP/1.1 connections per
// origin across all its tabs: the seventh stream hangs. With `watchMine({acrossTabs: true})`
// the tabs of one browser share ONE stream: the tab holding a Web Lock (navigator.locks)
// reads it and passes every event on over a BroadcastChannel; the others follow (`role`:
// `holder` or `follower`). Each tab keeps what it has seen (up to 1000 events per job, older
// ones folded into a `reset` holding the job's state; up to 100 jobs): a tab that joins is
// handed all of it by the holder, and when the holder closes or reloads, the next tab in line
// for the lock opens the stream again exactly after the last event it had, and the others
// take what it has seen. Whenever a tab is handed that history (on joining, and after a new
// holder took over), `onReplay()` is called first, then the history's events go to the `on`
// callbacks (job after job, each in its order): forget what you drew from the events before.
// `acrossTabs` may be a string naming whose jobs these are (say the signed-in user's id), so
// that tabs signed in as different users of one product never share a stream; `true` shares
// among all tabs of the page's origin that watch the same progress-service. Without Web
// Locks or BroadcastChannel, each tab has a stream of its own.
const TERMINAL = new Set(["complete", "failed", "cancelled"]);
// The caller's jobs: a stream that never ends by itself.
const MINE = { path: "api/progress/mine", query: [], ends: () => null };
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
  const source = {
    path: `api/progress/${encodeURIComponent(jobId)}`,
    query: options.share ? [["share", options.share]] : [],
    // The job's terminal event is the end of its stream.
    ends: (type) => (TERMINAL.has(type) ? type : null),
  };
  return watchStream(source, options, { jobId });
}

/**
 * Watch several jobs (1 to 50 ids) through one stream, `GET /api/progress?job=...`, until
 * each has ended (or `stop()`). The options of {@link watchJob}, but `lastEventId` is the
 * stream's compound ID (the `id` of its last event) and `share` applies to every job. Each
 * event's data has `jobId`. Returns `{jobIds, stop(), lastEventId, state, done}`; `done`
 * resolves to `ended` (every job has ended), `stopped` or `error`.
 */
export function watchJobs(jobIds, options = {}) {
  if (jobIds === "mine") return watchMine(options);
  const ids = [...new Set(jobIds ?? [])];
  if (!ids.length || ids.some((id) => typeof id !== "string" || !id)) {
    throw new TypeError("watchJobs needs job ids");
  }
  const running = new Set(ids);
  const source = {
    path: "api/progress",
    query: [...ids.map((id) => ["job", id]), ...(options.share ? [["share", options.share]] : [])],
    ends: (type, data) => {
      if (TERMINAL.has(type)) running.delete(data?.jobId);
      return running.size ? null : "ended";
    },
  };
  return watchStream(source, options, { jobIds: ids });
}

/**
 * Watch every job of the caller through one stream, `GET /api/progress/mine`: the
 * unfinished ones from the start of their logs, and each job submitted after it opened (from
 * its `status` QUEUED). It never ends by itself (`stop()` it). The options of
 * {@link watchJobs} (no `share`: an identity is needed), and `acrossTabs` (see the header):
 * `true`, or a string naming whose jobs these are, has the tabs of this browser share one
 * stream. Returns `{stop(), lastEventId, state, done}` (and `role` when shared).
 */
export function watchMine(options = {}) {
  if (options.acrossTabs && globalThis.navigator?.locks && globalThis.BroadcastChannel) {
    return shareAcrossTabs(options);
  }
  return watchStream(MINE, options);
}

/** Reads `source` ({path, query, ends(type, data)}: why an event ends the watch, or null)
 * with every quality of {@link watchJob}: what the three watches share. The handle has
 * `fields` besides its own. */
function watchStream(source, options, fields = {}) {
  const on = options.on ?? {};
  const timing = { ...DEFAULTS, ...pick(options, Object.keys(DEFAULTS)) };
  const base = baseOf(options.baseUrl);
  let lastEventId = options.lastEventId || "";
  let failures = 0;
  let controller = null;
  let wakeUp = null;
  const life = new Lifecycle(options, () => {
    controller?.abort();
    wakeUp?.();
    removeEventListener("online", wake);
    document.removeEventListener("visibilitychange", wake);
  });
  const setState = (next) => life.setState(next);
  let ending = null; // why the stream is over, once its last event has come
  const close = (reason, error) => life.close(ending ?? reason, error);

  const report = (error) => {
    if (!life.stopped) call(options.onError, error);
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
    ending = ending ?? source.ends(event.type, data);
    dispatch(on, { type: event.type, id: event.id, data }, () => life.stopped);
    if (ending) close(ending);
    return life.stopped;
  };

  async function connectOnce() {
    controller = new AbortController();
    const { signal } = controller;
    const url = new URL(source.path, base);
    for (const [name, value] of source.query) url.searchParams.append(name, value);
    if (lastEventId) url.searchParams.set("lastEventId", lastEventId);
    const token = await credentialOf(options);
    if (life.stopped) return null;
    let response;
    try {
      response = await fetch(url, requestInit(token, signal, "text/event-stream"));
    } catch (cause) {
      if (life.stopped) return null;
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
        if (ended || life.stopped) break;
        watchdog();
        parser.feed(value);
        if (life.stopped) break;
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
    while (!life.stopped) {
      let delay = timing.retryMs;
      try {
        const outcome = await connectOnce();
        if (outcome === "ended") return close("ended");
        if (outcome instanceof JobProgressError) return close("error", outcome);
      } catch (error) {
        if (life.stopped) return;
        report(error instanceof JobProgressError ? error : networkError(error));
        failures += 1;
        delay = Math.max(
          Math.min(timing.retryMs * 2 ** (failures - 1), Math.max(timing.maxRetryMs, timing.retryMs)),
          error.retryAfterMs ?? 0,
        );
      }
      if (life.stopped) return;
      // The stream ended before its end (a restart, a lifetime, an expiring token): wait
      // what the server asked, a little more so that its clients do not come back at once.
      setState("reconnecting");
      await pause(delay * (1 + Math.random() / 2));
    }
  }

  run();
  return life.handle(fields, () => close("stopped"), () => lastEventId);
}

/** What every watch has: its state (told to `onState`), its end (`done`, resolved once, to
 * why), and the handle it returns; `release()` frees what it holds when it closes. */
class Lifecycle {
  constructor(options, release) {
    this.options = options;
    this.release = release;
    this.state = null;
    this.stopped = false;
    this.done = new Promise((resolve) => (this.resolve = resolve));
  }

  setState(next) {
    if (next === this.state) return;
    this.state = next;
    call(this.options.onState, next);
  }

  close(reason, error) {
    if (this.stopped) return;
    this.stopped = true;
    this.release();
    if (error) call(this.options.onError, error);
    this.setState("closed");
    this.resolve(reason);
  }

  handle(fields, stop, lastEventId) {
    const handle = { ...fields, stop, done: this.done };
    return Object.defineProperties(handle, {
      lastEventId: { get: lastEventId, enumerable: true },
      state: { get: () => this.state, enumerable: true },
    });
  }
}

/** An event to the page's callbacks: its type's, then `on.any` (unless `stopped()` by then). */
function dispatch(on, event, stopped = () => false) {
  call(Object.hasOwn(on, event.type) ? on[event.type] : undefined, event.data, event);
  if (!stopped()) call(on.any, event.data, event);
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

// One `mine` stream for every tab of the browser: the tab holding a Web Lock reads it and
// passes each event on over a BroadcastChannel; the others follow. Every tab keeps what it
// has seen (History), so that it can hand it to a tab that joins, and so that it can take
// the stream over from exactly where it is when the holder goes.

const HISTORY_EVENTS = 1000; // per job
const HISTORY_JOBS = 100; // the stream follows the caller's 100 latest unfinished jobs

/** An event into a job's state, in the shape of the server's snapshot (`GET /api/jobs/{id}`):
 * `steps` as they stand, each metric key's latest `{value, step}`, counts of artifacts and
 * annotations; log lines leave no trace. */
function foldState(state, event) {
  const data = event.data ?? {};
  if (event.type === "log") return;
  if (event.type === "step") {
    const steps = (state.steps ?? []).filter((step) => step.stepId !== data.stepId);
    const at = (state.steps ?? []).findIndex((step) => step.stepId === data.stepId);
    const { jobId, ts, ...step } = data;
    steps.splice(at < 0 ? steps.length : at, 0, step);
    state.steps = steps;
  } else if (event.type === "metric") {
    state.metrics = { ...state.metrics };
    for (const { key, value } of data.metrics ?? []) state.metrics[key] = { value, step: data.step ?? null };
  } else if (event.type === "artifact" || event.type === "annotation") {
    const counts = `${event.type}s`;
    state[counts] = (state[counts] ?? 0) + 1;
  } else {
    Object.assign(state, data);
    if (event.type === "progress" && !Object.hasOwn(data, "etaSeconds")) delete state.etaSeconds;
  }
}

/** The events of the shared stream, job by job, for the tabs that join: at most
 * HISTORY_EVENTS per job (older ones fold into one `reset` whose data is the job's state as
 * they left it, as the server does for a position its log no longer holds), and at most
 * HISTORY_JOBS jobs (beyond, the oldest that has ended is forgotten). */
class History {
  constructor() {
    this.jobs = new Map();
  }

  add(event) {
    const jobId = event.data?.jobId;
    if (typeof jobId !== "string") return;
    let events = this.jobs.get(jobId);
    if (!events) {
      this.jobs.set(jobId, (events = []));
      this.forget();
    }
    if (event.type === "reset") events.length = 0;
    events.push(event);
    if (events.length > HISTORY_EVENTS) {
      const folded = events.splice(0, events.length - HISTORY_EVENTS + 1);
      const state = {};
      for (const old of folded) foldState(state, old);
      events.unshift({ type: "reset", id: folded.at(-1).id, data: state });
    }
  }

  forget() {
    if (this.jobs.size <= HISTORY_JOBS) return;
    for (const [jobId, events] of this.jobs) {
      if (TERMINAL.has(events.at(-1)?.type)) return void this.jobs.delete(jobId);
    }
  }

  all() {
    return [...this.jobs.values()].flat();
  }

  replace(events) {
    this.jobs.clear();
    for (const event of events) this.add(event);
  }
}

function shareAcrossTabs(options) {
  const on = options.on ?? {};
  const key = typeof options.acrossTabs === "string" ? options.acrossTabs : baseOf(options.baseUrl);
  const name = `jobprogress:mine:${key}`;
  const channel = new BroadcastChannel(name);
  const me = nonce();
  const history = new History();
  const quit = new AbortController();
  let lastEventId = options.lastEventId || "";
  let role = "follower";
  let stream = null; // the holder's own watch
  let asked = null; // the question a follower waits the history for
  const life = new Lifecycle(options, () => {
    quit.abort();
    stream?.stop();
    channel.close();
  });
  const setState = (next) => life.setState(next);
  const close = (reason, error) => life.close(reason, error);
  const post = (message) => life.stopped || channel.postMessage(message);
  const take = (event) => {
    history.add(event);
    lastEventId = event.id;
    dispatch(on, event, () => life.stopped);
  };
  const ask = () => {
    asked = nonce();
    post({ kind: "hello", from: me, nonce: asked });
  };

  channel.onmessage = ({ data: message }) => {
    if (life.stopped) return;
    if (role === "holder") {
      if (message.kind === "hello") {
        const { from: to, nonce: answering } = message;
        const events = history.all();
        post({ kind: "history", to, nonce: answering, events, lastEventId, state: life.state });
      }
    } else if (message.kind === "holder") {
      ask(); // a new holder: what it has seen is the truth from now on
    } else if (message.kind === "history") {
      if (message.to !== me || message.nonce !== asked) return;
      asked = null;
      history.replace(message.events);
      lastEventId = message.lastEventId;
      call(options.onReplay);
      for (const event of message.events) if (!life.stopped) dispatch(on, event, () => life.stopped);
      setState(message.state ?? "connecting");
    } else if (asked) {
      // the history asked for holds it
    } else if (message.kind === "event") {
      take(message.event);
    } else if (message.kind === "state") {
      setState(message.state);
    } else if (message.kind === "error") {
      const error = new JobProgressError(message.error.message, message.error);
      if (error.fatal) close("error", error);
      else call(options.onError, error);
    }
  };

  async function hold() {
    role = "holder";
    asked = null;
    post({ kind: "holder" });
    stream = watchStream(MINE, {
      ...options,
      lastEventId, // where this tab is: exactly what it has seen
      on: {
        any: (data, event) => {
          take(event);
          post({ kind: "event", event });
        },
      },
      onState: (next) => {
        setState(next);
        post({ kind: "state", state: next });
      },
      onError: (error) => {
        const { message, status, code, details, fatal } = error;
        post({ kind: "error", error: { message, status, code, details, fatal } });
        call(options.onError, error);
      },
    });
    close(await stream.done);
  }

  setState("connecting");
  ask(); // a holder already there answers with what it has seen
  navigator.locks
    .request(name, { signal: quit.signal }, () => (life.stopped ? null : hold()))
    .catch(() => {}); // stopped before its turn came
  const handle = life.handle({}, () => close("stopped"), () => lastEventId);
  return Object.defineProperty(handle, "role", { get: () => role, enumerable: true });
}

function nonce() {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`;
}
