"""Offline-sync ingest: N reports pushed in gzip batches over HTTP, against a COPY of the same rows.

What it measures
    ``POST /api/v1/sync/batches`` on the real server (``civicmap run``:
    gunicorn, Flask, the ``sync`` rules, SQLAlchemy): N ``create`` items
    (default 10,000) in B batches (default 20 of 500), each body gzip-compressed
    as a phone would send it, pushed one batch after the other like one phone
    (``--concurrency C``: C phones, each with its own device token, sending
    their share of the batches at once). Every item must come back
    ``created``. Then the same B bodies are pushed again (a replay, as after a
    lost answer): every response must say ``replayed: true`` and carry exactly
    the first results.

    The physical limit, in the same run: the tables are emptied again and the
    same N rows (same columns and values the API writes, the tracking-token
    hash left NULL) plus one ``report_events`` row each are loaded with
    ``COPY … FROM STDIN`` (psycopg 3) into the same tables with the same
    indexes, constraints and triggers, in one transaction. The spatial lookup
    of city/district/commune (one query over all points) and the reference
    numbers (``nextval``) are done in that transaction before the COPY and
    are timed with it. ``--copy-changes`` also COPYs the change-feed rows the
    API writes (one ``changes`` row per report, numbered at COMMIT by its
    trigger).

    Printed: push time, COPY time, the ratio push/COPY, reports/s of both,
    the replay time and replay/push, and the bytes on the wire per report
    (request: HTTP head + gzip body; the JSON before gzip; the response,
    which the server does not compress). R runs (default 3), medians.
    ``--profile`` then pushes one batch in-process (Flask test client, no
    gunicorn or HTTP) and splits its time into parsing, database statements
    (by kind) and the rest, and lists the busiest functions under cProfile.

How to run it
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/civicmap_bench .venv/bin/python bench/sync_ingest.py
    DATABASE_URL=… .venv/bin/python bench/sync_ingest.py --count 10000 --batch-size 500 --repeat 3 --profile --json sync.json

DATABASE_URL must name a database whose name contains "bench" (or pass
--force): it is created if missing, migrated, loaded with areas and
categories, and its reports (with report_events, report_photos, changes,
sync_batches, sync_applied_updates, sync_photo_links) are TRUNCATEd before
every phase. Each run registers new field-worker devices (the per-device rate
limit of /api/v1/sync stays in the path but is never reached). All traffic
goes to 127.0.0.1. The server is started on a free port and always stopped.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import io
import json
import os
import pstats
import random
import re
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import _common as common  # also puts the repo on sys.path
import intake  # the server helpers, categories and descriptions of bench/intake.py
import psycopg

from service.auth import hash_secret, new_secret
from service.references import reference_for
from sync.decisions import canonical_hash, correct_clock
from sync.protocol import normalise_create_payload

BBOX = intake.BBOX  # central Phnom Penh: 104.88–104.93 E, 11.54–11.58 N
CATEGORIES = intake.CATEGORIES
DESCRIPTIONS = intake.DESCRIPTIONS
TZ_PHNOM_PENH = timezone(timedelta(hours=7))
FUTURE_TOLERANCE = timedelta(hours=24)  # the service default (FUTURE_TOLERANCE_HOURS)
CONTACT_SHARE = 0.3
PATH = "/api/v1/sync/batches"
GOAL, STRETCH = 3.0, 1.5

TRUNCATE_SQL = ("TRUNCATE reports, report_events, report_photos, changes, sync_batches, sync_applied_updates, "
                "sync_photo_links")

# Which city, khan and sangkat cover each point, for all points in one query (one GiST probe per point).
# Per level the lowest id wins, as in service.queries.locate_point (ORDER BY level, id; first row per level).
# A plain join with aggregation: about 3x faster here than a LATERAL … LIMIT 1 per level.
LOOKUP_SQL = """
SELECT p.i,
       min(a.id) FILTER (WHERE a.level = 'city'),
       (array_agg(a.code ORDER BY a.id) FILTER (WHERE a.level = 'city'))[1],
       min(a.id) FILTER (WHERE a.level = 'district'),
       min(a.id) FILTER (WHERE a.level = 'commune')
