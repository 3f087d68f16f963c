"""Fault tests: the reference client against real gunicorn and PostGIS on loopback, while things break.

Scenarios (seeded, so a failure can be replayed):

* a TCP proxy cuts connections at random byte offsets, in requests and in responses;
* a gunicorn worker is killed (SIGKILL) in the middle of a batch;
* the server's database connections are terminated in the middle of requests.

After each, the client has retried until everything was answered, and the
database holds exactly one report per distinct client_id, every item the
server acknowledged, and nothing half-written (a report without its first
event, a completed photo not linked to the report waiting for it, a stored
batch whose answer lacks items). The 8-concurrent-replays scenario is in
tests/test_live_server.py.
"""

from __future__ import annotations

import io
import os
import random
import signal
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image
from sqlalchemy import create_engine, text

from sync.client import LocalQueue, SyncClient
from tests.faultproxy import CutProxy
from tests.test_live_server import _live_device


def photo(seed: int) -> bytes:
    pixels = random.Random(seed).randbytes(160 * 120 * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (160, 120), pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def fill_queue(queue: LocalQueue, count: int, seed: int, photos_every: int = 0) -> list[str]:
    rng = random.Random(seed)
    ids = []
    for i in range(count):
        payload = {"category": rng.choice(["waste.overflowing_bin", "flooding.blocked_drain", "street.pothole"]),
                   "description": f"បញ្ហា {i} — fault test {seed}",
                   "location": {"type": "Point",
                                "coordinates": [round(rng.uniform(104.89, 104.93), 6),
                                                round(rng.uniform(11.54, 11.58), 6)]}}
        photos = [photo(seed * 1000 + i)] if photos_every and i % photos_every == 0 else []
        ids.append(queue.add_create(payload, photos=photos))
    return ids


def push_until_done(client: SyncClient, rounds: int = 30):
    """A phone keeps pushing (as it would on its next sync) until nothing is pending."""
    summaries = []
    for _ in range(rounds):
        summary = client.push()
        summaries.append(summary)
        if summary.ok:
            return summaries
    raise AssertionError(f"still not delivered after {rounds} pushes: {summaries[-1]}")


def assert_consistent(database_url: str, client_ids: list[str], acknowledged: set[str]) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            stored = set(map(str, conn.scalars(text("SELECT id FROM reports WHERE id = ANY(CAST(:ids AS uuid[]))"),
                                               {"ids": client_ids})))
            assert stored == set(client_ids), "rows must equal the distinct client_ids"
            assert acknowledged <= stored, "every acknowledged item must be stored"
            assert conn.scalar(text("""
                SELECT count(*) FROM reports r WHERE r.id = ANY(CAST(:ids AS uuid[]))
                AND NOT EXISTS (SELECT 1 FROM report_events e WHERE e.report_id = r.id AND e.new_status = 'new')"""),
                {"ids": client_ids}) == 0, "a report without its first event"
            assert conn.scalar(text("""
                SELECT count(*) FROM sync_photo_links l JOIN sync_uploads u USING (upload_sha256)
                WHERE u.stored_sha256 IS NOT NULL AND l.report_id = ANY(CAST(:ids AS uuid[])) AND NOT EXISTS (
                    SELECT 1 FROM report_photos rp WHERE rp.report_id = l.report_id
                    AND rp.photo_sha256 = u.stored_sha256)"""), {"ids": client_ids}) == 0, "a photo not linked"
            assert conn.scalar(text("""
                SELECT count(*) FROM sync_batches WHERE jsonb_array_length(response -> 'results') <> item_count""")
            ) == 0, "a stored batch answer that lacks items"
    finally:
        engine.dispose()


def acknowledged_ids(summaries) -> set[str]:
    return {str(o.client_id) for s in summaries for o in s.outcomes if o.result in ("created", "unchanged")}


@pytest.fixture()
def queue(tmp_path: Path):
    with LocalQueue(tmp_path / "faults.queue.sqlite") as q:
        yield q


def test_connections_cut_at_random_offsets(live_server, live_database_url, queue):
    token, device_id = _live_device(live_database_url)
    client_ids = fill_queue(queue, 60, seed=11, photos_every=15)
    with CutProxy(urlsplit(live_server).port, seed=11, cut_rate=0.45, max_offset=6000) as proxy:
        client = SyncClient(proxy.url, token, device_id, queue, batch_size=10, max_retries=40, backoff=0.01,
                            max_backoff=0.05, rng=random.Random(11), timeout=10, chunk_bytes=8 * 1024)
        summaries = push_until_done(client)
    assert proxy.cuts["request"] > 0 and proxy.cuts["response"] > 0  # both directions were really cut
    assert sum(s.retries for s in summaries) > 0
    assert_consistent(live_database_url, client_ids, acknowledged_ids(summaries))
    assert queue.pending_count() == 0


def _gunicorn_workers(port: int) -> list[int]:
    """PIDs of gunicorn processes serving this port that are workers (their parent serves it too)."""
    serving: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"gunicorn" in cmdline and f"127.0.0.1:{port}".encode() in cmdline:
                stat = Path(f"/proc/{entry}/stat").read_text()
                serving[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    return [pid for pid, parent in serving.items() if parent in serving]


def test_worker_killed_mid_batch(live_server, live_database_url, queue):
    token, device_id = _live_device(live_database_url)
    client_ids = fill_queue(queue, 2000, seed=12)
    port = urlsplit(live_server).port
    database = live_database_url.rsplit("/", 1)[1]
    admin = create_engine(live_database_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    killed: list[int] = []
    done = threading.Event()

    def killer() -> None:
        """Each time a batch is seen in flight in PostgreSQL, SIGKILL the workers (at most three times)."""
        with admin.connect() as conn:
            while not done.is_set() and len(killed) < 3:
                busy = conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                                        "AND state = 'active' AND pid <> pg_backend_pid()"), {"db": database})
                if busy:
                    for pid in _gunicorn_workers(port):
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    time.sleep(1.0)  # let the master start new workers
                time.sleep(0.002)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        client = SyncClient(live_server, token, device_id, queue, batch_size=500, max_retries=60, backoff=0.2,
                            max_backoff=1.0, rng=random.Random(12), timeout=30)
        summaries = push_until_done(client)
    finally:
        done.set()
        thread.join()
        admin.dispose()
    assert killed, "no worker was killed"
    assert sum(s.retries for s in summaries) > 0
    assert_consistent(live_database_url, client_ids, acknowledged_ids(summaries))


def test_database_connection_dropped_mid_request(live_server, live_database_url, live_server_log, queue):
    token, device_id = _live_device(live_database_url)
    client_ids = fill_queue(queue, 1000, seed=13)
    database = live_database_url.rsplit("/", 1)[1]
    admin = create_engine(live_database_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    stop = threading.Event()
    terminated: list[int] = []

    def dropper() -> None:
        with admin.connect() as conn:
            deadline = time.monotonic() + 3
            while not stop.is_set() and time.monotonic() < deadline:
                pids = list(conn.scalars(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db "
                    "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"),
                    {"db": database}))
                terminated.extend(pids)
                time.sleep(0.005)

    thread = threading.Thread(target=dropper)
    thread.start()
    try:
        client = SyncClient(live_server, token, device_id, queue, batch_size=50, max_retries=40, backoff=0.1,
                            max_backoff=0.5, rng=random.Random(13), timeout=30)
        summaries = push_until_done(client)
    finally:
        stop.set()
        thread.join()
        admin.dispose()
    assert terminated, "no database connection was dropped"
    assert_consistent(live_database_url, client_ids, acknowledged_ids(summaries))
    # The server answered 503 (retry), never a 500: nothing went through the "unhandled error" path.
    assert "unhandled error" not in live_server_log.read_text(errors="replace")
