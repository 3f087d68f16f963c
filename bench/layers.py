"""Map layers at city scale: the API against the bare SQL it runs, side by side in one run.

Needs a database holding many reports (the figures in docs/benchmarks.md are
for ``civicmap seed --count 1000000``); ``make bench-layers`` makes one. It
starts the real server (``civicmap run``: gunicorn, threaded workers) and
measures, each sample paired with its own raw run:

* **viewport**: ``GET /api/v1/layers/reports?bbox=…&limit=10000`` around
  random reports (so mostly dense viewports), against the raw psycopg fetch
  of the very same statement (``layer_queries.layer_statement``). Goal ≤ 1.3×.
* **heatmap**: ``GET /api/v1/layers/heatmap?area=PP`` (full city extent),
  against its raw aggregate SQL (``heatmap_statement``). Goal ≤ 1.5× and at
  most 50 KB gzipped.
* **tiles**: ``GET /api/v1/tiles/reports/{z}/{x}/{y}.mvt`` at z12–z14 for tiles
  holding random reports, against bare ``ST_AsMVT`` (``render_tile`` on a raw
  connection, the same statements). Goal ≤ 1.2×, p95 ≤ 50 ms. The live
  count without the rollup is printed too, for what a filtered tile costs.

Usage: ``DATABASE_URL=postgresql://postgres@127.0.0.1/civicmap_layers_bench python bench/layers.py``
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import math
import random
import tempfile
from pathlib import Path
from typing import Any

import _common as common  # also puts the repo on sys.path
import intake  # the server helpers of bench/intake.py
import psycopg

from geo.coordinates import BBox
from geo.tiles import Tile, heatmap_cell_degrees
from service import layer_queries as lq
from service.queries import AreaRef, ReportFilters
from service.resources.layers import MAX_TILE_POINTS, POINT_ZOOM


class Client:
    """One keep-alive HTTP connection to the server under test."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def get(self, path: str, gzip_ok: bool = False) -> tuple[int, bytes, dict[str, str]]:
        headers = {"Accept-Encoding": "gzip" if gzip_ok else "identity"}
        try:
            self.conn.request("GET", path, headers=headers)
            response = self.conn.getresponse()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self.conn.request("GET", path, headers=headers)
            response = self.conn.getresponse()
        body = response.read()
        if response.status not in (200, 204):
            raise common.BenchError(f"GET {path} gave {response.status}: {body[:300]!r}")
        return response.status, body, dict(response.getheaders())


def sample_locations(conn: psycopg.Connection[Any], count: int, seed: int) -> list[tuple[float, float]]:
    """Locations of random public reports: where people look is where reports are."""
    rows = conn.execute(
        "SELECT ST_X(location), ST_Y(location) FROM reports TABLESAMPLE SYSTEM (1) REPEATABLE (%s) "
        "WHERE NOT hidden LIMIT %s", (seed, count)).fetchall()
    random.Random(seed).shuffle(rows)
    return [(float(x), float(y)) for x, y in rows]


def tile_at(lon: float, lat: float, z: int) -> Tile:
    n = 2 ** z
    lat_r = math.radians(lat)
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(lat_r)) / math.pi) / 2.0 * n)
    return Tile(z, x, y)


def summary(api: list[float], raw: list[float]) -> dict[str, float]:
    ratios = [a / r for a, r in zip(api, raw) if r > 0]
    return {"api_p50_ms": common.percentile_ms(api, 50), "api_p95_ms": common.percentile_ms(api, 95),
            "raw_p50_ms": common.percentile_ms(raw, 50), "raw_p95_ms": common.percentile_ms(raw, 95),
            "ratio_of_medians": common.median(api) / common.median(raw),
            "median_paired_ratio": common.median(ratios)}


