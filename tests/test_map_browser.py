"""The planner map in real headless Chromium against real gunicorn: layers appear, filters apply, nothing leaves.

Every request to a host other than civicmap is recorded; base tiles from
OpenStreetMap are answered with a blank tile by the test (stubbed), anything
else is refused. The offline map from ``civicmap map --out`` is opened from a
file with no base map, and must make no request at all. Screenshots go to
``tests/artifacts/`` (map-km.png, map-points.png, map-offline.png).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image
from playwright.sync_api import Page, Route
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
WAIT = 20_000


def _plain_tile() -> bytes:
    """A 256-pixel tile of OpenStreetMap's land colour: the stub the test answers tile requests with."""
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (242, 239, 233)).save(buffer, "PNG")
    return buffer.getvalue()


BLANK_TILE = _plain_tile()
TILE_HOST = "tile.openstreetmap.org"
SEEDED = 240  # reports put in Preah Sihanouk for these tests


@pytest.fixture(scope="module")
def live_db(live_database_url: str) -> Iterator[Engine]:
    engine = create_engine(live_database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def sihanoukville_reports(live_db: Engine) -> int:
    """Reports spread over Preah Sihanouk's sangkats (the other browser tests work in Phnom Penh)."""
    with live_db.begin() as conn:
        conn.execute(text("""
            WITH sangkat AS (
                SELECT a.id, a.parent_id, a.geom, row_number() OVER (ORDER BY a.code) AS n
                FROM areas a JOIN areas k ON k.id = a.parent_id JOIN areas c ON c.id = k.parent_id
                WHERE a.level = 'commune' AND c.code = 'SV'),
            points AS (
                SELECT s.id AS commune_id, s.parent_id AS district_id, (ST_Dump(ST_GeneratePoints(s.geom, 60, 7))).geom AS p
                FROM sangkat s),
            numbered AS (SELECT *, row_number() OVER () AS i FROM points)
            INSERT INTO reports (id, reference, category_code, location, city_id, district_id, commune_id, status,
                                 source, observed_at, received_at, acknowledged_at, closed_at, payload_sha256)
            SELECT gen_random_uuid(), 'MAPT' || lpad(i::text, 5, '0'),
                   (ARRAY['waste.overflowing_bin', 'flooding.flooded_road', 'water.leak', 'street.pothole'])[1 + i % 4],
                   ST_SetSRID(p, 4326), (SELECT id FROM areas WHERE code = 'SV'), district_id, commune_id,
                   (ARRAY['new', 'acknowledged', 'in_progress', 'resolved'])[1 + (i / 4) % 4], 'api',
                   now() - make_interval(days => (i % 60)::int), now() - make_interval(days => (i % 60)::int),
                   CASE WHEN (i / 4) % 4 > 0 THEN now() - make_interval(days => (i % 60)::int - 1) END,
                   CASE WHEN (i / 4) % 4 = 3 THEN now() - make_interval(days => greatest((i % 60)::int - 5, 0)) END,
                   md5(i::text) || md5(i::text)
            FROM numbered WHERE i <= :n"""), {"n": SEEDED})
        return conn.execute(text("SELECT count(*) FROM reports WHERE reference LIKE 'MAPT%'")).scalar_one()


class Outside:
    """Records every request to another host: OSM tiles get a blank tile, anything else is refused."""

    def __init__(self, page: Page, base: str) -> None:
        self.base_host = urlsplit(base).netloc
        self.hosts: set[str] = set()
        self.local: list[str] = []
        page.route("**/*", self._route)

    def _route(self, route: Route) -> None:
        url = route.request.url
        host = urlsplit(url).netloc
        if host == self.base_host:
            self.local.append(url)
            route.continue_()
            return
        self.hosts.add(host or url.split(":")[0])
        if host == TILE_HOST:
            route.fulfill(status=200, content_type="image/png", body=BLANK_TILE)
        else:
            route.abort()


def public_in_sihanoukville(live_db: Engine, group: str = "%") -> int:
    """Every public report in Preah Sihanouk: ours, and any another live-server test put there."""
    with live_db.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM reports r JOIN areas c ON c.id = r.city_id "
                                 "WHERE c.code = 'SV' AND NOT r.hidden AND r.category_code LIKE :g"),
                            {"g": group}).scalar_one()


def open_map(browser, live_server: str, path: str) -> tuple[Page, Outside, list[str]]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    outside = Outside(page, live_server)
    page.goto(live_server + path)
    page.wait_for_selector("html[data-map-ready]", state="attached", timeout=WAIT)
    return page, outside, errors


def turn_on(page: Page, layer_name: str) -> None:
    """Tick a layer in Folium's layer control, as a planner would."""
    page.hover(".leaflet-control-layers")
    label = page.locator(".leaflet-control-layers-overlays label", has_text=layer_name)
    label.locator("input").check()


