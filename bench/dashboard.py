"""The dashboard under load: prints JSON.

A server with 100,000 tasks in its registry (``--tasks``), the dashboard (``GET /``)
open in Debian's chromium as an admin, and 50 progress updates a second
(``--rate``) arriving over REST for the tasks on its first page, for 10 minutes
(``--minutes``). Measured:

- ``first_paint``: from the start of navigation to the first page of rows shown
  (the page's own clock, ``performance.now()``), for a cold and a warm load;
- ``update_visible``: from the start of an update's request to the row showing its
  new ``NN%`` (a MutationObserver in the page stamps each change with
  ``Date.now()``; the same machine's clock). The request's start, not its answer:
  the change is committed and sent to the page before the answer returns. p50/p99/
  max, and updates never shown;
- ``memory``: the page's live JS heap after a forced garbage collection, its DOM
  nodes and listeners (Chrome DevTools), every 30 s: a leak shows as growth after
  warm-up. What the page recorded for the measurement is taken out of it first.

The load generator and the browser share the machine's two cores with the server.
``--quick``: 5,000 tasks, 1 minute. Everything runs on loopback; the browser may
reach nothing else.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import (  # noqa: E402
    BENCH_KEY,
    SERVE_ENV,
    build_dataset,
    log,
    percentiles,
    serve_argv,
)
from tests.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.procs import running  # noqa: E402

#: The dashboard keeps its key in the tab's sessionStorage under this name.
KEY_STORAGE = "spectral.apiKey"
ROWS = "#tasks tbody tr[data-task-id]"

#: Stamps every change of a row's percentage with the page's clock.
OBSERVER = """
() => {
  window.__changes = [];
  const body = document.querySelector("#tasks tbody");
  const stamp = (row, now) => {
    const pct = row.querySelector(".pct");
    if (pct) window.__changes.push([row.dataset.taskId, pct.textContent, now]);
  };
  new MutationObserver((records) => {
    const now = Date.now();
    for (const record of records) {
      const node = record.target.nodeType === 3 ? record.target.parentElement : record.target;
      const row = node && node.closest && node.closest("tr[data-task-id]");
      if (row) stamp(row, now);
      for (const added of record.addedNodes) {  // a row drawn anew (a re-rendered page)
        if (added.nodeType !== 1) continue;
        if (added.matches("tr[data-task-id]")) stamp(added, now);
        added.querySelectorAll("tr[data-task-id]").forEach((r) => stamp(r, now));
      }
    }
  }).observe(body, { subtree: true, childList: true, characterData: true });
}
"""


def metrics(cdp: Any) -> dict[str, float]:
    """The page's heap, nodes and listeners."""
    values = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return {
        "js_heap_mib": round(values["JSHeapUsedSize"] / 2**20, 2),
        "nodes": values["Nodes"],
        "listeners": values["JSEventListeners"],
    }


