"""POST /api/v1/sync/batches on real PostGIS: idempotent, per-item results, clock correction."""

from __future__ import annotations

import gzip
import io
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tests.conftest import auth
from tests.test_bad_input import assert_error

PHNOM_PENH = [104.9282, 11.5625]


def create_item(client_id: str | None = None, **payload: object) -> dict:
    body = {"category": "flooding.blocked_drain", "description": "លូស្ទះ ទឹកមិនស្រក",
            "location": {"type": "Point", "coordinates": PHNOM_PENH}}
    body.update(payload)
    return {"client_id": client_id or str(uuid.uuid4()), "op": "create", "payload": body}


def batch(device_id: int, items: list[dict], *, batch_id: str | None = None, sent_at: datetime | None = None) -> dict:
    return {"device_id": str(device_id), "batch_id": batch_id or str(uuid.uuid4()),
            "sent_at": (sent_at or datetime.now(timezone.utc)).isoformat(), "items": items}


@pytest.fixture()
def device(make_device):
    return make_device("PP")


def push(client, token: str, body: dict | bytes, **headers):
    data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return client.post("/api/v1/sync/batches", data=data, content_type="application/json",
                       headers={**auth(token), **headers})


def test_one_bad_item_never_sinks_the_others(client, device, connection):
    token, device_id = device
    good = create_item()
    outside = create_item(location={"type": "Point", "coordinates": [100.5, 13.75]})
    lat_91 = create_item(location={"type": "Point", "coordinates": [104.9, 91]})
    response = push(client, token, batch(device_id, [good, outside, lat_91]))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [r["result"] for r in body["results"]] == ["created", "rejected", "rejected"]
    assert body["results"][1]["error"] == "report.outside_service_area"
    assert "location" in body["results"][2]["errors"]
    assert body["counts"] == {"created": 1, "unchanged": 0, "conflict": 0, "rejected": 2}
    row = connection.execute(text("SELECT source, device_id, description FROM reports WHERE id = :id"),
                             {"id": good["client_id"]}).one()
    assert row.source == "field_sync" and row.device_id == device_id and row.description == "លូស្ទះ ទឹកមិនស្រក"


def test_replayed_batch_answers_the_same_and_stores_nothing_new(client, device, connection):
    token, device_id = device
    body = batch(device_id, [create_item(), create_item()])
    first = push(client, token, body).get_json()
    again = push(client, token, body).get_json()
    assert again["replayed"] is True and first["replayed"] is False
    assert again["results"] == first["results"]
    ids = [r["id"] for r in first["results"]]
    count = connection.execute(text("SELECT count(*) FROM reports WHERE id = ANY(CAST(:ids AS uuid[]))"),
                               {"ids": ids}).scalar()
    assert count == 2


def test_same_item_in_a_new_batch_is_unchanged_or_conflict(client, device):
    token, device_id = device
    item = create_item()
    created = push(client, token, batch(device_id, [item])).get_json()["results"][0]
    resent = push(client, token, batch(device_id, [item])).get_json()["results"][0]
    assert resent["result"] == "unchanged"
    assert (resent["id"], resent["reference"]) == (created["id"], created["reference"])
    changed = dict(item, payload={**item["payload"], "description": "something else"})
    conflict = push(client, token, batch(device_id, [changed])).get_json()["results"][0]
    assert conflict["result"] == "conflict" and conflict["error"] == "sync.client_id_conflict"
    assert conflict["current"]["reference"] == created["reference"]


def test_batch_id_reused_for_other_content_is_409(client, device):
    token, device_id = device
    batch_id = str(uuid.uuid4())
    assert push(client, token, batch(device_id, [create_item()], batch_id=batch_id)).status_code == 200
    assert_error(push(client, token, batch(device_id, [create_item()], batch_id=batch_id)), 409,
                 "sync.batch_conflict")