def test_map_layers_appear_and_nothing_but_tiles_leaves(browser, live_server, live_db, sihanoukville_reports):
    assert sihanoukville_reports == SEEDED
    expected = public_in_sihanoukville(live_db)
    page, outside, errors = open_map(browser, live_server, "/map?city=SV&lang=km")
    assert page.locator("html").get_attribute("lang") == "km"
    # Count bubbles per category group, and the khan outlines, come up by themselves.
    page.wait_for_selector(".cm-bubble", timeout=WAIT)
    total = page.evaluate("""() => Array.from(document.querySelectorAll('.cm-bubble'))
                                  .reduce((n, b) => n + parseInt(b.textContent, 10), 0)""")
    assert total == expected
    assert page.locator("path.leaflet-interactive").count() >= 4  # khan outlines
    status = page.locator("#cm-status").inner_text()
    assert str(expected) in status
    # The choropleth and the heatmap, from the layer control.
    turn_on(page, "របាយការណ៍មិនទាន់ដោះស្រាយ តាមសង្កាត់")
    page.wait_for_selector("#cm-choropleth-legend .cm-swatch", timeout=WAIT)
    page.mouse.move(640, 400)  # let the layer list fold away
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "map-km.png"))
    turn_on(page, "ផែនទីកម្ដៅ")
    page.wait_for_selector("canvas.leaflet-heatmap-layer", state="attached", timeout=WAIT)
    # Leaflet.heat draws on the next animation frame after its data arrives: wait until the canvas has colour.
    page.wait_for_function("""() => { const c = document.querySelector('canvas.leaflet-heatmap-layer');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) n++; } return n > 1000; }""",
                           timeout=WAIT)
    page.screenshot(path=str(ARTIFACTS / "map-km-heat.png"))
    assert not errors, errors
    assert outside.hosts <= {TILE_HOST}, outside.hosts
    assert all("/api/" in url or "/static/" in url or "/map" in url for url in outside.local), outside.local


def test_filters_apply_without_a_page_load_and_points_have_popups(browser, live_server, live_db,
                                                                 sihanoukville_reports):
    flooding = public_in_sihanoukville(live_db, "flooding.%")
    page, outside, errors = open_map(browser, live_server, "/map?city=SV&lang=en")
    page.wait_for_selector(".cm-bubble", timeout=WAIT)
    page.evaluate("() => { window.__sameDocument = true; }")
    page.select_option("#cm-category", "flooding")
    page.wait_for_function(f"() => document.querySelector('#cm-status').textContent.startsWith('{flooding} ')",
                           timeout=WAIT)
    assert page.evaluate("() => window.__sameDocument") is True  # no page rebuild
    assert "category=flooding" in page.url  # the filters are in the address, to share
    colours = page.evaluate("() => Array.from(new Set(Array.from(document.querySelectorAll('.cm-bubble'))"
                            ".map(b => b.style.background)))")
    assert len(colours) == 1
    assert any("/api/v1/layers/heatmap" in url and "category=flooding" in url for url in outside.local)
    # Zoomed in, single reports with a popup: reference, category, status, link to the tracking page.
    reference, lat, lon = page.evaluate("""async () => {
        const r = await fetch('/api/v1/layers/reports?area=SV&category=flooding&limit=1').then(r => r.json());
        const f = r.features[0]; return [f.properties.reference, f.geometry.coordinates[1], f.geometry.coordinates[0]]; }""")
    page.evaluate(f"() => window.civicmapPlanner.map.setView([{lat}, {lon}], 18)")
    page.wait_for_selector("path.cm-report", timeout=WAIT)
    page.wait_for_function("() => document.querySelector('#cm-status').textContent.includes('here')", timeout=WAIT)
    page.evaluate(f"""() => {{ const groups = window.civicmapPlanner.clusters;
        for (const code in groups) {{ groups[code].eachLayer(m => {{
            const p = m.getLatLng(); if (Math.abs(p.lat - {lat}) < 1e-6 && Math.abs(p.lng - {lon}) < 1e-6) {{
                groups[code].zoomToShowLayer(m, () => m.openPopup()); }} }}); }} }}""")
    popup = page.wait_for_selector(".cm-popup", timeout=WAIT)
    text_ = popup.inner_text()
    assert reference in text_ and "Flooded road" in text_
    assert page.locator(".cm-popup a").get_attribute("href") == f"/r/{reference}"
    page.screenshot(path=str(ARTIFACTS / "map-points.png"))
    assert not errors, errors
    assert outside.hosts <= {TILE_HOST}, outside.hosts


def test_offline_map_file_makes_no_request(browser, live_database_url, live_db, sihanoukville_reports, tmp_path):
    expected = public_in_sihanoukville(live_db)
    out = tmp_path / "meeting.html"
    env = {**os.environ, "DATABASE_URL": live_database_url}
    result = subprocess.run([sys.executable, "-m", "service.cli", "map", "--out", str(out), "--city", "SV",
                             "--no-base-map"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{expected} reports" in result.stdout
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(out.as_uri())
    page.wait_for_selector("html[data-map-ready]", state="attached", timeout=WAIT)
    page.wait_for_selector(".marker-cluster, path.cm-report", timeout=WAIT)
    clustered = page.evaluate("""() => { let n = 0; const g = window.civicmapPlanner.clusters;
        for (const code in g) { n += g[code].getLayers().length; } return n; }""")
    assert clustered == expected
    assert page.locator("#cm-choropleth-legend .cm-swatch").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "map-offline.png"))
    assert requests == [out.as_uri()], requests
    assert not errors, errors
