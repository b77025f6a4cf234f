// sw.js: the page's service worker (a module: notify.js registers it with type "module").
// It shows a Web Push message about an ended job as a notification, unless a page of this
// site is in front of the user (that page shows the end itself), and a click on the
// notification brings up the job's page: a tab already on it, else a new one.
//
// A message is what job-queue-service pushes: {jobId, name, status, result|error, url}.

import { jobNotification } from "./notify.js";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

async function pageInFront() {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  return windows.some((client) => client.focused && client.visibilityState === "visible");
}

async function showPush(event) {
  let job = null;
  try {
    job = event.data?.json() ?? null;
  } catch {
    job = null; // not ours: nothing to show
  }
  if (!job || typeof job.jobId !== "string") return;
  if (await pageInFront()) return;
  const { title, options } = jobNotification(job);
  await self.registration.showNotification(title, options);
}

self.addEventListener("push", (event) => event.waitUntil(showPush(event)));

async function openJob(url) {
  const target = new URL(url ?? "./", self.registration.scope);
  if (target.origin !== self.location.origin) return null; // only pages of this site
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const open = windows.find((client) => client.url === target.href);
  if (open) return open.focus();
  return self.clients.openWindow(target.href);
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(openJob(event.notification.data?.url));
});
