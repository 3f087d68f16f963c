"""Resumable photo uploads for field devices: pieces, resends, gaps, hash checks, linking to reports."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from tests.conftest import auth
from tests.test_bad_input import assert_error
from tests.test_photos_api import jpeg_with_gps


@pytest.fixture(scope="module")
def big_photo() -> bytes:
    """A ~1 MB phone-like JPEG (noise compresses badly) with GPS in its EXIF."""
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif.get_ifd(0x8825)[2] = (11.0, 33.0, 45.0)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


@pytest.fixture()
def device(make_device):
    return make_device("PP")


def put(client, token, sha, data: bytes, content_range: str | None = None):
    headers = {**auth(token), "Content-Type": "application/octet-stream"}
    if content_range:
        headers["Content-Range"] = content_range
    return client.put(f"/api/v1/sync/photos/{sha}", data=data, headers=headers)


def head(client, token, sha):
    return client.head(f"/api/v1/sync/photos/{sha}", headers=auth(token))


def push_report(client, token, device_id, photos: list[str], client_id: str | None = None) -> dict:
    item = {"client_id": client_id or str(uuid.uuid4()), "op": "create", "photos": photos,
            "payload": {"category": "waste.illegal_dumping",
                        "location": {"type": "Point", "coordinates": [104.9282, 11.5625]}}}
    body = {"device_id": str(device_id), "batch_id": str(uuid.uuid4()),
            "sent_at": datetime.now(timezone.utc).isoformat(), "items": [item]}
    response = client.post("/api/v1/sync/batches", data=json.dumps(body), content_type="application/json",
                           headers=auth(token))
    return response.get_json()["results"][0]


def test_photo_in_pieces_over_a_dropping_link_arrives_once(client, device, big_photo, connection):
    token, device_id = device
    sha = hashlib.sha256(big_photo).hexdigest()
    total, piece = len(big_photo), 200 * 1024
    result = push_report(client, token, device_id, [sha])
    assert result["missing_photos"] == [sha]
    assert head(client, token, sha).status_code == 404
    offset, sent = 0, 0
    while offset < total:
        end = min(offset + piece, total) - 1
        chunk = big_photo[offset:end + 1]
        # The link drops halfway through every other piece: only the first half arrives.
        arrived = chunk[: len(chunk) // 2] if (offset // piece) % 2 == 0 and end + 1 < total else chunk
        response = put(client, token, sha, arrived, f"bytes {offset}-{end}/{total}")
        sent += len(arrived)
        assert response.status_code == 200, response.get_json()
        status = head(client, token, sha)
        assert int(status.headers["Upload-Offset"]) == response.get_json()["offset"]
        offset = response.get_json()["offset"]
    assert sent == total  # nothing that arrived was ever sent again
    body = response.get_json()
    assert body["complete"] and body["photo"]["url"]
    assert head(client, token, sha).headers["Upload-Complete"] == "?1"
    stored = connection.execute(text("SELECT content FROM photos WHERE sha256 = :s"),
                                {"s": body["photo"]["sha256"]}).scalar_one()
    assert b"Exif" not in bytes(stored)
    view = client.get(f"/api/v1/reports/{result['reference']}").get_json()
    assert [p["sha256"] for p in view["photos"]] == [body["photo"]["sha256"]]
    again = put(client, token, sha, big_photo)  # a resend of a finished upload is harmless
    assert again.status_code == 200 and again.get_json()["photo"] == body["photo"]


def test_overlapping_resend_is_skipped_and_gap_is_409(client, device, big_photo):
    token, _ = device
    sha = hashlib.sha256(big_photo).hexdigest()
    total = len(big_photo)
    assert put(client, token, sha, big_photo[:1000], f"bytes 0-999/{total}").get_json()["offset"] == 1000
    overlap = put(client, token, sha, big_photo[500:1500], f"bytes 500-1499/{total}")
    assert overlap.get_json()["offset"] == 1500
    gap = put(client, token, sha, big_photo[2000:3000], f"bytes 2000-2999/{total}")
    assert_error(gap, 409, "sync.upload_gap")
    assert gap.headers["Upload-Offset"] == "1500"
    other_total = put(client, token, sha, big_photo[1500:1600], f"bytes 1500-1599/{total + 1}")
    assert_error(other_total, 409, "sync.upload_length_mismatch")


def test_whole_photo_in_one_put_before_its_report(client, device):
    token, device_id = device
    photo = jpeg_with_gps()
    sha = hashlib.sha256(photo).hexdigest()
    done = put(client, token, sha, photo).get_json()
    assert done["complete"]
    result = push_report(client, token, device_id, [sha])
    assert result["missing_photos"] == []
    view = client.get(f"/api/v1/reports/{result['reference']}").get_json()
    assert [p["sha256"] for p in view["photos"]] == [done["photo"]["sha256"]]


def test_hash_mismatch_discards_the_upload(client, device):
    token, _ = device
    photo = jpeg_with_gps()
    wrong = hashlib.sha256(b"something else").hexdigest()
    assert_error(put(client, token, wrong, photo), 422, "sync.photo_hash_mismatch")
    assert head(client, token, wrong).status_code == 404


def test_not_an_image_is_refused_and_discarded(client, device):
    token, _ = device
    data = b"%PDF-1.4 this is not a photo"
    sha = hashlib.sha256(data).hexdigest()
    assert_error(put(client, token, sha, data), 422, "photo.not_an_image")
    assert head(client, token, sha).status_code == 404


@pytest.mark.parametrize("content_range,status,error", [
    ("bytes 0-99/*", 400, "sync.bad_content_range"),
    ("items 0-9/10", 400, "sync.bad_content_range"),
    ("bytes 0-99/50", 416, "sync.range_not_satisfiable"),
    (f"bytes 0-99/{100 * 1024 * 1024}", 413, "sync.photo_too_large"),
])
def test_bad_content_ranges(client, device, content_range, status, error):
    token, _ = device
    sha = hashlib.sha256(b"x").hexdigest()
    assert_error(put(client, token, sha, b"x" * 100, content_range), status, error)


def test_bad_sha_and_no_token(client, device):
    token, _ = device
    response = put(client, token, "not-a-sha", b"x")
    assert 400 <= response.status_code < 500 and response.get_json()["error"].startswith("sync.")
    # Without a token (a resident's phone) only a photo some resident's report lists may be sent.
    assert_error(client.put(f"/api/v1/sync/photos/{'a' * 64}", data=b"x"), 403, "sync.photo_not_expected")
    assert client.head(f"/api/v1/sync/photos/{'a' * 64}").status_code == 403
    assert_error(client.put(f"/api/v1/sync/photos/{'a' * 64}", data=b"x", headers={"Authorization": "Bearer nope"}),
                 401, "auth.invalid_token")
