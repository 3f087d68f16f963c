"""The staff dashboard at a million reports: page latency against the bare rollup reads, side by side in one run.

Needs a database holding many reports (the figures in docs/benchmarks.md are
for ``civicmap seed --count 1000000``) migrated to 0007; ``make
bench-dashboard`` makes one. It creates a planner (``civicmap user add``),
starts the real server (``civicmap run``: gunicorn, threaded workers), signs
in through the staff form and measures, one request at a time (a browser's
view, not throughput):

* **refresh**: every rollup, refreshed ``CONCURRENTLY`` by ``service.rollup.refresh`` (the tile
  rollup too, so no background refresh starts during the run; ``--no-refresh`` keeps them as they
  are and runs the server with ``ROLLUP_MAX_AGE_SECONDS=0``).
* **dashboard**: ``GET /staff/dashboard`` with several filter combinations,
  and its two CSV downloads. Each is paired with its physical limit: the bare
  psycopg reads of the same rollup rows (``stats_queries.figures_statement``,
  ``weekly_statement`` and ``refreshed_at``: everything the page reads that
  holds figures). Goal: p95 ≤ 500 ms at 1M reports.
* **what the rollups save**: the same khan figures counted live from the
  reports table (``layer_queries.area_stats_statement``, the counts and
  medians ``/api/v1/layers/areas`` computes), a few times.
* **neighbours**: ``/staff/reports`` (the triage queue) and the planner maps
  ``/map`` and ``/staff/map``; a path the server does not have (404) is
  skipped with a note.

Usage: ``DATABASE_URL=postgresql://postgres@127.0.0.1/civicmap_layers_bench python bench/dashboard.py``
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import re
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import _common as common  # also puts the repo on sys.path
import intake  # the server helpers of bench/intake.py
import psycopg

from service import layer_queries as lq
from service import rollup
from service import stats_queries as sq
from service.queries import AreaRef, ReportFilters

PLANNER = "bench-dashboard-planner"


@dataclass(frozen=True)
class Combo:
    """A dashboard view: the page's filters, and the scope the page reads for them."""

    area: str | None = None
    group: str | None = None
    period: str = "90d"
    sort: str | None = None
    kind: str = "page"  # page, statistics.csv or weekly.csv

    def path(self) -> str:
        query = urlencode({k: v for k, v in (("area", self.area), ("group", self.group), ("period", self.period),
                                              ("sort", self.sort)) if v})
        base = "/staff/dashboard" if self.kind == "page" else f"/staff/dashboard/{self.kind}"
        return f"{base}?{query}"


COMBOS = (
    Combo(),                                                   # the default: every city, 90 days
    Combo(area="PP", period="all"),                            # the longest weekly chart
    Combo(area="PP-chamkar-mon", group="flooding", period="12m"),  # a khan's sangkats, one category
    Combo(area="SV", period="30d", sort="ack"),
    Combo(area="PP", period="12m", kind="statistics.csv"),
    Combo(period="all", kind="weekly.csv"),                    # the largest CSV
)
NEIGHBOURS = ("/staff/reports", "/map", "/staff/map")


