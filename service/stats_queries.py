"""The staff dashboard's SQL: it reads the rollups of migration 0007, never the reports table.

``report_sla_stats`` holds, per window of received time, area and top-level
category, the counts by status and the medians; ``report_weekly_stats`` the
weekly counts. A dashboard request reads a few thousand rows of them at most,
however many reports there are: no request ever counts the reports table.
Statements are ``(sql, params)`` in psycopg's style, like
``service.layer_queries``, so ``bench/dashboard.py`` can time them raw.

The rollups are refreshed together with the tile rollup by
``service.rollup``; ``rollup_state`` says when.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from psycopg import sql

from service.layer_queries import driver_connection, fetch_all, to_psycopg
from service.models import OPEN_STATUSES, REPORT_STATUSES
from service.queries import Executor

#: The rollups this module reads, refreshed in this order.
DASHBOARD_ROLLUPS = ("report_weekly_stats", "report_sla_stats")
#: Period name (as in the page's ``?period=``) → window of ``report_sla_stats`` in days; 0 is all time.
PERIODS: dict[str, int] = {"30d": 30, "90d": 90, "12m": 365, "all": 0}
#: In an area column of a rollup row: -1 is every area (a roll-up), 0 is "none was found for the report".
ALL_AREAS = -1
#: The category of a rollup row that counts every category.
ALL_GROUPS = "*"
#: Phnom Penh time (UTC+7 all year, no daylight saving): weeks begin on its Mondays.
LOCAL_TIME = timezone(timedelta(hours=7))


@dataclass(frozen=True)
class Scope:
    """What the page looks at: a window, everywhere or one city or one khan of it, all categories or one."""

    days: int
    city_id: int | None = None
    district_id: int | None = None  # needs its city_id
    group: str | None = None

    def __post_init__(self) -> None:
        if self.district_id is not None and self.city_id is None:
            raise ValueError("a khan's scope needs its city")


@dataclass(frozen=True)
class AreaFigures:
    """One row of ``report_sla_stats``: an area (or the whole scope) in one window and category."""

    city_id: int
    district_id: int
    commune_id: int
    received: int
    by_status: dict[str, int]
    acknowledged: int  # how many were ever acknowledged: the sample of the first median
    ack_median_days: float | None
    resolve_median_days: float | None

    @property
    def open(self) -> int:
        return sum(self.by_status[s] for s in OPEN_STATUSES)

    @property
    def level(self) -> str:
        """What the row counts: one ``commune``, ``district`` or ``city``, or ``all`` cities."""
        for level, area in (("commune", self.commune_id), ("district", self.district_id), ("city", self.city_id)):
            if area != ALL_AREAS:
                return level
        return "all"

    @property
    def area_id(self) -> int:
        """The row's own area at its level (0: none was found; -1: every city)."""
        return {"commune": self.commune_id, "district": self.district_id, "city": self.city_id}.get(self.level,
                                                                                                    ALL_AREAS)


_STATUS_COLUMNS = ", ".join(f"n_{status}" for status in REPORT_STATUSES)


