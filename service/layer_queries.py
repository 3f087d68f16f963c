"""Bulk reads for maps and exports: the report layer, the heatmap grid, area statistics, vector tiles.

The second half of the query package (``service.queries`` holds the rest).
These queries return many rows, so they run on the psycopg cursor under the
session, in binary mode, and hand back plain tuples: no ORM objects, no
SQLAlchemy ``Row`` wrapping. Each builder returns ``(sql, params)`` in
psycopg's ``%(name)s`` style, so ``bench/`` can time the very same statement
raw. Every filter goes through :func:`service.queries.filter_sql`, so hidden
reports never match and no contact or device column is ever selected.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Iterator, Sequence

import psycopg

from geo.tiles import MERCATOR_HALF, Tile
from service.models import OPEN_STATUSES
from service.queries import Executor, ReportFilters, filter_sql

_BIND = re.compile(r"(?<![:\w]):(\w+)")


def to_psycopg(sql: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Turn ``:name`` binds (as ``filter_sql`` writes them) into psycopg's ``%(name)s``."""
    sql = sql.replace("%", "%%")
    return _BIND.sub(lambda m: f"%({m.group(1)})s", sql), params


def driver_connection(db: Executor | psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The psycopg connection under a Session or Connection, in the same transaction (or itself)."""
    if isinstance(db, psycopg.Connection):
        return db
    conn = db.connection() if hasattr(db, "get_bind") else db  # Session → Connection
    return conn.connection.driver_connection  # type: ignore[union-attr,return-value]


def fetch_all(db: Executor, statement: tuple[str, dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Run a built statement on the binary psycopg cursor and return plain tuples."""
    with driver_connection(db).cursor(binary=True) as cur:
        cur.execute(*statement)
        return cur.fetchall()


# --- report layer ------------------------------------------------------------------------------------------------

# Column order of a layer row; ``service.resources.layers`` and the exports read them by position.
LAYER_COLUMNS = ("id", "reference", "category_code", "status", "observed_at", "received_at", "lon", "lat",
                 "district_code", "commune_code", "photos")


#: What the staff map adds to a layer row (after ``LAYER_COLUMNS``).
STAFF_LAYER_COLUMNS = ("r.hidden", "r.source")


def layer_statement(filters: ReportFilters, limit: int, after: tuple[datetime, uuid.UUID] | None = None,
                    extra_columns: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """Newest first, keyset-paginated; area names are joined in Python from a 116-row table.

    The id comes as text: building 10,000 ``uuid.UUID`` objects only to print them again costs
    more than the rest of the feature. ``extra_columns`` (``STAFF_LAYER_COLUMNS``) come last.
    """
    params: dict[str, Any] = {"limit": limit}
    clauses = filter_sql(filters, params)
    if after is not None:
        clauses.append("(r.received_at, r.id) < (:after_at, :after_id)")
        params["after_at"], params["after_id"] = after
    sql = f"""
        SELECT r.id::text, r.reference, r.category_code, r.status, r.observed_at, r.received_at,
               ST_X(r.location), ST_Y(r.location), r.district_id, r.commune_id,
               (SELECT array_agg(rp.photo_sha256 ORDER BY rp.added_at, rp.photo_sha256)
                FROM report_photos rp WHERE rp.report_id = r.id){''.join(', ' + c for c in extra_columns)}
        FROM reports r
        WHERE {' AND '.join(clauses)}
        ORDER BY r.received_at DESC, r.id DESC
        LIMIT :limit"""
    return to_psycopg(sql, params)


def estimated_matches(db: Executor, filters: ReportFilters) -> int:
    """The planner's estimate of how many reports match: cheap, never a COUNT(*)."""
    params: dict[str, Any] = {}
    sql = f"EXPLAIN (FORMAT JSON) SELECT 1 FROM reports r WHERE {' AND '.join(filter_sql(filters, params))}"
    with driver_connection(db).cursor() as cur:
        cur.execute(*to_psycopg(sql, params))
        plan = cur.fetchone()[0]  # type: ignore[index]
    return int(plan[0]["Plan"]["Plan Rows"])


def area_names(db: Executor) -> dict[int, tuple[str, str, str, str]]:
    """Every area's (code, level, name_en, name_km), by id."""
    with driver_connection(db).cursor() as cur:
        cur.execute("SELECT id, code, level, name_en, name_km FROM areas")
        return {row[0]: row[1:] for row in cur.fetchall()}


def top_level_categories(db: Executor) -> list[str]:
    """Top-level category codes in display order (the heatmap's and statistics' columns)."""
    with driver_connection(db).cursor() as cur:
        cur.execute("SELECT code FROM categories WHERE parent_code IS NULL ORDER BY sort_order, code")
        return [row[0] for row in cur.fetchall()]


def category_codes(db: Executor) -> set[str]:
    with driver_connection(db).cursor() as cur:
        cur.execute("SELECT code FROM categories")
        return {row[0] for row in cur.fetchall()}


# --- heatmap -----------------------------------------------------------------------------------------------------

def heatmap_statement(filters: ReportFilters, cell_deg: float) -> tuple[str, dict[str, Any]]:
    """Counts per square cell and top-level category.

    The cell index is ``floor(coordinate / size)``: the same cells as
    ``ST_SnapToGrid`` gives, but grouped on two integers instead of geometries.
    """
    params: dict[str, Any] = {"size": cell_deg}
    sql = f"""
        SELECT floor(ST_X(r.location) / :size)::int AS cx, floor(ST_Y(r.location) / :size)::int AS cy,
               split_part(r.category_code, '.', 1) AS grp, count(*)::int
        FROM reports r
        WHERE {' AND '.join(filter_sql(filters, params))}
        GROUP BY 1, 2, 3"""
    return to_psycopg(sql, params)


# Web Mercator metres per degree of longitude.
MERCATOR_M_PER_DEG = MERCATOR_HALF / 180.0


def hexagon_statement(filters: ReportFilters, bbox: tuple[float, float, float, float],
                      cell_deg: float) -> tuple[str, dict[str, Any]]:
    """Counts per hexagon: ``ST_HexagonGrid`` in EPSG:3857 over the bbox, the hexagons
    transformed to WGS 84 (a few thousand shapes), never the indexed points."""
    params: dict[str, Any] = {"hex_size": cell_deg * MERCATOR_M_PER_DEG / 2}
    params.update(zip(("hx0", "hy0", "hx1", "hy1"), bbox))
    clauses = filter_sql(filters, params)
    sql = f"""
        WITH hex AS (
            SELECT h.i, h.j, ST_Transform(h.geom, 4326) AS geom
            FROM ST_HexagonGrid(:hex_size, ST_Transform(ST_MakeEnvelope(:hx0, :hy0, :hx1, :hy1, 4326), 3857)) h
        )
        SELECT hex.i, hex.j, ST_X(ST_Centroid(hex.geom)), ST_Y(ST_Centroid(hex.geom)),
               split_part(r.category_code, '.', 1) AS grp, count(*)::int
        FROM hex JOIN reports r ON ST_Intersects(hex.geom, r.location)
        WHERE {' AND '.join(clauses)}
        GROUP BY hex.i, hex.j, hex.geom, grp"""
    return to_psycopg(sql, params)


def service_extent(db: Executor, area_id: int | None = None) -> tuple[float, float, float, float]:
    """The bounding box of one area, or of all cities."""
    with driver_connection(db).cursor() as cur:
        if area_id is None:
            cur.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
                        "FROM (SELECT ST_Extent(geom) AS e FROM areas WHERE level = 'city') s")
        else:
            cur.execute("SELECT ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) FROM areas WHERE id = %s",
                        (area_id,))
        row = cur.fetchone()
    assert row is not None and row[0] is not None, "no service areas loaded"
    return row  # type: ignore[return-value]


# --- area statistics ---------------------------------------------------------------------------------------------

_AREA_LEVEL_COLUMN = {"district": "district_id", "commune": "commune_id"}


def area_stats_statement(filters: ReportFilters, level: str) -> tuple[str, dict[str, Any]]:
    """Per area of ``level``: counts by (top-level category, status), and medians per area.

    ``GROUPING SETS`` gives both in one scan: rows with ``grp IS NULL`` are the
    area totals with the medians (days from received to acknowledged, and to
    resolved); the others are the category × status counts.
    """
    column = _AREA_LEVEL_COLUMN[level]
    params: dict[str, Any] = {"open": list(OPEN_STATUSES)}
    clauses = filter_sql(filters, params) + [f"r.{column} IS NOT NULL"]
    sql = f"""
        SELECT r.{column} AS area_id, split_part(r.category_code, '.', 1) AS grp, r.status,
               GROUPING(split_part(r.category_code, '.', 1), r.status) AS totals,
               count(*)::int,
               count(*) FILTER (WHERE r.status = ANY(:open))::int,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM r.acknowledged_at - r.received_at) / 86400.0),
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM r.closed_at - r.received_at) / 86400.0)
                   FILTER (WHERE r.status = 'resolved')
        FROM reports r
        WHERE {' AND '.join(clauses)}
        GROUP BY GROUPING SETS ((r.{column}), (r.{column}, split_part(r.category_code, '.', 1), r.status))"""
    return to_psycopg(sql, params)


def areas_of_level(db: Executor, level: str, within_id: int | None) -> list[tuple[Any, ...]]:
    """(id, code, name_en, name_km, parent code, geometry GeoJSON text) of every area of a level."""
    sql = """
        SELECT a.id, a.code, a.name_en, a.name_km, p.code, ST_AsGeoJSON(a.geom, 5)
        FROM areas a LEFT JOIN areas p ON p.id = a.parent_id
        WHERE a.level = %(level)s
          AND (%(within)s::int IS NULL OR a.id = %(within)s OR a.parent_id = %(within)s
               OR p.parent_id = %(within)s)
        ORDER BY a.code"""
    with driver_connection(db).cursor() as cur:
        cur.execute(sql, {"level": level, "within": within_id})
        return cur.fetchall()


# --- vector tiles ------------------------------------------------------------------------------------------------

TILE_EXTENT = 4096
TILE_BUFFER = 64
# Aggregated tiles carry one feature per cell of a 64 × 64 grid: a cell of a zoom-z tile is a zoom-(z + 6) tile,
# which is also how the rollup of migration 0004 counts them.
GRID_BITS = 6
CELL_UNITS = TILE_EXTENT >> GRID_BITS
ROLLUP_FINEST = 21  # the finest level migration 0004 keeps (tile zoom 15)
_CODE = re.compile(r"[a-z][a-z0-9_]*")

# Web Mercator from lon/lat by arithmetic, in tile units: cheaper than ST_Transform on every point.
_TILE_XY = """
    (ST_X(r.location) * {k} - :tile_x0) * :scale AS tx,
    (:tile_y1 - ln(tan(radians(45 + ST_Y(r.location) / 2))) * {r}) * :scale AS ty"""
# The cell of a point at a level, exactly as migration 0004 computes it.
_CELL_XY = """
    floor((ST_X(r.location) + 180.0) / 360.0 * 2 ^ :level)::bigint - :cx0 AS cx,
    floor((1 - ln(tan(radians(45 + ST_Y(r.location) / 2))) / pi()) / 2 * 2 ^ :level)::bigint - :cy0 AS cy"""


def _tile_params(bounds_m: tuple[float, float, float, float], bbox: tuple[float, float, float, float],
                 params: dict[str, Any]) -> None:
    x0, _y0, x1, y1 = bounds_m
    params.update(tile_x0=x0, tile_y1=y1, scale=TILE_EXTENT / (x1 - x0))
    params.update(zip(("min_lon", "min_lat", "max_lon", "max_lat"), bbox))


def _tile_where(filters: ReportFilters, params: dict[str, Any]) -> str:
    # The tile's own envelope (with its buffer) replaces any bbox filter.
    clauses = filter_sql(ReportFilters(categories=filters.categories, statuses=filters.statuses,
                                       area=filters.area, since=filters.since, until=filters.until), params)
    clauses.append("r.location && ST_MakeEnvelope(:min_lon, :min_lat, :max_lon, :max_lat, 4326)")
    return " AND ".join(clauses)


def tile_points_statement(filters: ReportFilters, bounds_m: tuple[float, float, float, float],
                          bbox: tuple[float, float, float, float], max_points: int) -> tuple[str, dict[str, Any]]:
    """An MVT of single reports (layer ``reports``), or NULL when the tile holds more than ``max_points``."""
    params: dict[str, Any] = {"max_points": max_points}
    _tile_params(bounds_m, bbox, params)
    xy = _TILE_XY.format(k=MERCATOR_M_PER_DEG, r=MERCATOR_HALF / 3.141592653589793)
    sql = f"""
        WITH pts AS (
            SELECT r.reference, r.category_code AS category, split_part(r.category_code, '.', 1) AS "group",
                   r.status, {xy}
            FROM reports r
            WHERE {_tile_where(filters, params)}
            LIMIT :max_points + 1
        )
        SELECT CASE WHEN count(*) > :max_points THEN NULL
                    ELSE ST_AsMVT(t, 'reports', {TILE_EXTENT}, 'geom') END
        FROM (SELECT reference, category, "group", status,
                     ST_MakePoint(round(tx), round(ty)) AS geom FROM pts ORDER BY reference) t"""
    return to_psycopg(sql, params)


def _per_category(categories: Sequence[str], params: dict[str, Any], count: str) -> str:
    """One count column per top-level category, named by its code (codes are checked, then quoted)."""
    columns = []
    for i, code in enumerate(categories):
        if not _CODE.fullmatch(code):
            raise ValueError(f"category code {code!r} cannot name a tile property")
        params[f"cat{i}"] = code
        columns.append(f'COALESCE({count} FILTER (WHERE grp = :cat{i}), 0)::int AS "{code}"')
    return ", ".join(columns)


def tile_cells_statement(filters: ReportFilters, tile: Tile, categories: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """An MVT of counts per cell (layer ``cells``), counted live: ``count`` plus one count per top-level category."""
    level = tile.z + GRID_BITS
    params: dict[str, Any] = {"level": level, "cx0": tile.x << GRID_BITS, "cy0": tile.y << GRID_BITS,
                              "cell": CELL_UNITS}
    params.update(zip(("min_lon", "min_lat", "max_lon", "max_lat"), tile.bounds_lonlat().as_tuple()))
    per_category = _per_category(categories, params, "count(*)")
    sql = f"""
        WITH pts AS (
            SELECT split_part(r.category_code, '.', 1) AS grp, {_CELL_XY}
            FROM reports r
            WHERE {_tile_where(filters, params)}
        )
        SELECT ST_AsMVT(t, 'cells', {TILE_EXTENT}, 'geom')
        FROM (SELECT count(*)::int AS count, {per_category},
                     ST_MakePoint((cx + 0.5) * :cell, (cy + 0.5) * :cell) AS geom
              FROM pts WHERE cx BETWEEN 0 AND {(1 << GRID_BITS) - 1} AND cy BETWEEN 0 AND {(1 << GRID_BITS) - 1}
              GROUP BY cx, cy ORDER BY cy, cx) t"""
    return to_psycopg(sql, params)


def tile_rollup_statement(filters: ReportFilters, tile: Tile, categories: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The same tile as :func:`tile_cells_statement`, read from the rollup (unfiltered or top-level categories)."""
    params: dict[str, Any] = {"level": tile.z + GRID_BITS, "cx0": tile.x << GRID_BITS, "cy0": tile.y << GRID_BITS,
                              "cell": CELL_UNITS, "last": (1 << GRID_BITS) - 1}
    per_category = _per_category(categories, params, "sum(n)")
    group_filter = ""
    if filters.categories:
        group_filter = "AND grp = ANY(:groups)"
        params["groups"] = list(filters.categories)
    sql = f"""
        SELECT ST_AsMVT(t, 'cells', {TILE_EXTENT}, 'geom')
        FROM (SELECT sum(n)::int AS count, {per_category},
                     ST_MakePoint((cx - :cx0 + 0.5) * :cell, (cy - :cy0 + 0.5) * :cell) AS geom
              FROM report_tile_cells
              WHERE level = :level AND cx BETWEEN :cx0 AND :cx0 + :last AND cy BETWEEN :cy0 AND :cy0 + :last
                    {group_filter}
              GROUP BY cx, cy ORDER BY cy, cx) t"""
    return to_psycopg(sql, params)


def rollup_serves(filters: ReportFilters, top_level: Sequence[str]) -> bool:
    """The rollup counts by cell and top-level category only: it can answer no other filter."""
    return (not filters.statuses and filters.area is None and filters.since is None and filters.until is None
            and all(code in top_level for code in filters.categories))


def fetch_tile(db: Executor | psycopg.Connection[Any], statement: tuple[str, dict[str, Any]]) -> bytes | None:
    with driver_connection(db).cursor(binary=True) as cur:
        cur.execute(*statement)
        row = cur.fetchone()
    return None if row is None or row[0] is None else bytes(row[0])


def refresh_tile_rollup(db: Executor) -> None:
    """Recount the rollup without blocking readers, and note when."""
    with driver_connection(db).cursor() as cur:
        cur.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY report_tile_cells")
        cur.execute("UPDATE rollup_state SET refreshed_at = now() WHERE name = 'report_tile_cells'")


def tile_rollup_age(db: Executor) -> float:
    """Seconds since the rollup was last refreshed."""
    with driver_connection(db).cursor() as cur:
        cur.execute("SELECT extract(epoch FROM now() - refreshed_at)::float8 FROM rollup_state "
                    "WHERE name = 'report_tile_cells'")
        return float(cur.fetchone()[0])  # type: ignore[index]


def rollup_count_statement(tile: Tile) -> tuple[str, dict[str, Any]]:
    """How many (unhidden) reports the rollup holds in a tile."""
    params = {"level": tile.z + GRID_BITS, "cx0": tile.x << GRID_BITS, "cy0": tile.y << GRID_BITS,
              "last": (1 << GRID_BITS) - 1}
    return to_psycopg("""
        SELECT COALESCE(sum(n), 0)::bigint FROM report_tile_cells
        WHERE level = :level AND cx BETWEEN :cx0 AND :cx0 + :last AND cy BETWEEN :cy0 AND :cy0 + :last""", params)


def render_tile(db: Executor | psycopg.Connection[Any], tile: Tile, filters: ReportFilters,
                categories: Sequence[str], *, point_zoom: int, max_points: int, use_rollup: bool = False) -> bytes:
    """One vector tile (empty bytes when no report falls in it).

    From ``point_zoom`` on, single points, unless the tile holds more than
    ``max_points``; otherwise counts per cell. The counts come from the rollup
    when it can answer (``use_rollup``, a zoom it holds and no filter it
    lacks), which also tells at once whether a tile is too crowded for points;
    else they are counted live.
    """
    from_rollup = use_rollup and tile.z + GRID_BITS <= ROLLUP_FINEST and rollup_serves(filters, categories)
    if tile.z >= point_zoom:
        crowded = from_rollup and fetch_all(db, rollup_count_statement(tile))[0][0] > max_points
        if not crowded:
            bounds = tile.bounds_lonlat()
            size_m = tile.width_m()
            x0 = -MERCATOR_HALF + tile.x * size_m
            y1 = MERCATOR_HALF - tile.y * size_m
            pad_lon = bounds.width_deg * TILE_BUFFER / TILE_EXTENT
            pad_lat = bounds.height_deg * TILE_BUFFER / TILE_EXTENT
            padded = (bounds.min_lon - pad_lon, max(-90.0, bounds.min_lat - pad_lat),
                      bounds.max_lon + pad_lon, min(90.0, bounds.max_lat + pad_lat))
            body = fetch_tile(db, tile_points_statement(filters, (x0, y1 - size_m, x0 + size_m, y1), padded,
                                                        max_points))
            if body is not None:
                return body
    statement = (tile_rollup_statement if from_rollup else tile_cells_statement)(filters, tile, categories)
    return fetch_tile(db, statement) or b""


# --- exports -----------------------------------------------------------------------------------------------------

# Column order of an export row (all public): see ``geo.exports.EXPORT_FIELDS`` for names and meanings.
def export_statement(filters: ReportFilters) -> tuple[str, dict[str, Any]]:
    """Every matching public report, oldest first, with names joined: the rows an NGO export holds."""
    params: dict[str, Any] = {}
    sql = f"""
        SELECT r.id::text AS id, r.reference, r.category_code AS category,
               split_part(r.category_code, '.', 1) AS category_group, r.status,
               r.observed_at, r.received_at, r.acknowledged_at, r.closed_at,
               ST_X(r.location) AS lon, ST_Y(r.location) AS lat,
               city.code AS city, d.name_en AS khan, d.name_km AS khan_km, cm.name_en AS sangkat,
               cm.name_km AS sangkat_km, r.description, r.landmark, r.source,
               (SELECT count(*)::int FROM report_photos rp WHERE rp.report_id = r.id) AS photo_count
        FROM reports r
        JOIN areas city ON city.id = r.city_id
        LEFT JOIN areas d ON d.id = r.district_id
        LEFT JOIN areas cm ON cm.id = r.commune_id
        WHERE {' AND '.join(filter_sql(filters, params))}
        ORDER BY r.received_at, r.id"""
    return to_psycopg(sql, params)


def stream_rows(db: Executor, statement: tuple[str, dict[str, Any]], batch: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
    """Batches of rows from a server-side cursor: memory stays flat however many rows match."""
    conn = driver_connection(db)
    with conn.cursor(name=f"export_{uuid.uuid4().hex}", binary=True) as cur:
        cur.itersize = batch
        cur.execute(*statement)
        while rows := cur.fetchmany(batch):
            yield rows
