"""The staff dashboard: counts and SLA figures per khan or sangkat, weekly trends, and their CSV.

``/staff/dashboard`` is a staff page (the routes are added to the staff
blueprint, so its sign-in gate, security headers, language switch and error
pages apply): moderators, planners and administrators read it. ``/dashboard``,
the address the issue names, redirects there, since the staff session cookie
is scoped to ``/staff`` and would never reach a page outside it.

Every figure comes from the rollups of migration 0007 through
``service.stats_queries``: a request never counts the reports table. The page
says when the figures were counted, and a request that finds them older than
``ROLLUP_MAX_AGE_SECONDS`` starts a recount in the background
(``service.rollup``). Charts are inline SVG drawn by ``service.charts``.

Filters are GET parameters: ``area`` (a city or khan code; none is every
city; a khan shows its sangkats), ``group`` (a top-level category),
``period`` (``30d``, ``90d``, ``12m``, ``all``) and ``sort`` (a table column).
A bad value is a 400 page, never a 500.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Sequence

from babel.dates import format_date, format_datetime, get_month_names
from babel.numbers import get_decimal_symbol, get_group_symbol
from flask import Blueprint, Response, current_app, redirect, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from markupsafe import Markup

from service import queries, rollup
from service import stats_queries as sq
from service.charts import Bar, Series, horizontal_bars, stacked_bars, swatch
from service.db import get_engine, get_session
from service.errors import ApiError
from service.models import REPORT_STATUSES
from service.palette import STATUS_COLOURS, category_colour
from service.resources.pages import category_groups, localised
from service.resources.staff import _page, staff_blp
from service.staff_auth import READER_ROLES, require_staff_role
from service.worker_cache import cached

dashboard_blp = Blueprint("dashboard", __name__)

#: Service targets: a median above these is highlighted (the page's legend states them).
ACKNOWLEDGE_TARGET_DAYS = 2
RESOLVE_TARGET_DAYS = 14
DEFAULT_PERIOD = "90d"
#: Table columns one can sort by (``?sort=``): names ascending, numbers largest first, missing medians last.
SORTS = ("area", "received", "open", "resolved", "rejected", "duplicate", "ack", "resolve")


# --- the filters ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Filters:
    period: str
    area: Any | None  # an area row (city or khan) or None for every city
    city: Any | None
    group: str | None
    sort: str

    @property
    def khan(self) -> Any | None:
        return self.area if self.area is not None and self.area.level == "district" else None

    def scope(self) -> sq.Scope:
        return sq.Scope(days=sq.PERIODS[self.period], city_id=self.city.id if self.city else None,
                        district_id=self.khan.id if self.khan else None, group=self.group)

    def args(self, **changes: str | None) -> dict[str, str]:
        """The query string of these filters, with ``changes`` (None drops one), defaults left out."""
        values = {"area": self.area.code if self.area else None, "group": self.group,
                  "period": self.period if self.period != DEFAULT_PERIOD else None,
                  "sort": self.sort if self.sort != "area" else None}
        values.update(changes)
        return {k: v for k, v in values.items() if v}


def _bad_filter(message: str) -> ApiError:
    return ApiError("dashboard.bad_filter", message, 400)


def _area_rows() -> list[Any]:
    """Every area (id, code, level, parent_id, names), as the staff and phone pages cache them."""
    return cached("area_picker", lambda: list(queries.area_picker(get_session())), seconds=300)


def read_filters() -> Filters:
    """The page's filters from the query string; a value that names nothing is a 400 (unknown keys are ignored)."""
    args = request.args
    period = args.get("period", "").strip() or DEFAULT_PERIOD
    if period not in sq.PERIODS:
        raise _bad_filter(_("The period must be one of: %(choices)s.", choices=", ".join(sq.PERIODS)))
    sort = args.get("sort", "").strip() or "area"
    if sort not in SORTS:
        raise _bad_filter(_("The table cannot be sorted by %(value)s.", value=sort))
    group = args.get("group", "").strip() or None
    if group is not None and group not in {g["code"] for g in category_groups()}:
        raise _bad_filter(_("There is no category group %(code)s.", code=group))
    code = args.get("area", "").strip()
    area = city = None
    if code:
        rows = {row.code: row for row in _area_rows()}
        area = rows.get(code)
        if area is None:
            raise _bad_filter(_("There is no area %(code)s.", code=code))
        if area.level == "commune":
            raise _bad_filter(_("Choose a city or a khan: a khan's page shows its sangkats."))
        city = area if area.level == "city" else next((r for r in rows.values() if r.id == area.parent_id), None)
    return Filters(period=period, area=area, city=city, group=group, sort=sort)


