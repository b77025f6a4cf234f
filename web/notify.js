// notify.js: tell the user when a job ends, even when they are not looking. An ES module,
// no build step, no dependencies, and nothing of the page's own code:
//
//   import { enableNotifications, enablePush, notifyJobEnded } from "./notify.js";
//   enableNotifications(document.getElementById("notify"));  // a button: asks on a click only
//   enablePush(document.getElementById("push"));              // the same, for closed tabs too
//   notifyJobEnded({ jobId, name, status, result, error, ts }); // from the terminal event
//
// Two layers. While a tab is open but hidden, notifyJobEnded() shows a notification with
// the Notification API (or the service worker's showNotification where the constructor is
// not allowed, as on Android). When no tab is open, the server pushes the job's end (Web
// Push) to the service worker sw.js, which shows the same notification. The tag is the job's
// id, so repeats (the page and a push, two tabs) replace each other rather than pile up.
//
// Permission is asked only when the user clicks one of the buttons, never on load.

const STATUS_WORDS = { COMPLETED: "completed", FAILED: "failed", CANCELLED: "cancelled" };
// A terminal event older than this is a replay (a page opened on a job that had ended).
const FRESH_MS = 10 * 60 * 1000;

// The notification of an ended job: used by the page and by the service worker alike.
export function jobNotification(job) {
  const name = job.name || `Job ${String(job.jobId).slice(0, 8)}`;
  const word = STATUS_WORDS[job.status] ?? String(job.status ?? "ended").toLowerCase();
  const body = job.status === "COMPLETED" ? (job.result ?? "") : (job.error ?? (job.status === "CANCELLED" ? "Cancelled" : ""));
  const url = job.url ?? `index.html?job=${encodeURIComponent(job.jobId)}`;
  return {
    title: `${name} ${word}`,
    options: {
      body: String(body).slice(0, 500),
      tag: `job-${job.jobId}`,
      icon: new URL("favicon.svg", import.meta.url).href,
      data: { jobId: job.jobId, url: new URL(url, import.meta.url).href },
    },
  };
}

function supported() {
  return typeof Notification !== "undefined";
}

const LABELS = {
  default: "Notify me when a job ends",
  granted: "Notifications are on",
  denied: "Notifications are blocked",
};

// Wire `button` to ask for notification permission, on a click only. It shows the state;
// hidden where there are no notifications. Resolves to the permission once clicked.
export function enableNotifications(button) {
  if (!supported()) {
    button.hidden = true;
    return;
  }
  const show = () => {
    button.textContent = LABELS[Notification.permission] ?? LABELS.default;
    button.disabled = Notification.permission !== "default";
    button.setAttribute("aria-pressed", String(Notification.permission === "granted"));
  };
  button.addEventListener("click", async () => {
    await Notification.requestPermission();
    show();
  });
  show();
}

// Show that `job` ({jobId, name, status, result, error, ts}) ended, if this tab is hidden,
// notifications are allowed and the event is not a replay of an old end. The notification
// (or null when none is shown).
export async function notifyJobEnded(job) {
  if (!supported() || Notification.permission !== "granted") return null;
  if (document.visibilityState !== "hidden") return null;
  if (job.ts && Date.now() - Date.parse(job.ts) > FRESH_MS) return null;
  const { title, options } = jobNotification(job);
  try {
    const notification = new Notification(title, options);
    notification.addEventListener("click", () => {
      window.focus();
      notification.close();
    });
    return notification;
  } catch (error) {
    // Android: "Illegal constructor", only a service worker may show one.
    const registration = await navigator.serviceWorker?.getRegistration();
    if (!registration) throw error;
    await registration.showNotification(title, options);
    return (await registration.getNotifications({ tag: options.tag }))[0] ?? null;
  }
}

function keyBytes(base64url) {
  const text = atob(base64url.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(text, (char) => char.charCodeAt(0));
}

function sameKey(subscription, key) {
  const current = subscription.options?.applicationServerKey;
  if (!current) return true;
  const bytes = new Uint8Array(current);
  return bytes.length === key.length && bytes.every((byte, i) => byte === key[i]);
}

async function postSubscription(subscription, apiBase) {
  const response = await fetch(`${apiBase}/api/push/subscriptions`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(subscription.toJSON()),
  });
  if (!response.ok) throw new Error(`subscribing failed: HTTP ${response.status}`);
}

// Register the service worker sw.js, subscribe to Web Push with the server's VAPID key and
// send the subscription to the server, when `button` is clicked. On load it asks nothing:
// where permission was granted and a subscription exists, it is sent again (which keeps
// it from expiring on the server). Hidden where Web Push is missing or off on the server.
export async function enablePush(button, { apiBase = "" } = {}) {
  if (!supported() || !("serviceWorker" in navigator) || !("PushManager" in window)) {
    button.hidden = true;
    return;
  }
  const answer = await fetch(`${apiBase}/api/push/key`, { credentials: "same-origin" }).then((r) => r.json());
  if (!answer.enabled) {
    button.hidden = true;
    return;
  }
  const key = keyBytes(answer.publicKey);
  const register = () => navigator.serviceWorker.register(new URL("sw.js", import.meta.url), { type: "module" });
  const show = (state) => {
    button.textContent = { on: "Push notifications are on", off: "Notify me even when closed", blocked: "Notifications are blocked" }[state];
    button.disabled = state !== "off";
  };
  const subscribe = async () => {
    const registration = await register();
    await navigator.serviceWorker.ready;
    let subscription = await registration.pushManager.getSubscription();
    if (subscription && !sameKey(subscription, key)) {
      await subscription.unsubscribe(); // made for another server key: useless now
      subscription = null;
    }
    subscription ??= await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    await postSubscription(subscription, apiBase);
    show("on");
  };
  button.addEventListener("click", async () => {
    if ((await Notification.requestPermission()) !== "granted") {
      show("blocked");
      return;
    }
    try {
      await subscribe();
    } catch (error) {
      button.title = String(error.message ?? error);
      show("off");
    }
  });
  show(Notification.permission === "denied" ? "blocked" : "off");
  if (Notification.permission === "granted") {
    const registration = await navigator.serviceWorker.getRegistration(new URL("./", import.meta.url));
    const subscription = await registration?.pushManager.getSubscription();
    if (subscription && sameKey(subscription, key)) {
      await postSubscription(subscription, apiBase).then(() => show("on"), () => show("off"));
    }
  }
}

// Forget this browser's subscription, here and on the server.
export async function disablePush({ apiBase = "" } = {}) {
  const registration = await navigator.serviceWorker?.getRegistration(new URL("./", import.meta.url));
  const subscription = await registration?.pushManager.getSubscription();
  if (!subscription) return false;
  await fetch(`${apiBase}/api/push/subscriptions`, {
    method: "DELETE",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ endpoint: subscription.endpoint }),
  });
  return subscription.unsubscribe();
}