class Browser:
    """One keep-alive connection with a cookie jar that, like a browser, sends the staff cookie under /staff only."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.cookies: dict[str, tuple[str, str]] = {}  # name → (value, path)

    def request(self, method: str, path: str, body: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
        sent = {"Accept-Encoding": "identity", **(headers or {})}
        jar = "; ".join(f"{k}={v}" for k, (v, scope) in self.cookies.items() if path.startswith(scope))
        if jar:
            sent["Cookie"] = jar
        try:
            self.conn.request(method, path, body=body, headers=sent)
            response = self.conn.getresponse()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self.conn.request(method, path, body=body, headers=sent)
            response = self.conn.getresponse()
        data = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            scope = re.search(r"(?i);\s*path=([^;]+)", header)
            self.cookies[name.strip()] = (value, scope.group(1).strip() if scope else "/")
        return response.status, data, response

    def get(self, path: str) -> tuple[int, bytes]:
        status, data, _response = self.request("GET", path)
        return status, data

    def sign_in(self, username: str, password: str) -> None:
        status, page = self.get("/staff/login")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', page)
        if status != 200 or token is None:
            raise common.BenchError(f"the sign-in page gave {status} without a CSRF token")
        form = urlencode({"csrf_token": token.group(1).decode(), "username": username, "password": password})
        status, _data, response = self.request("POST", "/staff/login", form,
                                               {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 303:
            raise common.BenchError(f"signing in as {username} gave {status}")


def add_planner(sa_url: str, libpq_url: str) -> str:
    """A fresh planner account (any left by an earlier run is removed first), made by ``civicmap user add``."""
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        conn.execute("DELETE FROM api_tokens WHERE user_id IN (SELECT id FROM users WHERE username = %s)", (PLANNER,))
        conn.execute("DELETE FROM users WHERE username = %s", (PLANNER,))
    password = secrets.token_urlsafe(16)
    civicmap = Path(sys.executable).parent / "civicmap"
    result = subprocess.run([str(civicmap), "user", "add", PLANNER, "--role", "planner", "--password-stdin"],
                            input=password + "\n", capture_output=True, text=True, cwd=common.REPO,
                            env=dict(os.environ, DATABASE_URL=sa_url))
    if result.returncode != 0:
        raise common.BenchError(f"civicmap user add failed: {result.stderr or result.stdout}")
    return password


def scope_of(conn: psycopg.Connection[Any], combo: Combo) -> sq.Scope:
    city_id = district_id = None
    if combo.area:
        area_id, level, parent_id = conn.execute("SELECT id, level, parent_id FROM areas WHERE code = %s",
                                                 (combo.area,)).fetchone()
        city_id, district_id = (area_id, None) if level == "city" else (parent_id, area_id)
    return sq.Scope(days=sq.PERIODS[combo.period], city_id=city_id, district_id=district_id, group=combo.group)


def raw_read(conn: psycopg.Connection[Any], scope: sq.Scope) -> int:
    """Everything with figures the page reads, as bare psycopg fetches; returns the rows fetched."""
    as_of = sq.refreshed_at(conn)
    own, children = sq.figures(conn, scope)
    weeks = sq.weekly(conn, scope, sq.first_week(as_of, scope.days) if as_of else None)
    return len(children) + (own is not None) + len(weeks)


def measure(browser: Browser, path: str, repeat: int, warmup: int) -> dict[str, Any] | None:
    status, body = browser.get(path)
    if status == 404:
        return None
    if status != 200:
        raise common.BenchError(f"GET {path} gave {status}: {body[:300]!r}")
    for _ in range(warmup):
        browser.get(path)
    latencies = []
    for _ in range(repeat):
        took, (status, body) = common.timed(lambda: browser.get(path))
        if status != 200:
            raise common.BenchError(f"GET {path} gave {status} during the run")
        latencies.append(took)
    return {"p50_ms": common.percentile_ms(latencies, 50), "p95_ms": common.percentile_ms(latencies, 95),
            "max_ms": max(latencies) * 1000, "kb": len(body) / 1024, "gzip_kb": len(gzip.compress(body)) / 1024,
            "samples": latencies}


def measure_raw(conn: psycopg.Connection[Any], scope: sq.Scope, repeat: int) -> dict[str, float]:
    raw_read(conn, scope)
    latencies = [common.timed(lambda: raw_read(conn, scope))[0] for _ in range(repeat)]
    return {"p50_ms": common.percentile_ms(latencies, 50), "p95_ms": common.percentile_ms(latencies, 95)}


def measure_live(conn: psycopg.Connection[Any], city: str, repeat: int) -> dict[str, float]:
    """The per-khan counts and medians of one city counted from the reports table, as without the rollups."""
    area_id, level = conn.execute("SELECT id, level FROM areas WHERE code = %s", (city,)).fetchone()
    statement = lq.area_stats_statement(ReportFilters(area=AreaRef(area_id, level, city)), "district")
    latencies = [common.timed(lambda: lq.fetch_all(conn, statement))[0] for _ in range(repeat)]
    return {"p50_ms": common.percentile_ms(latencies, 50), "max_ms": max(latencies) * 1000}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=60, help="timed requests per path (at least 50 for a p95)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per path first")
    parser.add_argument("--live-repeat", type=int, default=3, help="runs of the live count")
    parser.add_argument("--paths", nargs="*", default=list(NEIGHBOURS),
                        help="other pages to time next to the dashboard (404: skipped with a note)")
    parser.add_argument("--no-refresh", action="store_true", help="use the rollups as they are")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--force", action="store_true", help="allow a database whose name lacks 'bench'")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sa_url, libpq_url = common.database_urls(args.force)
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        reports = conn.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = 'reports'").fetchone()[0]
        if reports < 10_000:
            raise common.BenchError(f"about {reports:,} reports: seed first (civicmap seed --count 1000000)")
        known = {row[0] for row in conn.execute("SELECT name FROM rollup_state")}
        if not set(sq.DASHBOARD_ROLLUPS) <= known:
            raise common.BenchError("the dashboard rollups are missing: run civicmap db upgrade")
        facts = {**common.machine_facts(), **common.server_facts(libpq_url)}
        print(f"bench/dashboard.py: about {reports:,} reports (planner's estimate); {common.describe(facts)}")
        refresh: dict[str, float] = {}
        if args.no_refresh:
            os.environ["ROLLUP_MAX_AGE_SECONDS"] = "0"  # nor may the server recount them during the run
        else:
            # All of them, as the server's background refresh does, so none is stale during the run.
            with conn.transaction():
                refresh = rollup.refresh(conn)  # type: ignore[arg-type]
            print("rollups refreshed CONCURRENTLY (what the background refresh costs) in "
                  + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in refresh.items()))
        rows = {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in sq.DASHBOARD_ROLLUPS}
        print("rollup rows: " + ", ".join(f"{name} {n:,}" for name, n in rows.items()))
        password = add_planner(sa_url, libpq_url)
        load_before = os.getloadavg()
        port = intake.free_port()
        log_path = Path(tempfile.mkdtemp(prefix="bench-dashboard-")) / "gunicorn.log"
        server = intake.start_server(sa_url, port, args.workers, log_path)
        results: dict[str, Any] = {}
        skipped: list[str] = []
        try:
            intake.wait_healthy(server, port, log_path)
            browser = Browser(port)
            browser.sign_in(PLANNER, password)
            for combo in COMBOS:
                page = measure(browser, combo.path(), args.repeat, args.warmup)
                assert page is not None, combo.path()
                page["raw"] = measure_raw(conn, scope_of(conn, combo), args.repeat)
                results[combo.path()] = page
            for path in args.paths:
                measured = measure(browser, path, args.repeat, args.warmup)
                if measured is None:
                    skipped.append(path)
                else:
                    results[path] = measured
        finally:
            intake.stop_server(server)
        live = {city: measure_live(conn, city, args.live_repeat) for city in ("PP", "SV")}
        load_after = os.getloadavg()

    print(f"\nOne request at a time, {args.repeat} timed after {args.warmup} untimed, signed in as a planner; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (2 cores shared with other work)")
    table = []
    for path, r in results.items():
        raw = r.get("raw")
        table.append([path, r["p50_ms"], r["p95_ms"], r["max_ms"], r["kb"], r["gzip_kb"],
                      raw["p50_ms"] if raw else "", (r["p50_ms"] / raw["p50_ms"]) if raw else ""])
    common.print_table(["path", "p50 ms", "p95 ms", "max ms", "KB", "KB gzip", "rollup reads p50 ms",
                        "× rollup reads (p50)"], table)
    for path in skipped:
        print(f"note: {path} answered 404 on this server; not measured (pass --paths to choose pages)")
    print(f"\nThe same khan figures counted live from the reports table (what each request would cost without "
          f"the rollups; {args.live_repeat} runs)")
    common.print_table(["city", "p50 ms", "max ms"], [[city, v["p50_ms"], v["max_ms"]] for city, v in live.items()])
    worst = max(r["p95_ms"] for path, r in results.items() if path.startswith("/staff/dashboard"))
    print(f"\nslowest dashboard p95: {worst:.1f} ms (goal ≤ 500 ms) at {datetime.now().isoformat(timespec='seconds')}")
    common.write_json(args.json, {"facts": facts, "reports_estimate": reports, "refresh_s": refresh,
                                  "rollup_rows": rows, "results": {p: {k: v for k, v in r.items() if k != "samples"}
                                                                   for p, r in results.items()},
                                  "skipped": skipped, "live": live, "load": [load_before, load_after]})
    return 0 if worst <= 500 else 1


if __name__ == "__main__":
    raise SystemExit(main())