def bench_viewports(client: Client, conn: psycopg.Connection[Any], points: list[tuple[float, float]],
                    half: float) -> dict[str, Any]:
    api, api_gz, raw, features, plain_bytes, gz_bytes = [], [], [], [], [], []
    for lon, lat in points:
        bbox = (round(lon - half, 6), round(lat - half, 6), round(lon + half, 6), round(lat + half, 6))
        path = "/api/v1/layers/reports?limit=10000&bbox=" + ",".join(map(str, bbox))
        statement = lq.layer_statement(ReportFilters(bbox=bbox), 10_001)
        raw_s, rows = common.timed(lambda: lq.fetch_all(conn, statement))
        api_s, (_status, body, _h) = common.timed(lambda: client.get(path))
        gz_s, (_status, gz_body, headers) = common.timed(lambda: client.get(path, gzip_ok=True))
        assert headers.get("Content-Encoding") == "gzip" and gzip.decompress(gz_body) == body
        raw.append(raw_s)
        api.append(api_s)
        api_gz.append(gz_s)
        features.append(min(len(rows), 10_000))
        plain_bytes.append(len(body))
        gz_bytes.append(len(gz_body))
    out = summary(api, raw)
    gz = summary(api_gz, raw)
    out.update(gzip_p50_ms=gz["api_p50_ms"], gzip_p95_ms=gz["api_p95_ms"], gzip_ratio_of_medians=gz["ratio_of_medians"],
               features_median=common.median(features), bytes_median=common.median(plain_bytes),
               gzip_bytes_median=common.median(gz_bytes))
    return out


def bench_heatmap(client: Client, conn: psycopg.Connection[Any], city: str, repeat: int) -> dict[str, Any]:
    area_id, level = conn.execute("SELECT id, level FROM areas WHERE code = %s", (city,)).fetchone()
    extent = lq.service_extent(conn, area_id)
    size = heatmap_cell_degrees(BBox(*extent), cells=64)
    statement = lq.heatmap_statement(ReportFilters(bbox=extent, area=AreaRef(area_id, level, city)), size)
    api, raw, sizes, cells = [], [], [], 0
    for _ in range(repeat):
        raw_s, rows = common.timed(lambda: lq.fetch_all(conn, statement))
        api_s, (_status, body, headers) = common.timed(lambda: client.get(f"/api/v1/layers/heatmap?area={city}",
                                                                    gzip_ok=True))
        raw.append(raw_s)
        api.append(api_s)
        sizes.append(len(body))
        cells = len({(r[0], r[1]) for r in rows})
    points_s, (_status, points_body, _h) = common.timed(lambda: client.get(
        f"/api/v1/layers/heatmap?area={city}&format=points", gzip_ok=True))
    out = summary(api, raw)
    out.update(gzip_bytes=max(sizes), cells=cells, cell_deg=size, points_gzip_bytes=len(points_body))
    return out


