"""The reference sync client (sync/client.py), the survey importer and ``civicmap sync``, against real gunicorn.

Network failures are made by wrapping the real transport: a request that
fails before it is sent, one that the server processes but whose answer is
lost, and a photo piece cut off halfway through its body.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import create_engine, text

from service.cli_sync import sync_group
from sync.client import (
    HttpRequest,
    HttpResponse,
    LocalQueue,
    QueueError,
    SyncClient,
    http_transport,
)
from sync.importer import SurveyFileError, items_from_csv, items_from_geojson
from tests.test_live_server import _live_device, _live_moderator

KHMER = "ធុងសំរាមពេញ ហៀរចេញតាមផ្លូវ"
KHMER_LANDMARK = "ផ្លូវ ១៨២ ជិតផ្សារអូឡាំពិក"
BANGKOK = [100.5, 13.75]


# --- helpers ---------------------------------------------------------------------------------------------------


def payload(i: int, **changes: object) -> dict:
    body: dict = {"category": "waste.overflowing_bin", "description": f"{KHMER} {i}",
                  "location": {"type": "Point", "coordinates": [104.90 + i / 2000, 11.56]}}
    body.update(changes)
    return body


def db_scalar(url: str, sql: str, **params: object) -> object:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(text(sql), params)
    finally:
        engine.dispose()


def count_reports(url: str, ids: list[str]) -> int:
    return int(db_scalar(url, "SELECT count(*) FROM reports WHERE id = ANY(CAST(:ids AS uuid[]))", ids=ids))


def batch_body(request: HttpRequest) -> dict:
    raw = gzip.decompress(request.body) if request.headers.get("Content-Encoding") == "gzip" else request.body
    return json.loads(raw)


class Recorder:
    """The real transport, recording every request; ``plan`` makes POSTs to /sync/batches fail.

    ``"before"``: raise before sending; ``"after"``: send (the server stores
    it), then raise as if the answer was lost; ``"ok"``: pass. After the
    plan runs out, POSTs pass (or keep failing as ``then``).
    """

    def __init__(self, plan: list[str] | None = None, then: str = "ok") -> None:
        self.plan = list(plan or [])
        self.then = then
        self.requests: list[HttpRequest] = []
        self.responses: list[HttpResponse | None] = []

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        mode = "ok"
        if request.method == "POST":
            mode = self.plan.pop(0) if self.plan else self.then
        if mode == "before":
            self.responses.append(None)
            raise ConnectionResetError("link down before sending")
        response = http_transport(request)
        self.responses.append(response)
        if mode == "after":
            raise TimeoutError("the answer was lost")
        return response

    def posts(self) -> list[dict]:
        return [batch_body(r) for r in self.requests if r.method == "POST"]


@pytest.fixture()
def device(live_server: str, live_database_url: str) -> tuple[str, int]:
    return _live_device(live_database_url)


@pytest.fixture()
def queue(tmp_path: Path) -> Iterator[LocalQueue]:
    with LocalQueue(tmp_path / "phone.queue.sqlite") as q:
        yield q


@pytest.fixture()
def make_client(live_server: str, device: tuple[str, int]) -> Callable[..., SyncClient]:
    token, device_id = device

    def factory(queue: LocalQueue, transport: Callable[[HttpRequest], HttpResponse] = http_transport,
                sleeps: list[float] | None = None, **options: object) -> SyncClient:
        return SyncClient(live_server, token, device_id, queue, rng=random.Random(7), transport=transport,
                          sleep=(sleeps if sleeps is not None else []).append, **options)  # type: ignore[arg-type]

    return factory


def noisy_jpeg(width: int = 200, height: int = 150, seed: int = 5) -> bytes:
    """A small photo-like JPEG that does not compress away (noise), ~60 KB."""
    pixels = random.Random(seed).randbytes(width * height * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(out, "JPEG", quality=95)
    return out.getvalue()


def write_survey(path: Path, rows: list[list[str]], *, bom: bool = True, delimiter: str = ",") -> Path:
    header = ["survey_id", "category", "description", "lon", "lat", "observed_at", "landmark", "accuracy_m",
              "contact_name", "contact_phone", "consent"]
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


SURVEY_ROWS = [
    ["PP-001", "waste.overflowing_bin", KHMER, "104.9135", "11.5581", "2026-11-18", KHMER_LANDMARK, "12",
     "សុខ ដារា", "012 345 678", "បាទ"],
    ["PP-002", "flooding.flooded_road", "ផ្លូវលិចទឹក ជ្រៅប្រហែល ៣០ សង់ទីម៉ែត្រ", "104.9282", "11.5564",
     "2026-11-18 07:30", "", "", "", "", ""],
    ["PP-003", "street.pothole", "Pothole, deep — រណ្ដៅធំ", "104.9201", "11.5702", "2026-11-19T09:15:00+07:00",
     "", "5", "", "", ""],
    ["PP-004", "water.no_supply", "", "104.9", "91", "2026-11-19", "", "", "", "", ""],  # bad: latitude 91
    ["", "street.dark_streetlight", "ភ្លើងផ្លូវមិនឆេះ", "104.9282", "11.5625", "", "", "", "", "", ""],
]


# --- push --------------------------------------------------------------------------------------------------------


def test_thirty_items_go_in_three_batches_and_a_second_push_sends_nothing(make_client, queue, live_database_url):
    ids = [queue.add_create(payload(i)) for i in range(30)]
    recorder = Recorder()
    progress: list[int] = []
    summary = make_client(queue, recorder, batch_size=10).push(progress=progress.append)

    posts = recorder.posts()
    assert [len(p["items"]) for p in posts] == [10, 10, 10]
    assert len({p["batch_id"] for p in posts}) == 3 and summary.batch_ids == [p["batch_id"] for p in posts]
    assert [i["client_id"] for p in posts for i in p["items"]] == ids  # queue order, each once
    assert all(r.headers["Content-Encoding"] == "gzip" for r in recorder.requests)
    assert summary.counts == {"created": 30, "unchanged": 0, "conflict": 0, "rejected": 0}
    assert progress == [10, 10, 10] and summary.ok and summary.retries == 0
    assert count_reports(live_database_url, ids) == 30
    items = queue.items()
    assert {i.state for i in items} == {"created"} and all(i.reference and i.version == 1 for i in items)
    assert len({i.reference for i in items}) == 30
    assert queue.inflight_batch() is None

    again = Recorder()
    second = make_client(queue, again, batch_size=10).push()
    assert again.requests == [] and second.batches == 0 and sum(second.counts.values()) == 0
    assert queue.pending() == [] and count_reports(live_database_url, ids) == 30


def test_retry_resends_the_same_batch_and_the_server_answers_a_replay(make_client, queue, device,
                                                                       live_database_url):
    _, device_id = device
    ids = [queue.add_create(payload(i)) for i in range(5)]
    ticks = iter(range(100))

    def clock() -> datetime:  # the phone's clock, one second further at every attempt
        return datetime(2026, 11, 20, 8, 0, tzinfo=timezone(timedelta(hours=7))) + timedelta(seconds=next(ticks))

    # Twice the link is down before anything is sent; the third time the server stores the batch but the
    # answer never arrives; the fourth attempt gets through.
    recorder = Recorder(["before", "before", "after"])
    sleeps: list[float] = []
    summary = make_client(queue, recorder, sleeps, clock=clock).push()

    posts = recorder.posts()
    assert len(posts) == 4
    assert len({p["batch_id"] for p in posts}) == 1
    assert all(p["items"] == posts[0]["items"] for p in posts)
    assert len({p["sent_at"] for p in posts}) == 4  # only the device clock is refreshed (§7)
    last = recorder.responses[-1]
    assert last is not None and last.json()["replayed"] is True
    assert recorder.responses[2] is not None and recorder.responses[2].json()["replayed"] is False
    assert summary.replayed == 1 and summary.retries == 3 and summary.attempts == 4
    assert summary.counts["created"] == 5
    # Backoff 0.5 s doubling, each delay jittered between half and all of it.
    assert len(sleeps) == 3
    for attempt, wait in enumerate(sleeps):
        assert 0.25 * 2 ** attempt <= wait <= 0.5 * 2 ** attempt
    assert count_reports(live_database_url, ids) == 5
    assert db_scalar(live_database_url, "SELECT count(*) FROM sync_batches WHERE device_id = :d", d=device_id) == 1
    assert queue.pending() == [] and queue.inflight_batch() is None


def test_a_run_that_dies_mid_batch_is_resent_identically_by_the_next_run(make_client, tmp_path, device,
                                                                         live_database_url):
    _, device_id = device
    path = tmp_path / "crash.queue.sqlite"
    with LocalQueue(path) as first:
        ids = [first.add_create(payload(i)) for i in range(5)]
        dying = Recorder(then="after")  # every answer is lost
        stopped = make_client(first, dying, batch_size=2, max_retries=1).push()
        assert stopped.stopped and "could not be reached" in stopped.stopped
        assert stopped.batches == 0 and first.pending_count() == 5
        inflight = first.inflight_batch()
        assert inflight is not None and [i["client_id"] for i in inflight["items"]] == ids[:2]
    assert count_reports(live_database_url, ids) == 2  # the server did store the first batch

    with LocalQueue(path) as reopened:  # a new process, after a reboot
        recorder = Recorder()
        summary = make_client(reopened, recorder, batch_size=2).push()
        posts = recorder.posts()
        assert posts[0]["batch_id"] == inflight["batch_id"] and posts[0]["items"] == inflight["items"]
        assert recorder.responses[0] is not None and recorder.responses[0].json()["replayed"] is True
        assert [len(p["items"]) for p in posts] == [2, 2, 1]
        assert summary.counts["created"] == 5 and summary.replayed == 1 and summary.pending == 0
    assert count_reports(live_database_url, ids) == 5
    assert db_scalar(live_database_url, "SELECT count(*) FROM sync_batches WHERE device_id = :d", d=device_id) == 3


def test_an_item_outside_the_area_is_rejected_and_reported_while_the_others_go(make_client, queue,
                                                                               live_database_url):
    good = [queue.add_create(payload(i)) for i in range(2)]
    outside = queue.add_create(payload(9, location={"type": "Point", "coordinates": BANGKOK}), label="Bangkok")
    lat_91 = queue.add_create(payload(10, location={"type": "Point", "coordinates": [104.9, 91]}))
    summary = make_client(queue).push()

    assert summary.counts == {"created": 2, "unchanged": 0, "conflict": 0, "rejected": 2}
    problems = {p.client_id: p for p in summary.problems()}
    assert set(problems) == {outside, lat_91}
    assert problems[outside].error == "report.outside_service_area" and problems[outside].label == "Bangkok"
    assert problems[lat_91].error == "sync.invalid_payload" and "location" in problems[lat_91].errors
    assert queue.get(outside).state == "rejected" and queue.get(outside).result["error"] == "report.outside_service_area"
    assert count_reports(live_database_url, good + [outside, lat_91]) == 2
    assert summary.pending == 0 and make_client(queue).push().batches == 0  # a rejection is not resent


def test_a_4xx_is_not_retried_and_marks_only_that_batch(make_client, queue, live_database_url):
    ids = [queue.add_create(payload(i)) for i in range(4)]
    calls: list[HttpRequest] = []

    def corrupt_first(request: HttpRequest) -> HttpResponse:
        calls.append(request)
        if len(calls) == 1:  # a proxy mangles the body: the server answers 400 sync.corrupt_gzip
            request = HttpRequest(request.method, request.url, request.headers, request.body[:-6], request.timeout)
        return http_transport(request)

    sleeps: list[float] = []
    summary = make_client(queue, corrupt_first, sleeps, batch_size=2).push()
    assert sleeps == [] and len([c for c in calls if c.method == "POST"]) == 2
    assert [o.result for o in summary.outcomes] == ["rejected", "rejected", "created", "created"]
    assert {o.error for o in summary.outcomes[:2]} == {"sync.corrupt_gzip"}
    assert queue.get(ids[0]).result["request_status"] == 400
    assert count_reports(live_database_url, ids) == 2
    # The items were fine; put them back and they go.
    assert queue.requeue(ids[:2]) == 2
    assert make_client(queue).push().counts["created"] == 2 and count_reports(live_database_url, ids) == 4


def test_a_refused_device_stops_the_push_and_keeps_the_items(live_server, queue, device):
    token, device_id = device
    ids = [queue.add_create(payload(i)) for i in range(3)]
    recorder = Recorder()
    sleeps: list[float] = []
    wrong = SyncClient(live_server, token, device_id + 10_000, queue, transport=recorder, sleep=sleeps.append,
                       batch_size=1)
    summary = wrong.push()
    assert len(recorder.requests) == 1 and sleeps == []  # no retry, no second batch
    assert summary.stopped and "sync.device_mismatch" in summary.stopped and not summary.ok
    assert queue.pending_count() == 3 and queue.get(ids[0]).result["error"] == "sync.device_mismatch"
    summary = SyncClient(live_server, "dev_not-a-token", device_id, queue, transport=recorder,
                         sleep=sleeps.append).push()
    assert summary.stopped and "auth.invalid_token" in summary.stopped and queue.pending_count() == 3


def test_retry_after_is_honoured(make_client, queue, live_database_url):
    ids = [queue.add_create(payload(i)) for i in range(2)]
    answers = iter([HttpResponse(503, {"retry-after": "7"}, b"busy"),
                    HttpResponse(429, {"retry-after": "3"}, b'{"error": "request.rate_limited"}')])

    def busy_then_fine(request: HttpRequest) -> HttpResponse:
        return next(answers, None) or http_transport(request)

    sleeps: list[float] = []
    summary = make_client(queue, busy_then_fine, sleeps).push()
    assert sleeps == [7.0, 3.0] and summary.counts["created"] == 2
    assert count_reports(live_database_url, ids) == 2


def test_a_server_without_gzip_gets_the_same_batch_uncompressed(make_client, queue, live_database_url):
    ids = [queue.add_create(payload(i)) for i in range(2)]
    seen: list[HttpRequest] = []

    def no_gzip(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        if request.headers.get("Content-Encoding") == "gzip":
            return HttpResponse(415, {}, b'{"error": "sync.unsupported_encoding", "message": "no gzip here"}')
        return http_transport(request)

    summary = make_client(queue, no_gzip).push()
    assert summary.counts["created"] == 2 and count_reports(live_database_url, ids) == 2
    posts = [batch_body(r) for r in seen if r.method == "POST"]
    assert len(posts) == 2 and posts[0]["batch_id"] == posts[1]["batch_id"]
    assert "Content-Encoding" not in seen[1].headers


def test_backoff_is_exponential_jittered_capped_and_reproducible(queue):
    def client(seed: int) -> SyncClient:
        return SyncClient("http://127.0.0.1:9", "t", 1, queue, backoff=0.5, max_backoff=300, rng=random.Random(seed))

    first, same_seed, other_seed = client(1), client(1), client(2)
    delays = [first.delay(n) for n in range(12)]
    assert delays == [same_seed.delay(n) for n in range(12)] != [other_seed.delay(n) for n in range(12)]
    for n, wait in enumerate(delays):
        base = min(300, 0.5 * 2 ** n)
        assert base / 2 <= wait <= base
    assert client(1).delay(0, retry_after=12) == 12 and client(1).delay(0, retry_after=10_000) == 300


def test_a_link_that_stays_down_gives_up_after_max_retries(queue):
    queue.add_create(payload(0))
    sleeps: list[float] = []

    def down(request: HttpRequest) -> HttpResponse:
        raise ConnectionRefusedError("no route")

    summary = SyncClient("http://127.0.0.1:9", "t", 1, queue, transport=down, sleep=sleeps.append,
                         max_retries=3, rng=random.Random(1)).push()
    assert summary.stopped and "4 attempts" in summary.stopped and len(sleeps) == 3
    assert queue.pending_count() == 1 and queue.inflight_batch() is not None


# --- photos ------------------------------------------------------------------------------------------------------


def test_photo_uploads_in_pieces_and_resumes_from_the_servers_offset(make_client, queue, live_server, device,
                                                                     tmp_path):
    token, _ = device
    photo = noisy_jpeg()
    sha = hashlib.sha256(photo).hexdigest()
    photo_file = tmp_path / "IMG_0001.jpg"
    photo_file.write_bytes(photo)
    client_id = queue.add_create(payload(1), photos=[photo_file])
    total, piece = len(photo), 8192
    assert total > 4 * piece

    delivered: list[tuple[int, int]] = []  # (first byte, bytes that reached the server)
    puts = 0

    def head_offset() -> int:
        with _open(HttpRequest("HEAD", f"{live_server}/api/v1/sync/photos/{sha}",
                               {"Authorization": f"Bearer {token}"})) as response:
            return int(response.headers.get("Upload-Offset", "0"))

    def flaky(request: HttpRequest) -> HttpResponse:
        nonlocal puts
        if request.method != "PUT":
            return http_transport(request)
        puts += 1
        start = int(request.headers["Content-Range"].split()[1].split("-")[0])
        if puts == 2:  # the link drops halfway through the body: the server keeps what arrived
            half = len(request.body) // 2
            _send_partial(request, half)
            for _ in range(50):  # until the server has committed the prefix
                if head_offset() == start + half:
                    break
                time.sleep(0.05)
            delivered.append((start, half))
            raise ConnectionResetError("link dropped mid-body")
        response = http_transport(request)
        delivered.append((start, len(request.body)))
        if puts == 4:  # stored, but the answer is lost
            raise TimeoutError("answer lost")
        return response

    seen: list[HttpRequest] = []

    def transport(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return flaky(request)

    summary = make_client(queue, transport, chunk_bytes=piece).push()
    assert summary.photos_uploaded == [sha] and summary.photo_failures == {} and summary.ok
    # Every byte reached the server exactly once: the pieces are contiguous, without overlap or gap.
    position = 0
    for start, length in delivered:
        assert start == position
        position += length
    assert position == total
    assert delivered[1][1] == piece // 2 and delivered[2][0] == piece + piece // 2  # resumed mid-piece
    methods = [r.method for r in seen]
    assert methods[0] == "POST" and methods.count("HEAD") == 3  # at the start and after each failure
    assert queue.photo_state(sha)["complete"] is True
    reference = queue.get(client_id).reference
    with urllib.request.urlopen(f"{live_server}/api/v1/reports/{reference}", timeout=10) as response:
        report = json.loads(response.read())
    assert len(report["photos"]) == 1  # sanitised and linked to the report

    again = Recorder()
    assert make_client(queue, again).push().photos_uploaded == [] and again.requests == []


def test_a_photo_already_on_the_server_is_not_sent_again(make_client, queue, tmp_path):
    photo = noisy_jpeg(seed=11)
    first = queue.add_create(payload(1), photos=[photo])
    assert make_client(queue).push().photos_uploaded == [hashlib.sha256(photo).hexdigest()]
    with LocalQueue(tmp_path / "other.sqlite") as other:  # another phone took the same picture file
        other.add_create(payload(2), photos=[photo])
        recorder = Recorder()
        summary = make_client(other, recorder).push()
        assert summary.counts["created"] == 1 and summary.photos_uploaded == []
        assert [r.method for r in recorder.requests] == ["POST"]
    assert queue.get(first).state == "created"


def test_an_upload_with_every_byte_stored_but_unfinished_is_finished_with_its_last_byte(queue):
    photo = noisy_jpeg(seed=3)
    sha = hashlib.sha256(photo).hexdigest()
    queue.add_create(payload(1), photos=[photo])
    queue.record_results([{"index": 0, "client_id": queue.pending()[0].client_id, "result": "created",
                           "missing_photos": [sha]}])
    puts: list[str] = []

    def fake(request: HttpRequest) -> HttpResponse:
        total = str(len(photo))
        if request.method == "HEAD":
            return HttpResponse(200, {"upload-offset": total, "upload-length": total, "upload-complete": "?0"})
        puts.append(request.headers["Content-Range"])
        return HttpResponse(200, {"upload-offset": total, "upload-complete": "?1"}, b"{}")

    client = SyncClient("http://127.0.0.1:9", "t", 1, queue, transport=fake, sleep=lambda _: None)
    assert client.upload_photos() == ([sha], {})
    assert puts == [f"bytes {len(photo) - 1}-{len(photo) - 1}/{len(photo)}"]


def _open(request: HttpRequest) -> Any:
    return urllib.request.urlopen(urllib.request.Request(request.url, method=request.method,
                                                         headers=dict(request.headers)), timeout=10)


def _send_partial(request: HttpRequest, nbytes: int) -> None:
    """Send the request with its full Content-Length but only ``nbytes`` of body, then hang up."""
    parts = urlsplit(request.url)
    lines = [f"{request.method} {parts.path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}",
             f"Content-Length: {len(request.body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body[:nbytes])
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1024)


# --- pull --------------------------------------------------------------------------------------------------------


def test_pull_brings_the_moderators_change_to_the_queue(make_client, queue, live_server, live_database_url):
    client = make_client(queue)
    client_id = queue.add_create(payload(1))
    assert client.push().counts["created"] == 1
    first = client.pull(limit=50)
    assert first.changes >= 1 and queue.get_meta("cursor") == first.cursor
    assert queue.get(client_id).status == "new"

    moderator = _live_moderator(live_database_url)
    body = json.dumps({"status": "acknowledged", "note": "យើងនឹងជួសជុលនៅសប្តាហ៍នេះ", "version": 1},
                      ensure_ascii=False).encode()
    answer = http_transport(HttpRequest("PATCH", f"{live_server}/api/v1/reports/{client_id}/status",
                                        {"Content-Type": "application/json", "Authorization": f"Bearer {moderator}"},
                                        body))
    assert answer.status == 200, answer.body
    pulled = client.pull(limit=50)
    assert pulled.changes >= 1 and pulled.updated == 1 and pulled.cursor != first.cursor
    item = queue.get(client_id)
    assert (item.status, item.version) == ("acknowledged", 2)
    mine = [c for c in queue.changes() if c.get("id") == client_id]
    assert mine[-1]["report"]["status"] == "acknowledged"
    assert client.pull() == type(pulled)(0, 1, 0, pulled.cursor)  # up to date; the cursor stays

    # The field worker goes on from the version the feed brought (base_version 2 → version 3) …
    update = queue.add_update(client_id, status="in_progress", note="ក្រុមការងារបានមកដល់")
    stale = queue.add_update(client_id, status="resolved", note="done", base_version=1)
    summary = client.push()
    assert summary.outcomes[0].client_id == update and summary.outcomes[0].result == "created"
    assert summary.outcomes[0].version == 3
    # … and an update based on an old version is a conflict, shown with the server's state.
    conflict = summary.outcomes[1]
    assert (conflict.client_id, conflict.result, conflict.error) == (stale, "conflict", "sync.stale_version")
    assert queue.get(stale).result["current"]["version"] == 3


def test_a_refused_cursor_restarts_the_feed(make_client, queue):
    client = make_client(queue)
    queue.set_meta("cursor", "garbage")
    pulled = client.pull(limit=500)
    assert pulled.restarted and pulled.changes > 0 and queue.get_meta("cursor") == pulled.cursor


# --- importing surveys -------------------------------------------------------------------------------------------


def test_importing_the_same_survey_twice_creates_nothing_new(make_client, tmp_path, live_database_url):
    survey = write_survey(tmp_path / "survey.csv", SURVEY_ROWS)
    imported = items_from_csv(survey)
    assert [str(e) for e in imported.errors] == ["row 5: location.coordinates: latitude 91 is outside −90…90"]
    ids = [client_id for client_id, _ in imported]
    assert len(ids) == 4

    with LocalQueue(tmp_path / "a.sqlite") as first:
        assert len(first.import_items(imported)["added"]) == 4
        assert first.import_items(items_from_csv(survey))["existing"] == ids  # again: nothing added
        summary = make_client(first).push()
        assert summary.counts["created"] == 4
        references = [first.get(i).reference for i in ids]
    reports_before = db_scalar(live_database_url, "SELECT count(*) FROM reports")

    # The same sheet typed in again on another laptop (or the queue was lost): the server knows every row.
    with LocalQueue(tmp_path / "b.sqlite") as second:
        second.import_items(items_from_csv(survey))
        summary = make_client(second).push()
        assert summary.counts == {"created": 0, "unchanged": 4, "conflict": 0, "rejected": 0}
        assert [second.get(i).reference for i in ids] == references
    assert db_scalar(live_database_url, "SELECT count(*) FROM reports") == reports_before
    assert count_reports(live_database_url, ids) == 4
    stored = db_scalar(live_database_url, "SELECT description || '|' || landmark FROM reports WHERE id = :id",
                       id=ids[0])
    assert stored == f"{KHMER}|{KHMER_LANDMARK}"
    observed = db_scalar(live_database_url, "SELECT observed_at_device FROM reports WHERE id = :id", id=ids[0])
    assert observed == datetime(2026, 11, 18, tzinfo=timezone(timedelta(hours=7)))


def test_survey_ids_are_stable_and_khmer_round_trips_with_or_without_bom(tmp_path):
    with_bom = items_from_csv(write_survey(tmp_path / "bom.csv", SURVEY_ROWS, bom=True))
    without = items_from_csv(write_survey(tmp_path / "plain.csv", SURVEY_ROWS, bom=False))
    semicolons = items_from_csv(write_survey(tmp_path / "excel.csv", [
        [cell.replace("104.9135", "104,9135") for cell in row] for row in SURVEY_ROWS], delimiter=";"))
    assert with_bom.items[0].payload["description"] == KHMER
    assert with_bom.items[0].payload["landmark"] == KHMER_LANDMARK
    assert list(with_bom) == list(without) == list(semicolons)
    first = with_bom.items[0].payload
    assert first["observed_at"] == "2026-11-18T00:00:00+07:00"  # a bare date: midnight, Phnom Penh time
    assert first["contact"] == {"name": "សុខ ដារា", "phone": "012 345 678", "consent": True}
    assert with_bom.items[1].payload["observed_at"] == "2026-11-18T07:30:00+07:00"  # no offset: +07:00
    assert with_bom.items[2].payload["observed_at"] == "2026-11-19T09:15:00+07:00"
    assert with_bom.items[0].row == 2 and with_bom.items[3].row == 6

    # A typo fixed in a row with a survey id keeps its id; without one, other content is another report.
    edited = [row[:] for row in SURVEY_ROWS]
    edited[0][2] = "corrected"
    edited[4][2] = "corrected too"
    again = items_from_csv(write_survey(tmp_path / "edited.csv", edited))
    assert again.items[0].client_id == with_bom.items[0].client_id
    assert again.items[3].client_id != with_bom.items[3].client_id
    scoped = items_from_csv(write_survey(tmp_path / "scoped.csv", SURVEY_ROWS), id_scope="2026 dry season")
    assert not {c for c, _ in scoped} & {c for c, _ in with_bom}


def test_bad_rows_are_reported_with_their_numbers_and_the_good_rows_still_go(tmp_path):
    rows = [
        ["1", "waste.burning", "ok", "104.91", "11.55", "", "", "", "", "", ""],
        ["2", "", "no category", "104.91", "11.55", "", "", "", "", "", ""],
        ["3", "waste.burning", "", "east", "11.55", "", "", "", "", "", ""],
        ["4", "waste.burning", "", "104.91", "11.55", "10/03/2025", "", "", "", "", ""],
        ["5", "waste.burning", "", "104.91", "11.55", "", "", "-3", "", "", ""],
        ["6", "waste.burning", "phone, no consent", "104.92", "11.55", "", "", "", "", "012 999 888", ""],
        ["7", "waste.burning", "x" * 2001, "104.91", "11.55", "", "", "", "", "", ""],
        ["", "waste.burning", "twice", "១០៤.៩៣", "១១.៥៥", "", "", "", "", "", ""],
        ["", "waste.burning", "twice", "104.93", "11.55", "", "", "", "", "", ""],
        ["1", "waste.burning", "reused id", "104.94", "11.55", "", "", "", "", "", ""],
    ]
    result = items_from_csv(write_survey(tmp_path / "bad.csv", rows))
    assert [item.row for item in result.items] == [2, 7, 9]
    errors = {e.row: str(e) for e in result.errors}
    assert set(errors) == {3, 4, 5, 6, 8, 11}
    assert "category: missing" in errors[3] and "'east' is not a number" in errors[4]
    assert "observed_at" in errors[5] and "accuracy_m" in errors[6] and "description" in errors[8]
    assert "already used by row 2" in errors[11]
    warnings = {w.row: str(w) for w in result.warnings}
    assert "no consent" in warnings[7] and "the same as row 9" in warnings[10]
    assert "contact" not in result.items[1].payload  # never sent without consent
    assert result.items[2].payload["location"]["coordinates"] == [104.93, 11.55]  # Khmer digits read


def test_survey_file_errors(tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("category,lon,lat,description\nwaste.burning,104.9,11.5,caf\xe9\n".encode("latin-1"))
    with pytest.raises(SurveyFileError, match="UTF-8"):
        items_from_csv(latin1)
    no_lat = tmp_path / "no_lat.csv"
    no_lat.write_text("category,lon\nwaste.burning,104.9\n", encoding="utf-8")
    with pytest.raises(SurveyFileError, match="lat"):
        items_from_csv(no_lat)


def test_geojson_survey(tmp_path):
    features = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "g-1", "geometry": {"type": "Point", "coordinates": [104.9282, 11.5625]},
         "properties": {"category": "flooding.blocked_drain", "description": "លូស្ទះ", "observed_at": "2026-11-20"}},
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[104.9, 11.5], [104.91, 11.51]]},
         "properties": {"category": "street.pothole"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [104.93, 11.57]},
         "properties": {"category": "street.pothole", "survey_id": 7, "colour": "red"}},
    ]}
    path = tmp_path / "survey.geojson"
    path.write_text(json.dumps(features, ensure_ascii=False), encoding="utf-8")
    result = items_from_geojson(path)
    assert [item.row for item in result.items] == [1, 3] and [e.row for e in result.errors] == [2]
    assert str(result.errors[0]).startswith("feature 2:")
    assert result.items[0].payload == {"category": "flooding.blocked_drain", "description": "លូស្ទះ",
                                       "location": {"type": "Point", "coordinates": [104.9282, 11.5625]},
                                       "observed_at": "2026-11-20T00:00:00+07:00"}
    assert result.ignored_columns == ["colour"]
    assert [c for c, _ in items_from_geojson(path)] == [c for c, _ in result]


# --- the queue ---------------------------------------------------------------------------------------------------


def test_queue_is_idempotent_and_refuses_to_rewrite_what_was_sent(tmp_path):
    path = tmp_path / "q.sqlite"
    stable = str(uuid.uuid4())
    with LocalQueue(path) as queue:
        assert queue.add_create(payload(1), client_id=stable) == stable
        assert queue.add_create(payload(1), client_id=stable) == stable  # the same: nothing new
        queue.add_create(payload(2), client_id=stable)  # still pending: replaced
        assert queue.pending_count() == 1 and queue.get(stable).payload == payload(2)
        queue.record_results([{"index": 0, "client_id": stable, "result": "created", "id": stable,
                               "reference": "PP-TEST1", "version": 1, "missing_photos": []}])
        with pytest.raises(QueueError):
            queue.add_create(payload(3), client_id=stable)
        assert queue.add_update(stable, status="acknowledged") and queue.pending()[0].base_version == 1
        with pytest.raises(ValueError):
            queue.add_update(str(uuid.uuid4()), status="acknowledged")  # no version known
    with LocalQueue(path) as reopened:
        assert reopened.get(stable).reference == "PP-TEST1"
        assert reopened.counts() == {"pending": 1, "created": 1, "unchanged": 0, "conflict": 0, "rejected": 0}


# --- the command line --------------------------------------------------------------------------------------------


def test_cli_push_of_a_survey_shows_progress_and_a_per_item_summary(live_server, device, tmp_path,
                                                                    live_database_url):
    token, device_id = device
    rows = [row[:] for row in SURVEY_ROWS]
    rows.append(["BKK-1", "waste.burning", "outside", str(BANGKOK[0]), str(BANGKOK[1]), "", "", "", "", "", ""])
    survey = write_survey(tmp_path / "ward7.csv", rows)
    runner = CliRunner()
    args = ["push", str(survey), "--server", live_server, "--device-id", str(device_id), "--batch-size", "2",
            "--id-scope", "ward 7"]  # the same survey ids as other tests, another survey
    result = runner.invoke(sync_group, args, env={"CIVICMAP_DEVICE_TOKEN": token})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Imported ward7.csv: 5 new, 0 already queued; 1 row not imported." in out
    assert "not imported: row 5: location.coordinates: latitude 91" in out
    assert "Pushing 5 items" in out and "Pushing" in out.split("Pushing 5 items", 1)[1]  # the progress bar
    assert "Results: created 4, unchanged 0, conflict 0, rejected 1" in out
    assert "rejected: ward7.csv row 7 " in out and "report.outside_service_area" in out
    assert (tmp_path / "ward7.csv.queue.sqlite").exists()
    ids = [c for c, _ in items_from_csv(survey, id_scope="ward 7")]
    assert count_reports(live_database_url, ids) == 4

    again = runner.invoke(sync_group, args, env={"CIVICMAP_DEVICE_TOKEN": token})
    assert again.exit_code == 0, again.output
    assert "0 new, 5 already queued" in again.output and "Pushing 0 items" in again.output
    assert "Results: created 0, unchanged 0, conflict 0, rejected 0" in again.output

    pulled = runner.invoke(sync_group, ["pull", "--queue", str(tmp_path / "ward7.csv.queue.sqlite")],
                           env={"CIVICMAP_DEVICE_TOKEN": token})  # server and device from the queue
    assert pulled.exit_code == 0, pulled.output
    assert "changes in" in pulled.output


def test_cli_import_then_push_a_queue_and_failure_exit_status(tmp_path, device, live_server):
    token, device_id = device
    survey = write_survey(tmp_path / "s.csv", SURVEY_ROWS[:2])
    queue_path = tmp_path / "phone.sqlite"
    runner = CliRunner()
    imported = runner.invoke(sync_group, ["import", str(survey), "--queue", str(queue_path), "--id-scope", "cli"])
    assert imported.exit_code == 0, imported.output
    assert "2 new" in imported.output and "2 item(s) waiting in phone.sqlite" in imported.output
    no_token = runner.invoke(sync_group, ["push", str(queue_path), "--server", live_server, "--device-id",
                                          str(device_id)], env={"CIVICMAP_DEVICE_TOKEN": None})
    assert no_token.exit_code == 2 and "--token" in no_token.output
    refused = runner.invoke(sync_group, ["push", str(queue_path), "--server", live_server, "--device-id",
                                         str(device_id), "--token", "dev_wrong"])
    assert refused.exit_code == 1 and "auth.invalid_token" in refused.output
    assert "2 items still to send" in refused.output
    pushed = runner.invoke(sync_group, ["push", str(queue_path), "--server", live_server, "--device-id",
                                        str(device_id), "--token", token])
    assert pushed.exit_code == 0 and "created 2" in pushed.output
