"""The planner map: ``/map``, ``/staff/map`` with its report endpoint, photo thumbnails and ``civicmap map --out``.

The browser side (layers appearing, no outside requests) is in
``tests/test_map_browser.py``; here the server side: vendored assets only,
configurable tiles, the page size independent of the number of reports,
privacy of the public variant and the staff variant's extra fields.
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import orjson
import pytest
from PIL import Image
from sqlalchemy import text

from service.app import create_app
from service.cli import main
from service.db import bind_session_factory
from service.seed import seed_reports
from tests import test_staff
from tests.test_staff import client_as, new_report

make_user = test_staff.make_user  # the staff tests' fixture: an account with a password

ASSET = re.compile(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"')


def page(client, url: str = "/map", **headers: str) -> str:
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def assets(html: str) -> list[str]:
    return [url for url in ASSET.findall(html) if url != "data:,"]


# --- the public page ----------------------------------------------------------------------------------------------

def test_map_page_is_folium_with_vendored_assets_only(client):
    html = page(client)
    assert "L.map(" in html and "CivicMap.init(" in html  # Folium's map, then ours fills it
    urls = assets(html)
    assert urls, "the page links its scripts and styles"
    assert all(url.startswith("/static/") and "?v=" in url for url in urls), urls
    for name in ("vendor/leaflet/leaflet.js", "vendor/markercluster/leaflet.markercluster.js",
                 "vendor/heat/leaflet-heat.js", "js/planner-map.js", "css/planner-map.css"):
        assert any(f"/static/{name}?" in url for url in urls), name
    # Folium's own CDN links (jsdelivr, cdnjs, bootstrap, jquery, font awesome) are all gone.
    for cdn in ("cdn.jsdelivr", "cdnjs", "bootstrapcdn", "code.jquery", "fontawesome"):
        assert cdn not in html
    outside = set(re.findall(r"https?://[^\"'\s)<>\\]+", html))
    assert outside <= {"https://tile.openstreetmap.org/{z}/{x}/{y}.png", "https://www.openstreetmap.org/copyright"}
    for url in urls:  # every asset is really served
        assert client.get(url).status_code == 200, url


def test_the_layers_control_and_panel_are_on_the_page(client):
    html = page(client, "/map?lang=en")
    for name in ("Waste", "Flooding", "Heatmap", "Open reports per sangkat", "Khan boundaries", "Sangkat boundaries"):
        assert name in html, name
    assert "L.control.layers(" in html
    assert 'id="cm-filters"' in html and 'name="category"' in html and 'name="status"' in html
    assert 'name="since"' in html and 'name="until"' in html and 'name="area"' in html
    assert "/api/v1/layers/heatmap" in html and "/api/v1/layers/reports" in html and "/api/v1/layers/areas" in html


def test_khmer_page(client):
    html = page(client, "/map?lang=km")
    assert '<html lang="km">' in html
    assert "ភ្នំពេញ" in html and "សំរាម" in html  # the city and a category group in Khmer
    assert "Filters" not in html


def test_unknown_city_is_a_404_page_and_the_other_city_works(client):
    response = client.get("/map?city=XX")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "XX" in response.get_data(as_text=True)
    html = page(client, "/map?city=sv")
    assert 'aria-current="page">Preah Sihanouk' in html or "ព្រះសីហនុ" in html


def test_csp_allows_only_the_page_own_inline_script_and_the_tile_host(client):
    response = client.get("/map")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self' 'sha256-" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert "img-src 'self' data: https://tile.openstreetmap.org" in policy
    assert "connect-src 'self'" in policy
    etag = response.headers["ETag"]
    assert client.get("/map", headers={"If-None-Match": etag}).status_code == 304


def test_base_tiles_are_configurable_and_can_be_switched_off(config, engine, connection):
    from sqlalchemy.orm import sessionmaker

    def app_with(**overrides):
        app = create_app(dataclasses.replace(config, **overrides), engine)
        bind_session_factory(app, sessionmaker(bind=connection, join_transaction_mode="create_savepoint"))
        return app.test_client()

    custom = app_with(map_tiles_url="https://{s}.tiles.example.org/{z}/{x}/{y}.png",
                      map_tiles_attribution="Tiles by Example")
    html = page(custom)
    assert "https://{s}.tiles.example.org/{z}/{x}/{y}.png" in html and "Tiles by Example" in html
    assert "tile.openstreetmap.org" not in html
    assert "https://*.tiles.example.org" in custom.get("/map").headers["Content-Security-Policy"]
    html = page(app_with(map_tiles_url=""))
    assert "L.tileLayer(" not in html and "openstreetmap" not in html.lower().replace("openstreetmap.org/copyright", "")


def test_map_html_is_the_same_size_at_2k_and_200k_reports(app, client, connection):
    seed_reports(connection, 2_000, seed=7)
    assert connection.execute(text("SELECT count(*) FROM reports")).scalar() == 2_000
    small = page(client)
    small_total = client.get("/api/v1/layers/heatmap?format=grid&cells=8").get_json()["total"]
    app.extensions["civicmap.worker_cache"].clear()  # render the page again, not from the cache
    seed_reports(connection, 198_000, seed=8)
    assert connection.execute(text("SELECT count(*) FROM reports")).scalar() == 200_000
    large = page(client)
    assert len(small.encode()) == len(large.encode())
    # The page did not grow, but the data it loads did: the endpoints see all 200,000.
    assert client.get("/api/v1/layers/heatmap?format=grid&cells=8").get_json()["total"] > 50 * small_total


# --- the staff variant --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role, expected", [("anonymous", 303), ("field_worker", 403), ("moderator", 200),
                                            ("planner", 200), ("admin", 200)])
def test_staff_map_roles(client, make_user, role, expected):
    client_as(client, make_user, role)
    for url in ("/staff/map", "/staff/map/reports"):
        response = client.get(url)
        assert response.status_code == expected, (url, response.status_code)
        if expected == 303:
            assert "/staff/login" in response.headers["Location"]


def test_staff_map_shows_hidden_reports_with_internal_fields_and_the_public_map_does_not(
        client, connection, make_user, report_body):
    shown = new_report(client, report_body(description="shown"))
    hidden = new_report(client, report_body(description="hidden one"))
    connection.execute(text("UPDATE reports SET hidden = true WHERE reference = :r"), {"r": hidden["reference"]})
    public = client.get("/api/v1/layers/reports?area=PP").get_json()
    assert {f["properties"]["reference"] for f in public["features"]} == {shown["reference"]}
    assert "hidden" not in public["features"][0]["properties"]

    client_as(client, make_user, "planner")
    html = page(client, "/staff/map")
    assert "/staff/map/reports" in html and "(staff)" in html
    body = client.get("/staff/map/reports?area=PP").get_json()
    by_reference = {f["properties"]["reference"]: f["properties"] for f in body["features"]}
    assert set(by_reference) == {shown["reference"], hidden["reference"]}
    assert by_reference[hidden["reference"]]["hidden"] is True
    assert by_reference[shown["reference"]]["hidden"] is False
    assert by_reference[shown["reference"]]["source"] == "api"
    assert by_reference[shown["reference"]]["staff_url"] == f"/staff/reports/{shown['reference']}"
    raw = orjson.dumps(body).decode()
    for private in ("contact", "device", "tracking", "description", "phone"):
        assert private not in raw, private


def test_staff_map_reports_refuses_bad_filters_in_the_json_error_shape(client, make_user):
    client_as(client, make_user, "planner")
    for query, error in (("bbox=1,2", "coordinates"), ("status=lost", "request.unknown_status"),
                         ("limit=0", "request.invalid")):
        response = client.get(f"/staff/map/reports?{query}")
        assert response.status_code == 400, query
        body = response.get_json()
        assert set(body) == {"code", "status", "error", "message", "errors"}
        assert error in body["error"] or error == "coordinates", body


# --- photo thumbnails for popups ----------------------------------------------------------------------------------

def test_photo_thumbnails(client, make_user, report_body):
    report = new_report(client, report_body())
    big = Image.new("RGB", (1600, 1200), (200, 30, 30))
    buffer = io.BytesIO()
    big.save(buffer, "JPEG")
    response = client.post(f"/api/v1/reports/{report['id']}/photos",
                           data={"photo": (io.BytesIO(buffer.getvalue()), "p.jpg")},
                           headers={"X-Tracking-Token": report["tracking_token"]})
    assert response.status_code == 201, response.get_json()
    sha = response.get_json()[0]["sha256"]
    full = client.get(f"/api/v1/photos/{sha}")
    thumb = client.get(f"/api/v1/photos/{sha}?size=thumb")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert len(thumb.data) < len(full.data) / 3
    with Image.open(io.BytesIO(thumb.data)) as img:
        assert max(img.size) == 240 and not img.info.get("exif")
    assert thumb.headers["ETag"] != full.headers["ETag"]
    assert client.get(f"/api/v1/photos/{sha}?size=thumb", headers={"If-None-Match": thumb.headers["ETag"]}
                      ).status_code == 304
    client_as(client, make_user, "planner")
    staff_thumb = client.get(f"/staff/photos/{sha}?size=thumb")
    assert staff_thumb.status_code == 200 and staff_thumb.data == thumb.data


# --- civicmap map --out -------------------------------------------------------------------------------------------

@pytest.fixture()
def map_cli(app):
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(main, ["map", *args])


def test_offline_map_inlines_assets_and_data(map_cli, client, report_body, tmp_path: Path):
    khmer = "សំរាមពេញផ្លូវ"
    first = new_report(client, report_body(description=khmer))
    second = new_report(client, report_body(category="flooding.flooded_road"))
    out = tmp_path / "map.html"
    result = map_cli("--out", str(out), "--lang", "km", "--no-base-map")
    assert result.exit_code == 0, result.output
    assert "2 reports" in result.output
    html = out.read_text(encoding="utf-8")
    assert not assets(html), "no linked scripts or styles: everything is inline"
    assert "L.map(" in html and "L.markerClusterGroup" in html and "simpleheat" in html
    assert "url(data:image/png;base64," in html  # Leaflet's layer icon is inlined too
    assert not re.search(r"https?://(?!www\.openstreetmap|leafletjs|github|bugs|bugzilla|www\.w3)", html.replace(
        "http://localhost:5000/r/", ""))
    assert first["reference"] in html and second["reference"] in html
    assert khmer not in html  # descriptions stay out of the map
    assert "ភ្នំពេញ" in html and '<html lang="km">' in html
    assert '"choropleth"' in html and '"khans"' in html and '"sangkats"' in html


def test_offline_map_filters_and_truncation(map_cli, client, report_body, tmp_path: Path):
    new_report(client, report_body())
    new_report(client, report_body(category="flooding.flooded_road"))
    new_report(client, report_body(category="flooding.blocked_drain"))
    out = tmp_path / "flood.html"
    result = map_cli("--out", str(out), "--category", "flooding", "--lang", "en", "--max-reports", "1")
    assert result.exit_code == 0, result.output
    assert "1 reports (the newest that match" in result.output
    assert "Only the newest 1 reports that match are on it." in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("args, option", [(("--category", "nope"), "--category"), (("--since", "yesterday"), "--since"),
                                          (("--city", "XX"), "--city"), (("--area", "PP-nowhere"), "--area")])
def test_offline_map_bad_options_write_nothing(map_cli, tmp_path: Path, args, option):
    out = tmp_path / "map.html"
    result = map_cli("--out", str(out), *args)
    assert result.exit_code == 2 and option in result.output, result.output
    assert not out.exists() and not list(tmp_path.iterdir())
