"""The staff dashboard: who may see it, exact figures from the rollups, Khmer, bad filters, CSV, and its charts.

Reports with known received, acknowledged and closed times are written
straight into the table, the rollups are refreshed with the real
``service.rollup.refresh`` (``REFRESH MATERIALIZED VIEW CONCURRENTLY`` runs
inside the test's transaction, which is rolled back), and the page and the
CSV must show exactly the counts and medians worked out by hand below.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import uuid
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import text

from service import charts, rollup
from service.palette import CATEGORY_COLOURS, STATUS_COLOURS
from service.models import REPORT_STATUSES
from tests import test_staff
from tests.test_staff import PASSWORD, client_as, fresh_token

make_user = test_staff.make_user  # the staff tests' fixture: an account with a password

ROLES = ("anonymous", "field_worker", "moderator", "planner", "admin")
READERS = ("moderator", "planner", "admin")
PAGES = ("/staff/dashboard", "/staff/dashboard/statistics.csv", "/staff/dashboard/weekly.csv")
ROOT = Path(__file__).resolve().parent.parent
_numbers = itertools.count(1)

# The known data set: (sangkat, category, status, received days ago, acknowledged after, closed after, hidden).
PHSAR_CHAS = "PP-doun-penh-phsar-chas"
VOAT_PHNUM = "PP-doun-penh-voat-phnum"
OLYMPIC = "PP-chamkar-mon-olympic"
SV_BEI = "SV-preah-sihanouk-bei"
KNOWN = [
    (PHSAR_CHAS, "waste.overflowing_bin", "resolved", 5, 1, 4, False),
    (PHSAR_CHAS, "waste.burning", "resolved", 10, 3, 10, False),
    (VOAT_PHNUM, "flooding.blocked_drain", "acknowledged", 20, 0.5, None, False),
    (PHSAR_CHAS, "flooding.flooded_road", "new", 2, None, None, False),
    (VOAT_PHNUM, "waste.illegal_dumping", "rejected", 40, None, 1, False),
    (PHSAR_CHAS, "waste.overflowing_bin", "new", 3, None, None, True),  # hidden: never counted
    (OLYMPIC, "street.pothole", "resolved", 100, 4, 30, False),
    (OLYMPIC, "street.pothole", "in_progress", 15, 5, None, False),
    (OLYMPIC, "water.leak", "duplicate", 6, None, 0.2, False),  # a copy of the pothole above
    (SV_BEI, "water.no_supply", "new", 400, None, None, False),
]


def insert_report(connection, commune: str, category: str, status: str, *, received: str,
                  acknowledged_after: float | None = None, closed_after: float | None = None, hidden: bool = False,
                  duplicate_of: uuid.UUID | None = None) -> uuid.UUID:
    """One report in a sangkat (at a point inside it), ``received`` being an SQL timestamptz expression."""
    report_id = uuid.uuid4()
    connection.execute(text(f"""
        INSERT INTO reports (id, reference, category_code, location, city_id, district_id, commune_id, status,
                             source, observed_at, received_at, acknowledged_at, closed_at, payload_sha256, hidden,
                             duplicate_of)
        SELECT :id, :ref, :category, ST_PointOnSurface(c.geom), d.parent_id, d.id, c.id, :status, 'seed',
               t.at, t.at, t.at + make_interval(secs => :ack * 86400), t.at + make_interval(secs => :closed * 86400),
               'test', :hidden, :duplicate_of
        FROM areas c JOIN areas d ON d.id = c.parent_id CROSS JOIN (SELECT {received} AS at) t
        WHERE c.code = :commune"""),
        {"id": report_id, "ref": f"TD-{next(_numbers)}", "category": category, "status": status,
         "ack": acknowledged_after, "closed": closed_after, "hidden": hidden, "duplicate_of": duplicate_of,
         "commune": commune})
    return report_id


@pytest.fixture()
def known(connection):
    """The known reports, then a refresh of every rollup in the test's transaction."""
    assert not connection.execute(text("SELECT EXISTS (SELECT 1 FROM reports)")).scalar(), \
        "the session database must hold no committed reports"
    ids = []
    for commune, category, status, days_ago, ack, closed, hidden in KNOWN:
        ids.append(insert_report(connection, commune, category, status,
                                 received=f"now() - interval '{days_ago} days'", acknowledged_after=ack,
                                 closed_after=closed, hidden=hidden,
                                 duplicate_of=ids[7] if status == "duplicate" else None))
    rollup.refresh(connection)
    return ids