FROM unnest(%s::float8[], %s::float8[]) WITH ORDINALITY AS p(lon, lat, i)
LEFT JOIN areas a ON ST_Covers(a.geom, ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326))
GROUP BY p.i
ORDER BY p.i
"""
REPORT_COLUMNS = ("id", "reference", "category_code", "description", "landmark", "location", "accuracy_m",
                  "city_id", "district_id", "commune_id", "status", "source", "observed_at", "observed_at_flag",
                  "observed_at_device", "clock_offset_s", "device_id", "received_at", "updated_at", "version",
                  "payload_sha256", "contact_name", "contact_phone", "contact_email", "contact_consent",
                  "tracking_token_hash", "created_by")
EVENT_COLUMNS = ("report_id", "actor_id", "actor_role", "old_status", "new_status", "note")
CHANGE_COLUMNS = ("kind", "report_id", "city_id", "district_id", "commune_id")

# What must be equal between the two sides (times, references and the tracking hash differ by design).
FINGERPRINT_SQL = """
SELECT count(*), md5(string_agg(ROW(id, category_code, description, landmark, encode(ST_AsEWKB(location), 'hex'),
       accuracy_m, city_id, district_id, commune_id, status, source, observed_at_flag, observed_at_device, version,
       payload_sha256, contact_name, contact_phone, contact_email, contact_consent, created_by, device_id,
       hidden)::text, E'\\n' ORDER BY id))
FROM reports
"""
EVENTS_FINGERPRINT_SQL = """
SELECT count(*), md5(string_agg(ROW(report_id, actor_id, actor_role, old_status, new_status, note)::text, E'\\n'
       ORDER BY report_id))
