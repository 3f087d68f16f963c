"""Against real gunicorn over real sockets: what the test client cannot show."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

KHMER = "ផ្លូវលិចទឹក ជ្រៅប្រហែល ៣០ សង់ទីម៉ែត្រ"


def request(base: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, chunks: list[bytes] | None = None) -> tuple[int, bytes, dict]:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        if chunks is not None:
            conn.putrequest(method, path)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            try:
                for chunk in chunks:
                    conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                conn.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer 413 and close before we finish sending
        else:
            conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def test_khmer_report_round_trips_through_gunicorn(live_server):
    body = {"category": "flooding.flooded_road", "description": KHMER,
            "location": {"type": "Point", "coordinates": [104.9160, 11.5564]}}
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
    status, data, _ = request(live_server, "POST", "/api/v1/reports", raw, {"Content-Type": "application/json"})
    assert status == 201, data
    reference = json.loads(data)["reference"]
    status, data, headers = request(live_server, "GET", f"/api/v1/reports/{reference}")
    assert status == 200
    assert KHMER.encode("utf-8") in data
    assert headers["Content-Type"].startswith("application/json")


def test_chunked_body_over_the_limit_is_413(live_server):
    status, data, _ = request(live_server, "POST", "/api/v1/reports", headers={"Content-Type": "application/json"},
                              chunks=[b" " * 8192] * 16)
    assert status == 413
    assert json.loads(data)["error"] == "request.too_large"


def test_content_length_over_the_limit_is_413(live_server):
    status, data, _ = request(live_server, "POST", "/api/v1/reports", b"[" * 70_000,
                              {"Content-Type": "application/json"})
    assert status == 413
    assert json.loads(data)["error"] == "request.too_large"


def test_unexpected_path_is_json_not_html(live_server):
    status, data, headers = request(live_server, "GET", "/api/v1/does-not-exist")
    assert status == 404 and headers["Content-Type"] == "application/json"
    assert json.loads(data)["error"] == "not_found"


def test_eight_concurrent_resends_store_exactly_one_report(live_server, live_database_url):
    """Kobo's duplicate bug: check-then-insert under retries. Here the primary key decides."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import create_engine, text

    client_id = str(uuid.uuid4())
    body = json.dumps({"client_id": client_id, "category": "water.no_supply", "description": "គ្មានទឹក ៣ ថ្ងៃហើយ",
                       "location": {"type": "Point", "coordinates": [104.9000, 11.5700]}},
                      ensure_ascii=False).encode("utf-8")

    def send(_: int) -> tuple[int, bytes]:
        status, data, _headers = request(live_server, "POST", "/api/v1/reports", body,
                                         {"Content-Type": "application/json"})
        return status, data

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, range(8)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 7 + [201], results
    references = {json.loads(data)["reference"] for _, data in results}
    assert len(references) == 1
    engine = create_engine(live_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.scalar(text("SELECT count(*) FROM reports WHERE id = :id"), {"id": client_id})
            events = conn.scalar(text("SELECT count(*) FROM report_events WHERE report_id = :id"), {"id": client_id})
    finally:
        engine.dispose()
    assert (rows, events) == (1, 1)


def _live_device(live_database_url: str) -> tuple[str, int]:
    from sqlalchemy import create_engine, text

    from service.auth import hash_secret, new_secret

    token = new_secret("dev_")
    engine = create_engine(live_database_url)
    try:
        with engine.begin() as conn:
            user_id = conn.execute(text("INSERT INTO users (username, role) VALUES (:u, 'field_worker') RETURNING id"),
                                   {"u": f"live-{token[-8:]}"}).scalar_one()
            device_id = conn.execute(text("INSERT INTO devices (name, user_id, area_id, token_hash) SELECT 'phone', "
                                          ":uid, id, :h FROM areas WHERE code = 'PP' RETURNING id"),
                                     {"uid": user_id, "h": hash_secret(token)}).scalar_one()
    finally:
        engine.dispose()
    return token, device_id


def test_eight_concurrent_replays_of_one_batch_store_each_item_once(live_server, live_database_url):
    import uuid
    from concurrent.futures import ThreadPoolExecutor
    from datetime import datetime, timezone

    from sqlalchemy import create_engine, text

    token, device_id = _live_device(live_database_url)
    client_ids = [str(uuid.uuid4()) for _ in range(3)]
    items = [{"client_id": cid, "op": "create",
              "payload": {"category": "waste.illegal_dumping", "description": f"ចាក់សំរាម {i}",
                          "location": {"type": "Point", "coordinates": [104.91 + i / 1000, 11.56]}}}
             for i, cid in enumerate(client_ids)]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def batch_body(batch_id: str) -> bytes:
        return json.dumps({"device_id": str(device_id), "batch_id": batch_id,
                           "sent_at": datetime.now(timezone.utc).isoformat(), "items": items}).encode()

    same_batch = str(uuid.uuid4())
    with ThreadPoolExecutor(max_workers=8) as pool:
        replays = list(pool.map(lambda _: request(live_server, "POST", "/api/v1/sync/batches",
                                                  batch_body(same_batch), headers), range(8)))
        # The same items in eight different batches at once (two tabs, two phones).
        others = list(pool.map(lambda _: request(live_server, "POST", "/api/v1/sync/batches",
                                                 batch_body(str(uuid.uuid4())), headers), range(8)))
    assert {status for status, _, _ in replays + others} == {200}
    bodies = [json.loads(data) for _, data, _ in replays]
    assert sum(not b["replayed"] for b in bodies) == 1
    assert all(b["results"] == bodies[0]["results"] for b in bodies)
    assert [r["result"] for r in bodies[0]["results"]] == ["created"] * 3
    for _, data, _ in others:
        assert [r["result"] for r in json.loads(data)["results"]] == ["unchanged"] * 3
    engine = create_engine(live_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.scalar(text("SELECT count(*) FROM reports WHERE id = ANY(CAST(:ids AS uuid[]))"),
                               {"ids": client_ids})
            batches = conn.scalar(text("SELECT count(*) FROM sync_batches WHERE device_id = :d"), {"d": device_id})
    finally:
        engine.dispose()
    assert rows == 3 and batches == 9


def test_link_drop_mid_upload_keeps_what_arrived(live_server, live_database_url):
    """The phone loses signal halfway through a piece: the server keeps the prefix, HEAD says where to resume."""
    import hashlib
    import socket
    import time
    from urllib.parse import urlsplit

    token, _ = _live_device(live_database_url)
    photo = bytes(range(256)) * 2000  # 512,000 bytes; content does not matter until the end
    sha = hashlib.sha256(photo).hexdigest()
    parts = urlsplit(live_server)
    piece_end = 199_999
    head_lines = (f"PUT /api/v1/sync/photos/{sha} HTTP/1.1\r\nHost: {parts.hostname}\r\n"
                  f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n"
                  f"Content-Range: bytes 0-{piece_end}/{len(photo)}\r\nContent-Length: {piece_end + 1}\r\n\r\n")
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head_lines.encode() + photo[:120_000])  # then the link drops
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1024)  # wait until the server is done with this request
    offset = None
    for _ in range(50):
        status, _, headers = request(live_server, "HEAD", f"/api/v1/sync/photos/{sha}",
                                     headers={"Authorization": f"Bearer {token}"})
        if status == 200:
            offset = int(headers["Upload-Offset"])
            break
        time.sleep(0.1)
    assert offset == 120_000
    status, data, _ = request(live_server, "PUT", f"/api/v1/sync/photos/{sha}", photo[offset:piece_end + 1],
                              {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream",
                               "Content-Range": f"bytes {offset}-{piece_end}/{len(photo)}"})
    assert status == 200 and json.loads(data)["offset"] == piece_end + 1