def send_updates(
    url: str, ids: list[str], rate: float, sent: list[tuple[str, str, float]], stop: Any
) -> None:
    """``rate`` progress updates a second, round-robin over ``ids``, until ``stop``;
    records when each request started (ms): the change is committed, and the feed
    sends it, before the answer comes back."""
    interval = 1 / rate
    count = 0
    started = time.monotonic()
    with httpx.Client(base_url=url, headers={"X-API-Key": BENCH_KEY}, timeout=30) as http:
        while not stop.is_set():
            task_id = ids[count % len(ids)]
            value = 1 + (count // len(ids)) % 99  # each task's value changes every round
            at = time.time() * 1000
            answer = http.post("/tasks/updateProgress", json={"taskId": task_id, "progress": value})
            answer.raise_for_status()
            sent.append((task_id, f"{value}%", at))
            count += 1
            stop.wait(max(0.0, started + count * interval - time.monotonic()))


def first_paint(page: Any, url: str) -> float:
    """Navigate to the dashboard; ms (page clock) until the first page of rows shows."""
    page.goto(url)
    page.wait_for_selector(ROWS, timeout=120_000)
    return round(float(page.evaluate("performance.now()")), 1)


def drive(url: str, minutes: float, rate: float) -> dict[str, Any]:
    """The browser session and the updates, on one thread (Playwright's sync API)."""
    from playwright.sync_api import sync_playwright

    results: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        elsewhere: list[str] = []

        def route(request_route: Any) -> None:
            if request_route.request.url.startswith(url):
                request_route.continue_()
            else:
                elsewhere.append(request_route.request.url)
                request_route.abort()

        context.route("**/*", route)
        context.add_init_script(f"sessionStorage.setItem({json.dumps(KEY_STORAGE)}, "
                                f"{json.dumps(BENCH_KEY)})")  # fmt: skip
        page = context.new_page()
        results["first_paint_ms"] = {"cold": first_paint(page, url + "/")}
        page.reload()
        page.wait_for_selector(ROWS, timeout=120_000)
        results["first_paint_ms"]["warm"] = round(float(page.evaluate("performance.now()")), 1)
        ids = page.eval_on_selector_all(ROWS, "rows => rows.map(r => r.dataset.taskId)")
        page.evaluate(OBSERVER)
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        changes: list[list[Any]] = []

        def sample(minute: float) -> dict[str, Any]:
            """Take the page's recorded changes (so they do not weigh on its heap), collect
            garbage, and read the heap, nodes and listeners."""
            changes.extend(page.evaluate("window.__changes.splice(0)"))
            cdp.send("HeapProfiler.collectGarbage")
            return {"minute": round(minute, 2), **metrics(cdp)}

        samples = [sample(0.0)]
        sent: list[tuple[str, str, float]] = []
        stop = threading.Event()
        updater = threading.Thread(target=send_updates, args=(url, ids, rate, sent, stop))
        started = time.monotonic()
        updater.start()
        try:
            while (elapsed := time.monotonic() - started) < 60 * minutes:
                page.wait_for_timeout(min(30.0, 60 * minutes - elapsed) * 1000)
                samples.append(sample((time.monotonic() - started) / 60))
        finally:
            stop.set()
            updater.join()
        page.wait_for_timeout(3000)  # let the last ones show
        samples.append(sample((time.monotonic() - started) / 60))
        browser.close()
    # A row shows the same text again later (99 values per task, cycled): each update
    # is matched with the first time its row showed its text after the request began.
    shown: dict[tuple[str, str], list[float]] = {}
    for task_id, text, at in changes:
        shown.setdefault((task_id, text), []).append(at)
    for times in shown.values():
        times.sort()
    latencies = []
    for task_id, text, at in sent:
        times = shown.get((task_id, text), [])
        index = bisect.bisect_left(times, at)
        if index < len(times):
            latencies.append((times[index] - at) / 1000)
    results["updates"] = {
        "sent": len(sent),
        "sent_per_s": round(len(sent) / (60 * minutes), 1),
        "rate_per_s": rate,
        "rows_updated": len(ids),
        "never_shown": len(sent) - len(latencies),
    }
    results["update_visible"] = percentiles(latencies)
    results["memory"] = samples
    results["requests_elsewhere"] = elsewhere
    return results


async def main_async(base: Path, tasks: int, minutes: float, rate: float) -> dict[str, Any]:
    """Build (or reuse) the dataset, serve it, drive the dashboard."""
    data_dir = base / f"bench-http-dataset-{tasks}"
    await build_dataset(data_dir, tasks)
    async with running(serve_argv(data_dir), env=SERVE_ENV) as server:
        log(f"dashboard: {tasks} tasks, {rate}/s for {minutes} min")
        results = await trio.to_thread.run_sync(drive, server.url, minutes, rate)
    return {"tasks": tasks, "minutes": minutes, **results}


def main() -> None:
    """Parse flags, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5,000 tasks, 1 minute")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50.0, help="updates per second")
    parser.add_argument("--dir", help="where datasets are kept (default: a temp dir)")
    args = parser.parse_args()
    tasks, minutes = (5_000, 1.0) if args.quick else (args.tasks, args.minutes)
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(args.dir) if args.dir else Path(scratch)
        results = trio.run(main_async, base, tasks, minutes, args.rate)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
