"""Map layers, heatmap, area statistics, vector tiles and open-data exports of public reports.

Everything here reads in bulk through ``service.layer_queries`` (plain
tuples, serialised with orjson or by PostGIS itself) and answers with bytes,
gzip-compressed when the client accepts it. All routes take the shared report
filters of ``service.resources.filters``; hidden reports and private columns
never leave the database.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zlib
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

import orjson
from flask import (
    Response,
    current_app,
    request,
    send_file,
    stream_with_context,
    url_for,
)
from flask_babel import gettext as _
from flask_smorest import Blueprint

from geo.coordinates import BBox
from geo.exports import (
    FILE_FORMATS,
    FORMATS,
    Licence,
    csv_chunks,
    geojson_chunks,
    write_file,
)
from geo.tiles import TileError, heatmap_cell_degrees, parse_tile
from service import layer_queries as lq
from service import rollup
from service.db import get_engine, get_session
from service.errors import ApiError
from service.messages import translated
from service.queries import ReportFilters
from service.resources.filters import decode_cursor, encode_cursor, report_filters
from service.schemas import (
    AreaStatsQuerySchema,
    ExportQuerySchema,
    HeatmapQuerySchema,
    LayerQuerySchema,
    TileQuerySchema,
)
from service.worker_cache import cached

log = logging.getLogger(__name__)
layers_blp = Blueprint("layers", __name__, url_prefix="/api/v1/layers",
                       description="Map layers of public reports: GeoJSON points, heatmap, area statistics")
tiles_blp = Blueprint("tiles", __name__, url_prefix="/api/v1/tiles", description="Mapbox vector tiles of reports")
exports_blp = Blueprint("exports", __name__, url_prefix="/api/v1/exports",
                        description="Open data for NGOs: GeoJSON, CSV (HXL), GeoPackage, FlatGeobuf, Shapefile")

GZIP_LEVEL = 5  # level 5 gives nearly level 9's size at a third of its time on GeoJSON
GZIP_FAST_LEVEL = 1  # above GZIP_FAST_BYTES: half level 5's time for 18 % more bytes (a 10k-feature page)
GZIP_FAST_BYTES = 512 * 1024
GZIP_STREAM_LEVEL = 3
MIN_GZIP_BYTES = 1024
POINT_ZOOM = 14  # from this zoom on, tiles carry single reports (when they hold few enough)
MAX_TILE_POINTS = 8000
MAX_HEATMAP_CELLS = 256 * 256
ATTRIBUTION = "civicmap contributors"
_JSON = orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS


def _accepts_gzip() -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "").lower()


def _send(body: bytes, mimetype: str, *, cache: str | None = None, etag: bool = False,
          headers: dict[str, str] | None = None) -> Response:
    """A bytes answer: ETag/304 on request, gzip when it pays and the client takes it."""
    response = Response(status=200, mimetype=mimetype, headers=headers or {})
    response.vary.add("Accept-Encoding")
    if cache:
        response.headers["Cache-Control"] = cache
    compress = len(body) >= MIN_GZIP_BYTES and _accepts_gzip()
    if etag:
        # The gzipped body is another representation, so it gets its own tag.
        tag = hashlib.blake2b(body, digest_size=12).hexdigest() + ("-gz" if compress else "")
        response.set_etag(tag)
        if request.if_none_match.contains_weak(tag):  # If-None-Match compares weakly (RFC 9110 13.1.2)
            response.status_code = 304
            return response
    if compress:
        body = _gzip(body, GZIP_FAST_LEVEL if len(body) > GZIP_FAST_BYTES else GZIP_LEVEL)
        response.headers["Content-Encoding"] = "gzip"
    response.set_data(body)
    return response


def _gzip(body: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()


def top_level_categories() -> list[str]:
    return cached("categories", lambda: lq.top_level_categories(get_session()))


def licence() -> Licence:
    return Licence(current_app.config["CIVICMAP"].data_license, ATTRIBUTION)


# --- report layer ------------------------------------------------------------------------------------------------

def _next_href(cursor: str) -> str:
    args = request.args.to_dict(flat=False)
    args["cursor"] = [cursor]
    return url_for("layers.report_layer", _external=False, **args)


def layer_feature(row: tuple[Any, ...], names: dict[int, tuple[str, str, str, str]],
                  photo_base: str) -> dict[str, Any]:
    """A GeoJSON feature from a row of ``layer_queries.layer_statement`` (the staff map adds its columns)."""
    rid, ref, cat, status, observed, received, lon, lat, district, commune, photos = row[:11]
    khan = names.get(district)
    sangkat = names.get(commune)
    return {
        "type": "Feature", "id": rid,
        "geometry": {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]},
        "properties": {
            "reference": ref, "category": cat, "status": status, "observed_at": observed, "received_at": received,
            "khan": khan[2] if khan else None, "khan_km": khan[3] if khan else None,
            "sangkat": sangkat[2] if sangkat else None, "sangkat_km": sangkat[3] if sangkat else None,
            "photo_count": len(photos) if photos else 0,
            "photos": [photo_base + sha for sha in photos] if photos else [],
        },
    }


@layers_blp.route("/reports", endpoint="report_layer")
@layers_blp.arguments(LayerQuerySchema, location="query")
@layers_blp.doc(responses={"200": {"description": "GeoJSON FeatureCollection (RFC 7946) of public reports",
                                   "content": {"application/geo+json": {}}}})
def report_layer(args: dict[str, Any]) -> Response:
    """Public reports as GeoJSON points, newest first, keyset-paginated

    ``matched`` is how many reports the filters match: exact when this one page
    holds them all, otherwise the query planner's estimate (``matched_estimated``).
    """
    session = get_session()
    filters = report_filters(args)
    after = decode_cursor(args["cursor"]) if "cursor" in args else None
    limit = args["limit"]
    rows = lq.fetch_all(session, lq.layer_statement(filters, limit + 1, after))
    more = len(rows) > limit
    rows = rows[:limit]
    names = cached("area_names", lambda: lq.area_names(session))
    photo_base = url_for("photos.photo", sha256="x")[:-1]
    features = [layer_feature(row, names, photo_base) for row in rows]
    if after is None and not more:
        matched, estimated = len(features), False
    else:
        matched, estimated = lq.estimated_matches(session, filters), True
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features, "returned": len(features),
                                  "matched": matched, "matched_estimated": estimated,
                                  "next_cursor": None, "links": [], "licence": licence().data_licence}
    headers = {}
    if more:
        last = rows[-1]
        cursor = encode_cursor(last[5], last[0])
        href = _next_href(cursor)
        collection["next_cursor"] = cursor
        collection["links"].append({"rel": "next", "href": href, "type": "application/geo+json"})
        headers["Link"] = f'<{href}>; rel="next"'
    return _send(orjson.dumps(collection, option=_JSON), "application/geo+json", headers=headers)


# --- heatmap -----------------------------------------------------------------------------------------------------

def _extent(filters: ReportFilters) -> tuple[float, float, float, float]:
    if filters.bbox is not None:
        return filters.bbox
    return lq.service_extent(get_session(), filters.area.id if filters.area else None)


def _cell_size(args: dict[str, Any], extent: tuple[float, float, float, float]) -> float:
    # The schema has already bounded zoom (0…22) and cells (4…256).
    size = heatmap_cell_degrees(BBox(*extent), zoom=args.get("zoom"), cells=args["cells"])
    across = ((extent[2] - extent[0]) / size + 1) * ((extent[3] - extent[1]) / size + 1)
    if across > MAX_HEATMAP_CELLS:
        raise ApiError("heatmap.too_many_cells",
                       _("This zoom is too fine for this bbox; zoom out or send a smaller bbox."), 400,
                       errors={"zoom": [_("At most %(n)s cells.", n=MAX_HEATMAP_CELLS)]})
    return size


@layers_blp.route("/heatmap", endpoint="heatmap")
@layers_blp.arguments(HeatmapQuerySchema, location="query")
@layers_blp.doc(responses={"200": {"description": "grid: {cells: [[lon, lat, total, per category…]]}; "
                                                  "points: [[lat, lon, weight 0–1], …]",
                                   "content": {"application/json": {}}}})
def heatmap(args: dict[str, Any]) -> Response:
    """Report density, aggregated on the server: square or hexagon cells with counts per category

    The cell size follows ``zoom`` (16 screen pixels) or else the bbox (at most
    ``cells`` across); without a bbox the extent is the area filter's, or the
    whole service area.
    """
    session = get_session()
    filters = report_filters(args)
    extent = _extent(filters)
    size = _cell_size(args, extent)
    categories = top_level_categories()
    column = {code: 3 + i for i, code in enumerate(categories)}
    cells: dict[tuple[int, int], list[Any]] = {}
    bounded = ReportFilters(bbox=extent, categories=filters.categories, statuses=filters.statuses,
                            area=filters.area, since=filters.since, until=filters.until)
    if args["shape"] == "hex":
        for i, j, lon, lat, grp, n in lq.fetch_all(session, lq.hexagon_statement(bounded, extent, size)):
            cell = cells.setdefault((i, j), [round(lon, 6), round(lat, 6), 0] + [0] * len(categories))
            cell[2] += n
            cell[column[grp]] += n
    else:
        for cx, cy, grp, n in lq.fetch_all(session, lq.heatmap_statement(bounded, size)):
            cell = cells.setdefault((cx, cy), [round((cx + 0.5) * size, 6), round((cy + 0.5) * size, 6), 0]
                                    + [0] * len(categories))
            cell[2] += n
            cell[column[grp]] += n
    grid = sorted(cells.values(), key=lambda c: (c[1], c[0]))
    peak = max((c[2] for c in grid), default=0)
    if args["format"] == "points":
        body = orjson.dumps([[c[1], c[0], round(c[2] / peak, 4)] for c in grid])
        return _send(body, "application/json", etag=True, cache="public, max-age=60",
                     headers={"X-Heatmap-Max": str(peak), "X-Heatmap-Cell-Degrees": repr(size)})
    body = orjson.dumps({
        "shape": args["shape"], "cell_size_deg": size, "bbox": list(extent), "max": peak,
        "total": sum(c[2] for c in grid), "columns": ["lon", "lat", "total", *categories],
        "cells": grid, "licence": licence().data_licence,
    })
    return _send(body, "application/json", etag=True, cache="public, max-age=60")


# --- area statistics ---------------------------------------------------------------------------------------------

def _days(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def area_stats_collection(session: Any, filters: ReportFilters, level: str, geometry: bool) -> dict[str, Any]:
    """The statistics of every area of ``level`` as a FeatureCollection (the API and the offline map)."""
    stats: dict[int, dict[str, Any]] = {}
    for area_id, grp, status, totals, n, open_n, ack_days, resolve_days in lq.fetch_all(
            session, lq.area_stats_statement(filters, level)):
        entry = stats.setdefault(area_id, {"total": 0, "open": 0, "by_category": {}, "by_status": {},
                                           "median_days_to_acknowledge": None, "median_days_to_resolve": None})
        if totals:
            entry.update(total=n, open=open_n, median_days_to_acknowledge=_days(ack_days),
                         median_days_to_resolve=_days(resolve_days))
        else:
            entry["by_category"][grp] = entry["by_category"].get(grp, 0) + n
            entry["by_status"][status] = entry["by_status"].get(status, 0) + n
    empty = {"total": 0, "open": 0, "by_category": {}, "by_status": {},
             "median_days_to_acknowledge": None, "median_days_to_resolve": None}
    features = []
    for area_id, code, name_en, name_km, parent, outline in lq.areas_of_level(
            session, level, filters.area.id if filters.area else None):
        features.append({
            "type": "Feature", "id": code,
            "geometry": orjson.Fragment(outline) if geometry else None,
            "properties": {"code": code, "level": level, "parent": parent, "name_en": name_en, "name_km": name_km,
                           **stats.get(area_id, empty)},
        })
    return {"type": "FeatureCollection", "features": features, "licence": licence().data_licence,
            "attribution": licence().text()}


@layers_blp.route("/areas", endpoint="area_stats")
@layers_blp.arguments(AreaStatsQuerySchema, location="query")
@layers_blp.doc(responses={"200": {"description": "GeoJSON FeatureCollection of khans or sangkats with statistics",
                                   "content": {"application/geo+json": {}}}})
def area_stats(args: dict[str, Any]) -> Response:
    """Per khan or sangkat: counts by category and status, open reports, median days to acknowledge and resolve

    The choropleth input: one feature per area of the level, with its outline
    (``geometry=false`` leaves the outlines out).
    """
    collection = area_stats_collection(get_session(), report_filters(args), args["level"], args["geometry"])
    return _send(orjson.dumps(collection), "application/geo+json", etag=True, cache="public, max-age=60")


# --- vector tiles ------------------------------------------------------------------------------------------------

@tiles_blp.route("/reports/<z>/<x>/<y>.mvt", endpoint="report_tile")
@tiles_blp.arguments(TileQuerySchema, location="query")
@tiles_blp.doc(responses={"200": {"description": "Mapbox vector tile: layer `cells` (counts) below zoom 14 or "
                                                 "where a tile is crowded, else layer `reports` (points)",
                                  "content": {"application/vnd.mapbox-vector-tile": {}}},
                          "204": {"description": "no reports in this tile"}})
def report_tile(args: dict[str, Any], z: str, x: str, y: str) -> Response:
    """A vector tile of public reports, built by ST_AsMVT

    Below zoom 14, or where a tile holds more than 8,000 reports, the layer
    ``cells`` carries counts on a 64 × 64 grid (``count`` and one count per
    top-level category, named by its code); otherwise the layer ``reports``
    carries points with reference, category, group and status. Unfiltered
    low-zoom tiles are read from a rollup refreshed every few minutes.
    """
    try:
        tile = parse_tile(z, x, y)
    except TileError as exc:
        raise ApiError(exc.error, translated(exc.error, exc.message), 400,
                       errors={"tile": [exc.message]}) from exc
    session = get_session()
    filters = report_filters(args)
    max_age = current_app.config["CIVICMAP"].rollup_max_age_seconds
    use_rollup = max_age > 0 and tile.z + lq.GRID_BITS <= lq.ROLLUP_FINEST
    if use_rollup:
        age = cached("rollup_age", lambda: rollup.age_seconds(session.connection()))
        rollup.refresh_in_background_if_stale(get_engine(), age, max_age)
    body = lq.render_tile(session, tile, filters, top_level_categories(), point_zoom=POINT_ZOOM,
                          max_points=MAX_TILE_POINTS, use_rollup=use_rollup)
    if not body:
        response = Response(status=204)
        response.headers["Cache-Control"] = "public, max-age=60"
        return response
    return _send(body, "application/vnd.mapbox-vector-tile", etag=True, cache="public, max-age=60")


# --- exports -----------------------------------------------------------------------------------------------------

def _gzip_stream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(GZIP_STREAM_LEVEL, zlib.DEFLATED, 31)
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


def export_filename(fmt: str) -> str:
    return f"civicmap-reports-{datetime.now(timezone.utc):%Y%m%d}.{FORMATS[fmt][1]}"


@exports_blp.route("/reports.<fmt>", endpoint="export_reports")
@exports_blp.arguments(ExportQuerySchema, location="query")
@exports_blp.doc(responses={"200": {"description": "the export file; GeoJSON and CSV are streamed",
                                    "content": {FORMATS[f][0].split(";")[0]: {} for f in FORMATS}}})
def export_reports(args: dict[str, Any], fmt: str) -> Response:
    """Every public report matching the filters, as open data (licence and attribution included)

    Formats: ``geojson`` and ``csv`` (streamed, first byte at once, flat
    memory; ``?hxl=1`` adds the HXL hashtag row), ``gpkg``, ``fgb`` and
    ``shp.zip`` (written with GDAL, then sent). Contact details, device and
    worker ids, tracking tokens and hidden reports are never exported.
    """
    if fmt not in FORMATS:
        raise ApiError("export.unknown_format", _("Unknown export format %(f)s.", f=fmt), 400,
                       errors={"format": [_("One of: %(all)s.", all=", ".join(FORMATS))]})
    session = get_session()
    filters = report_filters(args)
    mimetype, _suffix = FORMATS[fmt]
    headers = {"Content-Disposition": f'attachment; filename="{export_filename(fmt)}"',
               "X-Data-Licence": licence().text()}
    batches = lq.stream_rows(session, lq.export_statement(filters))
    if fmt in FILE_FORMATS:
        handle, path = tempfile.mkstemp(prefix="civicmap-export-", suffix=f".{fmt}")
        os.close(handle)
        try:
            write_file(batches, path, fmt, licence())
            response = send_file(path, mimetype=mimetype, as_attachment=True, download_name=export_filename(fmt))
        finally:
            # send_file has opened the file: unlinked now, it stays readable until the server closes it.
            # (response.call_on_close would never run: the server gets the file as a direct passthrough.)
            os.unlink(path)
        response.headers["X-Data-Licence"] = headers["X-Data-Licence"]
        return response
    chunks = geojson_chunks(batches, licence()) if fmt == "geojson" else csv_chunks(batches, hxl=args["hxl"])
    if _accepts_gzip():
        chunks = _gzip_stream(chunks)
        headers["Content-Encoding"] = "gzip"
    # content_type, not mimetype: the csv type names its charset already, and mimetype= would add a second one.
    response = Response(stream_with_context(chunks), content_type=mimetype, headers=headers)
    response.vary.add("Accept-Encoding")
    return response