def signed_in(client, make_user, role: str = "planner"):
    return client_as(client, make_user, role)


# --- reading the page -------------------------------------------------------------------------------------------

class _Cells(HTMLParser):
    """The cell texts of each row of the table with a given class, and the <dt>/<dd> pairs of the headline."""

    def __init__(self, table_class: str) -> None:
        super().__init__()
        self.table_class, self.depth, self.rows, self.cell = table_class, 0, [], None
        self.headline: dict[str, str] = {}
        self.term: str | None = None
        self.in_headline = False
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if self.hidden or "visually-hidden" in classes:
            self.hidden += tag != "input"
            return
        if tag == "table" and self.table_class in classes:
            self.depth = 1
        elif tag == "dl" and "headline" in classes:
            self.in_headline = True
        elif tag == "tr" and self.depth:
            self.rows.append([])
        elif tag in ("td", "th", "dt", "dd") and (self.depth or self.in_headline):
            self.cell = ""

    def handle_endtag(self, tag):
        if self.hidden:
            self.hidden -= 1
            return
        if tag == "table":
            self.depth = 0
        elif tag == "dl":
            self.in_headline = False
        elif tag in ("td", "th") and self.depth and self.cell is not None:
            self.rows[-1].append(" ".join(self.cell.split()))
            self.cell = None
        elif tag in ("dt", "dd") and self.in_headline and self.cell is not None:
            if tag == "dt":
                self.term = " ".join(self.cell.split())
            else:
                self.headline[self.term or ""] = " ".join(self.cell.split())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None and not self.hidden:
            self.cell += data


def area_table(html: str) -> dict[str, list[str]]:
    """Rows of the per-khan (or per-sangkat) table by their first cell, without the header."""
    parser = _Cells("areas")
    parser.feed(html)
    return {row[0]: row[1:] for row in parser.rows[1:]}


def headline(html: str) -> dict[str, str]:
    parser = _Cells("areas")
    parser.feed(html)
    return parser.headline


def csv_rows(response) -> list[dict[str, str]]:
    assert response.data.startswith(b"\xef\xbb\xbf"), "the CSV must begin with a UTF-8 byte-order mark"
    return list(csv.DictReader(io.StringIO(response.data.decode("utf-8-sig"))))


# --- who may see it ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", PAGES)
def test_readers_see_the_dashboard_others_do_not(client, make_user, role, page):
    client_as(client, make_user, role)
    response = client.get(page)
    if role == "anonymous":
        assert response.status_code == 303
        assert response.headers["Location"].startswith(f"/staff/login?next={page}")
    elif role == "field_worker":
        assert response.status_code == 403
        assert response.mimetype == "text/html"
        assert "Your role may not use this page" in response.get_data(as_text=True)
    else:
        assert response.status_code == 200
        assert response.mimetype == ("text/html" if page == PAGES[0] else "text/csv")
        assert response.headers["Cache-Control"] == "no-store"


def test_public_address_redirects_to_the_staff_page_with_its_filters(client, make_user):
    response = client.get("/dashboard?area=PP&period=30d")
    assert response.status_code == 302
    assert response.headers["Location"] == "/staff/dashboard?area=PP&period=30d"
    # The session cookie is scoped to /staff, so only the staff address can see who is signed in.
    signed_in(client, make_user)
    cookie = client.get_cookie("session", path="/staff")
    assert cookie is not None and cookie.path == "/staff"
    assert client.get(response.headers["Location"]).status_code == 200