FROM report_events
"""


@dataclass(frozen=True)
class Report:
    """One ``create`` item: the payload as sent, and the values the COPY side needs."""

    client_id: uuid.UUID
    payload: dict[str, Any]
    lon: float
    lat: float
    observed_device: datetime
    payload_sha256: str


@dataclass(frozen=True)
class Device:
    token: str
    id: int
    user_id: int


@dataclass
class Batch:
    """A batch as sent: its reports, its device, and the exact request bytes."""

    batch_id: uuid.UUID
    reports: list[Report]
    device: Device
    sent_at: datetime
    json_bytes: int
    gzip_bytes: int
    request: bytes


@dataclass
class Exchange:
    status: int
    body: bytes
    request_bytes: int
    response_bytes: int
    seconds: float


@dataclass
class PushResult:
    wall_s: float
    exchanges: list[Exchange] = field(repr=False)

    @property
    def request_bytes(self) -> int:
        return sum(e.request_bytes for e in self.exchanges)

    @property
    def response_bytes(self) -> int:
        return sum(e.response_bytes for e in self.exchanges)


# --------------------------------------------------------------------------- data


def sample_points(count: int, rng: random.Random, libpq_url: str) -> list[tuple[float, float]]:
    """``count`` points in BBOX, each checked to lie inside a served city (as bench/intake.py does)."""
    return common.sample_points(count, rng, libpq_url, BBOX)


def make_reports(count: int, rng: random.Random, libpq_url: str, anchor: datetime) -> list[Report]:
    """``count`` varied, valid create items; deterministic for a seed and ``anchor`` (observed times)."""
    reports = []
    for lon, lat in sample_points(count, rng, libpq_url):
        category = rng.choice(CATEGORIES)
        english, khmer = DESCRIPTIONS[category]
        description = rng.choice(khmer if rng.random() < 0.5 else english)
        observed = (anchor - timedelta(minutes=rng.randrange(0, 240), seconds=rng.randrange(60))).astimezone(
            TZ_PHNOM_PENH)
        client_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        payload: dict[str, Any] = {
            "category": category,
            "description": description,
            "location": {"type": "Point", "coordinates": [lon, lat]},
            "accuracy_m": float(rng.randrange(3, 60)),
            "observed_at": observed.isoformat(),
        }
        if rng.random() < CONTACT_SHARE:
            payload["contact"] = {"phone": f"+855 {rng.choice((12, 15, 17, 77, 89, 96))} "
                                           f"{rng.randrange(100, 1000)} {rng.randrange(100, 1000)}",
                                  "consent": True}
        normalised, errors = normalise_create_payload(json.loads(json.dumps(payload)), client_id)
        if normalised is None:
            raise common.BenchError(f"generated an invalid payload: {errors}")
        reports.append(Report(client_id, payload, lon, lat, observed, canonical_hash(normalised)))
    return reports


def new_devices(libpq_url: str, count: int, label: str) -> list[Device]:
    """``count`` new devices (dev_ tokens) of one field worker of area PP, as tests/test_live_server.py does."""
    devices = []
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        (user_id,) = conn.execute(
            "INSERT INTO users (username, role) VALUES ('bench-sync', 'field_worker') "
            "ON CONFLICT (username) DO UPDATE SET role = 'field_worker', active = true RETURNING id").fetchone()
        for i in range(count):
            token = new_secret("dev_")
            row = conn.execute("INSERT INTO devices (name, user_id, area_id, token_hash) "
                               "SELECT %s, %s, id, %s FROM areas WHERE code = 'PP' RETURNING id",
                               (f"bench {label} phone {i + 1}", user_id, hash_secret(token))).fetchone()
            if row is None:
                raise common.BenchError("there is no area with code PP: are the areas loaded?")
            devices.append(Device(token, int(row[0]), int(user_id)))
    return devices


def build_batches(reports: list[Report], batch_size: int, batch_ids: list[uuid.UUID], devices: list[Device],
                  port: int, level: int) -> list[Batch]:
    """Batch i goes to device i mod len(devices); ``sent_at`` is now, on a phone clock in UTC+7."""
    batches = []
    for n, start in enumerate(range(0, len(reports), batch_size)):
        chunk = reports[start:start + batch_size]
        device = devices[n % len(devices)]
        sent_at = datetime.now(TZ_PHNOM_PENH).replace(microsecond=0)
        body = {"device_id": str(device.id), "batch_id": str(batch_ids[n]), "sent_at": sent_at.isoformat(),
                "items": [{"client_id": str(r.client_id), "op": "create", "payload": r.payload} for r in chunk]}
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        packed = gzip.compress(raw, compresslevel=level, mtime=0)
        head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {device.token}\r\n"
                f"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len(packed)}\r\n"
                f"Accept: application/json\r\nAccept-Encoding: gzip\r\n\r\n").encode("ascii")
        batches.append(Batch(batch_ids[n], chunk, device, sent_at, len(raw), len(packed), head + packed))
    return batches


def truncate(libpq_url: str) -> None:
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        conn.execute(TRUNCATE_SQL)
        conn.execute("CHECKPOINT")


def table_counts(libpq_url: str) -> dict[str, int]:
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # fixed names
                for t in ("reports", "report_events", "changes", "sync_batches")}


def fingerprint(libpq_url: str) -> tuple[Any, ...]:
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        return tuple(conn.execute(FINGERPRINT_SQL).fetchone()) + tuple(conn.execute(EVENTS_FINGERPRINT_SQL).fetchone())


# --------------------------------------------------------------------------- HTTP side


def exchange(port: int, request: bytes, timeout: float = 300.0) -> Exchange:
    """Send one request as raw bytes and read the answer, counting the bytes each way (HTTP layer)."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"the server closed the connection after {len(buf)} bytes of the head")
            buf += chunk
        head, _, body = bytes(buf).partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            raise common.BenchError("chunked responses are not supported by this bench")
        length = int(headers[b"content-length"]) if b"content-length" in headers else None
        rest = bytearray(body)
        while length is None or len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    elapsed = time.perf_counter() - t0
    if length is not None and len(rest) != length:
        raise ConnectionError(f"short response body: {len(rest)} of {length} bytes")
    return Exchange(status, bytes(rest), len(request), len(head) + 4 + len(rest), elapsed)


