"""Map layers over HTTP against real PostGIS: the GeoJSON report layer, the heatmap and the area statistics.

Reports are written straight into the rolled-back test transaction with
known places, categories, statuses and times (``add_report``), so every
count below is known in advance.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import text

from service import queries
from service.references import reference_for
from tests.test_bad_input import assert_error

LAYER = "/api/v1/layers/reports"
HEATMAP = "/api/v1/layers/heatmap"
AREAS = "/api/v1/layers/areas"

# Known places (lon, lat) and the khan and sangkat that cover them.
DOUN_PENH = (104.9282, 11.5625)        # PP-doun-penh / PP-doun-penh-chey-chummeah
PHSAR_CHAS = (104.92574, 11.57162)     # PP-doun-penh / PP-doun-penh-phsar-chas
BOENG_TRABAEK = (104.92170, 11.53797)  # PP-chamkar-mon / PP-chamkar-mon-boeng-trabaek
BKK1 = (104.92494, 11.54800)           # PP-chamkar-mon / PP-chamkar-mon-boeng-keng-kang-ti
TUOL_KOUK = (104.89753, 11.56798)      # PP-tuol-kouk / PP-tuol-kouk-tuek-l-ak-ti-muoy
SIHANOUKVILLE = (103.5177, 10.6277)    # SV / SV-preah-sihanouk / SV-preah-sihanouk-pir

PUBLIC_PROPERTIES = {"reference", "category", "status", "observed_at", "received_at", "khan", "khan_km",
                     "sangkat", "sangkat_km", "photo_count", "photos"}
TOP_LEVEL = ["waste", "flooding", "water", "street"]
BASE_TIME = datetime(2026, 11, 20, tzinfo=UTC)
_minutes = itertools.count()


@dataclass(frozen=True)
class Added:
    id: str
    reference: str
    lon: float
    lat: float
    category: str
    status: str
    received_at: datetime


def add_report(connection, place: tuple[float, float], *, category: str = "waste.overflowing_bin",
               status: str = "new", received_at: datetime | None = None, hidden: bool = False,
               acknowledged_at: datetime | None = None, closed_at: datetime | None = None,
               photos: tuple[str, ...] = (), description: str = "Bin full since Monday",
               contact: tuple[str, str, str] | None = None) -> Added:
    """One report row, placed in its city, khan and sangkat by the service's own lookup."""
    lon, lat = place
    match = queries.locate_point(connection, lon, lat)
    assert match is not None, place
    (number,) = queries.next_reference_numbers(connection, 1)
    rid = uuid.uuid4()
    reference = reference_for(match.city_code, number)
    received_at = received_at or BASE_TIME + timedelta(minutes=next(_minutes))
    name, phone, email = contact or (None, None, None)
    connection.execute(text("""
        INSERT INTO reports (id, reference, category_code, description, location, city_id, district_id, commune_id,
                             status, source, observed_at, received_at, updated_at, acknowledged_at, closed_at,
                             payload_sha256, hidden, contact_name, contact_phone, contact_email, contact_consent)
        VALUES (:id, :ref, :cat, :description, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), :city, :district, :commune,
                :status, 'api', :observed, :received, :received, :ack, :closed, :sha, :hidden,
                :name, :phone, :email, :consent)"""),
        {"id": rid, "ref": reference, "cat": category, "description": description, "lon": lon, "lat": lat,
         "city": match.city_id, "district": match.district_id, "commune": match.commune_id, "status": status,
         "observed": received_at - timedelta(hours=2), "received": received_at, "ack": acknowledged_at,
         "closed": closed_at, "sha": "0" * 64, "hidden": hidden, "name": name, "phone": phone, "email": email,
         "consent": contact is not None})
    for i, sha in enumerate(photos):
        connection.execute(text("INSERT INTO photos (sha256, content, mime, width, height, byte_size) "
                                "VALUES (:sha, :content, 'image/jpeg', 1, 1, 4) ON CONFLICT DO NOTHING"),
                           {"sha": sha, "content": b"\xff\xd8\xff\xd9"})
        connection.execute(text("INSERT INTO report_photos (report_id, photo_sha256, added_at) VALUES (:r, :s, :at)"),
                           {"r": rid, "s": sha, "at": received_at + timedelta(seconds=i)})
    return Added(str(rid), reference, lon, lat, category, status, received_at)


def ids(collection: dict) -> list[str]:
    return [f["id"] for f in collection["features"]]


def layer(client, **query) -> dict:
    response = client.get(LAYER, query_string=query)
    assert response.status_code == 200, response.data[:500]
    assert response.mimetype == "application/geo+json"
    return orjson.loads(response.data)


@pytest.fixture()
def no_reports(connection):
    """The layers are checked against exact counts: the database holds no other reports."""
    assert connection.execute(text("SELECT count(*) FROM reports")).scalar() == 0


# --- /layers/reports ---------------------------------------------------------------------------------------------