def test_clock_skew_is_corrected_and_raw_time_kept(client, device, connection):
    token, device_id = device
    now = datetime.now(timezone.utc)
    phone_now = now - timedelta(hours=3)  # the phone's clock is three hours behind
    observed_on_phone = phone_now - timedelta(hours=1)
    item = create_item(observed_at=observed_on_phone.isoformat())
    body = push(client, token, batch(device_id, [item], sent_at=phone_now)).get_json()
    assert abs(body["clock_offset_s"] - 3 * 3600) < 60
    row = connection.execute(text("SELECT observed_at, observed_at_device, clock_offset_s, observed_at_flag "
                                  "FROM reports WHERE id = :id"), {"id": item["client_id"]}).one()
    assert abs((row.observed_at - (now - timedelta(hours=1))).total_seconds()) < 60
    assert abs((row.observed_at_device - observed_on_phone).total_seconds()) < 1
    assert row.observed_at_flag is None


def test_phone_set_to_2015_is_flagged(client, device, connection):
    token, device_id = device
    phone_now = datetime(2015, 1, 1, tzinfo=timezone.utc)
    item = create_item(observed_at=(phone_now - timedelta(minutes=5)).isoformat())
    push(client, token, batch(device_id, [item], sent_at=phone_now))
    flag = connection.execute(text("SELECT observed_at_flag FROM reports WHERE id = :id"),
                              {"id": item["client_id"]}).scalar()
    assert flag == "large_skew"


def test_field_worker_updates_status_and_stale_version_conflicts(client, device, report_body):
    token, device_id = device
    created = client.post("/api/v1/reports", json=report_body()).get_json()
    update = {"client_id": str(uuid.uuid4()), "op": "update", "base_version": 1,
              "payload": {"report_id": created["id"], "status": "in_progress", "note": "ក្រុមការងារមកដល់ហើយ"}}
    result = push(client, token, batch(device_id, [update])).get_json()["results"][0]
    assert result["result"] == "created" and result["version"] == 2, result
    view = client.get(f"/api/v1/reports/{created['id']}").get_json()
    assert view["status"] == "in_progress" and view["history"][-1]["note"] == "ក្រុមការងារមកដល់ហើយ"
    assert view["history"][-1]["by"] == "field_worker"
    resent = push(client, token, batch(device_id, [update])).get_json()["results"][0]
    assert resent["result"] == "unchanged"
    stale = {"client_id": str(uuid.uuid4()), "op": "update", "base_version": 1,
             "payload": {"report_id": created["id"], "status": "resolved", "note": "done"}}
    conflict = push(client, token, batch(device_id, [stale])).get_json()["results"][0]
    assert conflict["result"] == "conflict" and conflict["error"] == "sync.stale_version"
    assert conflict["current"]["version"] == 2
    assert client.get(f"/api/v1/reports/{created['id']}").get_json()["status"] == "in_progress"


def test_note_only_update_bumps_version(client, device, report_body):
    token, device_id = device
    created = client.post("/api/v1/reports", json=report_body()).get_json()
    note = {"client_id": str(uuid.uuid4()), "op": "update",
            "payload": {"report_id": created["id"], "note": "Checked: still overflowing"}}
    result = push(client, token, batch(device_id, [note])).get_json()["results"][0]
    assert result["result"] == "created" and result["version"] == 2
    view = client.get(f"/api/v1/reports/{created['id']}").get_json()
    assert view["status"] == "new" and view["history"][-1]["note"] == "Checked: still overflowing"


def test_update_outside_the_devices_area_is_rejected(client, make_device, report_body):
    token, device_id = make_device("SV")
    created = client.post("/api/v1/reports", json=report_body()).get_json()
    item = {"client_id": str(uuid.uuid4()), "op": "update", "base_version": 1,
            "payload": {"report_id": created["id"], "status": "in_progress"}}
    result = push(client, token, batch(device_id, [item])).get_json()["results"][0]
    assert result["result"] == "rejected" and result["error"] == "sync.outside_area"