def push_all(batches: list[Batch], port: int, concurrency: int) -> PushResult:
    """One thread per phone; phone j sends batches j, j+C, j+2C … one after the other."""
    results: list[Exchange | None] = [None] * len(batches)
    errors: list[str] = []
    barrier = threading.Barrier(concurrency + 1)
    finished: list[float] = []
    lock = threading.Lock()

    def phone(j: int) -> None:
        barrier.wait()
        try:
            for n in range(j, len(batches), concurrency):
                results[n] = exchange(port, batches[n].request)
        except Exception as exc:  # noqa: BLE001 - shown after the run, never hidden
            with lock:
                errors.append(f"phone {j + 1}: {type(exc).__name__}: {exc}")
        with lock:
            finished.append(time.perf_counter())

    threads = [threading.Thread(target=phone, args=(j,), daemon=True) for j in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise common.BenchError("push failed: " + "; ".join(errors))
    return PushResult(max(finished) - start, [r for r in results if r is not None])


def check_created(batches: list[Batch], result: PushResult) -> list[dict[str, Any]]:
    """Every batch 200, every item ``created`` with its own id; the parsed responses."""
    bodies = []
    for batch, ex in zip(batches, result.exchanges, strict=True):
        text = ex.body[:400].decode("utf-8", "replace")
        if ex.status != 200:
            raise common.BenchError(f"batch {batch.batch_id}: HTTP {ex.status}: {text}")
        body = json.loads(ex.body)
        kinds = [r["result"] for r in body["results"]]
        if body.get("replayed") is not False or kinds != ["created"] * len(batch.reports):
            bad = next((r for r in body["results"] if r["result"] != "created"), None)
            raise common.BenchError(f"batch {batch.batch_id}: replayed={body.get('replayed')}, counts "
                                    f"{body.get('counts')}; first item not created: {bad}")
        if [r["id"] for r in body["results"]] != [str(r.client_id) for r in batch.reports]:
            raise common.BenchError(f"batch {batch.batch_id}: the ids are not the client_ids")
        bodies.append(body)
    return bodies


def check_replayed(batches: list[Batch], first: list[dict[str, Any]], result: PushResult) -> None:
    """Every replay 200, ``replayed: true``, and otherwise exactly the first answer."""
    for batch, original, ex in zip(batches, first, result.exchanges, strict=True):
        if ex.status != 200:
            raise common.BenchError(f"replay of {batch.batch_id}: HTTP {ex.status}: "
                                    f"{ex.body[:400].decode('utf-8', 'replace')}")
        body = json.loads(ex.body)
        if body.get("replayed") is not True:
            raise common.BenchError(f"replay of {batch.batch_id}: replayed={body.get('replayed')}")
        if body["results"] != original["results"]:
            raise common.BenchError(f"replay of {batch.batch_id}: the results differ from the first push")
        if {k: v for k, v in body.items() if k != "replayed"} != {k: v for k, v in original.items()
                                                                  if k != "replayed"}:
            raise common.BenchError(f"replay of {batch.batch_id}: the envelope differs from the first push")


# --------------------------------------------------------------------------- COPY side


def hex_ewkb_point(lon: float, lat: float, srid: int = 4326) -> str:
    """SRID=4326;POINT(lon lat) as hex EWKB (little-endian), which geometry input reads directly."""
    return struct.pack("<BIIdd", 1, 0x20000001, srid, lon, lat).hex()


def copy_load(libpq_url: str, batches: list[Batch], *, with_changes: bool) -> tuple[float, dict[str, float]]:
    """The same rows as the push, in one transaction: area lookup, nextval, COPY reports, COPY events; COMMIT.

    Returns the time of the whole and of its phases (the Python that builds each row runs inside its COPY).
    """
    reports = [(r, b) for b in batches for r in b.reports]
    lons = [r.lon for r, _ in reports]
    lats = [r.lat for r, _ in reports]
    with psycopg.connect(libpq_url, options="-c timezone=UTC") as conn:
        cur = conn.cursor()
        t0 = time.perf_counter()
        received_at = datetime.now(UTC)
        areas = cur.execute(LOOKUP_SQL, (lons, lats)).fetchall()
        t_lookup = time.perf_counter()
        numbers = [n for (n,) in cur.execute("SELECT nextval('report_reference_seq') FROM generate_series(1, %s)",
                                             (len(reports),))]
        t_nextval = time.perf_counter()
        changes = []
        with cur.copy(f"COPY reports ({', '.join(REPORT_COLUMNS)}) FROM STDIN") as copy:
            for (report, batch), (_i, city_id, city_code, district_id, commune_id), number in zip(
                    reports, areas, numbers, strict=True):
                if city_id is None:
                    raise common.BenchError(f"outside the service area: {report.lon} {report.lat}")
                clock = correct_clock(report.observed_device, batch.sent_at, received_at, FUTURE_TOLERANCE)
                contact = report.payload.get("contact") or {}
                copy.write_row((
                    report.client_id, reference_for(city_code, number), report.payload["category"],
                    report.payload["description"], "", hex_ewkb_point(report.lon, report.lat),
                    report.payload["accuracy_m"], city_id, district_id, commune_id, "new", "field_sync",
                    clock.observed_at, clock.flag, report.observed_device, clock.offset.total_seconds(),
                    batch.device.id, received_at, received_at, 1, report.payload_sha256, contact.get("name"),
                    contact.get("phone"), contact.get("email"), bool(contact.get("consent")), None,
                    batch.device.user_id))
                changes.append(("report", report.client_id, city_id, district_id, commune_id))
        t_reports = time.perf_counter()
        with cur.copy(f"COPY report_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
            for report, batch in reports:
                copy.write_row((report.client_id, batch.device.user_id, "field_worker", None, "new", ""))
        t_events = time.perf_counter()
        if with_changes:
            with cur.copy(f"COPY changes ({', '.join(CHANGE_COLUMNS)}) FROM STDIN") as copy:
                for row in changes:
                    copy.write_row(row)
        t_changes = time.perf_counter()
        conn.commit()
        t_end = time.perf_counter()
    phases = {"lookup": t_lookup - t0, "nextval": t_nextval - t_lookup, "copy_reports": t_reports - t_nextval,
              "copy_events": t_events - t_reports, "copy_changes": t_changes - t_events, "commit": t_end - t_changes}
    return t_end - t0, phases


# --------------------------------------------------------------------------- profile (in-process)


def profile_one_batch(sa_url: str, libpq_url: str, reports: list[Report], batch_ids: list[uuid.UUID],
                      level: int) -> dict[str, Any]:
    """Push one batch through the app in-process: parse time, SQL statements by kind, the rest; then cProfile."""
    from sqlalchemy import event

    from service.app import create_app
    from service.db import get_engine
    from sync.protocol import BatchLimits, decode_json, parse_batch, read_body

    os.environ["DATABASE_URL"] = sa_url
    app = create_app()
    engine = get_engine(app)
    client = app.test_client()
    stats: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    starts: dict[int, float] = {}

    def kind_of(statement: str) -> str:
        words = re.sub(r"sa_savepoint_\d+", "sa_savepoint_N", " ".join(statement.split()))
        for marker in (" WHERE", " VALUES", " FROM", " ON CONFLICT"):
            cut = words.find(marker)
            if 0 < cut < 70:
                words = words[:cut]
        return words[:70]

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, params, context, executemany):
        starts[id(cursor)] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, params, context, executemany):
        entry = stats[kind_of(statement)]
        entry[0] += 1
        entry[1] += time.perf_counter() - starts.pop(id(cursor), time.perf_counter())

    commits: list[float] = []
    do_commit = engine.dialect.do_commit

    def timed_commit(dbapi_connection: Any) -> None:  # COMMIT fires the deferred change-numbering triggers
        t0 = time.perf_counter()
        do_commit(dbapi_connection)
        commits.append(time.perf_counter() - t0)

    engine.dialect.do_commit = timed_commit  # type: ignore[method-assign]  # this in-process app only

    def one_push(profiler: cProfile.Profile | None) -> tuple[float, int, Batch]:
        truncate(libpq_url)
        devices = new_devices(libpq_url, 1, "profile")
        (batch,) = build_batches(reports, len(reports), batch_ids[:1], devices, 80, level)
        body = batch.request.partition(b"\r\n\r\n")[2]
        headers = {"Authorization": f"Bearer {devices[0].token}", "Content-Encoding": "gzip"}
        stats.clear()
        commits.clear()
        t0 = time.perf_counter()
        if profiler:
            profiler.enable()
        response = client.post(PATH, data=body, content_type="application/json", headers=headers)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - t0
        data = response.get_json()
        if response.status_code != 200 or data["counts"]["created"] != len(reports):
            raise common.BenchError(f"profile push: HTTP {response.status_code}: {str(data)[:300]}")
        return elapsed, len(body), batch

    try:
        one_push(None)  # warm: imports, pool, caches
        total, _, batch = one_push(None)
        sql = {k: (int(v[0]), float(v[1])) for k, v in stats.items()}
        commit_s = sum(commits)
        body = batch.request.partition(b"\r\n\r\n")[2]
        limits = BatchLimits()
        loops = 5
        t0 = time.perf_counter()
        for _ in range(loops):
            inflated = read_body(body, "gzip", limits)
        t_inflate = (time.perf_counter() - t0) / loops
        t0 = time.perf_counter()
        for _ in range(loops):
            decoded = decode_json(inflated)
        t_decode = (time.perf_counter() - t0) / loops
        t0 = time.perf_counter()
        for _ in range(loops):
            parse_batch(decoded, limits)
        t_parse = (time.perf_counter() - t0) / loops

        profiler = cProfile.Profile()
        profiled_total, _, _ = one_push(profiler)
    finally:
        engine.dispose()
        truncate(libpq_url)

    out = io.StringIO()
    ps = pstats.Stats(profiler, stream=out)
    ps.sort_stats("tottime").print_stats(18)
    cumulative = {}
    wanted = {("sync/protocol.py", "parse_batch"), ("service/sync_push.py", "push_batch"),
              ("service/sync_push.py", "_push_create"), ("service/intake.py", "create_report"),
              ("service/intake.py", "active_category"), ("service/queries.py", "locate_point"),
              ("sync/decisions.py", "decide_create"), ("sync/decisions.py", "batch_fingerprint"),
              ("service/sync_push.py", "_stored_report"), ("sqlalchemy/orm/session.py", "flush"),
              ("sqlalchemy/orm/session.py", "begin_nested"), ("sqlalchemy/engine/base.py", "_execute_context"),
              ("sqlalchemy/orm/session.py", "commit"), ("sync/protocol.py", "to_json"),
              ("service/queries.py", "save_batch"), ("flask/json/provider.py", "response")}
    for (filename, _line, name), row in ps.stats.items():  # type: ignore[attr-defined]
        for suffix, fname in wanted:
            if name == fname and filename.endswith(suffix):
                cumulative[f"{suffix}:{name}"] = cumulative.get(f"{suffix}:{name}", 0.0) + row[3]
    return {"items": len(reports), "total_s": total, "inflate_s": t_inflate, "decode_s": t_decode,
            "parse_s": t_parse, "sql": sql, "commit_s": commit_s, "profiled_total_s": profiled_total,
            "cumulative_s": dict(sorted(cumulative.items(), key=lambda kv: -kv[1])), "top": out.getvalue()}


