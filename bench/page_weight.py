"""What the phone form costs on the wire, measured in real Chromium: the budgets of the resident form.

The browser talks to the real server (gunicorn) through a byte-counting TCP
proxy, so every byte counts: the page, its assets, the service worker's own
fetches and the API calls, headers included. Playwright's network events
name the requests; the proxy weighs them.

* **First load** of ``/report`` in a fresh profile, until the service worker
  has cached the shell: bytes down and up. Budget: ≤ 60 KB transferred.
* **Repeat load** (reload): bytes of the shell (page and assets) over the
  network. Budget: 0. The browser's own service-worker update check (a
  conditional GET of ``/sw.js``) is reported on its own line.
* **One report without a photo**: the sync batch request and its answer.
  Budget: ≤ 2 KB.
* **Regular 2G** (250 kbit/s down, 50 kbit/s up, 300 ms latency, set with the
  Chrome DevTools Protocol on the page): time until the form can be used
  (DOMContentLoaded: HTML, CSS and the deferred scripts done), and time to
  send a report with one photo (submit → report and photo stored). Each is
  set against its physical limit: the bytes it moved at the link's rate plus
  one latency per request.

Usage: ``make bench-page-weight`` (or ``DATABASE_URL=…/civicmap_page_bench python bench/page_weight.py``).
"""

from __future__ import annotations

import argparse
import io
import re
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as common  # also puts the repo on sys.path
import psycopg

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FIRST_LOAD_BUDGET = 60 * 1024
REPEAT_SHELL_BUDGET = 0
REPORT_BUDGET = 2 * 1024
REGULAR_2G = {"offline": False, "latency": 300, "downloadThroughput": 250_000 / 8, "uploadThroughput": 50_000 / 8}
GPS = {"latitude": 11.5639, "longitude": 104.9310, "accuracy": 9}
REQUEST_LINE = re.compile(rb"(GET|POST|PUT|HEAD|PATCH|DELETE) (\S+) HTTP/1\.[01]\r\n")


@dataclass
class Exchange:
    """One HTTP request on a proxied connection and the bytes each way (headers included)."""

    method: str
    path: str
    up: int = 0
    down: int = 0
    up_headers: int = 0

    @property
    def up_body(self) -> int:
        return self.up - self.up_headers


