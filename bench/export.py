"""Open-data exports at city scale: the streamed GeoJSON export against ``ogr2ogr``, in one run.

Needs a database holding many reports (docs/benchmarks.md: 1,000,000 from
``civicmap seed --count 1000000``); ``make bench-export`` makes one. It starts
the real server with one worker (so that worker's peak RSS is the export's)
and measures:

* **GeoJSON**: ``GET /api/v1/exports/reports.geojson`` of every report,
  streamed to disk: time to first byte, total time, size, feature count and
  the worker's peak RSS (``VmHWM``). Side by side, Debian's
  ``ogr2ogr -f GeoJSON`` writes the same public columns of the same PostGIS
  table (the export's own SELECT, plus the geometry) to a file: its time and
  peak RSS. Goal: faster than ogr2ogr, peak RSS ≤ 250 MB.
* **CSV** (streamed) and **GeoPackage** (written with GDAL, then sent): time,
  size, peak RSS, each on a fresh worker.

Usage: ``DATABASE_URL=postgresql://postgres@127.0.0.1/civicmap_layers_bench python bench/export.py``
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as common  # also puts the repo on sys.path
import intake  # the server helpers of bench/intake.py
import psycopg

from service import layer_queries as lq
from service.queries import ReportFilters

FEATURE_MARK = b'{"type":"Feature"'


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def download(port: int, path: str, out: Path, gzip_ok: bool = False) -> dict[str, Any]:
    """GET ``path`` to a file; time to first body byte, total time, size, features seen."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    started = time.perf_counter()
    conn.request("GET", path, headers={"Accept-Encoding": "gzip" if gzip_ok else "identity"})
    response = conn.getresponse()
    if response.status != 200:
        raise common.BenchError(f"GET {path} gave {response.status}: {response.read(300)!r}")
    first = None
    size = features = 0
    tail = b""
    with open(out, "wb") as sink:
        while chunk := response.read1(1 << 20):
            if first is None:
                first = time.perf_counter() - started
            size += len(chunk)
            window = tail + chunk
            features += window.count(FEATURE_MARK)
            tail = chunk[-(len(FEATURE_MARK) - 1):]
            sink.write(chunk)
    total = time.perf_counter() - started
    conn.close()
    return {"first_byte_s": first, "total_s": total, "bytes": size, "features": features}


def ogr2ogr_geojson(libpq_url: str, out: Path) -> dict[str, Any]:
    """ogr2ogr -f GeoJSON of the export's own SELECT (with the geometry added), timed, with peak RSS."""
    exe = shutil.which("ogr2ogr")
    if exe is None:
        raise common.BenchError("ogr2ogr is missing: apt-get install gdal-bin (make test installs it)")
    sql, params = lq.export_statement(ReportFilters())
    assert not params
    sql = sql.replace("%%", "%").replace("FROM reports r", ", r.location AS geom FROM reports r", 1)
    conn = psycopg.conninfo.conninfo_to_dict(libpq_url)
    pg = " ".join(f"{key}={conn[k]}" for key, k in (("host", "host"), ("port", "port"), ("dbname", "dbname"),
                                                       ("user", "user")) if conn.get(k))
    # A small Python parent reports ogr2ogr's own peak RSS (our RUSAGE_CHILDREN also holds the servers').
    measure = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", measure, exe, "-f", "GeoJSON", str(out), f"PG:{pg}", "-sql", sql,
                           "-nln", "civicmap_reports"], check=True, capture_output=True, text=True)
    total = time.perf_counter() - started
    peak_kb = int(done.stdout.split()[-1])
    features = 0
    with open(out, "rb") as f:
        for line in f:
            features += line.startswith(b'{ "type": "Feature"')
    return {"total_s": total, "bytes": out.stat().st_size, "features": features,
            "peak_rss_mb": peak_kb / 1024}