def bench_tiles(client: Client, conn: psycopg.Connection[Any], points: list[tuple[float, float]],
                zooms: list[int], per_zoom: int) -> dict[int, dict[str, Any]]:
    categories = lq.top_level_categories(conn)
    results = {}
    for z in zooms:
        tiles = list(dict.fromkeys(tile_at(lon, lat, z) for lon, lat in points))[:per_zoom]
        api, raw, live, sizes = [], [], [], []
        for tile in tiles:
            raw_s, body = common.timed(lambda: lq.render_tile(conn, tile, ReportFilters(), categories, point_zoom=POINT_ZOOM,
                                                       max_points=MAX_TILE_POINTS, use_rollup=True))
            live_s, _ = common.timed(lambda: lq.render_tile(conn, tile, ReportFilters(), categories,
                                                     point_zoom=POINT_ZOOM, max_points=MAX_TILE_POINTS))
            api_s, (_status, api_body, _h) = common.timed(lambda: client.get(f"/api/v1/tiles/reports/{tile.z}/{tile.x}/"
                                                                       f"{tile.y}.mvt"))
            if api_body != body:
                raise common.BenchError(f"tile {tile} from the API differs from the bare SQL")
            raw.append(raw_s)
            live.append(live_s)
            api.append(api_s)
            sizes.append(len(api_body))
        out = summary(api, raw)
        out.update(tiles=len(tiles), live_p50_ms=common.percentile_ms(live, 50),
                   live_p95_ms=common.percentile_ms(live, 95), max_kb=max(sizes) / 1024)
        results[z] = out
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewports", type=int, default=30, help="viewports to fetch")
    parser.add_argument("--half-size", type=float, default=0.01, help="half the viewport side, degrees")
    parser.add_argument("--heatmap-repeat", type=int, default=9)
    parser.add_argument("--tiles", type=int, default=40, help="tiles per zoom")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--force", action="store_true", help="allow a database whose name lacks 'bench'")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sa_url, libpq_url = common.database_urls(args.force)
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        reports = conn.execute("SELECT count(*) FROM reports WHERE NOT hidden").fetchone()[0]
        if reports < 10_000:
            raise common.BenchError(f"only {reports:,} reports: seed first (civicmap seed --count 1000000)")
        refresh_s, _ = common.timed(lambda: conn.execute("REFRESH MATERIALIZED VIEW report_tile_cells"))
        conn.execute("UPDATE rollup_state SET refreshed_at = now() WHERE name = 'report_tile_cells'")
        facts = {**common.machine_facts(), **common.server_facts(libpq_url)}
        print(f"bench/layers.py: {reports:,} public reports; {common.describe(facts)}")
        print(f"tile rollup refreshed in {refresh_s:.2f} s")
        points = sample_locations(conn, max(args.viewports, args.tiles * 3), args.seed)
        port = intake.free_port()
        log_path = Path(tempfile.mkdtemp(prefix="bench-layers-")) / "gunicorn.log"
        server = intake.start_server(sa_url, port, args.workers, log_path)
        try:
            intake.wait_healthy(server, port, log_path)
            client = Client(port)
            client.get("/api/v1/layers/reports?limit=10")  # warm both sides once
            lq.fetch_all(conn, lq.layer_statement(ReportFilters(), 10))
            viewport = bench_viewports(client, conn, points[:args.viewports], args.half_size)
            heat = bench_heatmap(client, conn, "PP", args.heatmap_repeat)
            tiles = bench_tiles(client, conn, points, [12, 13, 14], args.tiles)
        finally:
            intake.stop_server(server)

    print(f"\nViewport ({args.viewports} bboxes of {2 * args.half_size}°, limit 10,000; median "
          f"{viewport['features_median']:,.0f} features, {viewport['bytes_median'] / 1e6:.2f} MB plain, "
          f"{viewport['gzip_bytes_median'] / 1e6:.2f} MB gzip)")
    common.print_table(
        ["path", "p50 ms", "p95 ms", "× raw fetch (medians)"],
        [["raw psycopg fetch, same statement", viewport["raw_p50_ms"], viewport["raw_p95_ms"], 1.0],
         ["API, identity", viewport["api_p50_ms"], viewport["api_p95_ms"], viewport["ratio_of_medians"]],
         ["API, gzip", viewport["gzip_p50_ms"], viewport["gzip_p95_ms"], viewport["gzip_ratio_of_medians"]]])
    print(f"\nHeatmap, Phnom Penh extent ({heat['cells']:,} cells of {heat['cell_deg']:.5f}°; "
          f"{heat['gzip_bytes'] / 1024:.1f} KB gzip grid, {heat['points_gzip_bytes'] / 1024:.1f} KB gzip points)")
    common.print_table(
        ["path", "p50 ms", "p95 ms", "× raw aggregate (medians)"],
        [["raw aggregate SQL", heat["raw_p50_ms"], heat["raw_p95_ms"], 1.0],
         ["API (gzip)", heat["api_p50_ms"], heat["api_p95_ms"], heat["ratio_of_medians"]]])
    print(f"\nVector tiles ({args.tiles} tiles a zoom where reports are; bare = the same statements on psycopg)")
    common.print_table(
        ["zoom", "API p50 ms", "API p95 ms", "bare p50 ms", "× bare (medians)", "live count p50 ms",
         "live count p95 ms", "largest KB"],
        [[z, t["api_p50_ms"], t["api_p95_ms"], t["raw_p50_ms"], t["ratio_of_medians"], t["live_p50_ms"],
          t["live_p95_ms"], t["max_kb"]] for z, t in tiles.items()])
    common.write_json(args.json, {"facts": facts, "reports": reports, "rollup_refresh_s": refresh_s,
                                  "viewport": viewport, "heatmap": heat, "tiles": tiles})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