def print_profile(p: dict[str, Any]) -> None:
    n = p["items"]
    sql_count = sum(c for c, _ in p["sql"].values())
    sql_time = sum(t for _, t in p["sql"].values())
    parse = p["inflate_s"] + p["decode_s"] + p["parse_s"]
    rest = p["total_s"] - parse - sql_time - p["commit_s"]
    print(f"\nProfile: one batch of {n} items pushed in-process (Flask test client; no gunicorn, no HTTP)")
    common.print_table(["phase", "ms", "ms/item", "share"], [
        ["whole request", p["total_s"] * 1000, p["total_s"] * 1000 / n, "100 %"],
        ["gunzip (read_body)", p["inflate_s"] * 1000, p["inflate_s"] * 1000 / n, _pct(p["inflate_s"], p["total_s"])],
        ["JSON decode (decode_json)", p["decode_s"] * 1000, p["decode_s"] * 1000 / n,
         _pct(p["decode_s"], p["total_s"])],
        ["parse + validate (parse_batch)", p["parse_s"] * 1000, p["parse_s"] * 1000 / n,
         _pct(p["parse_s"], p["total_s"])],
        [f"SQL statements ({sql_count}, {sql_count / n:.1f}/item; driver time)", sql_time * 1000,
         sql_time * 1000 / n, _pct(sql_time, p["total_s"])],
        [f"COMMIT ({n} deferred change-numbering triggers)", p["commit_s"] * 1000, p["commit_s"] * 1000 / n,
         _pct(p["commit_s"], p["total_s"])],
        ["the rest (Flask, SQLAlchemy, ORM flushes, decisions, JSON out)", rest * 1000, rest * 1000 / n,
         _pct(rest, p["total_s"])],
    ])
    print("\nSQL statements by kind (driver time: round trip + server execution):")
    common.print_table(["statement", "count", "per item", "ms", "ms/item"], [
        [k, c, c / n, t * 1000, t * 1000 / n] for k, (c, t) in sorted(p["sql"].items(), key=lambda kv: -kv[1][1])])
    print(f"\nUnder cProfile the request took {p['profiled_total_s'] * 1000:.0f} ms; cumulative time of some functions:")
    common.print_table(["function", "cumulative ms", "ms/item"],
                       [[k, v * 1000, v * 1000 / n] for k, v in p["cumulative_s"].items()])
    print("\nBusiest functions by own time (cProfile):")
    lines = p["top"].splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("ncalls")), 0)
    print("\n".join(line for line in lines[start:] if line.strip()))


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.0f} %"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--count", "-n", type=int, default=10_000, help="reports per run")
    parser.add_argument("--batch-size", "-b", type=int, default=500, help="items per batch (server limit 500)")
    parser.add_argument("--concurrency", "-c", type=int, default=1,
                        help="phones pushing at once, each with its own device and share of the batches")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the server")
    parser.add_argument("--repeat", "-r", type=int, default=3, help="runs; medians are reported")
    parser.add_argument("--warmup", type=int, default=500, help="untimed items pushed and COPYd before the runs")
    parser.add_argument("--gzip-level", type=int, default=6, help="gzip level of the bodies (6: Android's default)")
    parser.add_argument("--copy-changes", action="store_true",
                        help="also COPY the change-feed rows (changes) the API writes, one per report")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, profile one batch in-process: parse, SQL by kind, the rest")
    parser.add_argument("--seed", type=int, default=42, help="random seed for the reports")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    parser.add_argument("--force", action="store_true", help="allow a database whose name lacks 'bench'")
    args = parser.parse_args(argv)
    for name in ("count", "batch_size", "concurrency", "workers", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if not 1 <= args.gzip_level <= 9:
        parser.error("--gzip-level must be 1–9")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sa_url, libpq_url = common.database_urls(force=args.force)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server

    print("preparing the database ...", flush=True)
    loaded = common.prepare_database(sa_url, fresh=False)
    truncate(libpq_url)
    machine, server = common.machine_facts(), common.server_facts(libpq_url)
    n_batches = -(-args.count // args.batch_size)
    print(f"machine: {common.describe(machine)}")
    print(f"server:  {common.describe(server)}")
    print(f"areas {loaded['areas']}, categories {loaded['categories']}; N={args.count} in {n_batches} batches of "
          f"<= {args.batch_size}, gzip level {args.gzip_level}, phones={args.concurrency}, "
          f"gunicorn workers={args.workers}, repeat={args.repeat}")

    rng = random.Random(args.seed)
    anchor = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    reports = make_reports(args.count, rng, libpq_url, anchor)
    batch_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(n_batches)]
    warm = make_reports(args.warmup, rng, libpq_url, anchor) if args.warmup else []
    warm_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(-(-len(warm) // 100))]
    khmer = sum(1 for r in reports if any("\u1780" <= ch <= "\u17ff" for ch in r.payload["description"]))
    contacts = sum(1 for r in reports if "contact" in r.payload)
    print(f"{len(reports)} create items: {khmer} with a Khmer description, {contacts} with a contact; "
          f"categories {', '.join(CATEGORIES)}")

    runs: list[dict[str, Any]] = []
    port = intake.free_port()
    tmp = tempfile.TemporaryDirectory(prefix="civicmap-bench-")
    log_path = Path(tmp.name) / "server.log"
    proc = intake.start_server(sa_url, port, args.workers, log_path)
    try:
        intake.wait_healthy(proc, port, log_path)
        print(f"server up on 127.0.0.1:{port} (pid {proc.pid})", flush=True)
        if warm:
            devices = new_devices(libpq_url, args.concurrency, "warm-up")
            wb = build_batches(warm, 100, warm_ids, devices, port, args.gzip_level)
            check_created(wb, push_all(wb, port, args.concurrency))
            truncate(libpq_url)
            copy_load(libpq_url, wb, with_changes=args.copy_changes)
        for r in range(1, args.repeat + 1):
            truncate(libpq_url)
            devices = new_devices(libpq_url, args.concurrency, f"run {r}")
            batches = build_batches(reports, args.batch_size, batch_ids, devices, port, args.gzip_level)
            push = push_all(batches, port, args.concurrency)
            first = check_created(batches, push)
            replay = push_all(batches, port, args.concurrency)
            check_replayed(batches, first, replay)
            pushed_counts = table_counts(libpq_url)
            pushed_print = fingerprint(libpq_url)
            truncate(libpq_url)
            copy_s, copy_phases = copy_load(libpq_url, batches, with_changes=args.copy_changes)
            copied_counts = table_counts(libpq_url)
            same = fingerprint(libpq_url) == pushed_print
            if not same:
                raise common.BenchError("the COPY side stored other rows than the push (fingerprints differ)")
            n = len(reports)
            run = {
                "push_s": push.wall_s, "replay_s": replay.wall_s, "copy_s": copy_s,
                "push_per_s": n / push.wall_s, "copy_per_s": n / copy_s, "replay_per_s": n / replay.wall_s,
                "ratio_push_copy": push.wall_s / copy_s, "ratio_replay_push": replay.wall_s / push.wall_s,
                "batch_p50_s": common.median(e.seconds for e in push.exchanges),
                "batch_max_s": max(e.seconds for e in push.exchanges),
                "json_bytes": sum(b.json_bytes for b in batches), "gzip_bytes": sum(b.gzip_bytes for b in batches),
                "request_bytes": push.request_bytes, "response_bytes": push.response_bytes,
                "replay_response_bytes": replay.response_bytes,
                "copy_phases_s": copy_phases, "pushed_counts": pushed_counts, "copied_counts": copied_counts, "same_rows": same,
            }
            runs.append(run)
            print(f"run {r}/{args.repeat}: push {push.wall_s:.2f} s ({run['push_per_s']:.0f} reports/s, batch p50 "
                  f"{run['batch_p50_s']:.2f} s, max {run['batch_max_s']:.2f} s), replay {replay.wall_s:.3f} s, "
                  f"COPY {copy_s:.3f} s ({run['copy_per_s']:.0f} reports/s); push/COPY {run['ratio_push_copy']:.2f}x;"
                  f" stored {pushed_counts['reports']} reports, {pushed_counts['report_events']} events, "
                  f"{pushed_counts['changes']} changes, {pushed_counts['sync_batches']} batches; COPY "
                  f"{copied_counts['reports']} + {copied_counts['report_events']} + {copied_counts['changes']}; "
                  f"same rows: {'yes' if same else 'NO'}", flush=True)
    finally:
        intake.stop_server(proc)
        tmp.cleanup()

    keys = ("push_s", "replay_s", "copy_s", "push_per_s", "copy_per_s", "replay_per_s", "ratio_push_copy",
            "ratio_replay_push", "batch_p50_s", "batch_max_s")
    med = {k: common.median(run[k] for run in runs) for k in keys}
    # The ratios of the medians (as bench/intake.py); each run's own ratio is in its line above.
    med["ratio_push_copy"] = med["push_s"] / med["copy_s"]
    med["ratio_replay_push"] = med["replay_s"] / med["push_s"]
    n = len(reports)
    wire = runs[-1]  # the bytes are the same in every run, up to a digit of a device id or a time
    print()
    print(f"Medians of {args.repeat} runs (machine: {machine['cores']} cores, Python {machine['python']}, "
          f"PostgreSQL {server['postgresql']}, PostGIS {server['postgis']})")
    copy_label = "COPY FROM STDIN, 1 tx" + (" (+ changes)" if args.copy_changes else "")
    common.print_table(
        ["phase", "reports", "time s", "reports/s", "ratio"],
        [[f"push: HTTP, {n_batches} gzip batches, {args.concurrency} phone(s), {args.workers} workers", n,
          med["push_s"], med["push_per_s"], f"{med['ratio_push_copy']:.2f}x COPY"],
         [f"replay: the same {n_batches} bodies again", n, med["replay_s"], med["replay_per_s"],
          f"{med['ratio_replay_push']:.3f}x push"],
         [copy_label, n, med["copy_s"], med["copy_per_s"], "1.00x"]])
    print()
    common.print_table(
        ["bytes (first push)", "total", "per report"],
        [["request JSON before gzip", wire["json_bytes"], wire["json_bytes"] / n],
         ["request gzip bodies", wire["gzip_bytes"], wire["gzip_bytes"] / n],
         ["request on the wire (HTTP head + gzip body)", wire["request_bytes"], wire["request_bytes"] / n],
         ["response on the wire (HTTP head + JSON, not compressed)", wire["response_bytes"],
          wire["response_bytes"] / n]])
    phases = {k: common.median(run["copy_phases_s"][k] for run in runs) for k in runs[0]["copy_phases_s"]}
    if not args.copy_changes:
        del phases["copy_changes"]
    print("COPY side by phase (medians, s): " + ", ".join(f"{k} {v:.3f}" for k, v in phases.items()))
    ratio = med["ratio_push_copy"]
    verdict = ("meets the stretch goal" if ratio <= STRETCH else "meets the goal" if ratio <= GOAL
               else "MISSES the goal")
    print(f"ratio push/COPY: {ratio:.2f}x ({verdict}: <= {GOAL:g}x, stretch {STRETCH:g}x); "
          f"replay/push: {med['ratio_replay_push']:.3f}x "
          f"({'no slower than the first push' if med['ratio_replay_push'] <= 1 else 'SLOWER than the first push'});"
          f" gzip {wire['json_bytes'] / wire['gzip_bytes']:.1f}:1")

    profile = None
    if args.profile:
        profile = profile_one_batch(sa_url, libpq_url, reports[:args.batch_size], batch_ids, args.gzip_level)
        print_profile(profile)

    common.write_json(args.json, {
        "bench": "sync_ingest", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine, "server": server,
        "params": {k: v for k, v in vars(args).items() if k not in ("json", "force")},
        "runs": runs, "median": med, "copy_phases_median_s": phases, "goal": {"ratio": GOAL, "stretch": STRETCH},
        "profile": {k: v for k, v in profile.items() if k != "top"} if profile else None,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