def test_sign_in_leads_back_to_the_dashboard_with_its_filters(client, make_user):
    asked = client.get("/staff/dashboard?area=PP&period=12m")
    target = asked.headers["Location"]
    username = make_user("planner")
    response = client.post(target, data={"csrf_token": fresh_token(client), "username": username,
                                         "password": PASSWORD})
    assert response.status_code == 303
    assert response.headers["Location"] == "/staff/dashboard?area=PP&period=12m"


# --- the figures ------------------------------------------------------------------------------------------------

def test_city_figures_for_30_days_are_exact(client, make_user, known):
    signed_in(client, make_user)
    html = client.get("/staff/dashboard?area=PP&period=30d").get_data(as_text=True)
    # Received in 30 days in Phnom Penh (the hidden one never counts): 1, 2, 3, 4 in Doun Penh, 8, 9 in Chamkar Mon.
    # Acknowledged after 1, 3, 0.5 and 5 days: median 2.0, not over the 2-day target. Fixed after 4 and 10: 7.0.
    assert headline(html) == {"Reports received": "6", "Still open": "3", "Fixed": "2",
                              "Median days to acknowledge": "2.0", "Median days to fix": "7.0"}
    rows = area_table(html)
    assert rows["Doun Penh"] == ["4", "2", "2", "0", "0", "1.0", "7.0"]
    assert rows["Chamkar Mon"] == ["2", "1", "0", "0", "1", "5.0 ▲", "—"]  # 5 days: over the target
    assert rows["Total"] == ["6", "3", "2", "0", "1", "2.0", "7.0"]
    assert set(rows) == {"Doun Penh", "Chamkar Mon", "Total"}  # khans without reports are not rows


def test_longer_periods_add_older_reports(client, make_user, known):
    signed_in(client, make_user)
    rows = area_table(client.get("/staff/dashboard?area=PP&period=90d").get_data(as_text=True))
    assert rows["Doun Penh"][:4] == ["5", "2", "2", "1"]  # the rejected report of 40 days ago
    year = client.get("/staff/dashboard?area=PP&period=12m").get_data(as_text=True)
    rows = area_table(year)
    # The pothole of 100 days ago: acknowledged after 4 and 5 days (4.5), fixed after 30 (over the 14-day target).
    assert rows["Chamkar Mon"] == ["3", "1", "1", "0", "1", "4.5 ▲", "30.0 ▲"]
    everywhere = area_table(client.get("/staff/dashboard?period=all").get_data(as_text=True))
    assert everywhere["Total"][0] == "9"
    assert everywhere["Preah Sihanouk Preah Sihanouk"][0] == "1"  # the khan, then its city's name


def test_a_khan_shows_its_sangkats_and_a_category_narrows_everything(client, make_user, known):
    signed_in(client, make_user)
    html = client.get("/staff/dashboard?area=PP-doun-penh&period=30d").get_data(as_text=True)
    rows = area_table(html)
    assert rows["Phsar Chas"] == ["3", "1", "2", "0", "0", "2.0", "7.0"]
    assert rows["Voat Phnum"] == ["1", "1", "0", "0", "0", "0.5", "—"]
    assert 'href="/staff/dashboard?area=PP&amp;period=30d"' in html  # the way back up to the city
    waste = client.get("/staff/dashboard?area=PP-doun-penh&period=90d&group=waste").get_data(as_text=True)
    assert headline(waste) == {"Reports received": "3", "Still open": "0", "Fixed": "2",
                               "Median days to acknowledge": "2.0", "Median days to fix": "7.0"}
    assert area_table(waste)["Voat Phnum"] == ["1", "0", "0", "1", "0", "—", "—"]


