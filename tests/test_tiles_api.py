"""Vector tiles of reports over HTTP against real PostGIS, decoded with mapbox-vector-tile.

Below zoom 14 (or where a tile is crowded) the layer ``cells`` carries
counts on a 64 × 64 grid: one cell of a zoom-z tile is the zoom-(z + 6)
tile under it, so where every report must land is computed here with the
OpenStreetMap formula. From zoom 14 the layer ``reports`` carries points.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
from collections import Counter

import mapbox_vector_tile
import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from geo.tiles import Tile
from service import db, rollup
from service.app import create_app
from tests.test_bad_input import assert_error
from tests.test_layers_api import (
    BKK1,
    BOENG_TRABAEK,
    DOUN_PENH,
    PHSAR_CHAS,
    SIHANOUKVILLE,
    TOP_LEVEL,
    TUOL_KOUK,
    add_report,
)

MVT = "application/vnd.mapbox-vector-tile"
EXTENT = 4096
GRID = 64  # cells across an aggregated tile


def tile_index(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    return (math.floor((lon + 180.0) / 360.0 * n),
            math.floor((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n))


def tile_units(lon: float, lat: float, z: int, x: int, y: int) -> tuple[float, float]:
    """Where a point falls in tile (z, x, y), in tile units, y down."""
    n = 2 ** z
    return (((lon + 180.0) / 360.0 * n - x) * EXTENT,
            ((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n - y) * EXTENT)


def url(z: int, x: int | str, y: int | str) -> str:
    return f"/api/v1/tiles/reports/{z}/{x}/{y}.mvt"


def url_at(place: tuple[float, float], z: int) -> str:
    return url(z, *tile_index(*place, z))


def decode(data: bytes) -> dict:
    return mapbox_vector_tile.decode(data, default_options={"y_coord_down": True})


def get_tile(client, path: str, **query) -> dict:
    response = client.get(path, query_string=query)
    assert response.status_code == 200, (response.status_code, response.data[:300])
    assert response.mimetype == MVT
    return decode(response.data)


def cell_counts(tile: dict) -> dict[tuple[int, int], dict]:
    """The ``cells`` layer by grid cell (column, row)."""
    assert set(tile) == {"cells"}, set(tile)
    out = {}
    for feature in tile["cells"]["features"]:
        assert feature["geometry"]["type"] == "Point"
        px, py = feature["geometry"]["coordinates"]
        assert (px - 32) % 64 == 0 and (py - 32) % 64 == 0, (px, py)  # the centre of a 64-unit cell
        out[(px // 64, py // 64)] = feature["properties"]
    return out


def expected_cells(reports, z: int, x: int, y: int) -> dict[tuple[int, int], Counter]:
    out: dict[tuple[int, int], Counter] = {}
    for r in reports:
        cx, cy = tile_index(r.lon, r.lat, z + 6)
        cell = (cx - (x << 6), cy - (y << 6))
        if 0 <= cell[0] < GRID and 0 <= cell[1] < GRID:
            out.setdefault(cell, Counter())[r.category.split(".")[0]] += 1
    return out


def as_counters(cells: dict[tuple[int, int], dict]) -> dict[tuple[int, int], Counter]:
    out = {}
    for key, props in cells.items():
        assert props["count"] == sum(props[code] for code in TOP_LEVEL), props
        out[key] = Counter({code: props[code] for code in TOP_LEVEL if props[code]})
    return out


@pytest.fixture()
def city(connection):
    assert connection.execute(text("SELECT count(*) FROM reports")).scalar() == 0
    return [
        add_report(connection, DOUN_PENH, category="waste.burning", status="new"),
        add_report(connection, DOUN_PENH, category="street.pothole", status="resolved"),
        add_report(connection, PHSAR_CHAS, category="flooding.blocked_drain", status="in_progress"),
        add_report(connection, BOENG_TRABAEK, category="water.leak", status="new"),
        add_report(connection, BKK1, category="waste.overflowing_bin", status="acknowledged"),
        add_report(connection, TUOL_KOUK, category="street.dark_streetlight", status="new"),
        add_report(connection, SIHANOUKVILLE, category="waste.river_dumping", status="new"),
    ]


# --- points from zoom 14 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("z", [14, 16, 19, 22])
def test_high_zoom_tile_carries_the_report_as_a_point(client, connection, z):
    report = add_report(connection, DOUN_PENH, category="waste.burning", status="acknowledged")
    x, y = tile_index(*DOUN_PENH, z)
    response = client.get(url(z, x, y))
    assert response.status_code == 200 and response.mimetype == MVT
    tile = decode(response.data)
    assert set(tile) == {"reports"}
    layer = tile["reports"]
    assert layer["extent"] == EXTENT and layer["version"] == 2
    (feature,) = layer["features"]
    assert feature["properties"] == {"reference": report.reference, "category": "waste.burning",
                                     "group": "waste", "status": "acknowledged"}
    assert feature["geometry"]["type"] == "Point"
    px, py = feature["geometry"]["coordinates"]
    assert 0 <= px <= EXTENT and 0 <= py <= EXTENT
    ex, ey = tile_units(*DOUN_PENH, z, x, y)
    assert abs(px - ex) <= 1 and abs(py - ey) <= 1, ((px, py), (ex, ey))


def test_point_tile_holds_only_its_own_reports_and_never_private_fields(client, connection):
    near = add_report(connection, DOUN_PENH, description="secret smoke behind the school",
                      contact=("Sokha Chan", "+855 12 345 678", "sokha@example.org"))
    also = add_report(connection, DOUN_PENH, category="street.pothole", status="in_progress")
    add_report(connection, BOENG_TRABAEK)  # 2.7 km south: another tile
    response = client.get(url_at(DOUN_PENH, 15))
    features = decode(response.data)["reports"]["features"]
    assert sorted(f["properties"]["reference"] for f in features) == sorted([near.reference, also.reference])
    for private in (b"secret smoke", b"Sokha", b"345 678", b"sokha@example.org"):
        assert private not in response.data


def test_point_in_the_buffer_of_the_next_tile(client, connection):
    """A point just across the tile's east edge is carried in the buffer (x a little over 4096)."""
    z = 16
    x, y = tile_index(*DOUN_PENH, z)
    east_edge = (x + 1) / 2 ** z * 360.0 - 180.0
    just_over = (east_edge + 20 / EXTENT * 360.0 / 2 ** z, DOUN_PENH[1])  # 20 units into the next tile
    far_over = (east_edge + 100 / EXTENT * 360.0 / 2 ** z, DOUN_PENH[1])  # beyond the 64-unit buffer
    inside = add_report(connection, just_over)
    add_report(connection, far_over)
    (feature,) = get_tile(client, url(z, x, y))["reports"]["features"]
    assert feature["properties"]["reference"] == inside.reference
    assert EXTENT + 19 <= feature["geometry"]["coordinates"][0] <= EXTENT + 21