def test_report_layer_is_an_rfc7946_feature_collection(client, connection, no_reports):
    sha = "ab" * 32
    added = add_report(connection, DOUN_PENH, category="waste.burning", status="acknowledged", photos=(sha,),
                       description="secret smoke behind the school",
                       contact=("Sokha Chan", "+855 12 345 678", "sokha@example.org"))
    response = client.get(LAYER)
    assert response.status_code == 200
    assert response.mimetype == "application/geo+json"
    body = orjson.loads(response.data)
    assert set(body) == {"type", "features", "returned", "matched", "matched_estimated", "next_cursor", "links",
                         "licence"}
    assert body["type"] == "FeatureCollection"
    assert body["returned"] == 1 and body["matched"] == 1 and body["matched_estimated"] is False
    assert body["next_cursor"] is None and body["links"] == [] and "Link" not in response.headers
    assert isinstance(body["licence"], str) and body["licence"]
    (feature,) = body["features"]
    assert set(feature) == {"type", "id", "geometry", "properties"}
    assert feature["type"] == "Feature" and feature["id"] == added.id
    # RFC 7946: longitude first
    assert feature["geometry"] == {"type": "Point", "coordinates": [104.9282, 11.5625]}
    props = feature["properties"]
    assert set(props) == PUBLIC_PROPERTIES
    assert props["reference"] == added.reference and props["reference"].startswith("PP-")
    assert props["category"] == "waste.burning" and props["status"] == "acknowledged"
    assert props["khan"] == "Doun Penh" and props["khan_km"] == "ដូនពេញ"
    assert props["sangkat"] == "Chey Chummeah" and props["sangkat_km"] == ""
    assert props["photo_count"] == 1
    assert props["photos"][0].startswith("/api/v1/") and props["photos"][0].endswith(f"/photos/{sha}")
    assert client.get(props["photos"][0]).status_code == 200
    assert datetime.fromisoformat(props["received_at"]) == added.received_at
    assert datetime.fromisoformat(props["observed_at"]) == added.received_at - timedelta(hours=2)
    for private in (b"secret smoke", b"Sokha", b"345 678", b"sokha@example.org", b"description", b"contact",
                    b"landmark", b"device", b"tracking"):
        assert private not in response.data, private


def test_report_without_photos_and_outside_a_sangkat_name(client, connection, no_reports):
    add_report(connection, SIHANOUKVILLE)
    (feature,) = layer(client)["features"]
    assert feature["properties"]["photo_count"] == 0 and feature["properties"]["photos"] == []
    assert feature["properties"]["khan"] == "Preah Sihanouk" and feature["properties"]["khan_km"] == "ព្រះសីហនុ"
    assert feature["properties"]["sangkat"] == "Pir"
    assert feature["geometry"]["coordinates"] == [103.5177, 10.6277]


def test_khmer_names_are_plain_utf8(client, connection, no_reports):
    add_report(connection, BOENG_TRABAEK)
    response = client.get(LAYER)
    assert "ចំការមន".encode() in response.data  # not \u escapes
    assert orjson.loads(response.data)["features"][0]["properties"]["khan_km"] == "ចំការមន"


def test_bbox_filter(client, connection, no_reports):
    inside = add_report(connection, DOUN_PENH)
    add_report(connection, SIHANOUKVILLE)
    add_report(connection, BOENG_TRABAEK)  # in Phnom Penh, south of the box
    assert ids(layer(client, bbox="104.92,11.55,104.94,11.57")) == [inside.id]
    # the box edges are inclusive
    assert ids(layer(client, bbox="104.9282,11.5625,104.93,11.57")) == [inside.id]


def test_category_filter_accepts_several_codes_and_top_level_codes(client, connection, no_reports):
    burning = add_report(connection, DOUN_PENH, category="waste.burning")
    bin_ = add_report(connection, DOUN_PENH, category="waste.overflowing_bin")
    pothole = add_report(connection, DOUN_PENH, category="street.pothole")
    drain = add_report(connection, DOUN_PENH, category="flooding.blocked_drain")
    assert set(ids(layer(client, category="waste.burning,street"))) == {burning.id, pothole.id}
    assert set(ids(layer(client, category="waste"))) == {burning.id, bin_.id}
    assert ids(layer(client, category="flooding")) == [drain.id]
    assert ids(layer(client, category="flooding.flooded_home")) == []


def test_repeated_filter_parameters_add_up(client, connection, no_reports):
    burning = add_report(connection, DOUN_PENH, category="waste.burning")
    pothole = add_report(connection, DOUN_PENH, category="street.pothole", status="resolved")
    add_report(connection, DOUN_PENH, category="flooding.blocked_drain", status="rejected")
    assert set(ids(layer(client, category=["waste.burning", "street"]))) == {burning.id, pothole.id}
    assert set(ids(layer(client, status=["new", "resolved"]))) == {burning.id, pothole.id}


def test_status_filter(client, connection, no_reports):
    new = add_report(connection, DOUN_PENH, status="new")
    resolved = add_report(connection, DOUN_PENH, status="resolved")
    add_report(connection, DOUN_PENH, status="in_progress")
    add_report(connection, DOUN_PENH, status="rejected")
    assert set(ids(layer(client, status="new,resolved"))) == {new.id, resolved.id}
    assert ids(layer(client, status="resolved")) == [resolved.id]


def test_area_filter_at_every_level(client, connection, no_reports):
    doun_penh = add_report(connection, DOUN_PENH)
    phsar_chas = add_report(connection, PHSAR_CHAS)
    chamkar_mon = add_report(connection, BOENG_TRABAEK)
    sv = add_report(connection, SIHANOUKVILLE)
    assert set(ids(layer(client, area="PP"))) == {doun_penh.id, phsar_chas.id, chamkar_mon.id}
    assert ids(layer(client, area="SV")) == [sv.id]
    assert set(ids(layer(client, area="PP-doun-penh"))) == {doun_penh.id, phsar_chas.id}
    assert ids(layer(client, area="PP-doun-penh-phsar-chas")) == [phsar_chas.id]
    assert ids(layer(client, area="PP-chamkar-mon")) == [chamkar_mon.id]


