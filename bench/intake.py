"""Report intake throughput and latency: the real HTTP API against direct PostgreSQL writes.

What it measures
    ``POST /api/v1/reports`` on the real server (``civicmap run``: gunicorn,
    Flask, flask-smorest validation, SQLAlchemy) with N varied, valid report
    bodies sent by C client threads, against the physical limit of the same
    writes done straight through psycopg 3: C threads, one connection each, one
    transaction per report doing what the API's SQL does (the spatial area
    lookup, ``nextval('report_reference_seq')``, the ``INSERT INTO reports``
    with the same columns, the ``INSERT INTO report_events``) and ``COMMIT``.
    Both sides run in the same process, one after the other, R times each on
    an emptied table; the medians of the runs are reported with the ratio
    API/direct for throughput (direct reports/s ÷ API reports/s, i.e. how many
    times slower the API is) and for the median latency.

How to run it
    make bench-intake BENCH_ARGS="--count 2000 --concurrency 8 --workers 2 --repeat 3"
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/civicmap_bench .venv/bin/python bench/intake.py

DATABASE_URL must name a database whose name contains "bench" (or pass
--force): it is created if missing, migrated, loaded with areas and
categories, and its reports are TRUNCATEd. All traffic goes to 127.0.0.1.
The server is started on a free port and always stopped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import itertools
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import _common as common  # also puts the repo on sys.path
import psycopg

from service.intake import observed_time_flag
from service.references import reference_for

BBOX = (104.88, 11.54, 104.93, 11.58)  # central Phnom Penh
# A few valid subtype codes, each with an English and a Khmer description that fit it.
DESCRIPTIONS = {
    "waste.overflowing_bin": (("Bin full since Monday, rubbish on the pavement", ""),
                              ("ធុងសំរាមពេញហៀរ តាំងពីម្សិលមិញ",)),
    "flooding.blocked_drain": (("Drain blocked with plastic, water stands after rain",),
                               ("លូស្ទះ ទឹកដក់នៅលើផ្លូវក្រោយភ្លៀង",)),
    "street.pothole": (("Deep pothole in the right lane, motorbikes swerve",),
                       ("រណ្តៅធំនៅកណ្តាលផ្លូវ គ្រោះថ្នាក់ណាស់",)),
    "water.leak": (("Pipe leaking at the corner for two days",),
                   ("បំពង់ទឹកលេចធ្លាយ ជាងពីរថ្ងៃហើយ",)),
}
CATEGORIES = tuple(DESCRIPTIONS)
TZ_PHNOM_PENH = timezone(timedelta(hours=7))
FUTURE_TOLERANCE = timedelta(hours=24)  # the service default (FUTURE_TOLERANCE_HOURS)

LOCATE_SQL = (  # exactly service.queries.locate_point
    "SELECT id, level, code FROM areas "
    "WHERE ST_Covers(geom, ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)) "
    "ORDER BY CASE level WHEN 'city' THEN 0 WHEN 'district' THEN 1 ELSE 2 END, id"
)
NEXTVAL_SQL = "SELECT nextval('report_reference_seq')"
INSERT_REPORT_SQL = (  # the columns and casts SQLAlchemy emits for service.intake.create_report
    "INSERT INTO reports (id, reference, category_code, description, landmark, location, accuracy_m, city_id, "
    "district_id, commune_id, status, source, observed_at, observed_at_flag, received_at, updated_at, version, "
    "payload_sha256, contact_name, contact_phone, contact_email, contact_consent, tracking_token_hash, created_by) "
    "VALUES (%(id)s, %(reference)s, %(category_code)s, %(description)s, %(landmark)s, "
    "ST_GeomFromEWKT(%(location)s), %(accuracy_m)s, %(city_id)s, %(district_id)s, %(commune_id)s, %(status)s, "
    "%(source)s, %(observed_at)s, %(observed_at_flag)s, %(received_at)s, %(updated_at)s, %(version)s, "
    "%(payload_sha256)s, %(contact_name)s, %(contact_phone)s, %(contact_email)s, %(contact_consent)s, "
    "%(tracking_token_hash)s, %(created_by)s) ON CONFLICT (id) DO NOTHING RETURNING id"
)
INSERT_EVENT_SQL = (
    "INSERT INTO report_events (report_id, actor_id, actor_role, old_status, new_status, note) "
    "VALUES (%(report_id)s, %(actor_id)s, %(actor_role)s, %(old_status)s, %(new_status)s, %(note)s) "
    "RETURNING id, at"
)


@dataclass(frozen=True)
class Item:
    """One report, as the HTTP body and as the values the direct path needs."""

    body: bytes
    client_id: uuid.UUID
    category: str
    description: str
    lon: float
    lat: float
    accuracy_m: float
    observed_at: datetime
    payload_sha256: str


@dataclass
class RunResult:
    side: str
    n: int
    concurrency: int
    wall_s: float
    latencies: list[float] = field(repr=False)
    failures: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall_s

    def summary(self) -> dict[str, Any]:
        return {"side": self.side, "n": self.n, "concurrency": self.concurrency, "wall_s": self.wall_s,
                "reports_per_s": self.rate, "p50_ms": common.percentile_ms(self.latencies, 50),
                "p95_ms": common.percentile_ms(self.latencies, 95), "failures": len(self.failures)}


# --------------------------------------------------------------------------- data


def make_items(count: int, rng: random.Random, libpq_url: str) -> list[Item]:
    """``count`` varied, valid reports; every point is checked to lie inside a served city."""
    points = common.sample_points(count, rng, libpq_url, BBOX)
    now = datetime.now(TZ_PHNOM_PENH).replace(microsecond=0)
    items = []
    for lon, lat in points:
        category = rng.choice(CATEGORIES)
        english, khmer = DESCRIPTIONS[category]
        description = rng.choice(khmer if rng.random() < 0.5 else english)
        observed = now - timedelta(minutes=rng.randrange(0, 240))
        payload = {
            "client_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "category": category,
            "description": description,
            "location": {"type": "Point", "coordinates": [lon, lat]},
            "accuracy_m": float(rng.randrange(3, 60)),
            "observed_at": observed.isoformat(),
        }
        hashed = {k: v for k, v in payload.items() if k != "client_id"}
        items.append(Item(
            body=json.dumps(payload, ensure_ascii=False).encode("utf-8"), client_id=uuid.UUID(payload["client_id"]),
            category=payload["category"], description=description, lon=lon, lat=lat,
            accuracy_m=payload["accuracy_m"], observed_at=observed,
            payload_sha256=hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()))
    return items


def truncate(libpq_url: str) -> None:
    """Empty the report tables and checkpoint, so every run starts from the same state."""
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        conn.execute("TRUNCATE reports, report_events, report_photos CASCADE")
        conn.execute("CHECKPOINT")


def count_rows(libpq_url: str) -> tuple[int, int]:
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        reports = conn.execute("SELECT count(*) FROM reports").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM report_events").fetchone()[0]
    return int(reports), int(events)


# --------------------------------------------------------------------------- runner


def run_threads(items: list[Item], concurrency: int, worker_setup: Callable[[int], Any],
                do_one: Callable[[Any, Item], str | None], side: str) -> RunResult:
    """Run ``do_one`` over ``items`` from ``concurrency`` threads; time each call and the whole."""
    states = [worker_setup(i) for i in range(concurrency)]  # connections are opened before timing
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    finished: list[float] = []
    barrier = threading.Barrier(concurrency + 1)

    def work(state: Any) -> None:
        mine: list[float] = []
        bad: list[str] = []
        barrier.wait()
        while True:
            with lock:
                index = next(counter)
            if index >= len(items):
                break
            t0 = time.perf_counter()
            try:
                problem = do_one(state, items[index])
            except Exception as exc:  # a failure is counted and shown, never hidden
                problem = f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - t0
            if problem is None:
                mine.append(elapsed)
            else:
                bad.append(problem)
        end = time.perf_counter()
        with lock:
            latencies.extend(mine)
            failures.extend(bad)
            finished.append(end)

    threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in states]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = max(finished) - start
    return RunResult(side, len(items), concurrency, wall, latencies, failures)


# --------------------------------------------------------------------------- API side


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(sa_url: str, port: int, workers: int, log_path: Path) -> subprocess.Popen[bytes]:
    civicmap = Path(sys.executable).parent / "civicmap"
    if civicmap.exists():
        argv = [str(civicmap), "run", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    else:
        argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                "--access-logfile", "-", "service.app:create_app()"]
    env = dict(os.environ, DATABASE_URL=sa_url)
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=common.REPO, start_new_session=True)
    log.close()
    return proc


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise common.BenchError(f"the server exited with {proc.returncode}:\n{tail(log_path)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise common.BenchError(f"the server did not answer /healthz with 200 within {timeout:.0f} s:\n{tail(log_path)}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Stop gunicorn and its workers (the whole process group we started)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def api_side(port: int) -> tuple[Callable[[int], Any], Callable[[Any, Item], str | None]]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}

    def setup(_i: int) -> http.client.HTTPConnection:
        # One keep-alive connection per thread; it reopens by itself when the server closes it
        # (gunicorn's sync workers close after every response).
        return http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(conn: http.client.HTTPConnection, item: Item) -> str | None:
        try:
            conn.request("POST", "/api/v1/reports", body=item.body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            raise
        if response.status != 201:
            return f"HTTP {response.status}: {data[:300].decode('utf-8', 'replace')}"
        return None

    return setup, post


# --------------------------------------------------------------------------- direct side


def direct_side(libpq_url: str, connections: list[psycopg.Connection[Any]]
                ) -> tuple[Callable[[int], Any], Callable[[Any, Item], str | None]]:
    def setup(i: int) -> psycopg.Connection[Any]:
        return connections[i]

    def insert(conn: psycopg.Connection[Any], item: Item) -> str | None:
        now = datetime.now(UTC)
        try:
            rows = conn.execute(LOCATE_SQL, {"lon": item.lon, "lat": item.lat}).fetchall()
            by_level: dict[str, tuple[Any, ...]] = {}
            for row in rows:
                by_level.setdefault(row[1], row)
            city = by_level.get("city")
            if city is None:
                conn.rollback()
                return f"outside the service area: {item.lon} {item.lat}"
            district, commune = by_level.get("district"), by_level.get("commune")
            (number,) = conn.execute(NEXTVAL_SQL).fetchone()  # type: ignore[misc]
            token = "trk_" + secrets.token_urlsafe(32)
            inserted = conn.execute(INSERT_REPORT_SQL, {
                "id": item.client_id, "reference": reference_for(city[2], number), "category_code": item.category,
                "description": item.description, "landmark": "",
                "location": f"SRID=4326;POINT({item.lon!r} {item.lat!r})", "accuracy_m": item.accuracy_m,
                "city_id": city[0], "district_id": district[0] if district else None,
                "commune_id": commune[0] if commune else None, "status": "new", "source": "api",
                "observed_at": item.observed_at,
                "observed_at_flag": observed_time_flag(item.observed_at, now, FUTURE_TOLERANCE),
                "received_at": now, "updated_at": now, "version": 1, "payload_sha256": item.payload_sha256,
                "contact_name": None, "contact_phone": None, "contact_email": None, "contact_consent": False,
                "tracking_token_hash": hashlib.sha256(token.encode()).hexdigest(), "created_by": None,
            }).fetchone()
            if inserted is None:
                conn.rollback()
                return f"id {item.client_id} exists already"
            conn.execute(INSERT_EVENT_SQL, {"report_id": item.client_id, "actor_id": None, "actor_role": "resident",
                                            "old_status": None, "new_status": "new", "note": ""}).fetchone()
            conn.commit()
        except Exception:
            conn.rollback()
            raise
        return None

    return setup, insert


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--count", "-n", type=int, default=2000, help="reports per run and side")
    parser.add_argument("--concurrency", "-c", type=int, default=8, help="client threads (and direct connections)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the server")
    parser.add_argument("--repeat", "-r", type=int, default=3, help="runs per side; medians are reported")
    parser.add_argument("--warmup", type=int, default=100, help="untimed reports per side before the runs")
    parser.add_argument("--seed", type=int, default=42, help="random seed for the report bodies")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    parser.add_argument("--force", action="store_true", help="allow a database whose name lacks 'bench'")
    args = parser.parse_args(argv)
    for name in ("count", "concurrency", "workers", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sa_url, libpq_url = common.database_urls(force=args.force)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server

    print("preparing the database ...", flush=True)
    loaded = common.prepare_database(sa_url, fresh=False)
    machine, server = common.machine_facts(), common.server_facts(libpq_url)
    print(f"machine: {common.describe(machine)}")
    print(f"server:  {common.describe(server)}")
    print(f"areas {loaded['areas']}, categories {loaded['categories']}; "
          f"N={args.count}, concurrency={args.concurrency}, gunicorn workers={args.workers}, repeat={args.repeat}")

    rng = random.Random(args.seed)
    warm = make_items(args.warmup, rng, libpq_url) if args.warmup else []
    items = make_items(args.count, rng, libpq_url)
    khmer = sum(1 for it in items if any("\u1780" <= ch <= "\u17ff" for ch in it.description))
    print(f"{len(items)} bodies, {khmer} with a Khmer description, categories {', '.join(CATEGORIES)}")
    truncate(libpq_url)

    runs: dict[str, list[RunResult]] = {"api": [], "direct": []}
    port = free_port()
    tmp = tempfile.TemporaryDirectory(prefix="civicmap-bench-")
    log_path = Path(tmp.name) / "server.log"
    connections: list[psycopg.Connection[Any]] = []
    proc = start_server(sa_url, port, args.workers, log_path)
    try:
        wait_healthy(proc, port, log_path)
        print(f"server up on 127.0.0.1:{port} (pid {proc.pid})", flush=True)
        connections = [psycopg.connect(libpq_url, options="-c timezone=UTC") for _ in range(args.concurrency)]
        api = api_side(port)
        direct = direct_side(libpq_url, connections)
        if warm:
            warm_api = run_threads(warm, args.concurrency, *api, side="api")
            truncate(libpq_url)
            warm_direct = run_threads(warm, args.concurrency, *direct, side="direct")
            truncate(libpq_url)
            for result in (warm_api, warm_direct):
                if result.failures:
                    print(f"warm-up {result.side}: {len(result.failures)} failures, first: {result.failures[0]}")
        for r in range(1, args.repeat + 1):
            for side, (setup, do_one) in (("api", api), ("direct", direct)):
                truncate(libpq_url)
                result = run_threads(items, args.concurrency, setup, do_one, side=side)
                stored = count_rows(libpq_url)
                s = result.summary()
                print(f"run {r}/{args.repeat} {side:6}: {len(result.latencies)} ok, {len(result.failures)} failed, "
                      f"{s['wall_s']:.2f} s, {s['reports_per_s']:.1f} reports/s, p50 {s['p50_ms']:.2f} ms, "
                      f"p95 {s['p95_ms']:.2f} ms; stored {stored[0]} reports, {stored[1]} events", flush=True)
                runs[side].append(result)
    finally:
        for conn in connections:
            conn.close()
        stop_server(proc)
        server_log = tail(log_path, 5)
        tmp.cleanup()

    summaries = {side: [r.summary() for r in results] for side, results in runs.items()}
    med = {side: {key: common.median(s[key] for s in rows) for key in ("wall_s", "reports_per_s", "p50_ms", "p95_ms")}
           for side, rows in summaries.items()}
    print()
    print(f"Medians of {args.repeat} runs (machine: {machine['cores']} cores, Python {machine['python']}, "
          f"PostgreSQL {server['postgresql']}, PostGIS {server['postgis']})")
    common.print_table(
        ["side", "N", "concurrency", "wall s", "reports/s", "p50 ms", "p95 ms"],
        [[f"API (gunicorn, {args.workers} workers)", args.count, args.concurrency, med["api"]["wall_s"],
          med["api"]["reports_per_s"], med["api"]["p50_ms"], med["api"]["p95_ms"]],
         ["direct (psycopg, 1 tx/report)", args.count, args.concurrency, med["direct"]["wall_s"],
          med["direct"]["reports_per_s"], med["direct"]["p50_ms"], med["direct"]["p95_ms"]]])
    throughput_ratio = med["direct"]["reports_per_s"] / med["api"]["reports_per_s"]
    p50_ratio = med["api"]["p50_ms"] / med["direct"]["p50_ms"]
    print(f"ratio API/direct: throughput {throughput_ratio:.2f}x slower (direct reports/s / API reports/s), "
          f"p50 latency {p50_ratio:.2f}x")

    failures = [f for results in runs.values() for r in results for f in r.failures]
    if failures:
        print(f"\n{len(failures)} requests/rows failed; the first ones:")
        for f in failures[:10]:
            print(f"  {f}")
        print(f"server log (last lines):\n{server_log}")

    common.write_json(args.json, {
        "bench": "intake", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine, "server": server,
        "params": {k: v for k, v in vars(args).items() if k not in ("json", "force")},
        "runs": summaries, "median": med,
        "ratio": {"throughput_direct_over_api": throughput_ratio, "p50_api_over_direct": p50_ratio},
        "failures": failures[:50], "failure_count": len(failures),
    })
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