# --- cells below zoom 14 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("z", [0, 4, 9, 10, 12, 13])
def test_low_zoom_tile_counts_reports_per_cell(client, city, z):
    x, y = tile_index(*DOUN_PENH, z)
    cells = cell_counts(get_tile(client, url(z, x, y)))
    in_tile = [r for r in city if tile_index(r.lon, r.lat, z) == (x, y)]
    assert sum(p["count"] for p in cells.values()) == len(in_tile)
    assert as_counters(cells) == expected_cells(city, z, x, y)
    # Sihanoukville falls in another tile from zoom 5 on; at zoom 13 Phnom Penh's reports split over tiles
    assert len(in_tile) == {0: 7, 4: 7, 9: 6, 10: 6, 12: 6, 13: 4}[z]


def test_cell_properties_are_count_and_one_per_top_level_category(client, city):
    (feature,) = [f for f in get_tile(client, url(0, 0, 0))["cells"]["features"]
                  if f["properties"]["count"] == 6]  # the Phnom Penh cell at zoom 0 (a zoom-6 tile)
    assert feature["properties"] == {"count": 6, "waste": 2, "flooding": 1, "water": 1, "street": 2}


def test_world_tile_counts_every_public_report(client, city):
    cells = cell_counts(get_tile(client, url(0, 0, 0)))
    assert sum(p["count"] for p in cells.values()) == len(city) == 7
    assert len(cells) == 2  # Phnom Penh and Sihanoukville


