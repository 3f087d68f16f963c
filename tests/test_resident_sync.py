"""The phone form's path: a resident's phone pushes sync batches with no token, exactly once."""

from __future__ import annotations

import hashlib
import io
import json
import uuid

from PIL import Image
from sqlalchemy import text

from tests.test_bad_input import assert_error
from tests.test_photos_api import jpeg_with_gps
from tests.test_sync_push import batch, create_item


def push(client, body: dict, **headers):
    return client.post("/api/v1/sync/batches", data=json.dumps(body, ensure_ascii=False).encode(),
                       content_type="application/json", headers=headers)


def resident_batch(items: list[dict], **kwargs) -> dict:
    body = batch(0, items, **kwargs)
    body["device_id"] = "resident"
    return body


def test_resident_batch_creates_reports_with_no_user_or_device(client, connection):
    item = create_item(contact={"phone": "+85512999888", "consent": True})
    response = push(client, resident_batch([item]))
    assert response.status_code == 200, response.get_json()
    result = response.get_json()["results"][0]
    assert result["result"] == "created" and result["reference"].startswith("PP-")
    row = connection.execute(text("SELECT source, device_id, created_by, contact_phone, description FROM reports "
                                  "WHERE id = :id"), {"id": item["client_id"]}).one()
    assert (row.source, row.device_id, row.created_by) == ("phone_form", None, None)
    assert row.contact_phone == "+85512999888" and row.description == "លូស្ទះ ទឹកមិនស្រក"
    role = connection.execute(text("SELECT actor_role FROM report_events WHERE report_id = :id"),
                              {"id": item["client_id"]}).scalar_one()
    assert role == "resident"


def test_resent_batch_and_resent_item_are_stored_once(client, connection):
    item = create_item()
    body = resident_batch([item])
    first = push(client, body).get_json()
    again = push(client, body).get_json()  # the answer was lost: same batch again
    assert again["replayed"] is True and again["results"] == first["results"]
    other_batch = push(client, resident_batch([item])).get_json()  # same item in a new batch (second tab)
    assert other_batch["results"][0]["result"] == "unchanged"
    assert other_batch["results"][0]["reference"] == first["results"][0]["reference"]
    count = connection.execute(text("SELECT count(*) FROM reports WHERE id = :id"), {"id": item["client_id"]})
    assert count.scalar_one() == 1


def test_resident_may_not_update_reports(client, report_body):
    created = client.post("/api/v1/reports", json=report_body()).get_json()
    update = {"client_id": str(uuid.uuid4()), "op": "update", "base_version": 1,
              "payload": {"report_id": created["id"], "status": "resolved", "note": "fixed it myself"}}
    result = push(client, resident_batch([update])).get_json()["results"][0]
    assert result["result"] == "rejected" and result["error"] == "sync.forbidden"


def test_numbered_device_without_its_token_is_refused(client):
    assert_error(push(client, batch(17, [create_item()])), 401, "auth.required")


def test_resident_batches_are_small(client):
    assert_error(push(client, resident_batch([create_item() for _ in range(21)])), 413, "sync.too_many_items")


def test_a_wrong_token_is_never_taken_for_a_resident(client):
    assert_error(push(client, resident_batch([create_item()]), Authorization="Bearer dev_nope"), 401,
                 "auth.invalid_token")


def test_resident_photo_only_after_its_report_and_exif_is_gone(client, connection):
    photo = jpeg_with_gps()
    sha = hashlib.sha256(photo).hexdigest()
    early = client.put(f"/api/v1/sync/photos/{sha}", data=photo, content_type="application/octet-stream")
    assert_error(early, 403, "sync.photo_not_expected")

    item = create_item()
    item["photos"] = [sha]
    result = push(client, resident_batch([item])).get_json()["results"][0]
    assert result["missing_photos"] == [sha]
    assert client.head(f"/api/v1/sync/photos/{sha}").headers["Upload-Offset"] == "0"
    half = len(photo) // 2
    first = client.put(f"/api/v1/sync/photos/{sha}", data=photo[:half],
                       headers={"Content-Range": f"bytes 0-{half - 1}/{len(photo)}"})
    assert first.status_code == 200 and first.headers["Upload-Offset"] == str(half)
    done = client.put(f"/api/v1/sync/photos/{sha}", data=photo[half:],
                      headers={"Content-Range": f"bytes {half}-{len(photo) - 1}/{len(photo)}"})
    assert done.status_code == 200 and done.get_json()["complete"] is True
    content = connection.execute(text("SELECT p.content FROM report_photos rp JOIN photos p ON p.sha256 = "
                                      "rp.photo_sha256 WHERE rp.report_id = :id"), {"id": item["client_id"]})
    assert not Image.open(io.BytesIO(bytes(content.scalar_one()))).getexif()


def test_field_device_can_read_who_it_is(client, make_device):
    token, device_id = make_device("PP")
    body = client.get("/api/v1/sync/device", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert body["device_id"] == str(device_id) and body["area"]["code"] == "PP"
    assert_error(client.get("/api/v1/sync/device"), 401, "auth.required")