def test_since_is_inclusive_and_until_exclusive(client, connection, no_reports):
    t0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    early = add_report(connection, DOUN_PENH, received_at=t0)
    middle = add_report(connection, DOUN_PENH, received_at=t0 + timedelta(hours=1))
    late = add_report(connection, DOUN_PENH, received_at=t0 + timedelta(hours=2))
    # the same instants written in Phnom Penh time (+07:00)
    assert ids(layer(client, since="2026-11-20T09:00:00+07:00", until="2026-11-20T10:00:00+07:00")) == [middle.id]
    assert ids(layer(client, since="2026-11-20T02:00:00Z")) == [late.id, middle.id]
    assert ids(layer(client, until="2026-11-20T02:00:00Z")) == [early.id]
    assert ids(layer(client, until="2026-11-20T01:00:00.000001Z")) == [early.id]


def test_filters_combine(client, connection, no_reports):
    hit = add_report(connection, BOENG_TRABAEK, category="street.pothole", status="in_progress")
    add_report(connection, BOENG_TRABAEK, category="street.pothole", status="resolved")
    add_report(connection, BOENG_TRABAEK, category="waste.burning", status="in_progress")
    add_report(connection, DOUN_PENH, category="street.pothole", status="in_progress")
    found = layer(client, area="PP-chamkar-mon", category="street", status="in_progress,new",
                  bbox="104.9,11.5,105,11.6")
    assert ids(found) == [hit.id] and found["matched"] == 1


def test_newest_first(client, connection, no_reports):
    old = add_report(connection, DOUN_PENH, received_at=BASE_TIME - timedelta(days=3))
    new = add_report(connection, DOUN_PENH, received_at=BASE_TIME + timedelta(days=3))
    mid = add_report(connection, DOUN_PENH, received_at=BASE_TIME)
    assert ids(layer(client)) == [new.id, mid.id, old.id]


def test_cursor_walks_every_match_exactly_once(client, connection, no_reports):
    t = BASE_TIME
    # two reports share a received_at and fall on either side of the first page break
    times = [t + timedelta(minutes=5), t + timedelta(minutes=4), t + timedelta(minutes=4), t + timedelta(minutes=2),
             t + timedelta(minutes=1)]
    wanted = [add_report(connection, DOUN_PENH, category="waste.burning", received_at=at) for at in times]
    add_report(connection, DOUN_PENH, category="street.pothole", received_at=t + timedelta(minutes=3))  # filtered out
    add_report(connection, DOUN_PENH, category="waste.burning", received_at=t + timedelta(minutes=3), hidden=True)
    seen: list[str] = []
    pages = []
    cursor = None
    for _ in range(10):
        query = {"limit": 2, "category": "waste"}
        if cursor:
            query["cursor"] = cursor
        response = client.get(LAYER, query_string=query)
        assert response.status_code == 200
        page = orjson.loads(response.data)
        pages.append(page)
        seen.extend(ids(page))
        assert page["returned"] == len(page["features"])
        cursor = page["next_cursor"]
        if cursor is None:
            assert page["links"] == [] and "Link" not in response.headers
            break
        (link,) = page["links"]
        assert link["rel"] == "next" and link["type"] == "application/geo+json"
        assert response.headers["Link"] == f'<{link["href"]}>; rel="next"'
        assert "category=waste" in link["href"] and f"cursor={cursor}" in link["href"]
    assert [p["returned"] for p in pages] == [2, 2, 1]
    assert len(seen) == len(set(seen)) == 5
    # newest first, ties broken by id (descending)
    order = sorted(wanted, key=lambda r: (r.received_at, uuid.UUID(r.id)), reverse=True)
    assert seen == [r.id for r in order]
    for page in pages:
        assert page["matched_estimated"] is True and isinstance(page["matched"], int) and page["matched"] >= 0


def test_next_link_gives_the_next_page(client, connection, no_reports):
    made = [add_report(connection, DOUN_PENH) for _ in range(3)]
    first = client.get(LAYER, query_string={"limit": 2, "bbox": "104.9,11.5,105,11.6"})
    href = orjson.loads(first.data)["links"][0]["href"]
    assert href.startswith(LAYER + "?") and "bbox=104.9" in href and "limit=2" in href
    second = orjson.loads(client.get(href).data)
    assert ids(second) == [made[0].id] and second["next_cursor"] is None


def test_matched_is_exact_when_one_page_holds_all(client, connection, no_reports):
    for _ in range(3):
        add_report(connection, DOUN_PENH)
    add_report(connection, SIHANOUKVILLE)
    full = layer(client, area="PP")
    assert full["matched"] == 3 and full["returned"] == 3 and full["matched_estimated"] is False
    exactly = layer(client, area="PP", limit=3)
    assert exactly["matched"] == 3 and exactly["matched_estimated"] is False and exactly["next_cursor"] is None
    partial = layer(client, area="PP", limit=2)
    assert partial["returned"] == 2 and partial["matched_estimated"] is True
    assert isinstance(partial["matched"], int)
    empty = layer(client, area="PP-tuol-kouk")
    assert empty["features"] == [] and empty["matched"] == 0 and empty["matched_estimated"] is False