def test_crowded_high_zoom_tile_falls_back_to_cells(client, connection):
    """At most 8,000 points in a tile; one more and it carries counts instead."""
    pp = connection.execute(text("SELECT id FROM areas WHERE code = 'PP'")).scalar()
    x, y = tile_index(*BKK1, 14)
    bounds = Tile(14, x, y).bounds_lonlat()
    west, north = bounds.min_lon, bounds.max_lat - 0.0005
    connection.execute(text("""
        INSERT INTO reports (id, reference, category_code, location, city_id, status, source, observed_at,
                             received_at, updated_at, payload_sha256)
        SELECT gen_random_uuid(), 'PP-T' || lpad(i::text, 5, '0'),
               CASE WHEN i % 2 = 0 THEN 'waste.burning' ELSE 'street.pothole' END,
               ST_SetSRID(ST_MakePoint(:west + 0.0005 + (i % 100) * 0.00015, :north - (i / 100) * 0.00012), 4326),
               :city, 'new', 'seed', now(), now(), now(), repeat('0', 64)
        FROM generate_series(1, 8000) AS i"""), {"west": west, "north": north, "city": pp})
    assert tile_index(west + 0.0005 + 99 * 0.00015, north - 80 * 0.00012, 14) == (x, y)
    full = client.get(url(14, x, y))
    features = decode(full.data)["reports"]["features"]
    assert len(features) == 8000
    assert Counter(f["properties"]["group"] for f in features) == {"waste": 4000, "street": 4000}
    add_report(connection, BKK1, category="water.leak")
    crowded = get_tile(client, url(14, x, y))
    cells = cell_counts(crowded)
    assert sum(p["count"] for p in cells.values()) == 8001
    assert sum(p["water"] for p in cells.values()) == 1 and sum(p["waste"] for p in cells.values()) == 4000
    # a filter that leaves few enough reports gives points again
    (water,) = get_tile(client, url(14, x, y), category="water")["reports"]["features"]
    assert water["properties"]["category"] == "water.leak"
    # a crowded tile is worth compressing
    packed = client.get(url(14, x, y), headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.data) == client.get(url(14, x, y)).data


# --- filters -----------------------------------------------------------------------------------------------------

def test_category_filter_on_point_tiles(client, city):
    path = url_at(DOUN_PENH, 16)
    both = get_tile(client, path)["reports"]["features"]
    assert sorted(f["properties"]["category"] for f in both) == ["street.pothole", "waste.burning"]
    (waste,) = get_tile(client, path, category="waste")["reports"]["features"]
    assert waste["properties"]["category"] == "waste.burning"
    (pothole,) = get_tile(client, path, category="street.pothole,water")["reports"]["features"]
    assert pothole["properties"]["category"] == "street.pothole"
    assert client.get(path, query_string={"category": "flooding"}).status_code == 204


def test_status_filter_on_point_tiles(client, city):
    path = url_at(DOUN_PENH, 16)
    (resolved,) = get_tile(client, path, status="resolved")["reports"]["features"]
    assert resolved["properties"]["status"] == "resolved" and resolved["properties"]["group"] == "street"
    assert len(get_tile(client, path, status="new,resolved")["reports"]["features"]) == 2
    assert client.get(path, query_string={"status": "rejected"}).status_code == 204


def test_filters_on_cell_tiles(client, city):
    path = url_at(DOUN_PENH, 10)

    def total(**query) -> int:
        return sum(p["count"] for p in cell_counts(get_tile(client, path, **query)).values())

    assert total() == 6
    assert total(category="waste") == 2
    assert total(category="street,water.leak") == 3
    assert total(status="new") == 3
    assert total(category="waste", status="new") == 1
    assert total(area="PP-chamkar-mon") == 2
    assert client.get(path, query_string={"area": "SV"}).status_code == 204
    assert client.get(path, query_string={"since": "2030-01-01T00:00:00Z"}).status_code == 204
    only_waste = cell_counts(get_tile(client, path, category="waste"))
    assert all(p["count"] == p["waste"] and p["street"] == 0 for p in only_waste.values())