# --- figures into words and pictures ----------------------------------------------------------------------------

def _locale() -> str:
    return str(get_locale() or "en")


class Numbers:
    """Counts and days written the reader's way (digit grouping, decimal sign), looked up once per page.

    A page writes a thousand numbers; Babel's ``format_decimal`` would cost
    more than the page's SQL.
    """

    def __init__(self, locale: str) -> None:
        self.group, self.decimal = get_group_symbol(locale), get_decimal_symbol(locale)

    def _local(self, text: str) -> str:
        return text.replace(",", "\0").replace(".", self.decimal).replace("\0", self.group)

    def count(self, value: int) -> str:
        return self._local(f"{value:,}")

    def days(self, value: float | None) -> str:
        return "—" if value is None else self._local(f"{value:,.1f}")


def period_labels() -> dict[str, str]:
    return {"30d": _("Last 30 days"), "90d": _("Last 90 days"), "12m": _("Last 12 months"), "all": _("All time")}


def status_words() -> dict[str, str]:
    """Statuses as the staff pages name them ("new" is "New" here: the headline counts everything received)."""
    return {"new": _("New"), "acknowledged": _("Seen by the city"), "in_progress": _("Being fixed"),
            "resolved": _("Fixed"), "rejected": _("Not accepted"), "duplicate": _("Already reported")}