def _live_moderator(live_database_url: str) -> str:
    from sqlalchemy import create_engine, text

    from service.auth import hash_secret, new_secret

    token = new_secret()
    engine = create_engine(live_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("WITH u AS (INSERT INTO users (username, role) VALUES (:u, 'moderator') RETURNING id) "
                              "INSERT INTO api_tokens (user_id, token_hash) SELECT id, :h FROM u"),
                         {"u": f"mod-{token[-8:]}", "h": hash_secret(token)})
    finally:
        engine.dispose()
    return token


def _pull_all(live_server: str, token: str, cursor: str | None = None) -> tuple[list[dict], str]:
    items: list[dict] = []
    while True:
        path = "/api/v1/sync/changes?limit=50" + (f"&cursor={cursor}" if cursor else "")
        status, data, _ = request(live_server, "GET", path, headers={"Authorization": f"Bearer {token}"})
        assert status == 200, data
        page = json.loads(data)
        items.extend(page["items"])
        cursor = page["cursor"]
        if not page["more"]:
            return items, cursor


def test_change_feed_brings_the_citys_answer_back_to_the_phone(live_server, live_database_url):
    import uuid
    from datetime import datetime, timezone

    token, device_id = _live_device(live_database_url)
    items_before, cursor = _pull_all(live_server, token)
    assert {i["kind"] for i in items_before} >= {"category"}
    client_id = str(uuid.uuid4())
    batch = {"device_id": str(device_id), "batch_id": str(uuid.uuid4()),
             "sent_at": datetime.now(timezone.utc).isoformat(),
             "items": [{"client_id": client_id, "op": "create",
                        "payload": {"category": "street.dark_streetlight", "description": "ភ្លើងផ្លូវមិនឆេះ",
                                    "location": {"type": "Point", "coordinates": [104.9282, 11.5625]},
                                    "contact": {"phone": "012 345 678", "consent": True}}}]}
    status, _, _ = request(live_server, "POST", "/api/v1/sync/batches", json.dumps(batch).encode(),
                           {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    assert status == 200
    moderator = _live_moderator(live_database_url)
    status, data, _ = request(live_server, "PATCH", f"/api/v1/reports/{client_id}/status",
                              json.dumps({"status": "acknowledged", "note": "យើងនឹងជួសជុលនៅសប្តាហ៍នេះ",
                                          "version": 1}, ensure_ascii=False).encode(),
                              {"Content-Type": "application/json", "Authorization": f"Bearer {moderator}"})
    assert status == 200, data
    new_items, new_cursor = _pull_all(live_server, token, cursor)
    mine = [i for i in new_items if i["kind"] == "report" and i["id"] == client_id]
    assert mine and mine[-1]["report"]["status"] == "acknowledged"
    assert mine[-1]["report"]["description"] == "ភ្លើងផ្លូវមិនឆេះ"
    assert "012 345 678" not in json.dumps(new_items, ensure_ascii=False)
    seqs = [i["seq"] for i in new_items]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    again, same_cursor = _pull_all(live_server, token, new_cursor)
    assert again == [] and same_cursor == new_cursor
    # A device in Sihanoukville does not hear about Phnom Penh's streetlights.
    from sqlalchemy import create_engine, text

    engine = create_engine(live_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE devices SET area_id = (SELECT id FROM areas WHERE code = 'SV') WHERE id = :d"),
                         {"d": device_id})
    finally:
        engine.dispose()
    elsewhere, _ = _pull_all(live_server, token)
    assert all(i["kind"] == "category" for i in elsewhere)


def test_feed_numbers_follow_commit_order_so_no_cursor_skips_a_change(live_database_url):
    """T1 writes first but commits last: it must still be numbered after T2, never behind a reader's cursor."""
    from sqlalchemy import create_engine, text

    engine = create_engine(live_database_url)
    insert = text("INSERT INTO changes (kind, category_code) VALUES ('category', 'waste') RETURNING id")
    try:
        with engine.connect() as first, engine.connect() as second:
            t1 = first.begin()
            id1 = first.execute(insert).scalar_one()
            t2 = second.begin()
            id2 = second.execute(insert).scalar_one()
            t2.commit()
            with engine.connect() as reader:
                seen = reader.scalar(text("SELECT max(seq) FROM changes"))
                assert reader.scalar(text("SELECT seq FROM changes WHERE id = :i"), {"i": id2}) == seen
            t1.commit()
            with engine.connect() as reader:
                seq1 = reader.scalar(text("SELECT seq FROM changes WHERE id = :i"), {"i": id1})
        assert seq1 > seen  # numbered at commit: a reader already past `seen` still gets it
    finally:
        engine.dispose()


def test_bad_and_forged_cursors(live_server, live_database_url):
    from sync.decisions import encode_cursor

    token, _ = _live_device(live_database_url)
    for cursor in ("garbage", encode_cursor(5, secret=b"someone else's key")):
        status, data, _ = request(live_server, "GET", f"/api/v1/sync/changes?cursor={cursor}",
                                  headers={"Authorization": f"Bearer {token}"})
        assert status == 400 and json.loads(data)["error"] == "sync.bad_cursor"
    from service.config import DEV_SECRET_KEY

    future = encode_cursor(10**12, secret=DEV_SECRET_KEY.encode())  # well signed, but from another database
    status, data, _ = request(live_server, "GET", f"/api/v1/sync/changes?cursor={future}",
                              headers={"Authorization": f"Bearer {token}"})
    assert status == 400 and json.loads(data)["error"] == "sync.cursor_from_future"