def test_bbox_is_ignored_on_tiles(client, city):
    """The tile is the bbox: a bbox parameter neither narrows nor breaks it."""
    path = url_at(DOUN_PENH, 16)
    assert client.get(path, query_string={"bbox": "103,10,103.1,10.1"}).data == client.get(path).data
    assert client.get(path, query_string={"bbox": "nonsense", "lang": "km", "v": "2"}).status_code == 200


# --- empty, hidden, caching --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [url(10, 0, 0), url(16, 0, 0), url(22, 1234, 5678), url(0, 0, 0)])
def test_empty_tile_is_204(client, connection, path):
    if path != url(0, 0, 0):
        add_report(connection, DOUN_PENH)  # reports elsewhere; 0/0/0 is empty only when there are none
    response = client.get(path)
    assert response.status_code == 204
    assert response.data == b""
    assert response.headers["Cache-Control"] == "public, max-age=60"


def test_hidden_reports_are_absent(client, connection):
    shown = add_report(connection, DOUN_PENH, category="waste.burning")
    hidden = add_report(connection, DOUN_PENH, category="street.pothole", hidden=True)
    hidden_alone = add_report(connection, TUOL_KOUK, hidden=True)
    high = client.get(url_at(DOUN_PENH, 16))
    assert [f["properties"]["reference"] for f in decode(high.data)["reports"]["features"]] == [shown.reference]
    assert hidden.reference.encode() not in high.data
    assert client.get(url_at(DOUN_PENH, 16), query_string={"category": "street"}).status_code == 204
    assert client.get(url_at(TUOL_KOUK, 16)).status_code == 204
    assert hidden_alone.reference.encode() not in client.get(url_at(TUOL_KOUK, 14)).data
    cells = cell_counts(get_tile(client, url_at(DOUN_PENH, 10)))
    assert sum(p["count"] for p in cells.values()) == 1 and sum(p["street"] for p in cells.values()) == 0


