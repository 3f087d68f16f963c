"""Nothing private leaves through the maps or the open data.

Reports are made with contact details (one through a field device), one is
hidden, and then every layer, a stack of vector tiles over them and every
export format is fetched. None may carry a contact value, a tracking or device
token, the device or its worker, or anything of the hidden report: neither in
the raw bytes (file formats unpacked: the Shapefile's zip members, the
GeoPackage and FlatGeobuf bytes as they are) nor as a field name in the
decoded structures.
"""

from __future__ import annotations

import io
import json
import math
import re
import uuid
import zipfile
from datetime import datetime, timezone
from typing import Any, Iterator

import mapbox_vector_tile
import orjson
import pyogrio
import pytest
from sqlalchemy import text

from tests.conftest import auth

VISIBLE_AT = (104.9282, 11.5625)
SYNCED_AT = (104.9290, 11.5631)
HIDDEN_AT = (104.9286, 11.5628)
HIDDEN_REFERENCE = "PP-ZZ9HD"
HIDDEN_MARKER = "hidden-marker-7Q4"
CONTACTS = [
    {"name": "Sokunthea Privatename", "phone": "+855 97 765 4321", "email": "sokunthea.private@example.org",
     "consent": True},
    {"name": "Vannak Fieldcontact", "phone": "012 998 877", "email": "vannak.field@example.net", "consent": True},
]
# A field name like these in any answer would be a leak, whatever its value.
PRIVATE_NAME = re.compile(r"contact|phone|email|token|device|worker|created_by|user|consent|hidden", re.I)
FORMATS = ("geojson", "csv", "gpkg", "fgb", "shp.zip")