@dataclass
class ByteCounter:
    """A loopback TCP proxy that counts every byte, and splits the count by HTTP request (HTTP/1.1)."""

    target_port: int
    port: int = 0
    exchanges: list[Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ByteCounter:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._server.close()

    def reset(self) -> list[Exchange]:
        with self._lock:
            taken, self.exchanges = self.exchanges, []
        return taken

    def snapshot(self) -> list[Exchange]:
        with self._lock:
            return list(self.exchanges)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _addr = self._server.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            current: list[Exchange | None] = [None]
            threading.Thread(target=self._pump, args=(client, upstream, current, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, current, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, current: list[Exchange | None], up: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                with self._lock:
                    if up:
                        match = REQUEST_LINE.search(data)
                        if match:  # a new request on this connection (Chromium does not pipeline)
                            current[0] = Exchange(match.group(1).decode(), match.group(2).decode())
                            end = data.find(b"\r\n\r\n", match.start())
                            if end >= 0:  # Chromium writes a request's headers in one piece
                                current[0].up_headers = end + 4 - match.start()
                            self.exchanges.append(current[0])
                    exchange = current[0]
                    if exchange is not None:
                        if up:
                            exchange.up += len(data)
                        else:
                            exchange.down += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            source.close()  # each socket is the source of exactly one pump, so each is closed once


def settle(counter: ByteCounter, quiet: float = 1.0, timeout: float = 30.0) -> None:
    """Wait until no byte has moved for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        total = sum(e.up + e.down for e in counter.snapshot()) + len(counter.snapshot())
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


def wait_offline_ready(page: Any, timeout_ms: int = 30_000) -> None:
    """Until a service worker controls the page and its shell (this page, in this language) is cached."""
    page.wait_for_function("""async () => {
        if (!navigator.serviceWorker || !navigator.serviceWorker.controller) return false;
        for (const name of await caches.keys()) {
            const keys = await (await caches.open(name)).keys();
            if (keys.some(r => new URL(r.url).pathname === location.pathname)) return true;
        }
        return false;
    }""", timeout=timeout_ms, polling=200)


def stored(libpq_url: str, description: str) -> tuple[int, int]:
    """(reports with this description, photos linked to them)."""
    with psycopg.connect(libpq_url) as conn:
        row = conn.execute("SELECT count(DISTINCT r.id), count(rp.photo_sha256) FROM reports r "
                           "LEFT JOIN report_photos rp ON rp.report_id = r.id WHERE r.description = %s",
                           (description,)).fetchone()
    return int(row[0]), int(row[1])


def wait_stored(libpq_url: str, description: str, photos: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if stored(libpq_url, description) == (1, photos):
            return time.monotonic()
        time.sleep(0.1)
    raise common.BenchError(f"the report {description!r} was not stored with {photos} photo(s) in {timeout:.0f} s")


def camera_photo(path: Path, seed: int, width: int = 3264, height: int = 2448) -> int:
    """A phone-camera-sized JPEG (8 MP, textured like a street scene) with EXIF GPS; returns its size.

    Each run needs its own picture: a photo the server already holds is never sent again.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 127 // (width + height)) + 60], axis=-1)
    texture = rng.normal(0, 18, (height // 8, width // 8, 3)).repeat(8, 0).repeat(8, 1)
    pixels = np.clip(base + texture, 0, 255).astype("uint8")
    image = Image.fromarray(pixels, "RGB")
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (11.0, 33.0, 50.0), "E", (104.0, 55.0, 51.0)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif)
    path.write_bytes(out.getvalue())
    return len(out.getvalue())


def fill_report(page: Any, description: str, photo: Path | None = None) -> None:
    page.locator("input[name=category][value='waste.overflowing_bin']").check()
    page.click("#gps-button")
    page.wait_for_function("document.querySelector('#lon').value !== ''", timeout=20_000)
    page.fill("#description", description)
    if photo is not None:
        page.set_input_files("#photo", str(photo))
        page.wait_for_selector("#photo-previews img", timeout=60_000)


def _sum(exchanges: list[Exchange], *, paths: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> tuple[int, int]:
    chosen = [e for e in exchanges if (not paths or e.path.startswith(paths)) and not e.path.startswith(exclude)]
    return sum(e.down for e in chosen), sum(e.up for e in chosen)


def measure(base_url: str, libpq_url: str, *, throttled: bool = True, runs: int = 1) -> dict[str, Any]:
    """Every figure of the budgets, from one server at ``base_url`` whose database is ``libpq_url``."""
    from playwright.sync_api import sync_playwright

    port = int(base_url.rsplit(":", 1)[1])
    results: dict[str, Any] = {"requests": {}}
    with ByteCounter(port) as counter, sync_playwright() as playwright, tempfile.TemporaryDirectory() as tmp:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(geolocation=GPS, permissions=["geolocation"], locale="km-KH",
                                          viewport={"width": 360, "height": 740})
            page = context.new_page()

            # 1. First load, until the service worker holds the shell.
            counter.reset()
            page.goto(f"{counter.url}/report", wait_until="load")
            wait_offline_ready(page)
            settle(counter)
            first = counter.reset()
            results["first_load_down"], results["first_load_up"] = _sum(first)
            results["requests"]["first_load"] = [(e.method, e.path, e.down, e.up) for e in first]

            # 2. Repeat load: the shell must come from the service worker.
            page.reload(wait_until="load")
            settle(counter)
            repeat = counter.reset()
            shell = tuple(("/report", "/static/"))
            results["repeat_shell_down"], results["repeat_shell_up"] = _sum(repeat, paths=shell)
            results["repeat_sw_check_down"], results["repeat_sw_check_up"] = _sum(repeat, paths=("/sw.js",))
            results["repeat_other_down"], results["repeat_other_up"] = _sum(repeat, exclude=shell + ("/sw.js",))
            results["requests"]["repeat"] = [(e.method, e.path, e.down, e.up) for e in repeat]

            # 3. One report without a photo.
            description = f"ធុងសំរាមពេញ bench {time.time_ns()}"
            fill_report(page, description)
            settle(counter, quiet=0.5)
            counter.reset()
            page.click("#submit")
            wait_stored(libpq_url, description, 0, 30)
            settle(counter)
            sent = counter.reset()
            results["report_down"], results["report_up"] = _sum(sent, paths=("/api/v1/sync/batches",))
            results["report_all_down"], results["report_all_up"] = _sum(sent)
            results["requests"]["report"] = [(e.method, e.path, e.down, e.up) for e in sent]
            context.close()

            if throttled:
                usable, sends, sizes = [], [], []
                for run in range(runs):
                    photo = Path(tmp) / f"camera-{run}.jpg"
                    sizes.append(camera_photo(photo, seed=time.time_ns()))
                    usable_s, send = _on_regular_2g(browser, counter, libpq_url, photo)
                    usable.append(usable_s)
                    sends.append(send)
                results["g2_usable_runs_s"] = usable
                results["g2_usable_s"] = common.median(u["usable_s"] for u in usable)
                results["g2_usable_limit_s"] = common.median(u["limit_s"] for u in usable)
                results["g2_send_runs"] = sends
                results["g2_send_s"] = common.median(s["send_s"] for s in sends)
                results["g2_send_limit_s"] = common.median(s["limit_s"] for s in sends)
                results["g2_photo_up_bytes"] = common.median(s["photo_up"] for s in sends)
                results["camera_photo_bytes"] = common.median(sizes)
        finally:
            browser.close()
    return results


def _link_limit(down: int, up: int, rounds: int) -> float:
    """The least time Regular 2G allows: body bytes at its rates plus one latency per round of requests.

    Chrome's emulation throttles bodies, not headers, so ``down`` and ``up``
    are what it throttles: response bodies down, request bodies up.
    """
    return down * 8 / 250_000 + up * 8 / 50_000 + rounds * REGULAR_2G["latency"] / 1000


def _on_regular_2g(browser: Any, counter: ByteCounter, libpq_url: str, photo: Path) -> tuple[dict[str, float],
                                                                                              dict[str, float]]:
    context = browser.new_context(geolocation=GPS, permissions=["geolocation"], locale="km-KH",
                                  viewport={"width": 360, "height": 740})
    try:
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", REGULAR_2G)
        counter.reset()
        page.goto(f"{counter.url}/report", wait_until="domcontentloaded", timeout=120_000)
        usable_s = page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd") / 1000
        # What DOMContentLoaded waits for: the page, then its stylesheet and deferred scripts side by side.
        needed = page.evaluate("""() => [performance.getEntriesByType('navigation')[0],
            ...performance.getEntriesByType('resource').filter(r => /\\.(css|js)(\\?|$)/.test(r.name)
                && r.initiatorType !== 'fetch' && r.responseEnd <= performance.getEntriesByType('navigation')[0]
                .domContentLoadedEventEnd)].reduce((sum, r) => sum + r.encodedBodySize, 0)""")
        usable = {"usable_s": usable_s, "limit_s": _link_limit(needed, 0, 2), "bytes_down": needed}
        wait_offline_ready(page, timeout_ms=120_000)
        settle(counter)

        description = f"ផ្លូវលិចទឹក 2G {time.time_ns()}"
        fill_report(page, description, photo)
        settle(counter, quiet=0.5)
        counter.reset()
        start = time.monotonic()
        page.click("#submit")
        done = wait_stored(libpq_url, description, 1, 600)
        exchanges = counter.reset()
        sync = [e for e in exchanges if e.path.startswith("/api/v1/sync/")]
        photo_up = sum(e.up_body for e in sync if e.method == "PUT")
        batch_up = sum(e.up_body for e in sync if e.method == "POST")
        # Body bytes only (see _link_limit): the photo's pieces and the batch; the answers are tiny.
        send = {"send_s": done - start, "limit_s": _link_limit(0, photo_up + batch_up, len(sync)),
                "photo_up": photo_up, "requests": len(sync)}
        return usable, send
    finally:
        context.close()


def report(results: dict[str, Any]) -> None:
    kb = 1024
    rows = [
        ("first load of /report, down", f"{results['first_load_down'] / kb:.1f} KB", f"{FIRST_LOAD_BUDGET / kb:.0f} KB",
         f"{results['first_load_down'] / FIRST_LOAD_BUDGET:.2f}"),
        ("first load of /report, up", f"{results['first_load_up'] / kb:.1f} KB", "", ""),
        ("repeat load: shell bytes", f"{results['repeat_shell_down'] + results['repeat_shell_up']} B",
         f"{REPEAT_SHELL_BUDGET} B", ""),
        ("repeat load: /sw.js update check", f"{results['repeat_sw_check_down'] + results['repeat_sw_check_up']} B",
         "", ""),
        ("repeat load: other requests", f"{results['repeat_other_down'] + results['repeat_other_up']} B", "", ""),
        ("report without photo (batch up+down)", f"{results['report_down'] + results['report_up']} B",
         f"{REPORT_BUDGET} B", f"{(results['report_down'] + results['report_up']) / REPORT_BUDGET:.2f}"),
    ]
    common.print_table(["measure", "value", "budget", "of budget"], rows)
    if "g2_usable_s" in results:
        print()
        common.print_table(["Regular 2G", "median", "physical limit", "ratio"], [
            ("form usable (DOMContentLoaded)", f"{results['g2_usable_s']:.2f} s", f"{results['g2_usable_limit_s']:.2f} s",
             f"{results['g2_usable_s'] / results['g2_usable_limit_s']:.2f}"),
            (f"send report + 1 photo ({results['g2_photo_up_bytes'] / kb:.0f} KB up; camera file "
             f"{results['camera_photo_bytes'] / kb:.0f} KB)", f"{results['g2_send_s']:.1f} s",
             f"{results['g2_send_limit_s']:.1f} s", f"{results['g2_send_s'] / results['g2_send_limit_s']:.2f}"),
        ])
    print()
    for phase, exchanges in results["requests"].items():
        print(f"{phase}: " + ", ".join(f"{m} {p.split('?')[0]} {d}↓/{u}↑" for m, p, d, u in exchanges))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="Regular 2G runs (median)")
    parser.add_argument("--no-2g", action="store_true", help="skip the throttled runs")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import intake  # the server helpers of bench/intake.py

    args = parse_args(argv)
    sa_url, libpq_url = common.database_urls()
    common.prepare_database(sa_url, fresh=False)
    port = intake.free_port()
    log = Path(tempfile.mkdtemp()) / "gunicorn.log"
    server = intake.start_server(sa_url, port, 2, log)
    try:
        intake.wait_healthy(server, port, log)
        results = measure(f"http://127.0.0.1:{port}", libpq_url, throttled=not args.no_2g, runs=args.runs)
    finally:
        intake.stop_server(server)
    print(common.describe(common.machine_facts()))
    report(results)
    common.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
