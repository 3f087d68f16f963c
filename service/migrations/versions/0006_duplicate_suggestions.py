"""Duplicate suggestions: a radius per category, and an index for "within so many metres".

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

A new report is shown the open (or recently resolved) reports of its category
nearby, FixMyStreet's way (``geo.duplicates`` states the rule). The radius is
250 m unless a category sets its own (flooding spreads further than a pothole).

The search is ``ST_DWithin(location::geography, point::geography, radius)``:
metres on the spheroid, exact at any latitude. The GiST index of 0001 is on
the geometry and cannot serve a cast to geography, so this adds one on that
expression; without it every search would read every report.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE categories ADD COLUMN duplicate_radius_m integer NOT NULL DEFAULT 250 "
               "CONSTRAINT categories_duplicate_radius_check CHECK (duplicate_radius_m BETWEEN 1 AND 5000)")
    op.execute("CREATE INDEX reports_location_geography_gist ON reports USING gist ((location::geography))")


def downgrade() -> None:
    op.execute("DROP INDEX reports_location_geography_gist")
    op.execute("ALTER TABLE categories DROP COLUMN duplicate_radius_m")