def test_hidden_reports_never_appear_in_any_layer(client, connection, no_reports):
    shown = add_report(connection, BOENG_TRABAEK, category="waste.burning", status="resolved",
                       acknowledged_at=BASE_TIME, closed_at=BASE_TIME + timedelta(days=1))
    hidden = add_report(connection, BOENG_TRABAEK, category="street.pothole", status="new")
    connection.execute(text("UPDATE reports SET hidden = true WHERE id = :id"), {"id": hidden.id})
    response = client.get(LAYER)
    assert ids(orjson.loads(response.data)) == [shown.id]
    assert hidden.reference.encode() not in response.data
    for query in ({}, {"category": "street"}, {"area": "PP-chamkar-mon"}):
        assert hidden.id not in ids(layer(client, **query))
    heat = client.get(HEATMAP, query_string={"area": "PP-chamkar-mon"}).get_json()
    assert heat["total"] == 1 and heat["cells"][0][TOP_LEVEL.index("street") + 3] == 0
    assert client.get(HEATMAP, query_string={"category": "street"}).get_json()["total"] == 0
    stats = area_feature(client, "PP-chamkar-mon", level="district")
    assert stats["total"] == 1 and stats["by_category"] == {"waste": 1} and stats["open"] == 0


def test_gzip_when_accepted(client, connection, no_reports):
    for place in (DOUN_PENH, PHSAR_CHAS, BOENG_TRABAEK, BKK1, TUOL_KOUK, SIHANOUKVILLE):
        add_report(connection, place)
    plain = client.get(LAYER)
    assert "Content-Encoding" not in plain.headers
    assert len(plain.data) >= 1024
    packed = client.get(LAYER, headers={"Accept-Encoding": "gzip, deflate, br"})
    assert packed.status_code == 200 and packed.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed.headers["Vary"] and "Accept-Encoding" in plain.headers["Vary"]
    assert packed.data[:2] == b"\x1f\x8b" and len(packed.data) < len(plain.data)
    unpacked = gzip.decompress(packed.data)
    assert unpacked == plain.data
    assert "ទួលគោក".encode() in unpacked  # Khmer survives compression
    assert len(orjson.loads(unpacked)["features"]) == 6