def with_fresh_server(sa_url: str, fn: Any) -> tuple[dict[str, Any], float]:
    """Run ``fn(port)`` against a new one-worker server; returns its result and the worker's peak RSS."""
    port = intake.free_port()
    log_path = Path(tempfile.mkdtemp(prefix="bench-export-")) / "gunicorn.log"
    server = intake.start_server(sa_url, port, 1, log_path)
    try:
        intake.wait_healthy(server, port, log_path)
        result = fn(port)
        peaks = [peak_rss_mb(pid) for pid in worker_pids(server.pid)]
    finally:
        intake.stop_server(server)
    return result, max(peaks)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (medians are printed)")
    parser.add_argument("--skip-gpkg", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--force", action="store_true", help="allow a database whose name lacks 'bench'")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sa_url, libpq_url = common.database_urls(args.force)
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        reports = conn.execute("SELECT count(*) FROM reports WHERE NOT hidden").fetchone()[0]
    facts = {**common.machine_facts(), **common.server_facts(libpq_url)}
    print(f"bench/export.py: {reports:,} public reports; {common.describe(facts)}")
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    runs: dict[str, list[dict[str, Any]]] = {"geojson": [], "ogr2ogr": [], "geojson_gzip": [], "csv": [], "gpkg": []}
    try:
        for i in range(args.repeat):
            result, peak = with_fresh_server(sa_url, lambda port: download(
                port, "/api/v1/exports/reports.geojson", work / "api.geojson"))
            runs["geojson"].append({**result, "peak_rss_mb": peak})
            runs["ogr2ogr"].append(ogr2ogr_geojson(libpq_url, work / "ogr.geojson"))
            (work / "ogr.geojson").unlink()
            print(f"run {i + 1}: API {result['total_s']:.1f} s, ogr2ogr {runs['ogr2ogr'][-1]['total_s']:.1f} s")
        result, peak = with_fresh_server(sa_url, lambda port: download(
            port, "/api/v1/exports/reports.geojson", work / "api.geojson.gz", gzip_ok=True))
        runs["geojson_gzip"].append({**result, "peak_rss_mb": peak})
        result, peak = with_fresh_server(sa_url, lambda port: download(
            port, "/api/v1/exports/reports.csv?hxl=1", work / "api.csv"))
        runs["csv"].append({**result, "peak_rss_mb": peak})
        if not args.skip_gpkg:
            result, peak = with_fresh_server(sa_url, lambda port: download(
                port, "/api/v1/exports/reports.gpkg", work / "api.gpkg"))
            runs["gpkg"].append({**result, "peak_rss_mb": peak})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(name: str, key: str) -> float:
        return common.median(r[key] for r in runs[name]) if runs[name] else float("nan")

    api_s, ogr_s = med("geojson", "total_s"), med("ogr2ogr", "total_s")
    print(f"\nFull export of {reports:,} reports, medians of {args.repeat} (GeoJSON features counted in each "
          f"output: API {runs['geojson'][0]['features']:,}, ogr2ogr {runs['ogr2ogr'][0]['features']:,})")
    rows = [
        ["ogr2ogr -f GeoJSON (same SELECT)", ogr_s, float("nan"), med("ogr2ogr", "bytes") / 1e6,
         med("ogr2ogr", "peak_rss_mb"), 1.0],
        ["API GeoJSON, streamed", api_s, med("geojson", "first_byte_s"), med("geojson", "bytes") / 1e6,
         med("geojson", "peak_rss_mb"), api_s / ogr_s],
        ["API GeoJSON, streamed gzip", med("geojson_gzip", "total_s"), med("geojson_gzip", "first_byte_s"),
         med("geojson_gzip", "bytes") / 1e6, med("geojson_gzip", "peak_rss_mb"), med("geojson_gzip", "total_s") / ogr_s],
        ["API CSV + HXL, streamed", med("csv", "total_s"), med("csv", "first_byte_s"), med("csv", "bytes") / 1e6,
         med("csv", "peak_rss_mb"), med("csv", "total_s") / ogr_s],
    ]
    if runs["gpkg"]:
        rows.append(["API GeoPackage (GDAL, then sent)", med("gpkg", "total_s"), med("gpkg", "first_byte_s"),
                     med("gpkg", "bytes") / 1e6, med("gpkg", "peak_rss_mb"), med("gpkg", "total_s") / ogr_s])
    common.print_table(["export", "total s", "first byte s", "MB", "peak RSS MB", "× ogr2ogr time"], rows)
    if runs["geojson"][0]["features"] != runs["ogr2ogr"][0]["features"]:
        raise common.BenchError("the API and ogr2ogr exported different numbers of features")
    common.write_json(args.json, {"facts": facts, "reports": reports, "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
