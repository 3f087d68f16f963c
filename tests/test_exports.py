"""Open-data exports (GeoJSON, CSV + HXL, GeoPackage, FlatGeobuf, zipped Shapefile) on real PostGIS.

Each format is downloaded through the app, written to disk, read back with
pyogrio (CSV with the csv module) and compared with the database, row by row
and field by field. Responses are closed after reading, as a WSGI server
would: that is what removes the server's temporary export file.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import io
import math
import tempfile
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyogrio
import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from geo.exports import EXPORT_FIELDS, Licence, write_file
from service import db
from service import layer_queries as lq
from service.app import create_app
from tests.test_bad_input import assert_error

FORMATS = ("geojson", "csv", "gpkg", "fgb", "shp.zip")
KHMER = "សំរាមហៀរពេញផ្លូវ នៅមុខផ្សារ"
KHMER_LANDMARK = "ផ្សារថ្មី"
QUOTED = 'Smoke, "thick" smoke\nall night; =SUM(A1)'
NAMES = tuple(f.name for f in EXPORT_FIELDS)
DATETIMES = tuple(f.name for f in EXPORT_FIELDS if f.kind == "datetime")
# How precisely each format carries timestamps: GeoJSON to the second, GDAL's datetime fields
# (GeoPackage, FlatGeobuf) to the millisecond, CSV and the Shapefile's ISO text fully.
PRECISION_US = {"geojson": 1_000_000, "gpkg": 1000, "fgb": 1000, "csv": 1, "shp.zip": 1}
# CSV and dBase cannot tell an empty string from a missing one.
NULL_IS_EMPTY = {"csv", "shp.zip"}

# name → (category, [lon, lat], received_at, status)
SPECS: dict[str, tuple[str, list[float], str, str]] = {
    "khmer": ("waste.overflowing_bin", [104.9282, 11.5625], "2026-01-10T03:04:05.123456+00:00", "acknowledged"),
    "drain": ("flooding.blocked_drain", [104.8975, 11.5680], "2026-02-10T10:00:00+00:00", "new"),
    "pothole": ("street.pothole", [103.5177, 10.6277], "2026-03-10T10:00:00+00:00", "resolved"),
    "smoke": ("waste.burning", [104.9224, 11.5430], "2026-04-10T10:00:00+00:00", "in_progress"),
    "hidden": ("waste.burning", [104.9283, 11.5626], "2026-01-20T10:00:00+00:00", "new"),
}


def create_reports(client, report_body, connection) -> dict[str, dict[str, str]]:
    """Five reports (one hidden) in three khans and two cities, with fixed times and statuses."""
    made: dict[str, dict[str, str]] = {}
    for name, (category, coordinates, received, status) in SPECS.items():
        extra: dict[str, Any] = {"description": f"{name} report"}
        if name == "khmer":
            extra = {"description": KHMER, "landmark": KHMER_LANDMARK}
        elif name == "smoke":
            extra = {"description": QUOTED}
        response = client.post("/api/v1/reports", json=report_body(
            category=category, location={"type": "Point", "coordinates": coordinates},
            observed_at="2026-01-01T08:30:00+07:00", **extra))
        assert response.status_code == 201, response.get_json()
        made[name] = {"id": response.get_json()["id"], "reference": response.get_json()["reference"]}
        received_at = datetime.fromisoformat(received)
        connection.execute(text("""
            UPDATE reports SET received_at = :at, status = :status, hidden = :hidden,
                   acknowledged_at = CASE WHEN :opened THEN NULL ELSE :at + interval '2 hours 30 minutes' END,
                   closed_at = CASE WHEN :resolved THEN :at + interval '3 days 0.25 seconds' END
            WHERE id = :id"""), {"at": received_at, "status": status, "hidden": name == "hidden",
                                 "opened": status == "new", "resolved": status == "resolved",
                                 "id": made[name]["id"]})
    connection.execute(text(
        "INSERT INTO photos (sha256, content, mime, width, height, byte_size) "
        "VALUES (repeat('a', 64), '\\xffd8'::bytea, 'image/jpeg', 1, 1, 2)"))
    connection.execute(text("INSERT INTO report_photos (report_id, photo_sha256) VALUES (:id, repeat('a', 64))"),
                       {"id": made["khmer"]["id"]})
    return made


@pytest.fixture()
def reports(client, report_body, connection) -> dict[str, dict[str, str]]:
    return create_reports(client, report_body, connection)


def database_rows(connection, where: str = "TRUE", params: dict[str, Any] | None = None) -> dict[str, dict]:
    """The public, non-hidden reports as the database holds them, by id, in export field names."""
    rows = connection.execute(text(f"""
        SELECT r.id::text AS id, r.reference, r.category_code AS category,
               split_part(r.category_code, '.', 1) AS category_group, r.status,
               r.observed_at, r.received_at, r.acknowledged_at, r.closed_at,
               ST_X(r.location) AS lon, ST_Y(r.location) AS lat, city.code AS city,
               d.name_en AS khan, d.name_km AS khan_km, c.name_en AS sangkat, c.name_km AS sangkat_km,
               r.description, r.landmark, r.source,
               (SELECT count(*) FROM report_photos p WHERE p.report_id = r.id) AS photo_count
        FROM reports r JOIN areas city ON city.id = r.city_id
        LEFT JOIN areas d ON d.id = r.district_id LEFT JOIN areas c ON c.id = r.commune_id
        WHERE NOT r.hidden AND {where}"""), params or {}).mappings().all()
    return {row["id"]: dict(row) for row in rows}


# --- downloading and reading back -------------------------------------------------------------------------------

def download(client, url: str, **headers: str):
    """GET, read the whole body, close the response (as a WSGI server does); (response, bytes)."""
    response = client.get(url, headers=headers)
    data = response.get_data()
    response.close()
    return response, data


def _missing(value: Any) -> bool:
    return value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _as_datetime(value: Any) -> datetime | None:
    if _missing(value):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert value.tzinfo is not None, value
    return value.astimezone(timezone.utc)


def _normalised(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in EXPORT_FIELDS:
        value = record[field.name]
        if field.kind == "datetime":
            out[field.name] = _as_datetime(value)
        elif _missing(value):
            out[field.name] = None
        elif field.kind == "int":
            out[field.name] = int(value)
        elif field.kind == "float":
            out[field.name] = float(value)
        else:
            out[field.name] = value
    return out


def read_back(data: bytes, fmt: str, directory: Path) -> list[dict[str, Any]]:
    """Write the download to disk and read every record back, in export field names."""
    path = directory / f"download.{fmt}"
    path.write_bytes(data)
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            records = list(csv.DictReader(handle))
        for record in records:
            for key, value in record.items():
                record[key] = None if value == "" else value
        return [_normalised(r) for r in records]
    source = "/vsizip/" + str(path) if fmt == "shp.zip" else str(path)
    frame = pyogrio.read_dataframe(source)
    if fmt == "shp.zip":
        frame = frame.rename(columns={f.shp_name: f.name for f in EXPORT_FIELDS})
    if fmt == "geojson" and frame.empty:
        return []  # no features, so no properties for GDAL to find fields in
    if fmt == "geojson":  # lon/lat live in the geometry only
        frame.insert(NAMES.index("lon"), "lon", frame.geometry.x)
        frame.insert(NAMES.index("lat"), "lat", frame.geometry.y)
    assert list(frame.columns) == [*NAMES, "geometry"], list(frame.columns)
    records = []
    for row in frame.to_dict("records"):
        # The point geometry is the lon/lat columns' twin.
        assert row["geometry"].x == pytest.approx(row["lon"], abs=1e-7)
        assert row["geometry"].y == pytest.approx(row["lat"], abs=1e-7)
        records.append(_normalised(row))
    return records


def expected(row: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A database row as ``fmt`` can carry it: timestamps to its precision, NULL as '' where it must."""
    out = dict(row)
    step = PRECISION_US[fmt]
    for name in DATETIMES:
        if out[name] is not None:
            at = out[name].astimezone(timezone.utc)
            out[name] = at.replace(microsecond=at.microsecond // step * step)
    if fmt in NULL_IS_EMPTY:
        out = {k: (None if v == "" else v) for k, v in out.items()}
    return out


def assert_same_records(got: list[dict[str, Any]], rows: dict[str, dict], fmt: str) -> None:
    assert sorted(r["id"] for r in got) == sorted(rows), "exported ids differ from the database's"
    for record in got:
        want = expected(rows[record["id"]], fmt)
        assert record["lon"] == pytest.approx(want.pop("lon"), abs=1e-7)
        assert record["lat"] == pytest.approx(want.pop("lat"), abs=1e-7)
        record = {k: v for k, v in record.items() if k not in ("lon", "lat")}
        assert record == want, fmt


# --- every format holds exactly the database's public reports ---------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_export_equals_the_database(client, reports, connection, tmp_path, fmt):
    response, data = download(client, f"/api/v1/exports/reports.{fmt}")
    assert response.status_code == 200
    rows = database_rows(connection)
    assert len(rows) == 4  # the hidden fifth is not among them
    got = read_back(data, fmt, tmp_path)
    assert len(got) == len(rows)
    assert_same_records(got, rows, fmt)
    # Spelled out once, not only "as the database says": the Khmer report, every field.
    khmer = next(r for r in got if r["id"] == reports["khmer"]["id"])
    assert khmer["reference"] == reports["khmer"]["reference"]
    assert (khmer["category"], khmer["category_group"], khmer["status"]) == ("waste.overflowing_bin", "waste",
                                                                            "acknowledged")
    assert (khmer["city"], khmer["khan"], khmer["khan_km"]) == ("PP", "Doun Penh", "ដូនពេញ")
    assert khmer["sangkat"] and khmer["source"] == "api" and khmer["photo_count"] == 1
    assert khmer["received_at"] == expected({"received_at": datetime(2026, 1, 10, 3, 4, 5, 123456, timezone.utc),
                                             "acknowledged_at": None, "observed_at": None, "closed_at": None},
                                            fmt)["received_at"]
    assert (khmer["lon"], khmer["lat"]) == (pytest.approx(104.9282, abs=1e-7), pytest.approx(11.5625, abs=1e-7))
    # Khmer round-trips byte for byte: the same code points, and the same UTF-8 bytes in the file.
    assert khmer["description"].encode("utf-8") == KHMER.encode("utf-8")
    assert khmer["landmark"] == KHMER_LANDMARK
    raw = data if fmt != "shp.zip" else zipfile.ZipFile(io.BytesIO(data)).read("civicmap_reports.dbf")
    for khmer_text in (KHMER, "ដូនពេញ", KHMER_LANDMARK):
        assert khmer_text.encode("utf-8") in raw, (fmt, khmer_text)
    smoke = next(r for r in got if r["id"] == reports["smoke"]["id"])
    assert smoke["description"] == QUOTED  # commas, quotes, a newline and a leading formula survive


def test_geojson_is_rfc7946_with_ids_and_no_lonlat_properties(client, reports):
    _, data = download(client, "/api/v1/exports/reports.geojson")
    collection = orjson.loads(data)
    assert collection["type"] == "FeatureCollection"
    feature = next(f for f in collection["features"] if f["id"] == reports["khmer"]["id"])
    assert feature["geometry"] == {"type": "Point", "coordinates": [104.9282, 11.5625]}
    assert set(feature["properties"]) == set(NAMES) - {"lon", "lat"}
    assert feature["properties"]["description"] == KHMER
    assert KHMER.encode("utf-8") in data  # as UTF-8, not \\u escapes


# --- filters ------------------------------------------------------------------------------------------------------

FILTER_CASES = [
    ("category=waste", {"khmer", "smoke"}),
    ("category=flooding.blocked_drain", {"drain"}),
    ("category=waste,street", {"khmer", "smoke", "pothole"}),
    ("category=waste&category=street", {"khmer", "smoke", "pothole"}),
    ("status=resolved", {"pothole"}),
    ("status=new,acknowledged", {"khmer", "drain"}),
    ("area=PP-doun-penh", {"khmer"}),
    ("area=SV", {"pothole"}),
    ("area=PP", {"khmer", "drain", "smoke"}),
    ("since=2026-02-01T00:00:00Z", {"drain", "pothole", "smoke"}),
    ("until=2026-02-01T00:00:00Z", {"khmer"}),
    ("since=2026-02-10T10:00:00Z&until=2026-04-10T10:00:00Z", {"drain", "pothole"}),
    ("bbox=104.92,11.55,104.94,11.57", {"khmer"}),
    ("bbox=103,10,104,11", {"pothole"}),
    ("category=waste&area=PP-chamkar-mon", {"smoke"}),
    ("category=water", set()),
]


@pytest.mark.parametrize("query,names", FILTER_CASES, ids=[q for q, _ in FILTER_CASES])
def test_filters_choose_the_rows(client, reports, query, names):
    _, data = download(client, f"/api/v1/exports/reports.geojson?{query}")
    got = {f["properties"]["reference"] for f in orjson.loads(data)["features"]}
    assert got == {reports[n]["reference"] for n in names}
    assert reports["hidden"]["reference"] not in got


@pytest.mark.parametrize("fmt", FORMATS)
def test_filters_apply_to_every_format(client, reports, connection, tmp_path, fmt):
    query = "category=waste,flooding&since=2026-01-01T00:00:00%2B07:00&bbox=104.8,11.5,105,11.6"
    _, data = download(client, f"/api/v1/exports/reports.{fmt}?{query}")
    got = read_back(data, fmt, tmp_path)
    rows = database_rows(connection, "r.id::text = ANY(:ids)",
                         {"ids": [reports[n]["id"] for n in ("khmer", "drain", "smoke")]})
    assert_same_records(got, rows, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_hidden_reports_are_never_exported(client, reports, tmp_path, fmt):
    # Even when every filter matches the hidden report.
    query = "category=waste.burning&area=PP-doun-penh&status=new&bbox=104.92,11.56,104.93,11.57"
    _, filtered = download(client, f"/api/v1/exports/reports.{fmt}?{query}")
    assert read_back(filtered, fmt, tmp_path) == []
    _, everything = download(client, f"/api/v1/exports/reports.{fmt}")
    raw = everything if fmt != "shp.zip" else zipfile.ZipFile(io.BytesIO(everything)).read("civicmap_reports.dbf")
    assert reports["khmer"]["reference"].encode() in raw  # the check below can see references
    for value in reports["hidden"].values():
        assert value.encode() not in raw


# --- CSV and HXL --------------------------------------------------------------------------------------------------

def test_csv_has_lon_lat_columns_and_no_hashtags_unless_asked(client, reports, tmp_path):
    response, data = download(client, "/api/v1/exports/reports.csv")
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    lines = data.decode("utf-8").splitlines()
    header = next(csv.reader([lines[0]]))
    assert header == list(NAMES) and "lon" in header and "lat" in header
    assert not any(cell.startswith("#") for cell in next(csv.reader([lines[1]])))
    # GDAL reads the points from the lon/lat columns.
    path = tmp_path / "plain.csv"
    path.write_bytes(data)
    frame = pyogrio.read_dataframe(path, X_POSSIBLE_NAMES="lon", Y_POSSIBLE_NAMES="lat")
    assert len(frame) == 4
    point = frame.loc[frame["reference"] == reports["khmer"]["reference"], "geometry"].iloc[0]
    assert (point.x, point.y) == (pytest.approx(104.9282), pytest.approx(11.5625))


def test_csv_hxl_row_is_the_second_line(client, reports, tmp_path):
    _, data = download(client, "/api/v1/exports/reports.csv?hxl=1")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert rows[0] == list(NAMES)
    tags = dict(zip(rows[0], rows[1]))
    assert tags["lat"] == "#geo+lat" and tags["lon"] == "#geo+lon"
    assert tags["category_group"].startswith("#sector") and tags["category"].startswith("#subsector")
    assert tags["status"] == "#status" and tags["received_at"] == "#date+reported"
    assert tags["khan"] == "#adm2+name" and tags["sangkat"] == "#adm3+name"
    assert all(tag.startswith("#") for tag in rows[1])
    assert len(rows) == 2 + 4  # header, hashtags, four reports (the quoted newline is inside one row)
    assert {r[1] for r in rows[2:]} == {reports[n]["reference"] for n in ("khmer", "drain", "pothole", "smoke")}


# --- licence, attribution, headers --------------------------------------------------------------------------------

def assert_licensed(fmt: str, response, data: bytes, licence: str, tmp_path: Path) -> None:
    assert response.status_code == 200
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and disposition.rstrip('"').endswith(f".{fmt}")
    header = response.headers["X-Data-Licence"]
    assert f"licensed {licence}" in header and "geoBoundaries" in header and "CC BY 4.0" in header
    path = tmp_path / f"licensed.{fmt}"
    path.write_bytes(data)
    if fmt == "geojson":
        collection = orjson.loads(data)
        assert collection["licence"] == licence
        assert licence in collection["attribution"] and "geoBoundaries" in collection["attribution"]
    elif fmt == "gpkg":
        metadata = pyogrio.read_info(path)["dataset_metadata"]
        assert metadata["LICENSE"] == licence and "geoBoundaries" in metadata["ATTRIBUTION"]
    elif fmt == "fgb":
        assert licence in pyogrio.read_info(path)["layer_metadata"]["DESCRIPTION"]
    elif fmt == "shp.zip":
        with zipfile.ZipFile(path) as archive:
            text_ = archive.read("LICENSE.txt").decode("utf-8")
            assert {"civicmap_reports.shp", "civicmap_reports.dbf", "civicmap_reports.prj",
                    "civicmap_reports.cpg", "FIELDS.txt"} <= set(archive.namelist())
        assert f"licensed {licence}" in text_ and "geoBoundaries" in text_ and "CC BY 4.0" in text_


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_export_carries_licence_and_attribution(client, reports, tmp_path, fmt):
    response, data = download(client, f"/api/v1/exports/reports.{fmt}")
    assert_licensed(fmt, response, data, "CC BY 4.0", tmp_path)


@pytest.fixture()
def odbl_client(config, engine, connection):
    app = create_app(dataclasses.replace(config, data_license="ODbL-1.0"), engine=engine, TESTING=True)
    db.bind_session_factory(app, sessionmaker(bind=connection, join_transaction_mode="create_savepoint",
                                              expire_on_commit=False))
    return app.test_client()


@pytest.mark.parametrize("fmt", FORMATS)
def test_data_license_setting_is_honoured(odbl_client, reports, tmp_path, fmt):
    response, data = download(odbl_client, f"/api/v1/exports/reports.{fmt}")
    assert_licensed(fmt, response, data, "ODbL-1.0", tmp_path)
    assert b"licensed CC BY 4.0" not in data


# --- streaming and gzip -------------------------------------------------------------------------------------------

@pytest.fixture()
def small_batches(monkeypatch):
    """Two rows a batch, so four reports take several batches and chunks."""
    monkeypatch.setattr(lq, "stream_rows", functools.partial(lq.stream_rows, batch=2))


@pytest.mark.parametrize("fmt", ["geojson", "csv"])
def test_text_formats_are_streamed_batch_by_batch(client, reports, small_batches, fmt):
    response = client.get(f"/api/v1/exports/reports.{fmt}")
    assert response.is_streamed and "Content-Length" not in response.headers
    chunks = [chunk for chunk in response.response if chunk]
    response.close()
    assert len(chunks) >= 3  # the head, then one chunk per batch of two
    body = b"".join(chunks)
    if fmt == "geojson":
        assert len(orjson.loads(body)["features"]) == 4
    else:
        assert len(list(csv.reader(io.StringIO(body.decode("utf-8"))))) == 5


@pytest.mark.parametrize("fmt", ["gpkg", "fgb", "shp.zip"])
def test_file_formats_take_several_batches(client, reports, connection, small_batches, tmp_path, fmt):
    response, data = download(client, f"/api/v1/exports/reports.{fmt}")
    assert int(response.headers["Content-Length"]) == len(data)
    assert_same_records(read_back(data, fmt, tmp_path), database_rows(connection), fmt)


@pytest.mark.parametrize("fmt", ["geojson", "csv"])
def test_gzip_stream_inflates_to_the_same_bytes(client, reports, small_batches, fmt):
    plain_response, plain = download(client, f"/api/v1/exports/reports.{fmt}?hxl=1")
    response = client.get(f"/api/v1/exports/reports.{fmt}?hxl=1", headers={"Accept-Encoding": "gzip"})
    assert response.is_streamed and "Content-Length" not in response.headers
    packed = response.get_data()
    response.close()
    assert response.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in response.headers["Vary"]
    assert "Content-Encoding" not in plain_response.headers
    assert gzip.decompress(packed) == plain


def test_server_leaves_no_temporary_files(client, reports, monkeypatch, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    for fmt in ("gpkg", "fgb", "shp.zip"):
        response = client.get(f"/api/v1/exports/reports.{fmt}")
        try:
            # Unlinked as soon as it is opened for sending: nothing is left should the client go away.
            assert list(spool.iterdir()) == []
            assert response.status_code == 200
            assert len(response.get_data()) == int(response.headers["Content-Length"]) > 0
        finally:
            response.close()


def test_failed_file_export_leaves_nothing_behind(client, reports, monkeypatch, tmp_path):
    from service.resources import layers

    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))

    def broken_writer(batches, path, fmt, licence):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(layers, "write_file", broken_writer)
    response, _ = download(client, "/api/v1/exports/reports.gpkg")
    assert_error(response, 500, "server.error")
    assert list(spool.iterdir()) == []


# --- empty results and bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_export_is_a_valid_file(client, tmp_path, fmt):
    response, data = download(client, f"/api/v1/exports/reports.{fmt}?category=water")
    assert response.status_code == 200
    assert read_back(data, fmt, tmp_path) == []
    if fmt == "geojson":
        assert orjson.loads(data)["features"] == []
    elif fmt == "csv":
        assert data.decode("utf-8").splitlines() == [",".join(NAMES)]


@pytest.mark.parametrize("path,status,error", [
    ("reports.xls", 400, "export.unknown_format"),
    ("reports.shp", 400, "export.unknown_format"),
    ("reports.csv?bbox=1,2,3", 400, "bbox.malformed"),
    ("reports.geojson?bbox=105,11,104,12", 400, "bbox.inverted"),
    ("reports.gpkg?bbox=104,-95,105,12", 400, "bbox.out_of_range"),
    ("reports.csv?category=waste.nothing", 400, "request.unknown_category"),
    ("reports.fgb?status=lost", 400, "request.unknown_status"),
    ("reports.shp.zip?area=XX-nowhere", 400, "request.unknown_area"),
    ("reports.csv?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", 400, "request.bad_time_range"),
    ("reports.csv?since=yesterday", 422, "request.invalid"),
])
def test_bad_export_requests(client, path, status, error):
    response, _ = download(client, f"/api/v1/exports/{path}")
    assert_error(response, status, error)


# --- the Shapefile's text limit -----------------------------------------------------------------------------------

def test_shapefile_cuts_long_khmer_text_cleanly(tmp_path):
    """dBase text holds 254 bytes: a 2,000-character description is cut on a character boundary,
    with no GDAL warning (under filterwarnings=error, one would fail this test)."""
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    long_text = (KHMER * 80)[:2000]
    row = ("id-1", "PP-AAAAA", "waste.burning", "waste", "new", now, now, None, None, 104.9, 11.5, "PP",
           "Doun Penh", "ដូនពេញ", None, None, long_text, KHMER_LANDMARK, "api", 0)
    path = tmp_path / "long.shp.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_file([[row]], path, "shp.zip", Licence("CC BY 4.0", "test"))
    (record,) = read_back(path.read_bytes(), "shp.zip", tmp_path)
    assert 0 < len(record["description"].encode("utf-8")) <= 254
    assert long_text.startswith(record["description"])
    assert record["landmark"] == KHMER_LANDMARK
    gpkg = tmp_path / "long.gpkg"
    write_file([[row]], gpkg, "gpkg", Licence("CC BY 4.0", "test"))
    assert read_back(gpkg.read_bytes(), "gpkg", tmp_path)[0]["description"] == long_text  # whole elsewhere