def test_small_answers_are_not_gzipped(client, connection, no_reports):
    response = client.get(LAYER, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200 and "Content-Encoding" not in response.headers
    assert orjson.loads(response.data)["features"] == []


def test_report_layer_in_openapi(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    for path in (LAYER, HEATMAP, AREAS, "/api/v1/tiles/reports/{z}/{x}/{y}.mvt"):
        assert path in paths, path


# --- /layers/heatmap ---------------------------------------------------------------------------------------------

HEAT_PLACES = [
    (DOUN_PENH, "waste.burning"), (DOUN_PENH, "waste.overflowing_bin"), (DOUN_PENH, "street.pothole"),
    (PHSAR_CHAS, "flooding.blocked_drain"), (BOENG_TRABAEK, "water.leak"), (BOENG_TRABAEK, "water.no_supply"),
    (BKK1, "waste.burning"), (TUOL_KOUK, "street.open_manhole"), (SIHANOUKVILLE, "flooding.flooded_road"),
]
PP_BBOX = "104.71,11.42,105.06,11.74"
PP_CENTRE = "104.88,11.52,104.94,11.58"


@pytest.fixture()
def heat_reports(connection, no_reports):
    return [add_report(connection, place, category=category) for place, category in HEAT_PLACES]


def expected_cells(reports, size: float) -> dict[tuple[int, int], list[int]]:
    cells: dict[tuple[int, int], list[int]] = {}
    for r in reports:
        counts = cells.setdefault((math.floor(r.lon / size), math.floor(r.lat / size)), [0] * (1 + len(TOP_LEVEL)))
        counts[0] += 1
        counts[1 + TOP_LEVEL.index(r.category.split(".")[0])] += 1
    return cells


def heat(client, **query) -> dict:
    response = client.get(HEATMAP, query_string=query)
    assert response.status_code == 200, response.data[:500]
    assert response.mimetype == "application/json"
    return orjson.loads(response.data)


def test_heatmap_counts_add_up_per_cell_and_category(client, heat_reports):
    body = heat(client, bbox=PP_BBOX, zoom=13)
    assert body["shape"] == "square" and body["columns"] == ["lon", "lat", "total", *TOP_LEVEL]
    size = body["cell_size_deg"]
    assert size == 360.0 / 2 ** 17
    in_pp = [r for r in heat_reports if r.reference.startswith("PP-")]
    assert body["total"] == sum(c[2] for c in body["cells"]) == len(in_pp) == 8
    for cell in body["cells"]:
        assert sum(cell[3:]) == cell[2]
    for i, code in enumerate(TOP_LEVEL):
        assert sum(c[3 + i] for c in body["cells"]) == sum(r.category.startswith(code + ".") for r in in_pp)
    # every report sits in the cell that floor(coordinate / size) names, and the cell is given by its centre
    got = {(math.floor(c[0] / size), math.floor(c[1] / size)): c[2:] for c in body["cells"]}
    assert got == expected_cells(in_pp, size)
    for cell in body["cells"]:
        assert cell[0] == pytest.approx((math.floor(cell[0] / size) + 0.5) * size, abs=1e-6)
    assert body["max"] == 3  # the three reports at DOUN_PENH
    assert body["bbox"] == [104.71, 11.42, 105.06, 11.74]
    assert isinstance(body["licence"], str) and body["licence"]


def test_heatmap_without_bbox_covers_the_whole_service_area(client, heat_reports):
    body = heat(client, cells=16)
    assert body["total"] == len(heat_reports) == 9
    west, south, east, north = body["bbox"]
    assert west < SIHANOUKVILLE[0] and DOUN_PENH[0] < east and south < SIHANOUKVILLE[1] and DOUN_PENH[1] < north
    assert max(east - west, north - south) / body["cell_size_deg"] <= 16
    assert body["cells"][0][1] < 11  # sorted by latitude: Sihanoukville first


def test_heatmap_area_filter_sets_extent_and_counts(client, heat_reports):
    body = heat(client, area="SV")
    assert body["total"] == 1 and body["cells"][0][2 + 1 + TOP_LEVEL.index("flooding")] == 1
    west, south, east, north = body["bbox"]
    assert west < 103.5177 < east and south < 10.6277 < north and east < 104
    chamkar_mon = heat(client, area="PP-chamkar-mon", zoom=12)
    assert chamkar_mon["total"] == 3


def test_heatmap_filters(client, heat_reports):
    assert heat(client, bbox=PP_BBOX, category="waste")["total"] == 3
    assert heat(client, bbox=PP_BBOX, category="waste.burning,water")["total"] == 4
    assert heat(client, category="flooding")["total"] == 2
    assert heat(client, bbox=PP_BBOX, status="resolved")["total"] == 0
    assert heat(client, bbox=PP_BBOX, status="resolved")["cells"] == []
    assert heat(client, bbox="104.92,11.55,104.94,11.58")["total"] == 4
    assert heat(client, since="2030-01-01T00:00:00Z")["total"] == 0


def test_heatmap_points_format_for_leaflet_heat(client, heat_reports):
    response = client.get(HEATMAP, query_string={"bbox": PP_BBOX, "zoom": 13, "format": "points"})
    assert response.status_code == 200 and response.mimetype == "application/json"
    points = orjson.loads(response.data)
    grid = heat(client, bbox=PP_BBOX, zoom=13)
    assert len(points) == len(grid["cells"]) == 5
    assert max(p[2] for p in points) == 1.0
    for (lat, lon, weight), cell in zip(points, grid["cells"]):
        assert 11 < lat < 12 and 104 < lon < 106  # latitude first
        assert (lat, lon) == (cell[1], cell[0])
        assert weight == round(cell[2] / 3, 4)
    assert sorted(p[2] for p in points) == [0.3333, 0.3333, 0.3333, 0.6667, 1.0]  # 1, 1, 1, 2 and 3 reports
    assert response.headers["X-Heatmap-Max"] == "3"
    assert float(response.headers["X-Heatmap-Cell-Degrees"]) == 360.0 / 2 ** 17


def test_heatmap_points_format_when_empty(client, no_reports):
    response = client.get(HEATMAP, query_string={"bbox": PP_BBOX, "format": "points"})
    assert response.status_code == 200 and orjson.loads(response.data) == []
    assert response.headers["X-Heatmap-Max"] == "0"


def test_heatmap_hexagons_count_every_report_once(client, heat_reports):
    in_pp = [r for r in heat_reports if r.reference.startswith("PP-")]
    for zoom, bbox in ((10, PP_BBOX), (13, PP_BBOX), (15, PP_CENTRE)):
        body = heat(client, bbox=bbox, zoom=zoom, shape="hex")
        assert body["shape"] == "hex" and body["columns"] == ["lon", "lat", "total", *TOP_LEVEL]
        assert body["total"] == sum(c[2] for c in body["cells"]) == len(in_pp), zoom
        for cell in body["cells"]:
            assert sum(cell[3:]) == cell[2]
            assert 104.7 < cell[0] < 105.1 and 11.4 < cell[1] < 11.8
        assert sum(c[3 + TOP_LEVEL.index("water")] for c in body["cells"]) == 2
    coarse = heat(client, bbox=PP_BBOX, zoom=8, shape="hex")
    assert coarse["total"] == 8 and len(coarse["cells"]) <= 2
    everything = heat(client, shape="hex")
    assert everything["total"] == 9


def test_heatmap_cell_size_follows_zoom(client, heat_reports):
    sizes = {zoom: heat(client, bbox=PP_CENTRE, zoom=zoom)["cell_size_deg"] for zoom in (8, 12, 13, 16)}
    assert sizes == {zoom: 360.0 / 2 ** (zoom + 4) for zoom in (8, 12, 13, 16)}
    assert len(heat(client, bbox=PP_BBOX, zoom=8)["cells"]) == 1  # 0.0879° cells: all of PP's reports in one
    for zoom, cells in ((10, 3), (13, 5), (16, 5)):
        body = heat(client, bbox=PP_CENTRE, zoom=zoom)
        assert len(body["cells"]) == cells and body["total"] == 8, zoom
        assert {(math.floor(c[0] / body["cell_size_deg"]), math.floor(c[1] / body["cell_size_deg"])): c[2:]
                for c in body["cells"]} == expected_cells(heat_reports[:8], body["cell_size_deg"])
    # without zoom: the finest ladder step with at most `cells` cells across the bbox
    for cells in (4, 64, 256):
        size = heat(client, bbox=PP_BBOX, cells=cells)["cell_size_deg"]
        assert 0.35 / size <= cells < 0.35 / (size / 2)


def test_heatmap_etag_and_304(client, connection, heat_reports):
    query = {"bbox": PP_BBOX, "zoom": 12}
    first = client.get(HEATMAP, query_string=query)
    etag = first.headers["ETag"]
    assert etag.startswith('"') and first.headers["Cache-Control"] == "public, max-age=60"
    again = client.get(HEATMAP, query_string=query, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    other = client.get(HEATMAP, query_string=query, headers={"If-None-Match": '"not-it"'})
    assert other.status_code == 200 and other.data == first.data
    add_report(connection, DOUN_PENH)  # the data changed: the old tag no longer matches
    changed = client.get(HEATMAP, query_string=query, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert orjson.loads(changed.data)["total"] == 9
    points = client.get(HEATMAP, query_string={**query, "format": "points"})
    assert points.headers["ETag"] != changed.headers["ETag"]
    assert client.get(HEATMAP, query_string={**query, "format": "points"},
                      headers={"If-None-Match": points.headers["ETag"]}).status_code == 304


def test_heatmap_too_fine_for_a_wide_bbox(client, heat_reports):
    body = assert_error(client.get(HEATMAP, query_string={"zoom": 14}), 400, "heatmap.too_many_cells")
    assert "zoom" in body["errors"]
    assert_error(client.get(HEATMAP, query_string={"bbox": "100,10,106,14", "zoom": 12}), 400,
                 "heatmap.too_many_cells")
    # the same zoom on a small bbox is fine
    assert heat(client, bbox="104.92,11.55,104.94,11.58", zoom=16)["total"] == 4
    km = client.get(HEATMAP, query_string={"zoom": 14}, headers={"Accept-Language": "km"}).get_json()
    assert km["error"] == "heatmap.too_many_cells" and km["message"].startswith("កម្រិតពង្រីក")


def test_heatmap_gzip(client, connection, no_reports):
    for i in range(60):  # many cells make a body worth compressing
        add_report(connection, (104.90 + i % 8 * 0.004, 11.54 + i // 8 * 0.004), category="waste.burning")
    plain = client.get(HEATMAP, query_string={"bbox": PP_CENTRE, "zoom": 16})
    packed = client.get(HEATMAP, query_string={"bbox": PP_CENTRE, "zoom": 16}, headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip" and "Content-Encoding" not in plain.headers
    assert gzip.decompress(packed.data) == plain.data
    assert orjson.loads(plain.data)["total"] == 60
    # Two representations, two tags: a cache must not hand a gzip body to a client that asked for plain.
    assert packed.headers["ETag"] != plain.headers["ETag"]
    query = {"bbox": PP_CENTRE, "zoom": 16}
    again = client.get(HEATMAP, query_string=query,
                       headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["ETag"]})
    assert again.status_code == 304
    assert client.get(HEATMAP, query_string=query, headers={"If-None-Match": packed.headers["ETag"]}).status_code == 200


# --- /layers/areas -----------------------------------------------------------------------------------------------

def areas(client, **query) -> dict:
    response = client.get(AREAS, query_string=query)
    assert response.status_code == 200, response.data[:500]
    assert response.mimetype == "application/geo+json"
    return orjson.loads(response.data)


def area_feature(client, code: str, **query) -> dict:
    collection = areas(client, **query)
    (feature,) = [f for f in collection["features"] if f["id"] == code]
    return feature["properties"]


def area_count(connection, level: str, parent: str | None = None) -> int:
    sql = "SELECT count(*) FROM areas a LEFT JOIN areas p ON p.id = a.parent_id WHERE a.level = :level"
    if parent:
        sql += " AND p.code = :parent"
    return connection.execute(text(sql), {"level": level, "parent": parent}).scalar()


def test_one_feature_per_sangkat_and_per_khan(client, connection, no_reports):
    communes = areas(client)  # level=commune is the default
    assert communes["type"] == "FeatureCollection"
    assert len(communes["features"]) == area_count(connection, "commune") == 101
    assert len({f["id"] for f in communes["features"]}) == 101
    districts = areas(client, level="district")
    assert len(districts["features"]) == area_count(connection, "district") == 13
    feature = next(f for f in districts["features"] if f["id"] == "PP-chamkar-mon")
    assert feature["type"] == "Feature"
    assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert feature["properties"] == {
        "code": "PP-chamkar-mon", "level": "district", "parent": "PP", "name_en": "Chamkar Mon", "name_km": "ចំការមន",
        "total": 0, "open": 0, "by_category": {}, "by_status": {},
        "median_days_to_acknowledge": None, "median_days_to_resolve": None}
    sangkat = next(f for f in communes["features"] if f["id"] == "PP-chamkar-mon-boeng-trabaek")
    assert sangkat["properties"]["parent"] == "PP-chamkar-mon" and sangkat["properties"]["level"] == "commune"
    assert "geoBoundaries" in communes["attribution"] or communes["attribution"]
    assert isinstance(communes["licence"], str) and communes["licence"]


def test_area_counts_by_category_and_status(client, connection, no_reports):
    add_report(connection, BOENG_TRABAEK, category="waste.burning", status="new")
    add_report(connection, BOENG_TRABAEK, category="waste.overflowing_bin", status="resolved",
               acknowledged_at=BASE_TIME, closed_at=BASE_TIME + timedelta(days=1))
    add_report(connection, BOENG_TRABAEK, category="street.pothole", status="in_progress")
    add_report(connection, BOENG_TRABAEK, category="flooding.blocked_drain", status="rejected")
    add_report(connection, BKK1, category="waste.burning", status="acknowledged")
    add_report(connection, DOUN_PENH, category="water.leak", status="new")
    sangkat = area_feature(client, "PP-chamkar-mon-boeng-trabaek")
    assert sangkat["total"] == 4 and sangkat["open"] == 2
    assert sangkat["by_category"] == {"waste": 2, "street": 1, "flooding": 1}
    assert sangkat["by_status"] == {"new": 1, "resolved": 1, "in_progress": 1, "rejected": 1}
    bkk = area_feature(client, "PP-chamkar-mon-boeng-keng-kang-ti")
    assert (bkk["total"], bkk["open"], bkk["by_category"], bkk["by_status"]) == (1, 1, {"waste": 1},
                                                                               {"acknowledged": 1})
    khan = area_feature(client, "PP-chamkar-mon", level="district")
    assert khan["total"] == 5 and khan["open"] == 3
    assert khan["by_category"] == {"waste": 3, "street": 1, "flooding": 1}
    assert khan["by_status"] == {"new": 1, "resolved": 1, "in_progress": 1, "rejected": 1, "acknowledged": 1}
    doun_penh = area_feature(client, "PP-doun-penh", level="district")
    assert (doun_penh["total"], doun_penh["by_category"]) == (1, {"water": 1})
    everything = areas(client, level="district")
    assert sum(f["properties"]["total"] for f in everything["features"]) == 6
    # filters apply to the statistics
    only_waste = area_feature(client, "PP-chamkar-mon", level="district", category="waste")
    assert only_waste["total"] == 3 and only_waste["by_category"] == {"waste": 3}
    only_open = area_feature(client, "PP-chamkar-mon", level="district", status="new,in_progress")
    assert only_open["total"] == only_open["open"] == 2


def test_area_medians_of_days_to_acknowledge_and_resolve(client, connection, no_reports):
    t = BASE_TIME
    day = timedelta(days=1)
    add_report(connection, BOENG_TRABAEK, status="resolved", received_at=t,
               acknowledged_at=t + timedelta(hours=12), closed_at=t + 2 * day)
    add_report(connection, BOENG_TRABAEK, status="resolved", received_at=t,
               acknowledged_at=t + 3 * day, closed_at=t + 7 * day)
    add_report(connection, BOENG_TRABAEK, status="acknowledged", received_at=t, acknowledged_at=t + 5 * day)
    add_report(connection, BOENG_TRABAEK, status="new", received_at=t)  # never acknowledged: not in the median
    add_report(connection, BOENG_TRABAEK, status="rejected", received_at=t, closed_at=t + 30 * day)  # not resolved
    # another sangkat of the same khan, with its own medians
    add_report(connection, BKK1, status="resolved", received_at=t, acknowledged_at=t + 8 * day,
               closed_at=t + 10 * day + timedelta(hours=6))
    sangkat = area_feature(client, "PP-chamkar-mon-boeng-trabaek")
    assert sangkat["median_days_to_acknowledge"] == 3.0    # of 0.5, 3, 5
    assert sangkat["median_days_to_resolve"] == 4.5        # of 2 and 7
    bkk = area_feature(client, "PP-chamkar-mon-boeng-keng-kang-ti")
    assert bkk["median_days_to_acknowledge"] == 8.0 and bkk["median_days_to_resolve"] == 10.25
    khan = area_feature(client, "PP-chamkar-mon", level="district")
    assert khan["median_days_to_acknowledge"] == 4.0       # of 0.5, 3, 5, 8
    assert khan["median_days_to_resolve"] == 7.0           # of 2, 7, 10.25
    assert khan["total"] == 6 and khan["open"] == 2
    nothing_done = area_feature(client, "PP-doun-penh", level="district")
    assert nothing_done["median_days_to_acknowledge"] is None and nothing_done["median_days_to_resolve"] is None


def test_area_median_rounds_to_two_decimals(client, connection, no_reports):
    t = BASE_TIME
    add_report(connection, BKK1, status="resolved", received_at=t, acknowledged_at=t + timedelta(hours=1),
               closed_at=t + timedelta(hours=20))
    sangkat = area_feature(client, "PP-chamkar-mon-boeng-keng-kang-ti")
    assert sangkat["median_days_to_acknowledge"] == 0.04   # 1/24 = 0.041666…
    assert sangkat["median_days_to_resolve"] == 0.83       # 20/24 = 0.8333…


def test_areas_without_geometry(client, connection, no_reports):
    add_report(connection, DOUN_PENH)
    collection = areas(client, geometry="false", level="district")
    assert len(collection["features"]) == 13
    assert all(f["geometry"] is None for f in collection["features"])
    assert next(f for f in collection["features"] if f["id"] == "PP-doun-penh")["properties"]["total"] == 1
    with_outlines = client.get(AREAS, query_string={"level": "district"})
    assert len(with_outlines.data) > 2 * len(client.get(AREAS, query_string={"level": "district",
                                                                             "geometry": "false"}).data)


def test_area_filter_restricts_the_list(client, connection, no_reports):
    add_report(connection, BOENG_TRABAEK)
    add_report(connection, DOUN_PENH)
    sangkats = areas(client, area="PP-chamkar-mon")
    codes = {f["id"] for f in sangkats["features"]}
    assert len(codes) == area_count(connection, "commune", "PP-chamkar-mon") == 12
    assert all(f["properties"]["parent"] == "PP-chamkar-mon" for f in sangkats["features"])
    assert sum(f["properties"]["total"] for f in sangkats["features"]) == 1
    khans = areas(client, area="PP", level="district")
    assert len(khans["features"]) == 12 and all(f["properties"]["parent"] == "PP" for f in khans["features"])
    assert sum(f["properties"]["total"] for f in khans["features"]) == 2
    sv = areas(client, area="SV")
    assert len(sv["features"]) == area_count(connection, "commune", "SV-preah-sihanouk") == 5
    assert all(f["id"].startswith("SV-") for f in sv["features"])
    one = areas(client, area="PP-doun-penh-chey-chummeah")
    assert [f["id"] for f in one["features"]] == ["PP-doun-penh-chey-chummeah"]
    assert one["features"][0]["properties"]["total"] == 1
    one_khan = areas(client, area="PP-doun-penh", level="district")
    assert [f["id"] for f in one_khan["features"]] == ["PP-doun-penh"]


def test_areas_etag_and_khmer(client, connection, no_reports):
    first = client.get(AREAS, query_string={"level": "district", "geometry": "false"})
    assert "ចំការមន".encode() in first.data
    assert first.headers["Cache-Control"] == "public, max-age=60"
    cached = client.get(AREAS, query_string={"level": "district", "geometry": "false"},
                        headers={"If-None-Match": first.headers["ETag"]})
    assert cached.status_code == 304
    add_report(connection, DOUN_PENH)
    fresh = client.get(AREAS, query_string={"level": "district", "geometry": "false"},
                       headers={"If-None-Match": first.headers["ETag"]})
    assert fresh.status_code == 200
    packed = client.get(AREAS, headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert len(orjson.loads(gzip.decompress(packed.data))["features"]) == 101


# --- bad input ---------------------------------------------------------------------------------------------------

ROUTES = [LAYER, HEATMAP, AREAS]


@pytest.mark.parametrize("bbox, error", [
    ("1,2,3", "bbox.malformed"),
    ("1,2,3,4,5", "bbox.malformed"),
    ("a,b,c,d", "bbox.malformed"),
    ("104.9,11.5,,11.6", "bbox.malformed"),
    ("nan,11.5,105,11.6", "bbox.malformed"),
    ("104.9,11.5,inf,11.6", "bbox.malformed"),
    ("105,11.5,104.9,11.6", "bbox.inverted"),
    ("104.9,11.6,105,11.5", "bbox.inverted"),
    ("104.9,11.5,104.9,11.6", "bbox.inverted"),
    ("104.9,11.5,181,11.6", "bbox.out_of_range"),
    ("-180.5,11.5,105,11.6", "bbox.out_of_range"),
    ("104.9,-91,105,11.6", "bbox.out_of_range"),
])
def test_bad_bbox(client, bbox, error):
    for route in ROUTES:
        body = assert_error(client.get(route, query_string={"bbox": bbox}), 400, error)
        assert "bbox" in body["errors"]


@pytest.mark.parametrize("query, error", [
    ({"category": "waste.nope"}, "request.unknown_category"),
    ({"category": "waste,potholes"}, "request.unknown_category"),
    ({"status": "closed"}, "request.unknown_status"),
    ({"status": "new,done"}, "request.unknown_status"),
    ({"area": "PP-nowhere"}, "request.unknown_area"),
    ({"since": "2026-11-20T00:00:00Z", "until": "2026-11-19T00:00:00Z"}, "request.bad_time_range"),
    ({"since": "2026-11-20T00:00:00Z", "until": "2026-11-20T00:00:00Z"}, "request.bad_time_range"),
])
def test_unknown_filter_values(client, query, error):
    for route in ROUTES:
        body = assert_error(client.get(route, query_string=query), 400, error)
        assert len(body["errors"]) == 1 and set(body["errors"]) <= {"category", "status", "area", "until"}


@pytest.mark.parametrize("query", [{"since": "yesterday"}, {"since": "2026-11-20T00:00:00"}, {"until": "2026-13-01"}])
def test_bad_times_are_422(client, query):
    for route in ROUTES:
        body = assert_error(client.get(route, query_string=query), 422, "request.invalid")
        assert set(query) <= set(body["errors"].get("query", body["errors"]))


@pytest.mark.parametrize("limit", ["10001", "0", "-1", "many", "1.5"])
def test_layer_limit_out_of_bounds(client, limit):
    assert_error(client.get(LAYER, query_string={"limit": limit}), 422, "request.invalid")


def test_layer_limit_at_the_bounds(client, connection, no_reports):
    add_report(connection, DOUN_PENH)
    assert layer(client, limit=10000)["returned"] == 1
    assert layer(client, limit=1)["returned"] == 1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "not-a-cursor",
    "!!!!",
    "ក",
    _b64(b"[1]"),
    _b64(b"[1, 2]"),
    _b64(b'["2026-11-20T00:00:00+00:00", "not-a-uuid"]'),
    _b64(b'["yesterday", "7d1c6f0e-0d5e-4f57-9d0b-9f1b7f0e8a11"]'),
    _b64(b'{"a": 1}'),
    _b64(b"\xff\xfe"),
])
def test_bad_cursor(client, cursor):
    body = assert_error(client.get(LAYER, query_string={"cursor": cursor}), 400, "request.bad_cursor")
    assert "cursor" in body["errors"]


@pytest.mark.parametrize("query", [{"zoom": "23"}, {"zoom": "-1"}, {"zoom": "x"}, {"cells": "3"}, {"cells": "257"},
                                   {"shape": "triangle"}, {"format": "csv"}])
def test_heatmap_bad_parameters(client, query):
    body = assert_error(client.get(HEATMAP, query_string=query), 422, "request.invalid")
    assert set(query) <= set(body["errors"].get("query", body["errors"]))


@pytest.mark.parametrize("query", [{"level": "city"}, {"level": "country"}, {"geometry": "maybe"}])
def test_areas_bad_parameters(client, query):
    body = assert_error(client.get(AREAS, query_string=query), 422, "request.invalid")
    assert set(query) <= set(body["errors"].get("query", body["errors"]))


def test_errors_speak_khmer(client):
    body = assert_error(client.get(LAYER, query_string={"bbox": "1,2,3", "lang": "km"}), 400, "bbox.malformed")
    assert body["message"].startswith("bbox ត្រូវតែជាលេខបួន")