def tile_xy(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return x, y


@pytest.fixture()
def private(client, report_body, make_device, connection) -> dict[str, Any]:
    """A resident's report with contact, a field device's with contact, and a hidden one; their secrets."""
    assert connection.execute(text("SELECT count(*) FROM reports")).scalar() == 0
    resident = client.post("/api/v1/reports", json=report_body(
        contact=CONTACTS[0], location={"type": "Point", "coordinates": list(VISIBLE_AT)}))
    assert resident.status_code == 201, resident.get_json()
    resident = resident.get_json()

    device_token, device_id = make_device("PP")
    client_id = str(uuid.uuid4())
    body = {"device_id": str(device_id), "batch_id": str(uuid.uuid4()),
            "sent_at": datetime.now(timezone.utc).isoformat(),
            "items": [{"client_id": client_id, "op": "create", "payload": {
                "category": "flooding.blocked_drain", "description": "លូស្ទះ",
                "location": {"type": "Point", "coordinates": list(SYNCED_AT)}, "contact": CONTACTS[1]}}]}
    pushed = client.post("/api/v1/sync/batches", data=json.dumps(body), content_type="application/json",
                         headers=auth(device_token))
    assert pushed.status_code == 200 and pushed.get_json()["results"][0]["result"] == "created", pushed.get_json()

    hidden = client.post("/api/v1/reports", json=report_body(
        category="street.pothole", description=HIDDEN_MARKER, landmark=HIDDEN_MARKER,
        location={"type": "Point", "coordinates": list(HIDDEN_AT)})).get_json()
    connection.execute(text("UPDATE reports SET hidden = true, reference = :ref WHERE id = :id"),
                       {"ref": HIDDEN_REFERENCE, "id": hidden["id"]})
    worker = connection.execute(text(
        "SELECT u.username FROM devices d JOIN users u ON u.id = d.user_id WHERE d.id = :id"),
        {"id": device_id}).scalar_one()
    secrets = [value for contact in CONTACTS for key, value in contact.items() if key != "consent"]
    secrets += [c["phone"].replace(" ", "") for c in CONTACTS]
    secrets += [resident["tracking_token"], hidden["tracking_token"], device_token, worker,
                HIDDEN_REFERENCE, hidden["id"], HIDDEN_MARKER]
    return {"secrets": secrets, "device_id": device_id, "resident": resident, "synced_id": client_id,
            "hidden": hidden}


def test_the_database_does_hold_what_must_not_leak(private, connection):
    """The other side of the test: these values exist, so their absence below means something."""
    rows = connection.execute(text(
        "SELECT id::text, reference, contact_name, contact_phone, contact_email, device_id, hidden, "
        "tracking_token_hash FROM reports")).mappings().all()
    by_id = {row["id"]: row for row in rows}
    resident = by_id[private["resident"]["id"]]
    assert resident["contact_phone"] == CONTACTS[0]["phone"] and resident["contact_email"] == CONTACTS[0]["email"]
    assert resident["tracking_token_hash"]
    synced = by_id[private["synced_id"]]
    assert synced["device_id"] == private["device_id"] and synced["contact_name"] == CONTACTS[1]["name"]
    hidden = by_id[private["hidden"]["id"]]
    assert hidden["hidden"] and hidden["reference"] == HIDDEN_REFERENCE


# --- what the public can fetch ------------------------------------------------------------------------------------

def get(client, url: str) -> tuple[int, bytes, str]:
    response = client.get(url)
    data = response.get_data()
    response.close()
    return response.status_code, data, response.mimetype


def unpacked(fmt: str, data: bytes) -> bytes:
    """The bytes to search: a zip's members inflated; everything else as sent."""
    if fmt != "shp.zip":
        return data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return b"\n".join(archive.read(name) for name in archive.namelist())


def field_names(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from field_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from field_names(item)


def public_answers(client, tmp_path) -> Iterator[tuple[str, bytes, set[str]]]:
    """(what, bytes to search, field names) for every layer, the tiles over the reports and every export."""
    for url in ("/api/v1/layers/reports", "/api/v1/layers/reports?limit=1",
                "/api/v1/layers/heatmap", "/api/v1/layers/heatmap?format=points",
                "/api/v1/layers/heatmap?shape=hex&bbox=104.9,11.55,104.95,11.58",
                "/api/v1/layers/areas?level=commune&geometry=false", "/api/v1/layers/areas?level=district"):
        status, data, _ = get(client, url)
        assert status == 200, (url, data[:300])
        yield url, data, set(field_names(orjson.loads(data)))
    for z in range(10, 17):
        for x, y in sorted({tile_xy(lon, lat, z) for lon, lat in (VISIBLE_AT, SYNCED_AT, HIDDEN_AT)}):
            url = f"/api/v1/tiles/reports/{z}/{x}/{y}.mvt"
            status, data, _ = get(client, url)
            assert status in (200, 204), (url, data[:300])
            tile = mapbox_vector_tile.decode(data) if data else {}
            names = set(tile) | {key for layer in tile.values() for feature in layer["features"]
                                 for key in feature["properties"]}
            yield url, data, names
    for fmt in FORMATS:
        url = f"/api/v1/exports/reports.{fmt}"
        status, data, _ = get(client, url)
        assert status == 200, (url, data[:300])
        path = tmp_path / f"export.{fmt}"
        path.write_bytes(data)
        if fmt == "csv":
            names = set(data.decode("utf-8").splitlines()[0].split(","))
        else:
            names = set(pyogrio.read_info("/vsizip/" + str(path) if fmt == "shp.zip" else str(path))["fields"])
            if fmt == "geojson":
                names |= set(field_names(orjson.loads(data)))
        yield url, unpacked(fmt, data), names
    status, data, _ = get(client, "/api/v1/exports/reports.csv?hxl=1")
    yield "csv with HXL", data, set(data.decode("utf-8").splitlines()[1].split(","))


def test_no_layer_tile_or_export_leaks_private_data(client, private, tmp_path):
    seen = set()
    for what, data, names in public_answers(client, tmp_path):
        seen.add(what.split("?")[0].rsplit("/", 1)[-1] if "/tiles/" not in what else "tile")
        for secret in private["secrets"]:
            assert secret.encode("utf-8") not in data, (what, secret)
        leaked = sorted(name for name in names if PRIVATE_NAME.search(name))
        assert not leaked, (what, leaked)
        assert str(private["device_id"]) not in names, what
    assert {"reports", "heatmap", "areas", "tile", "reports.geojson", "reports.shp.zip"} <= seen


def test_the_search_finds_what_is_there(client, private, tmp_path):
    """The same search on the same answers does find the public reports: the checks above can fail."""
    visible = [private["resident"]["reference"], private["resident"]["id"], private["synced_id"]]
    found = {what: [v for v in visible if v.encode() in data] for what, data, _ in public_answers(client, tmp_path)}
    for what, values in found.items():
        if "/exports/" in what or what == "/api/v1/layers/reports":
            assert private["resident"]["reference"] in values, what
            assert private["synced_id"] in values, what
    for z in (14, 15, 16):  # point tiles name their reports
        x, y = tile_xy(*VISIBLE_AT, z)
        assert private["resident"]["reference"] in found[f"/api/v1/tiles/reports/{z}/{x}/{y}.mvt"], z


def test_hidden_and_private_reports_count_rightly(client, private):
    """Only the two visible reports are counted anywhere: the hidden one is not even a number."""
    heat = client.get("/api/v1/layers/heatmap").get_json()
    assert heat["total"] == 2
    areas = client.get("/api/v1/layers/areas?level=district&geometry=false").get_json()
    assert sum(f["properties"]["total"] for f in areas["features"]) == 2
    assert client.get("/api/v1/layers/reports").get_json()["returned"] == 2
    for z in range(10, 14):
        total = 0
        for x, y in {tile_xy(lon, lat, z) for lon, lat in (VISIBLE_AT, SYNCED_AT, HIDDEN_AT)}:
            response = client.get(f"/api/v1/tiles/reports/{z}/{x}/{y}.mvt")
            if response.status_code == 200:
                cells = mapbox_vector_tile.decode(response.data)["cells"]["features"]
                total += sum(feature["properties"]["count"] for feature in cells)
        assert total == 2, z