def test_table_sorts_by_a_column(client, make_user, known):
    signed_in(client, make_user)
    by_name = list(area_table(client.get("/staff/dashboard?area=PP&period=12m").get_data(as_text=True)))
    assert by_name[:2] == ["Chamkar Mon", "Doun Penh"]
    by_received = client.get("/staff/dashboard?area=PP&period=12m&sort=received").get_data(as_text=True)
    assert list(area_table(by_received))[:2] == ["Doun Penh", "Chamkar Mon"]
    assert 'aria-sort="descending"' in by_received


def test_charts_carry_the_figures(client, make_user, known):
    signed_in(client, make_user)
    html = client.get("/staff/dashboard?area=PP&period=30d").get_data(as_text=True)
    weekly = re.search(r'<svg class="chart"[^>]*aria-label="Reports received per week, by category".*?</svg>', html,
                       re.S)
    assert weekly, "no weekly chart"
    assert f'fill="{CATEGORY_COLOURS["waste"]}"' in weekly.group(0)
    assert "6 reports from the week of" in weekly.group(0)  # its <desc>
    status = re.search(r'<svg class="chart"[^>]*aria-label="Reports received in the period, by status now".*?</svg>',
                       html, re.S)
    assert status, "no status chart"
    for label, figure in (("New", "1 (17%)"), ("Fixed", "2 (33%)"), ("Already reported", "1 (17%)")):
        assert f"<title>{label}: {figure}</title>" in status.group(0)
    # The numbers behind the weekly chart add up to what the period holds here (no report lies in its
    # first week before the 30 days).
    parser = _Cells("weeks")
    parser.feed(html)
    header, *weeks = parser.rows
    assert header[-1] == "Total" and len(weeks) >= 5
    assert sum(int(row[-1]) for row in weeks) == 6


def test_the_page_and_the_csv_read_only_the_rollups(client, make_user, connection, known):
    """No statement of a dashboard request reads the reports table: its scan counters in this transaction do not
    move (and they do for a page that reads it, so the check can fail)."""
    signed_in(client, make_user)

    def scans() -> int:
        return connection.execute(text(
            "SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_xact_user_tables "
            "WHERE relname = 'reports'")).scalar_one()

    for url in ("/staff/dashboard", "/staff/dashboard?area=PP-doun-penh&period=all&group=waste",
                "/staff/dashboard/statistics.csv?area=PP", "/staff/dashboard/weekly.csv?period=12m"):
        before = scans()
        assert client.get(url).status_code == 200
        assert scans() == before, url
        rollups = connection.execute(text(
            "SELECT COALESCE(sum(seq_scan), 0) + COALESCE(sum(idx_scan), 0) FROM pg_stat_xact_user_tables "
            "WHERE relname IN ('report_sla_stats', 'report_weekly_stats')")).scalar_one()
        assert rollups > 0
    before = scans()
    client.get("/staff/reports")
    assert scans() > before, "the scan counters did not see a page that reads reports"


def test_figures_as_of_the_last_refresh(client, make_user, connection, known):
    signed_in(client, make_user)
    refreshed = connection.execute(text("SELECT now()")).scalar_one()  # the refresh ran in this transaction
    html = client.get("/staff/dashboard").get_data(as_text=True)
    shown = re.search(r'Figures as of <time datetime="([^"]+)">([^<]+)</time>, Phnom Penh time', html)
    assert shown, html[:2000]
    assert datetime.fromisoformat(shown.group(1)) == refreshed
    connection.execute(text("UPDATE rollup_state SET refreshed_at = '2026-03-01 03:04:00+00' "
                            "WHERE name IN ('report_weekly_stats', 'report_sla_stats')"))
    html = client.get("/staff/dashboard").get_data(as_text=True)
    assert '<time datetime="2026-03-01T03:04:00+00:00">1 Mar 2026, 10:04</time>' in html  # UTC+7
    # A report after the refresh is not counted until the next one, and the page says so by its time.
    insert_report(connection, PHSAR_CHAS, "waste.burning", "new", received="now()")
    assert headline(client.get("/staff/dashboard?period=30d").get_data(as_text=True))["Reports received"] == "6"
    rollup.refresh(connection)
    assert headline(client.get("/staff/dashboard?period=30d").get_data(as_text=True))["Reports received"] == "7"


