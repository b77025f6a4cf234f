"""Screenshot the Consul UI showing the three services and their health.

Run through ``scripts/screenshot-consul-ui``. It starts a real stack on free ports (a private
``consul agent -dev``, whose UI is on, a private ``redis-server``, one job-queue-service, two
worker-service instances and one progress-service), waits until Consul lists every instance
as passing all its checks (the worker's HTTP ``/health`` check and the TTL check of its job
loop), then opens the agent's UI in Debian's headless Chromium, waits until the services list
shows each service healthy with its instance count, and writes a PNG of it and one of the
worker-service's instances. Everything it started is stopped again, also on error or Ctrl-C.

It prints what Consul and the UI showed (``ui: <service> passing, <n> Instances``); it exits
1 with the reason and the processes' logs when something did not come up.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect, sync_playwright

from jobprogress_testing import SERVICE_MODULES, Stack, StackError, consul_health, http_get

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SERVICES = tuple(SERVICE_MODULES)
WORKER = "worker-service"

#: Quick checks so the stack is green within seconds; a fixed key so no service warns.
STACK_ENV = {
    "JOBPROGRESS_ENV": "development",
    "JOBPROGRESS_CONSUL_CHECK_INTERVAL": "1",
    "JOBPROGRESS_CONSUL_RETRY_SECONDS": "1",
}


class ScreenshotError(RuntimeError):
    """The UI did not show what Consul's API says it should."""


class Interrupted(Exception):
    """SIGTERM (or SIGINT) arrived: stop everything and exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def viewport(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    try:
        size = int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if not all(320 <= side <= 4096 for side in size):
        raise argparse.ArgumentTypeError(f"each side must be within 320..4096, got {text!r}")
    return size


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/screenshot-consul-ui", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "docs/consul-ui.png", help="the services list (%(default)s)"
    )
    parser.add_argument(
        "--worker-output",
        type=Path,
        default=ROOT / "docs/consul-ui-worker.png",
        help="the worker-service's instances (%(default)s); an empty value skips it",
    )
    parser.add_argument("--workers", type=int, default=2, choices=range(1, 6), help="worker instances (2)")
    parser.add_argument("--viewport", type=viewport, default=(1280, 720), help="WIDTHxHEIGHT (1280x720)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each stage (60)")
    args = parser.parse_args(argv)
    if args.worker_output == Path(""):
        args.worker_output = None
    return args


def instance_counts(workers: int) -> dict[str, int]:
    return {service: workers if service == WORKER else 1 for service in SERVICES}


def start_stack(stack: Stack, workers: int, timeout: float) -> None:
    """Start Redis, Consul and the services (in parallel), and wait until all pass in Consul."""
    stack.start_backends()
    processes = [
        stack.start_service(service, wait=False)
        for service, count in instance_counts(workers).items()
        for _ in range(count)
    ]
    for process in processes:
        process.wait_healthy()
    stack.wait_passing(timeout)


def report_consul(stack: Stack, workers: int) -> None:
    """Check and print what Consul's health API says of each service: every instance of ours
    passing each of its checks, the worker's two (HTTP and TTL) included."""
    assert stack.consul_addr is not None
    for service, expected in instance_counts(workers).items():
        entries = consul_health(stack.consul_addr, service, passing=True)
        if len(entries) != expected:
            raise StackError(f"consul: {len(entries)} passing {service} instances, expected {expected}")
        kinds: set[str] = set()
        for entry in entries:
            checks = [check for check in entry["Checks"] if check["ServiceID"]]
            kinds.update(check.get("Type") or "?" for check in checks)
            if service == WORKER and len(checks) < 2:
                raise StackError(f"consul: {entry['Service']['ID']} has {len(checks)} checks, expected 2")
        print(f"consul: {service}: {expected} passing, checks: {', '.join(sorted(kinds))}", flush=True)


def datacenter(consul_addr: str) -> str:
    status, body = http_get(f"http://{consul_addr}/v1/agent/self")
    if status != 200:
        raise StackError(f"consul agent/self answered {status}")
    return str(json.loads(body)["Config"]["Datacenter"])


def settle(page: Page) -> None:
    """No focus ring on the autofocused search box, no tooltip under the pointer."""
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.mouse.move(0, 0)


def shoot_services(page: Page, ui: str, counts: dict[str, int], output: Path) -> None:
    page.goto(f"{ui}/services")
    for service, count in counts.items():
        link = page.locator(f'a[href$="/services/{service}/instances"]')
        row = page.locator("li.linkable").filter(has=link)
        health = row.locator("dl.passing")
        instances = row.get_by_text(f"{count} Instance{'s' if count > 1 else ''}", exact=True)
        try:
            expect(health).to_be_visible()
            expect(instances).to_be_visible()
        except AssertionError as exc:
            raise ScreenshotError(f"the UI does not show {service} passing with {count} instances") from exc
        print(f"ui: {service} passing, {instances.inner_text().strip()}", flush=True)
    save(page, output)


def shoot_instances(page: Page, ui: str, service: str, count: int, output: Path) -> None:
    page.goto(f"{ui}/services/{service}/instances")
    rows = page.locator(".consul-service-instance-list li").filter(
        has=page.locator(f'a[href*="/services/{service}/instances/"]')
    )
    try:
        expect(rows).to_have_count(count)
        for index in range(count):
            expect(rows.nth(index).locator("dl.passing", has_text="service checks passing")).to_be_visible()
    except AssertionError as exc:
        raise ScreenshotError(f"the UI does not show {count} passing {service} instances") from exc
    print(f"ui: {service} instances: {count} passing", flush=True)
    save(page, output)


def save(page: Page, output: Path) -> None:
    settle(page)
    page.screenshot(path=output, animations="disabled")
    print(f"wrote {output}", flush=True)


def shoot(args: argparse.Namespace, consul_addr: str) -> None:
    ui = f"http://{consul_addr}/ui/{datacenter(consul_addr)}"
    counts = instance_counts(args.workers)
    width, height = args.viewport
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(args.timeout * 1000)
            expect.set_options(timeout=args.timeout * 1000)
            shoot_services(page, ui, counts, args.output)
            if args.worker_output is not None:
                shoot_instances(page, ui, WORKER, args.workers, args.worker_output)
        finally:
            browser.close()


def interrupt(signum: int, frame: FrameType | None) -> None:
    # Once only: a second signal must not cut short the stopping of what was started.
    for each in (signal.SIGINT, signal.SIGTERM):
        signal.signal(each, signal.SIG_IGN)
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for path in (args.output, args.worker_output):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="jobprogress-consul-ui-") as workdir:
        env = {**STACK_ENV, "JOBPROGRESS_SECRET_KEY": secrets.token_urlsafe(32)}
        stack = Stack(Path(workdir), env=env)
        try:
            with stack.running():
                assert stack.consul_addr is not None
                print(f"consul agent -dev: http://{stack.consul_addr}/ui/", flush=True)
                start_stack(stack, args.workers, args.timeout)
                report_consul(stack, args.workers)
                shoot(args, stack.consul_addr)
        except (StackError, ScreenshotError, PlaywrightError, OSError) as exc:
            print(f"screenshot-consul-ui: failed: {exc}", file=sys.stderr)
            print(stack.logs(), file=sys.stderr)
            return 1
        except Interrupted as exc:
            print(f"screenshot-consul-ui: {exc}: stopped everything it started", file=sys.stderr)
            return 128 + exc.signum
    print(f"done in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
