"""Tile rollup: report counts per Web Mercator cell, for the aggregated vector tiles.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21

A vector tile below the point zoom carries counts on a 64 × 64 grid, and
one cell of a zoom-``z`` tile is one tile of zoom ``z + 6``. Counting live
means reading every report in the tile: half a million rows for central
Phnom Penh at zoom 12, half a second. This materialized view holds the
counts per (level, cx, cy, top-level category) for levels 6…21 (tile zooms
0…15), built from the finest level up, so a tile reads at most 4,096 cells.
At zooms 14 and 15 the rollup also tells whether a tile is too crowded for
single points before any point is read.

It is refreshed ``CONCURRENTLY`` (readers never wait) by ``civicmap rollup
refresh``, after ``civicmap seed``, and by the app when it is older than
``ROLLUP_MAX_AGE_SECONDS``; ``rollup_state`` records when. Tiles at the
point zoom and above, and every filtered tile, read the reports table
live, so a new report shows on the street-level map at once.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FINEST = 21
COARSEST = 6


def upgrade() -> None:
    op.execute(
        f"""
        CREATE MATERIALIZED VIEW report_tile_cells AS
        WITH finest AS (
            SELECT floor((ST_X(location) + 180.0) / 360.0 * 2 ^ {FINEST})::bigint AS cx,
                   floor((1 - ln(tan(radians(45 + ST_Y(location) / 2))) / pi()) / 2 * 2 ^ {FINEST})::bigint AS cy,
                   split_part(category_code, '.', 1) AS grp, count(*)::int AS n
            FROM reports WHERE NOT hidden AND ST_Y(location) BETWEEN -85.05 AND 85.05
            GROUP BY 1, 2, 3
        )
        SELECT l.level::smallint AS level, (f.cx >> ({FINEST} - l.level))::int AS cx,
               (f.cy >> ({FINEST} - l.level))::int AS cy, f.grp, sum(f.n)::int AS n
        FROM finest f CROSS JOIN generate_series({COARSEST}, {FINEST}) AS l(level)
        GROUP BY 1, 2, 3, 4
        WITH DATA
        """
    )
    op.execute("CREATE UNIQUE INDEX report_tile_cells_key ON report_tile_cells (level, cx, cy, grp)")
    op.execute("CREATE TABLE rollup_state (name text PRIMARY KEY, refreshed_at timestamptz NOT NULL)")
    op.execute("INSERT INTO rollup_state VALUES ('report_tile_cells', now())")


def downgrade() -> None:
    op.execute("DROP TABLE rollup_state")
    op.execute("DROP MATERIALIZED VIEW report_tile_cells")