def test_weeks_are_phnom_penh_weeks(client, make_user, connection):
    """Sunday 23:30 and Monday 00:30 in Phnom Penh are both Sunday in UTC, but in two different weeks here."""
    insert_report(connection, PHSAR_CHAS, "waste.burning", "new", received="'2025-03-09 23:30+07'::timestamptz")
    insert_report(connection, PHSAR_CHAS, "waste.burning", "new", received="'2025-03-10 00:30+07'::timestamptz")
    rollup.refresh(connection)
    signed_in(client, make_user)
    rows = csv_rows(client.get("/staff/dashboard/weekly.csv?period=all&area=PP"))
    assert [(r["week_start"], r["category_group"], r["status"], r["received"]) for r in rows] == [
        ("2025-03-03", "waste", "new", "1"), ("2025-03-10", "waste", "new", "1")]


def test_statistics_csv_matches_the_page(client, make_user, known):
    signed_in(client, make_user)
    response = client.get("/staff/dashboard/statistics.csv?area=PP&period=30d")
    assert response.headers["Content-Disposition"].startswith('attachment; filename="civicmap-statistics-PP-all-30d-')
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    rows = csv_rows(response)
    assert [(r["level"], r["area_code"]) for r in rows] == [
        ("city", "PP"), ("district", "PP-chamkar-mon"), ("district", "PP-doun-penh")]
    city, chamkar_mon, doun_penh = rows
    assert (city["received"], city["open"], city["resolved"], city["duplicate"]) == ("6", "3", "2", "1")
    assert (city["median_days_to_acknowledge"], city["acknowledged_count"]) == ("2.00", "4")
    assert (city["median_days_to_resolve"], city["resolved_count"]) == ("7.00", "2")
    assert [doun_penh[s] for s in REPORT_STATUSES] == ["1", "1", "0", "2", "0", "0"]
    assert chamkar_mon["median_days_to_resolve"] == ""  # nothing fixed: no median, not a zero
    assert (doun_penh["area_en"], doun_penh["area_km"], doun_penh["city_km"]) == ("Doun Penh", "ដូនពេញ", "ភ្នំពេញ")
    assert all(r["window_days"] == "30" and r["category_group"] == "all" for r in rows)


# --- Khmer ------------------------------------------------------------------------------------------------------

def test_khmer_page_and_csv_bytes(client, make_user, connection, known):
    signed_in(client, make_user)
    response = client.get("/staff/dashboard?area=PP&period=30d&lang=km")
    assert response.headers["Content-Language"] == "km"
    html = response.get_data(as_text=True)
    assert "<h1>ផ្ទាំងព័ត៌មានសង្ខេប</h1>" in html
    rows = area_table(html)
    assert rows["ដូនពេញ"][:3] == ["4", "2", "2"]  # the khan's Khmer name from cities.json
    assert "សំរាម" in html and "ទឹកលិច" in html  # the category groups' Khmer labels (legend, filter)
    assert "Reports received" not in html
    names = dict(connection.execute(text("SELECT code, name_km FROM areas WHERE code IN ('PP', 'PP-doun-penh')")).all())
    waste_km = connection.execute(text("SELECT label_km FROM categories WHERE code = 'waste'")).scalar_one()
    data = client.get("/staff/dashboard/statistics.csv?area=PP&period=30d&group=waste&lang=km").data
    assert names["PP-doun-penh"].encode("utf-8") in data and names["PP"].encode("utf-8") in data
    assert waste_km.encode("utf-8") in data
    rows = csv_rows(client.get("/staff/dashboard/statistics.csv?area=PP&period=30d&group=waste"))
    assert {r["category_km"] for r in rows} == {waste_km}
    assert {r["city_km"] for r in rows} == {names["PP"]}


