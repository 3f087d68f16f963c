"""The tile rollup (migration 0004) gives byte-identical tiles to counting live, and knows its limits."""

from __future__ import annotations

import dataclasses
import math

import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from geo.tiles import Tile
from service import db, layer_queries as lq, rollup
from service.app import create_app
from service.queries import ReportFilters

CENTRE = (104.9282, 11.5625)
OFFSETS = [(0.0, 0.0), (0.0004, 0.0002), (-0.0003, 0.0005), (0.0011, -0.0007), (0.002, 0.001)]
CATEGORIES = ["waste.overflowing_bin", "flooding.blocked_drain", "waste.burning", "water.leak", "street.pothole"]


def tile_at(lon: float, lat: float, z: int) -> Tile:
    n = 2 ** z
    return Tile(z, int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n))


@pytest.fixture()
def reports(client, connection, report_body):
    """Five reports near the Royal Palace in four categories, plus one hidden one."""
    ids = []
    for (dx, dy), category in zip(OFFSETS, CATEGORIES):
        body = report_body(category=category, location={"type": "Point",
                                                        "coordinates": [CENTRE[0] + dx, CENTRE[1] + dy]})
        response = client.post("/api/v1/reports", json=body)
        assert response.status_code == 201, response.data
        ids.append(response.get_json()["id"])
    hidden = client.post("/api/v1/reports", json=report_body(category="water.leak")).get_json()["id"]
    connection.execute(text("UPDATE reports SET hidden = true WHERE id = :id"), {"id": hidden})
    rollup.refresh(connection)
    return ids


def render(connection, tile, filters=ReportFilters(), *, use_rollup, point_zoom=99, max_points=8000):
    categories = lq.top_level_categories(connection)
    return lq.render_tile(connection, tile, filters, categories, point_zoom=point_zoom, max_points=max_points,
                          use_rollup=use_rollup)


def test_rollup_tiles_equal_live_tiles_at_every_zoom_it_holds(connection, reports):
    for z in range(0, 16):
        tile = tile_at(*CENTRE, z)
        live = render(connection, tile, use_rollup=False)
        assert live, f"no tile at z{z}"
        assert b"cells" in live
        assert render(connection, tile, use_rollup=True) == live, f"z{z}"


def test_rollup_counts_hold_every_public_report_and_not_the_hidden_one(connection, reports):
    total = connection.execute(text(
        "SELECT sum(n) FROM report_tile_cells WHERE level = 6")).scalar_one()
    public = connection.execute(text("SELECT count(*) FROM reports WHERE NOT hidden")).scalar_one()
    assert total == public


def test_rollup_answers_top_level_category_filters_identically(connection, reports):
    tile = tile_at(*CENTRE, 11)
    waste = ReportFilters(categories=("waste",))
    assert lq.rollup_serves(waste, lq.top_level_categories(connection))
    assert render(connection, tile, waste, use_rollup=True) == render(connection, tile, waste, use_rollup=False)
    assert render(connection, tile, waste, use_rollup=True) != render(connection, tile, use_rollup=True)


def test_filters_the_rollup_cannot_answer_are_counted_live(connection, reports):
    categories = lq.top_level_categories(connection)
    for filters in (ReportFilters(statuses=("new",)), ReportFilters(categories=("waste.burning",))):
        assert not lq.rollup_serves(filters, categories)
    tile = tile_at(*CENTRE, 10)
    burning = ReportFilters(categories=("waste.burning",))
    assert render(connection, tile, burning, use_rollup=True) == render(connection, tile, burning, use_rollup=False)


def test_crowded_tile_at_point_zoom_gives_cells_both_ways(connection, reports):
    tile = tile_at(*CENTRE, 14)
    roomy = render(connection, tile, use_rollup=True, point_zoom=14, max_points=100)
    assert b"reports" in roomy and b"cells" not in roomy
    crowded_rollup = render(connection, tile, use_rollup=True, point_zoom=14, max_points=2)
    crowded_live = render(connection, tile, use_rollup=False, point_zoom=14, max_points=2)
    assert b"cells" in crowded_rollup and crowded_rollup == crowded_live


def test_app_serves_low_zoom_from_rollup_and_new_reports_live_at_street_level(
        config, engine, connection, reports, report_body):
    app = create_app(dataclasses.replace(config, rollup_max_age_seconds=3600), engine=engine, TESTING=True)
    db.bind_session_factory(app, sessionmaker(bind=connection, join_transaction_mode="create_savepoint",
                                              expire_on_commit=False))
    client = app.test_client()
    low = tile_at(*CENTRE, 10)
    before = client.get(f"/api/v1/tiles/reports/{low.z}/{low.x}/{low.y}.mvt")
    assert before.status_code == 200
    assert before.data == render(connection, low, use_rollup=True)

    # A report after the refresh: the rollup does not hold it yet, the street-level tile does.
    new = client.post("/api/v1/reports", json=report_body(category="street.pothole")).get_json()
    after = client.get(f"/api/v1/tiles/reports/{low.z}/{low.x}/{low.y}.mvt")
    assert after.data == before.data
    assert after.headers["ETag"] == before.headers["ETag"]
    street = tile_at(*CENTRE, 17)
    points = client.get(f"/api/v1/tiles/reports/{street.z}/{street.x}/{street.y}.mvt")
    assert new["reference"].encode() in points.data

    rollup.refresh(connection)
    refreshed = client.get(f"/api/v1/tiles/reports/{low.z}/{low.x}/{low.y}.mvt")
    assert refreshed.data != before.data
    assert refreshed.data == render(connection, low, use_rollup=False)


def test_background_refresh_only_when_stale(engine):
    assert rollup.refresh_in_background_if_stale(engine, age=10, max_age=300) is False


def test_background_refresh_runs_once_and_records_when(engine):
    """A stale rollup is refreshed by one background thread, committed, and its time noted."""
    import time as _time

    from sqlalchemy import text as sql

    with engine.begin() as conn:
        conn.execute(sql("UPDATE rollup_state SET refreshed_at = now() - interval '1 hour'"))
    with engine.connect() as conn:
        age = rollup.age_seconds(conn)
    assert age >= 3600
    rollup._last_started = 0.0
    assert rollup.refresh_in_background_if_stale(engine, age=age, max_age=60) is True
    assert rollup.refresh_in_background_if_stale(engine, age=age, max_age=60) is False  # one at a time
    deadline = _time.monotonic() + 30
    while _time.monotonic() < deadline:
        with engine.connect() as conn:
            if rollup.age_seconds(conn) < 60:
                break
        _time.sleep(0.05)
    else:
        raise AssertionError("the background refresh did not finish")