def figures_statement(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The scope's own row first, then one row per area a level down: the khans of the city (or of every
    city), or the sangkats of the khan."""
    params: dict[str, Any] = {"days": scope.days, "grp": scope.group or ALL_GROUPS, "city": scope.city_id,
                              "district": scope.district_id}
    if scope.district_id is not None:
        own = "city_id = :city AND district_id = :district AND commune_id = -1"
        children = "city_id = :city AND district_id = :district AND commune_id <> -1"
    elif scope.city_id is not None:
        own = "city_id = :city AND district_id = -1 AND commune_id = -1"
        children = "city_id = :city AND district_id <> -1 AND commune_id = -1"
    else:
        own = "city_id = -1"
        children = "city_id <> -1 AND district_id <> -1 AND commune_id = -1"
    statement = f"""
        SELECT ({own}) AS own, city_id, district_id, commune_id, received, {_STATUS_COLUMNS},
               n_acknowledged_ever, ack_median_days, resolve_median_days
        FROM report_sla_stats
        WHERE days = :days AND grp = :grp AND (({own}) OR ({children}))
        ORDER BY own DESC, city_id, district_id, commune_id"""
    return to_psycopg(statement, params)


def figures(db: Executor, scope: Scope) -> tuple[AreaFigures | None, list[AreaFigures]]:
    """``(the scope's totals, one row per area a level down)``; the totals are None when nothing was counted."""
    own: AreaFigures | None = None
    children: list[AreaFigures] = []
    n = len(REPORT_STATUSES)
    for row in fetch_all(db, figures_statement(scope)):
        item = AreaFigures(city_id=row[1], district_id=row[2], commune_id=row[3], received=row[4],
                           by_status=dict(zip(REPORT_STATUSES, row[5:5 + n])), acknowledged=row[5 + n],
                           ack_median_days=row[6 + n], resolve_median_days=row[7 + n])
        if row[0]:
            own = item
        else:
            children.append(item)
    return own, children


def weekly_statement(scope: Scope, since: date | None) -> tuple[str, dict[str, Any]]:
    """Reports received per week (Monday, Phnom Penh time), category and current status, from ``since`` on:
    the scope's own rows of the rollup (-1 in an area column: the roll-up of all of them)."""
    params: dict[str, Any] = {"city": ALL_AREAS if scope.city_id is None else scope.city_id,
                              "district": ALL_AREAS if scope.district_id is None else scope.district_id}
    clauses = ["city_id = :city", "district_id = :district"]
    if scope.group is not None:
        clauses.append("grp = :grp")
        params["grp"] = scope.group
    if since is not None:
        clauses.append("week >= :since")
        params["since"] = since
    statement = f"""
        SELECT week, grp, status, n
        FROM report_weekly_stats
        WHERE {' AND '.join(clauses)}
        ORDER BY week, grp, status"""
    return to_psycopg(statement, params)


def weekly(db: Executor, scope: Scope, since: date | None) -> list[tuple[date, str, str, int]]:
    return [tuple(row) for row in fetch_all(db, weekly_statement(scope, since))]  # type: ignore[misc]


def week_of(moment: datetime) -> date:
    """The Monday, in Phnom Penh, of the week holding ``moment``: how ``report_weekly_stats`` buckets it."""
    day = moment.astimezone(LOCAL_TIME).date()
    return day - timedelta(days=day.weekday())


def first_week(as_of: datetime, days: int) -> date | None:
    """The week holding the start of a window of ``days`` that ends at ``as_of`` (None for all time)."""
    return week_of(as_of - timedelta(days=days)) if days else None


# --- freshness -------------------------------------------------------------------------------------------------

def refreshed_at(db: Executor) -> datetime | None:
    """When the dashboard's figures were counted: the older of its two rollups (None before any refresh)."""
    with driver_connection(db).cursor() as cur:
        cur.execute("SELECT min(refreshed_at) FROM rollup_state WHERE name = ANY(%s)", (list(DASHBOARD_ROLLUPS),))
        row = cur.fetchone()
    return row[0] if row else None


def refresh_dashboard_rollups(db: Executor) -> dict[str, float]:
    """Recount both rollups without blocking readers, and note when; seconds each took, by name."""
    took: dict[str, float] = {}
    with driver_connection(db).cursor() as cur:
        for name in DASHBOARD_ROLLUPS:
            started = time.perf_counter()
            cur.execute(sql.SQL("REFRESH MATERIALIZED VIEW CONCURRENTLY {}").format(sql.Identifier(name)))
            took[name] = time.perf_counter() - started
        cur.execute("UPDATE rollup_state SET refreshed_at = now() WHERE name = ANY(%s)", (list(DASHBOARD_ROLLUPS),))
    return took


def oldest_rollup_age(db: Executor) -> float:
    """Seconds since the least recently refreshed rollup of all (tiles and dashboard) was refreshed."""
    with driver_connection(db).cursor() as cur:
        cur.execute("SELECT extract(epoch FROM now() - min(refreshed_at))::float8 FROM rollup_state")
        row = cur.fetchone()
    return float(row[0]) if row and row[0] is not None else float("inf")