# --- bad filters ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query, words", [
    ("period=7d", "The period must be one of: 30d, 90d, 12m, all."),
    ("area=NOWHERE", "There is no area NOWHERE."),
    ("area=PP-doun-penh-phsar-chas", "Choose a city or a khan"),
    ("group=fire", "There is no category group fire."),
    ("group=waste.burning", "There is no category group waste.burning."),
    ("sort=colour", "The table cannot be sorted by colour."),
    ("area=%3Cscript%3E", "There is no area &lt;script&gt;."),
])
@pytest.mark.parametrize("page", PAGES)
def test_bad_filters_get_a_400_page(client, make_user, query, words, page):
    signed_in(client, make_user)
    response = client.get(f"{page}?{query}")
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert words in response.get_data(as_text=True)


def test_unknown_parameters_are_ignored(client, make_user):
    signed_in(client, make_user)
    assert client.get("/staff/dashboard?colour=red&utm_source=mail").status_code == 200


def test_an_empty_database_gives_a_plain_page(client, make_user):
    signed_in(client, make_user)
    html = client.get("/staff/dashboard?period=30d").get_data(as_text=True)
    assert "No reports were received in this period here." in html
    assert '<svg class="chart"' not in html


# --- the chart and colour modules -------------------------------------------------------------------------------

def test_every_category_group_has_its_own_accessible_colour():
    groups = {c["code"] for c in json.loads((ROOT / "sample_data/categories.json").read_text())["categories"]}
    assert set(CATEGORY_COLOURS) == groups
    assert len(set(CATEGORY_COLOURS.values())) == len(CATEGORY_COLOURS)
    assert set(STATUS_COLOURS) == set(REPORT_STATUSES)

    def luminance(colour: str) -> float:
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    for colour in [*CATEGORY_COLOURS.values(), *STATUS_COLOURS.values()]:
        assert 1.05 / (luminance(colour) + 0.05) >= 3.0, f"{colour} has less than 3:1 contrast on white"


@pytest.mark.parametrize("top, expected", [(0, (1.0, 1.0)), (3, (3.0, 1.0)), (7, (8.0, 2.0)), (95, (100.0, 20.0)),
                                           (1234, (1250.0, 250.0)), (12_700, (15_000.0, 5_000.0))])
def test_axis_tops_are_round_numbers(top, expected):
    assert charts.nice_ceiling(top) == expected


def test_stacked_bars_escape_labels_and_stack_in_one_path_per_layer():
    svg = str(charts.stacked_bars(
        "c1", [charts.Series("Waste <b>", "#D55E00", [1, 0, 3]), charts.Series("ទឹកលិច", "#0072B2", [2, 2, 0])],
        column_labels=["w1", "w2", "w3"], ticks=[(0, "មករា")], title='A "title"', desc="d"))
    assert svg.count("<path ") == 2
    assert "Waste &lt;b&gt;" in svg and "<b>" not in svg
    assert 'aria-label="A &quot;title&quot;"' in svg and 'aria-describedby="c1-desc"' in svg
    assert "<title>w1: 3 (Waste &lt;b&gt; 1, ទឹកលិច 2)</title>" in svg
    assert ">មករា</text>" in svg
    assert "style=" not in svg  # the staff pages' CSP allows no inline style
    with pytest.raises(ValueError):
        charts.stacked_bars("c2", [charts.Series("a", "#000000", [1])], column_labels=["x", "y"], ticks=[],
                            title="t", desc="d")


def test_horizontal_bars_show_value_and_share():
    svg = str(charts.horizontal_bars("c3", [charts.Bar("New", 1, "#000000"), charts.Bar("Fixed", 3, "#111111")],
                                     title="t", desc="d"))
    assert "<title>New: 1 (25%)</title>" in svg and "<title>Fixed: 3 (75%)</title>" in svg
