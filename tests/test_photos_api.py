"""Photo upload over HTTP: who may add them, EXIF stripped in storage, bombs refused."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image
from sqlalchemy import text
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from tests.conftest import auth
from tests.test_bad_input import assert_error


def jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (640, 480), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90°
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (11.0, 33.0, 45.0), "E", (104.0, 55.0, 41.0)
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


def png_bomb(side: int = 14000) -> bytes:
    """A valid 14000×14000 greyscale PNG of zeros: ~25 KB on disk, 196 MB decoded."""
    raw = zlib.compress(b"\x00" * (side + 1) * side, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.fixture()
def created(client, report_body):
    return client.post("/api/v1/reports", json=report_body()).get_json()


def upload(client, report_id, data: bytes, filename="photo.jpg", **headers):
    # Encoded up front: werkzeug's test client would spool a large body to a temp file it never closes.
    boundary, body = encode_multipart(MultiDict({"photo": FileStorage(io.BytesIO(data), filename)}))
    return client.post(f"/api/v1/reports/{report_id}/photos", headers=headers, data=body,
                       content_type=f"multipart/form-data; boundary={boundary}")


def test_reporter_uploads_photo_and_exif_is_gone(client, created, connection):
    original = jpeg_with_gps()
    assert b"Exif" in original
    response = upload(client, created["id"], original, **{"X-Tracking-Token": created["tracking_token"]})
    assert response.status_code == 201, response.get_json()
    (stored,) = response.get_json()
    assert (stored["width"], stored["height"]) == (480, 640)  # auto-oriented
    content = connection.execute(text("SELECT content FROM photos WHERE sha256 = :s"),
                                 {"s": stored["sha256"]}).scalar_one()
    assert b"Exif" not in bytes(content)
    assert not Image.open(io.BytesIO(bytes(content))).getexif()
    served = client.get(stored["url"])
    assert served.status_code == 200 and served.mimetype == "image/jpeg"
    assert served.data == bytes(content)
    assert served.headers["ETag"] == f'"{stored["sha256"]}"'
    view = client.get(f"/api/v1/reports/{created['id']}").get_json()
    assert [p["sha256"] for p in view["photos"]] == [stored["sha256"]]


def test_same_photo_twice_is_stored_once(client, created, connection):
    headers = {"X-Tracking-Token": created["tracking_token"]}
    first = upload(client, created["id"], jpeg_with_gps(), **headers).get_json()
    second = upload(client, created["id"], jpeg_with_gps(), **headers).get_json()
    assert first == second
    links = connection.execute(text("SELECT count(*) FROM report_photos WHERE report_id = :r"),
                               {"r": created["id"]}).scalar()
    assert links == 1


def test_field_worker_token_may_add_photos(client, created, make_token):
    assert upload(client, created["id"], jpeg_with_gps(), **auth(make_token("field_worker"))).status_code == 201


def test_planner_may_not_add_photos(client, created, make_token):
    assert_error(upload(client, created["id"], jpeg_with_gps(), **auth(make_token("planner"))), 403,
                 "auth.forbidden")


def test_no_token_and_wrong_tracking_token(client, created, report_body):
    assert_error(upload(client, created["id"], jpeg_with_gps()), 401, "auth.required")
    other = client.post("/api/v1/reports", json=report_body()).get_json()
    assert_error(upload(client, created["id"], jpeg_with_gps(), **{"X-Tracking-Token": other["tracking_token"]}),
                 403, "auth.invalid_tracking_token")


@pytest.mark.parametrize("data,error,status", [
    (b"%PDF-1.4 not a picture", "photo.not_an_image", 422),
    (b"", "photo.empty", 422),
])
def test_bad_photos(client, created, connection, data, error, status):
    response = upload(client, created["id"], data, **{"X-Tracking-Token": created["tracking_token"]})
    assert_error(response, status, error)
    assert connection.execute(text("SELECT count(*) FROM report_photos WHERE report_id = :r"),
                              {"r": created["id"]}).scalar() == 0


def test_truncated_jpeg(client, created):
    data = jpeg_with_gps()
    response = upload(client, created["id"], data[: len(data) // 2], **{"X-Tracking-Token": created["tracking_token"]})
    assert_error(response, 422, "photo.corrupt")


def test_png_bomb_is_refused_fast(client, created):
    bomb = png_bomb()
    assert len(bomb) < 1024 * 1024
    response = upload(client, created["id"], bomb, "bomb.png", **{"X-Tracking-Token": created["tracking_token"]})
    assert_error(response, 413, "photo.too_many_pixels")


def test_photo_over_byte_limit(client, created):
    big = b"\xff\xd8" + b"\x00" * (3 * 1024 * 1024)  # config limit in tests: 2 MB
    response = upload(client, created["id"], big, **{"X-Tracking-Token": created["tracking_token"]})
    assert response.status_code == 413
    assert response.get_json()["error"] in ("photo.too_large", "request.too_large")


def test_missing_photo_field(client, created):
    response = client.post(f"/api/v1/reports/{created['id']}/photos", data={"other": "x"},
                           headers={"X-Tracking-Token": created["tracking_token"]}, content_type="multipart/form-data")
    assert_error(response, 400, "photo.missing")


def test_photos_of_hidden_reports_are_not_served(client, created, connection):
    stored = upload(client, created["id"], jpeg_with_gps(),
                    **{"X-Tracking-Token": created["tracking_token"]}).get_json()[0]
    connection.execute(text("UPDATE reports SET hidden = true WHERE id = :id"), {"id": created["id"]})
    assert_error(client.get(stored["url"]), 404, "photo.not_found")
    assert_error(client.get(f"/api/v1/reports/{created['id']}"), 404, "report.not_found")


def test_bad_photo_hash(client):
    assert_error(client.get("/api/v1/photos/../../etc/passwd"), 404)
    assert_error(client.get("/api/v1/photos/ABC"), 404, "photo.bad_hash")


def test_a_report_takes_at_most_six_photos(client, created, connection):
    headers = {"X-Tracking-Token": created["tracking_token"]}
    for seed in range(6):
        image = Image.new("RGB", (64, 48), (seed * 40, 10, 10))
        out = io.BytesIO()
        image.save(out, "JPEG")
        assert upload(client, created["id"], out.getvalue(), **headers).status_code == 201
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 200, 0)).save(out, "JPEG")
    assert_error(upload(client, created["id"], out.getvalue(), **headers), 422, "photo.too_many")
    assert connection.execute(text("SELECT count(*) FROM report_photos WHERE report_id = :r"),
                              {"r": created["id"]}).scalar() == 6