def _week_ticks(weeks: Sequence[date]) -> list[tuple[int, str]]:
    """Labels under the weekly chart: each week when there are few, else the first week of every month or so."""
    locale = _locale()
    if len(weeks) <= 10:
        return [(i, format_date(w, "d MMM", locale=locale)) for i, w in enumerate(weeks)]
    if len(weeks) <= 20:
        return [(i, format_date(w, "d MMM", locale=locale)) for i, w in enumerate(weeks) if i % 2 == 0]
    firsts = [i for i, w in enumerate(weeks) if i == 0 or w.month != weeks[i - 1].month]
    stride = max(1, -(-len(firsts) // 8))
    ticks = []
    for n, i in enumerate(firsts[::stride]):
        # The year on the first label and on the first label of each year (January, or the month after it).
        pattern = "MMM y" if n == 0 or weeks[i].month <= stride else "MMM"
        ticks.append((i, format_date(weeks[i], pattern, locale=locale)))
    return ticks


@dataclass(frozen=True)
class WeeklyTable:
    weeks: list[date]
    groups: list[dict[str, Any]]  # {code, label, colour}
    counts: dict[tuple[date, str], int]
    labels: dict[date, str]  # each week's first day, written in the reader's language

    def total(self, week: date) -> int:
        return sum(self.counts.get((week, g["code"]), 0) for g in self.groups)


def weekly_table(rows: Sequence[tuple[date, str, str, int]], groups: list[dict[str, Any]],
                 first: date | None, last: date | None) -> WeeklyTable:
    """Counts per (week, category group), every week from ``first`` (or the first with reports) to ``last``."""
    counts: dict[tuple[date, str], int] = {}
    for week, grp, _status, n in rows:
        counts[(week, grp)] = counts.get((week, grp), 0) + n
    start = first or min((week for week, *_rest in rows), default=None)
    end = max([w for w in (last, *(week for week, *_rest in rows)) if w is not None], default=None)
    weeks = []
    if start is not None and end is not None:
        week = start
        while week <= end:
            weeks.append(week)
            week += timedelta(days=7)
    months = get_month_names("abbreviated", locale=_locale())
    return WeeklyTable(weeks, groups, counts, {w: f"{w.day} {months[w.month]} {w.year}" for w in weeks})


def weekly_chart(table: WeeklyTable, numbers: Numbers) -> Any:
    series = [Series(g["label"], g["colour"], [table.counts.get((w, g["code"]), 0) for w in table.weeks])
              for g in table.groups]
    totals = [table.total(w) for w in table.weeks]
    peak = max(range(len(totals)), key=totals.__getitem__)
    desc = _("%(total)s reports from the week of %(first)s to the week of %(last)s; the most, %(peak)s, in the "
             "week of %(peak_week)s.", total=numbers.count(sum(totals)), first=table.labels[table.weeks[0]],
             last=table.labels[table.weeks[-1]], peak=numbers.count(totals[peak]),
             peak_week=table.labels[table.weeks[peak]])
    week_of = _("Week of %(date)s", date="\0")  # translated once, not once a week
    labels = [week_of.replace("\0", table.labels[w]) for w in table.weeks]
    return stacked_bars("weekly-chart", series, column_labels=labels, ticks=_week_ticks(table.weeks),
                        title=_("Reports received per week, by category"), desc=desc, number=numbers.count)


def status_chart(total: sq.AreaFigures, numbers: Numbers) -> Any:
    words = status_words()
    bars = [Bar(words[s], total.by_status[s], STATUS_COLOURS[s]) for s in REPORT_STATUSES]
    desc = "; ".join(f"{bar.label}: {numbers.count(bar.value)}" for bar in bars)
    return horizontal_bars("status-chart", bars, title=_("Reports received in the period, by status now"),
                           desc=desc, number=numbers.count)


def _area_name(row: sq.AreaFigures, names: dict[int, Any], level: str) -> str:
    area = names.get(row.commune_id if level == "commune" else row.district_id)
    if area is None:
        return _("Not in any sangkat") if level == "commune" else _("Not in any khan")
    return localised(area, "name")


def _sort_key(sort: str) -> Any:
    def missing_last(value: float | None) -> tuple[bool, float]:
        return (value is None, -(value or 0.0))

    keys = {"received": lambda r: -r["figures"].received, "open": lambda r: -r["figures"].open,
            "resolved": lambda r: -r["figures"].by_status["resolved"],
            "rejected": lambda r: -r["figures"].by_status["rejected"],
            "duplicate": lambda r: -r["figures"].by_status["duplicate"],
            "ack": lambda r: missing_last(r["figures"].ack_median_days),
            "resolve": lambda r: missing_last(r["figures"].resolve_median_days)}
    return keys.get(sort, lambda r: (r["unknown"], r["name"].casefold()))


def table_rows(filters: Filters, children: list[sq.AreaFigures]) -> list[dict[str, Any]]:
    names = {row.id: row for row in _area_rows()}
    level = "commune" if filters.khan else "district"
    rows = []
    for figures in children:
        area = names.get(figures.commune_id if level == "commune" else figures.district_id)
        city = names.get(figures.city_id)
        rows.append({
            "figures": figures, "name": _area_name(figures, names, level), "unknown": area is None, "code": None,
            "city": localised(city, "name") if city is not None and filters.city is None else None,
            "drill": url_for("staff.dashboard", **filters.args(area=area.code)) if level == "district" and area
            else None,
            "ack_over": _over(figures.ack_median_days, ACKNOWLEDGE_TARGET_DAYS),
            "resolve_over": _over(figures.resolve_median_days, RESOLVE_TARGET_DAYS),
        })
    seen: dict[str, int] = {}
    for row in rows:
        seen[row["name"]] = seen.get(row["name"], 0) + 1
    for row, figures in zip(rows, children):
        area = names.get(figures.area_id)
        if seen[row["name"]] > 1 and area is not None:  # the three "Boeng Keng Kang Ti *" sangkats
            row["code"] = area.code
    return sorted(rows, key=_sort_key(filters.sort))


def _groups() -> list[dict[str, Any]]:
    return [{"code": g["code"], "label": g["label"], "colour": category_colour(g["code"])} for g in category_groups()]


def _refresh_if_stale() -> bool:
    """Start a background recount when the rollups are older than the configured age (0: never from here)."""
    max_age = current_app.config["CIVICMAP"].rollup_max_age_seconds
    if max_age <= 0:
        return False
    return rollup.refresh_in_background_if_stale(get_engine(), rollup.age_seconds(get_session()), max_age)


def _as_of_html(as_of: datetime | None) -> Markup | None:
    if as_of is None:
        return None
    text = format_datetime(as_of, "d MMM y, HH:mm", tzinfo=sq.LOCAL_TIME, locale=_locale())
    return Markup('<time datetime="{}">{}</time>').format(as_of.astimezone(timezone.utc).isoformat(), text)


def _columns(level: str) -> list[tuple[str, str]]:
    return [("area", _("Sangkat") if level == "commune" else _("Khan")), ("received", _("Received")),
            ("open", _("Still open")), ("resolved", _("Fixed")), ("rejected", _("Not accepted")),
            ("duplicate", _("Already reported")), ("ack", _("Median days to acknowledge")),
            ("resolve", _("Median days to fix"))]


def _crumbs(filters: Filters) -> list[tuple[str, str | None]]:
    """All cities › the city › the khan; each but the last links to its page, with the other filters kept."""
    crumbs: list[tuple[str, str | None]] = [(_("All cities"), url_for("staff.dashboard", **filters.args(area=None)))]
    for area in (filters.city, filters.khan):
        if area is not None:
            crumbs.append((localised(area, "name"), url_for("staff.dashboard", **filters.args(area=area.code))))
    return crumbs[:-1] + [(crumbs[-1][0], None)]


def _over(value: float | None, target: float) -> bool:
    return value is not None and value > target


# --- the pages ------------------------------------------------------------------------------------------------

@dashboard_blp.get("/dashboard")
def public_address() -> Response:
    """The address the issue names; the dashboard lives with the staff pages, where their cookie is sent."""
    query = request.query_string.decode("latin-1")  # as sent: only ever after our own path
    return redirect(url_for("staff.dashboard") + (f"?{query}" if query else ""), 302)


@staff_blp.get("/dashboard", endpoint="dashboard")
@require_staff_role(*READER_ROLES)
def dashboard_page() -> Response:
    """Headline figures, the weekly chart, the status chart and the per-khan (or per-sangkat) table."""
    filters = read_filters()
    session = get_session()
    numbers = Numbers(_locale())
    recount_started = _refresh_if_stale()
    as_of = sq.refreshed_at(session)
    scope = filters.scope()
    total, children = sq.figures(session, scope)
    groups = [g for g in _groups() if filters.group in (None, g["code"])]
    last = sq.week_of(as_of) if as_of else None
    first = sq.first_week(as_of, scope.days) if as_of else None
    weekly = weekly_table(sq.weekly(session, scope, first), groups, first, last)
    has_weeks = any(weekly.total(w) for w in weekly.weeks)
    area_choices = [{"code": c.code, "label": localised(c, "name"), "children": [
        {"code": k.code, "label": localised(k, "name")}
        for k in sorted((r for r in _area_rows() if r.parent_id == c.id), key=lambda r: localised(r, "name"))]}
        for c in sorted((r for r in _area_rows() if r.level == "city"), key=lambda r: localised(r, "name"))]
    level = "commune" if filters.khan else "district"
    return _page(
        "dashboard.html", filters=filters, total=total, rows=table_rows(filters, children), level=level,
        columns=_columns(level), crumbs=_crumbs(filters), periods=period_labels(), all_groups=_groups(),
        total_ack_over=_over(total.ack_median_days, ACKNOWLEDGE_TARGET_DAYS) if total else False,
        total_resolve_over=_over(total.resolve_median_days, RESOLVE_TARGET_DAYS) if total else False,
        area_choices=area_choices, weekly=weekly if has_weeks else None,
        weekly_svg=weekly_chart(weekly, numbers) if has_weeks else None,
        status_svg=status_chart(total, numbers) if total and total.received else None,
        swatch=swatch, number=numbers.count, days=numbers.days,
        as_of=as_of, as_of_html=_as_of_html(as_of), recount_started=recount_started,
        max_age_minutes=max(1, current_app.config["CIVICMAP"].rollup_max_age_seconds // 60),
        refreshes=current_app.config["CIVICMAP"].rollup_max_age_seconds > 0,
        ack_target=ACKNOWLEDGE_TARGET_DAYS, resolve_target=RESOLVE_TARGET_DAYS,
        csv_url=url_for("staff.dashboard_statistics_csv", **filters.args(sort=None)),
        weekly_csv_url=url_for("staff.dashboard_weekly_csv", **filters.args(sort=None)))


# --- CSV ------------------------------------------------------------------------------------------------------

def _csv_response(header: Sequence[str], rows: list[list[Any]], name: str) -> Response:
    """UTF-8 with a byte-order mark, so Excel shows Khmer; a download, never shown in the browser."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    response = current_app.response_class(out.getvalue().encode("utf-8"), mimetype="text/csv")
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _file_name(kind: str, filters: Filters, as_of: datetime | None) -> str:
    where = filters.area.code if filters.area else "all"
    what = filters.group or "all"
    stamp = as_of.astimezone(sq.LOCAL_TIME).strftime("%Y%m%d") if as_of else "never"
    return f"civicmap-{kind}-{where}-{what}-{filters.period}-{stamp}.csv"


def _round(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


STATISTICS_COLUMNS = (
    "as_of", "period", "window_days", "level", "city_code", "city_en", "city_km", "area_code", "area_en", "area_km",
    "category_group", "category_en", "category_km", "received", *REPORT_STATUSES, "open",
    "median_days_to_acknowledge", "acknowledged_count", "median_days_to_resolve", "resolved_count",
)


@staff_blp.get("/dashboard/statistics.csv", endpoint="dashboard_statistics_csv")
@require_staff_role(*READER_ROLES)
def statistics_csv() -> Response:
    """The page's table as CSV: the scope's totals first, then each khan (or sangkat), with English and Khmer names."""
    filters = read_filters()
    session = get_session()
    as_of = sq.refreshed_at(session)
    total, children = sq.figures(session, filters.scope())
    names = {row.id: row for row in _area_rows()}
    category = next((c for c in queries.form_categories(session) if c.code == filters.group), None)
    children.sort(key=lambda f: tuple(names[i].code if i in names else "" for i in (f.city_id, f.area_id)))
    rows = []
    for figures in ([total] if total else []) + children:
        area = names.get(figures.area_id)
        city = names.get(figures.city_id)
        rows.append([
            as_of.astimezone(timezone.utc).isoformat() if as_of else "", filters.period, sq.PERIODS[filters.period],
            figures.level,
            city.code if city else "", city.name_en if city else "", city.name_km if city else "",
            area.code if area else "", area.name_en if area else "", area.name_km if area else "",
            filters.group or "all", category.label_en if category else "", category.label_km if category else "",
            figures.received, *(figures.by_status[s] for s in REPORT_STATUSES), figures.open,
            _round(figures.ack_median_days), figures.acknowledged, _round(figures.resolve_median_days),
            figures.by_status["resolved"],
        ])
    return _csv_response(STATISTICS_COLUMNS, rows, _file_name("statistics", filters, as_of))


WEEKLY_COLUMNS = ("week_start", "city_code", "city_en", "city_km", "khan_code", "khan_en", "khan_km",
                  "category_group", "category_en", "category_km", "status", "received")


@staff_blp.get("/dashboard/weekly.csv", endpoint="dashboard_weekly_csv")
@require_staff_role(*READER_ROLES)
def weekly_csv() -> Response:
    """The weekly counts behind the chart, by category and current status (weeks begin on Monday, Phnom Penh time)."""
    filters = read_filters()
    session = get_session()
    as_of = sq.refreshed_at(session)
    scope = filters.scope()
    first = sq.first_week(as_of, scope.days) if as_of else None
    labels = {c.code: c for c in queries.form_categories(session) if c.parent_code is None}
    city, khan = filters.city, filters.khan
    rows = []
    for week, grp, status, n in sq.weekly(session, scope, first):
        category = labels.get(grp)
        rows.append([
            week.isoformat(), city.code if city else "all", city.name_en if city else "",
            city.name_km if city else "", khan.code if khan else "", khan.name_en if khan else "",
            khan.name_km if khan else "", grp, category.label_en if category else "",
            category.label_km if category else "", status, n,
        ])
    return _csv_response(WEEKLY_COLUMNS, rows, _file_name("weekly", filters, as_of))
