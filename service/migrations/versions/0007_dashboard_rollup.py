"""Dashboard rollups: weekly counts and SLA figures per area, for the staff dashboard.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21

The staff dashboard (``/staff/dashboard``) must stay fast at a million
reports, so it never counts the reports table on a request. It reads two
materialized views, refreshed ``CONCURRENTLY`` with the tile rollup of 0004
(``service.rollup``: ``civicmap rollup refresh``, after ``civicmap seed``,
and by the app when older than ``ROLLUP_MAX_AGE_SECONDS``):

``report_weekly_stats``
    Reports received per week (Monday to Sunday in Phnom Penh time), top-level
    category and current status: per khan (0 when none was found), per city
    and for all cities, so a page reads only the rows of its own scope (a
    few thousand at most, however many reports there are).

``report_sla_stats``
    Per window of received time (the last 30, 90 or 365 days before the
    refresh, or 0: all time), per area and top-level category: how many
    reports were received, how many are in each status now, and the exact
    medians (``percentile_cont``) of days from received to acknowledged and,
    for resolved reports, to closed. Medians cannot be added up, so
    ``GROUPING SETS`` stores every roll-up the page shows: per sangkat, khan,
    city and all cities, each per category and for all categories.

Unique indexes need keys without NULLs for a concurrent refresh, so the
views spell "none" and "all" as numbers and text: an area id of 0 is "no khan
(or sangkat) was found", -1 is "every one" (a roll-up), and the category
``'*'`` is all categories. Hidden reports are never counted.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: The windows of ``report_sla_stats`` in days (0: all time); ``service.stats_queries.PERIODS`` names them.
WINDOWS = (30, 90, 365, 0)
LOCAL_TIME_ZONE = "Asia/Phnom_Penh"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE MATERIALIZED VIEW report_weekly_stats AS
        WITH received AS (
            SELECT date_trunc('week', received_at AT TIME ZONE '{LOCAL_TIME_ZONE}')::date AS week,
                   city_id, COALESCE(district_id, 0) AS district_id,
                   split_part(category_code, '.', 1)::text AS grp, status::text AS status
            FROM reports
            WHERE NOT hidden
        )
        SELECT week,
               CASE WHEN GROUPING(city_id) = 1 THEN -1 ELSE city_id END AS city_id,
               CASE WHEN GROUPING(district_id) = 1 THEN -1 ELSE district_id END AS district_id,
               grp, status, count(*)::int AS n
        FROM received
        GROUP BY week, grp, status, GROUPING SETS ((city_id, district_id), (city_id), ())
        WITH DATA
        """
    )
    op.execute("CREATE UNIQUE INDEX report_weekly_stats_key "
               "ON report_weekly_stats (city_id, district_id, week, grp, status)")

    windows = ", ".join(f"({days})" for days in WINDOWS)
    op.execute(
        f"""
        CREATE MATERIALIZED VIEW report_sla_stats AS
        WITH received AS (
            SELECT w.days, r.city_id, COALESCE(r.district_id, 0) AS district_id,
                   COALESCE(r.commune_id, 0) AS commune_id, split_part(r.category_code, '.', 1)::text AS grp,
                   r.status,
                   extract(epoch FROM r.acknowledged_at - r.received_at) / 86400.0 AS ack_days,
                   CASE WHEN r.status = 'resolved'
                        THEN extract(epoch FROM r.closed_at - r.received_at) / 86400.0 END AS resolve_days
            FROM reports r
            JOIN (VALUES {windows}) AS w(days)
              ON w.days = 0 OR r.received_at >= now() - make_interval(days => w.days)
            WHERE NOT r.hidden
        )
        SELECT days::smallint AS days,
               CASE WHEN GROUPING(city_id) = 1 THEN -1 ELSE city_id END AS city_id,
               CASE WHEN GROUPING(district_id) = 1 THEN -1 ELSE district_id END AS district_id,
               CASE WHEN GROUPING(commune_id) = 1 THEN -1 ELSE commune_id END AS commune_id,
               CASE WHEN GROUPING(grp) = 1 THEN '*' ELSE grp END AS grp,
               count(*)::int AS received,
               count(*) FILTER (WHERE status = 'new')::int AS n_new,
               count(*) FILTER (WHERE status = 'acknowledged')::int AS n_acknowledged,
               count(*) FILTER (WHERE status = 'in_progress')::int AS n_in_progress,
               count(*) FILTER (WHERE status = 'resolved')::int AS n_resolved,
               count(*) FILTER (WHERE status = 'rejected')::int AS n_rejected,
               count(*) FILTER (WHERE status = 'duplicate')::int AS n_duplicate,
               count(ack_days)::int AS n_acknowledged_ever,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY ack_days) AS ack_median_days,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY resolve_days) AS resolve_median_days
        FROM received
        GROUP BY days, GROUPING SETS (
            (city_id, district_id, commune_id, grp), (city_id, district_id, commune_id),
            (city_id, district_id, grp), (city_id, district_id),
            (city_id, grp), (city_id),
            (grp), ())
        WITH DATA
        """
    )
    op.execute("CREATE UNIQUE INDEX report_sla_stats_key "
               "ON report_sla_stats (days, city_id, district_id, commune_id, grp)")
    op.execute("INSERT INTO rollup_state VALUES ('report_weekly_stats', now()), ('report_sla_stats', now())")


def downgrade() -> None:
    op.execute("DELETE FROM rollup_state WHERE name IN ('report_weekly_stats', 'report_sla_stats')")
    op.execute("DROP MATERIALIZED VIEW report_sla_stats")
    op.execute("DROP MATERIALIZED VIEW report_weekly_stats")