def test_gzip_batch_is_accepted(client, device):
    token, device_id = device
    raw = gzip.compress(json.dumps(batch(device_id, [create_item()]), ensure_ascii=False).encode())
    response = push(client, token, raw, **{"Content-Encoding": "gzip"})
    assert response.status_code == 200 and response.get_json()["counts"]["created"] == 1


def test_gzip_bomb_is_413(client, device):
    token, device_id = device
    bomb = gzip.compress(b'{"items": "' + b" " * (20 * 1024 * 1024) + b'"}')
    assert len(bomb) < 100 * 1024
    assert_error(push(client, token, bomb, **{"Content-Encoding": "gzip"}), 413, "sync.body_too_large")


def test_corrupt_gzip_is_400(client, device):
    token, _ = device
    assert_error(push(client, token, b"\x1f\x8b\x08\x00garbage", **{"Content-Encoding": "gzip"}), 400,
                 "sync.corrupt_gzip")


def test_too_many_items_is_413(client, device, connection):
    token, device_id = device
    assert_error(push(client, token, batch(device_id, [create_item() for _ in range(501)])), 413,
                 "sync.too_many_items")


@pytest.mark.parametrize("body,error", [
    (b"{not json", "sync.invalid_json"),
    (b'{"device_id": "1", "batch_id": "x", "items": [{"location": [NaN, 1]}]}', "sync.invalid_json"),
    (b'{"device_id": "1", "items": [1, \xff]}', "sync.invalid_json"),
    (b'{"device_id": "1", "items": []}', "sync.invalid_batch"),
])
def test_bad_envelopes(client, device, body, error):
    token, _ = device
    response = push(client, token, body)
    assert response.status_code in (400, 422)
    assert response.get_json()["error"] == error


def test_device_id_must_be_the_tokens(client, device):
    token, device_id = device
    assert_error(push(client, token, batch(device_id + 1000, [create_item()])), 422, "sync.device_mismatch")


def test_sync_needs_a_live_device_token(client, make_device, make_token):
    _, device_id = make_device("PP")
    body = batch(device_id, [create_item()])
    assert_error(client.post("/api/v1/sync/batches", json=body), 401, "auth.required")
    assert_error(push(client, "dev_wrong", body), 401, "auth.invalid_token")
    assert_error(push(client, make_token("moderator"), body), 401, "auth.invalid_token")
    revoked_token, revoked_id = make_device("PP", revoked=True)
    assert_error(push(client, revoked_token, batch(revoked_id, [create_item()])), 401, "auth.token_revoked")


def test_a_runaway_device_gets_429_with_retry_after(app, device, config):
    import dataclasses

    token, device_id = device
    app.config["CIVICMAP"] = dataclasses.replace(config, sync_rate_limit="3/minute")
    client = app.test_client()
    statuses = [push(client, token, batch(device_id, [create_item()])).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = push(client, token, batch(device_id, [create_item()]))
    assert_error(limited, 429, "request.rate_limited")
    assert int(limited.headers["Retry-After"]) > 0


def test_same_client_id_twice_in_one_batch_is_refused_whole(client, device, connection):
    token, device_id = device
    first = create_item()
    twin = create_item(first["client_id"], description="other words")
    before = connection.execute(text("SELECT count(*) FROM reports")).scalar()
    assert_error(push(client, token, batch(device_id, [first, twin])), 422, "sync.duplicate_client_id")
    assert connection.execute(text("SELECT count(*) FROM reports")).scalar() == before


def test_photo_upload_for_an_unknown_report_is_404(client, device):
    """Photos for a report go through the report's own route, which must exist."""
    token, _ = device
    response = client.post(f"/api/v1/reports/{uuid.uuid4()}/photos", headers=auth(token),
                           data={"photo": (io.BytesIO(b"x"), "a.jpg")}, content_type="multipart/form-data")
    assert_error(response, 404, "report.not_found")