def test_etag_cache_control_and_304(client, connection):
    add_report(connection, DOUN_PENH)
    path = url_at(DOUN_PENH, 16)
    first = client.get(path)
    assert first.status_code == 200 and first.headers["Content-Type"] == MVT
    assert first.headers["Cache-Control"] == "public, max-age=60"
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    cached = client.get(path, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.data == b"" and cached.headers["ETag"] == etag
    assert client.get(path, headers={"If-None-Match": '"other", ' + etag}).status_code == 304
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    add_report(connection, DOUN_PENH, category="street.pothole")
    changed = client.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    low = client.get(url_at(DOUN_PENH, 10))
    assert client.get(url_at(DOUN_PENH, 10), headers={"If-None-Match": low.headers["ETag"]}).status_code == 304


def test_weak_etag_from_a_proxy_still_gives_304(client, connection):
    """If-None-Match compares weakly (RFC 9110 13.1.2): a proxy that compressed the tile sends W/"…" back."""
    add_report(connection, DOUN_PENH)
    path = url_at(DOUN_PENH, 16)
    etag = client.get(path).headers["ETag"]
    assert client.get(path, headers={"If-None-Match": "W/" + etag}).status_code == 304


def test_small_tiles_are_not_gzipped(client, connection):
    add_report(connection, DOUN_PENH)
    response = client.get(url_at(DOUN_PENH, 16), headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200 and "Content-Encoding" not in response.headers
    assert "Accept-Encoding" in response.headers["Vary"]


# --- the rollup (used when ROLLUP_MAX_AGE_SECONDS > 0) -----------------------------------------------------------

@pytest.fixture()
def rollup_client(config, engine, connection):
    """A second app that reads unfiltered low-zoom tiles from the rollup (``client`` counts live), and a
    refresh of the rollup inside this test's transaction. The maximum age is far away, so no refresh
    ever starts in the background."""
    app = create_app(dataclasses.replace(config, rollup_max_age_seconds=10 ** 9), engine=engine, TESTING=True)
    db.bind_session_factory(app, sessionmaker(bind=connection, join_transaction_mode="create_savepoint",
                                              expire_on_commit=False))

    def refresh() -> None:
        rollup.refresh(connection)

    return app.test_client(), refresh


@pytest.mark.parametrize("z", [0, 5, 10, 13, 15])
def test_rollup_tiles_match_live_counts(client, rollup_client, city, z):
    rolled, refresh = rollup_client
    refresh()
    path = url_at(DOUN_PENH, z)
    if z >= 14:
        assert decode(rolled.get(path).data) == decode(client.get(path).data)  # points, read live
        return
    live = cell_counts(get_tile(client, path))
    from_rollup = cell_counts(get_tile(rolled, path))
    assert from_rollup == live
    for query in ({"category": "waste"}, {"category": "street,water"}):
        assert cell_counts(get_tile(rolled, path, **query)) == cell_counts(get_tile(client, path, **query))


def test_rollup_is_read_only_when_it_can_answer(client, rollup_client, city, connection):
    rolled, refresh = rollup_client
    refresh()
    late = add_report(connection, DOUN_PENH, category="waste.burning", status="new")  # after the refresh
    path = url_at(DOUN_PENH, 10)

    def total(c, **query) -> int:
        return sum(p["count"] for p in cell_counts(get_tile(c, path, **query)).values())

    assert total(rolled) == 6 and total(client) == 7          # unfiltered: the rollup, until its next refresh
    assert total(rolled, category="waste") == 2               # a top-level category: still the rollup
    assert total(rolled, category="waste.burning") == 2       # a subtype: counted live
    assert total(rolled, status="new") == 4                   # any status, area or time filter: live
    assert total(rolled, area="PP") == 7
    high = get_tile(rolled, url_at(DOUN_PENH, 16))["reports"]["features"]
    assert late.reference in {f["properties"]["reference"] for f in high}  # points are always live
    refresh()
    assert total(rolled) == 7


# --- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("z, x, y", [("23", "0", "0"), ("99", "0", "0"), ("3", "8", "0"), ("3", "0", "8"),
                                     ("0", "1", "0"), ("22", str(2 ** 22), "0")])
def test_tile_out_of_range(client, z, x, y):
    body = assert_error(client.get(url(z, x, y)), 400, "tile.out_of_range")
    assert "tile" in body["errors"]


@pytest.mark.parametrize("z, x, y", [("3", "0", "-1"), ("-1", "0", "0"), ("a", "0", "0"), ("3", "1.5", "0"),
                                     ("3", "0", "1e2"), ("3", "x", "y"), ("១", "0", "0")])
def test_tile_malformed(client, z, x, y):
    body = assert_error(client.get(url(z, x, y)), 400, "tile.malformed")
    assert "tile" in body["errors"]


def test_tile_error_in_khmer(client):
    body = assert_error(client.get(url(23, 0, 0), headers={"Accept-Language": "km"}), 400, "tile.out_of_range")
    assert body["message"] != "There is no such tile: zoom 0…22, and x and y from 0 to 2^zoom − 1."
    assert any("\u1780" <= ch <= "\u17ff" for ch in body["message"])


@pytest.mark.parametrize("query, error", [
    ({"category": "waste.nope"}, "request.unknown_category"),
    ({"status": "closed"}, "request.unknown_status"),
    ({"area": "PP-nowhere"}, "request.unknown_area"),
    ({"since": "2026-11-20T00:00:00Z", "until": "2026-11-19T00:00:00Z"}, "request.bad_time_range"),
])
@pytest.mark.parametrize("z", [10, 16])
def test_tile_unknown_filter_values(client, query, error, z):
    assert_error(client.get(url_at(DOUN_PENH, z), query_string=query), 400, error)


def test_tile_bad_time_is_422(client):
    assert_error(client.get(url_at(DOUN_PENH, 10), query_string={"since": "last week"}), 422, "request.invalid")
