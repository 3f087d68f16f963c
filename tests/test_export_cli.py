"""``civicmap export``: the open-data export from the command line, on the test database.

The CLI runs against the test app (its session joins the test's rolled-back
transaction), so it sees the reports the test makes through the API.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import orjson
import pyogrio
import pytest

from geo import exports
from service.cli import EXPORT_FORMATS, main
from tests.test_exports import FORMATS, KHMER, assert_same_records, create_reports, database_rows, read_back


@pytest.fixture()
def reports(client, report_body, connection):
    return create_reports(client, report_body, connection)


@pytest.fixture()
def cli(app):
    runner = app.test_cli_runner()

    def invoke(*args: str):
        return runner.invoke(main, ["export", *args])

    return invoke


def test_cli_formats_are_the_exports_formats():
    assert EXPORT_FORMATS == tuple(exports.FORMATS) == FORMATS


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_writes_every_public_report(cli, reports, connection, tmp_path, fmt):
    out = tmp_path / f"reports.{fmt}"
    result = cli("--format", fmt, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == f"reports written: 4 to {out} ({out.stat().st_size:,} bytes)"
    assert "reports (estimated total)" in result.stderr  # the progress bar, on stderr
    data = out.read_bytes()
    assert_same_records(read_back(data, fmt, tmp_path), database_rows(connection), fmt)
    if fmt == "shp.zip":
        with zipfile.ZipFile(out) as archive:
            assert "CC BY 4.0" in archive.read("LICENSE.txt").decode()
            data = archive.read("civicmap_reports.dbf")
    elif fmt == "gpkg":
        assert pyogrio.read_info(out)["dataset_metadata"]["LICENSE"] == "CC BY 4.0"
    assert KHMER.encode("utf-8") in data
    assert reports["hidden"]["reference"].encode() not in data
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no work files left


def test_export_filters_like_the_api(cli, client, reports, tmp_path):
    out = tmp_path / "waste.geojson"
    args = ["--category", "waste", "--category", "street,flooding.blocked_drain", "--status", "acknowledged,resolved",
            "--since", "2026-01-01T00:00:00+07:00", "--until", "2026-12-31T00:00:00Z"]
    result = cli("--format", "geojson", "--out", str(out), *args)
    assert result.exit_code == 0, result.output
    got = {f["properties"]["reference"] for f in orjson.loads(out.read_bytes())["features"]}
    assert got == {reports["khmer"]["reference"], reports["pothole"]["reference"]}
    query = "category=waste&category=street,flooding.blocked_drain&status=acknowledged,resolved" \
            "&since=2026-01-01T00:00:00%2B07:00&until=2026-12-31T00:00:00Z"
    api = orjson.loads(client.get(f"/api/v1/exports/reports.geojson?{query}").data)
    assert {f["properties"]["reference"] for f in api["features"]} == got
    assert orjson.loads(out.read_bytes())["features"] == api["features"]

    out = tmp_path / "sv.csv"
    result = cli("--format", "csv", "--out", str(out), "--area", "SV", "--bbox", "103,10,104,11", "--hxl")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows[1][rows[0].index("lat")] == "#geo+lat"
    assert [row[1] for row in rows[2:]] == [reports["pothole"]["reference"]]
    assert "reports written: 1 " in result.stdout


@pytest.mark.parametrize("args,option,message", [
    (["--bbox", "105,11,104,12"], "--bbox", "min"),
    (["--bbox", "1,2,3"], "--bbox", "bbox"),
    (["--category", "waste.nothing"], "--category", "Unknown category: waste.nothing."),
    (["--status", "lost"], "--status", "Unknown status: lost."),
    (["--area", "XX-nowhere"], "--area", "There is no area XX-nowhere."),
    (["--since", "yesterday"], "--since", "Not a valid datetime. Give ISO 8601 with an offset"),
    (["--until", "2026-02-01T00:00:00"], "--until", "Not a valid aware datetime. Give ISO 8601 with an offset"),
    (["--since", "2026-02-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z"], "--until", "since must be before"),
])
def test_bad_filters_fail_clearly_and_write_nothing(cli, tmp_path, args, option, message):
    out = tmp_path / "never.csv"
    result = cli("--format", "csv", "--out", str(out), *args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for {option}" in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_missing_directory(cli, tmp_path):
    result = cli("--format", "xls", "--out", str(tmp_path / "x.xls"))
    assert result.exit_code == 2 and "'xls' is not one of" in result.stderr
    result = cli("--format", "csv", "--out", str(tmp_path / "nowhere" / "x.csv"))
    assert result.exit_code == 2 and "no directory" in result.stderr


def test_failed_export_leaves_the_old_file_and_no_half_file(cli, reports, monkeypatch, tmp_path):
    out = tmp_path / "reports.gpkg"
    out.write_bytes(b"yesterday's export")

    def broken_writer(batches, path, fmt, licence):
        for _ in batches:
            Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(exports, "write_file", broken_writer)
    result = cli("--format", "gpkg", "--out", str(out))
    assert result.exit_code != 0 and isinstance(result.exception, OSError)
    assert out.read_bytes() == b"yesterday's export"
    assert [p.name for p in tmp_path.iterdir()] == ["reports.gpkg"]


def test_empty_export(cli, tmp_path):
    out = tmp_path / "none.fgb"
    result = cli("--format", "fgb", "--out", str(out), "--category", "water")
    assert result.exit_code == 0, result.output
    assert "reports written: 0 " in result.stdout
    assert read_back(out.read_bytes(), "fgb", tmp_path) == []
