"""Duplicate suggestions and confirmations, over HTTP against real PostGIS (rule: ``geo.duplicates``).

Points are placed with ``ST_Project`` on the spheroid and each distance is
checked with ``ST_Distance`` on geography, so the 249 m / 251 m boundary is
exact. (A flat ``d / 111_320`` degrees north would be 0.6 % short at Phnom
Penh's latitude: 251 m would land at 249.4 m, inside the radius.)
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from geo.duplicates import DuplicateRule, is_duplicate_candidate
from service import queries
from service.intake import add_note
from service.models import Report, User
from service.seed import load_categories
from tests.conftest import auth

BASE = (104.9282, 11.5625)  # Doun Penh, Phnom Penh (the report_body fixture's point)
SUGGESTION_KEYS = {"reference", "status", "distance_m", "url"}


def offset(connection, metres: float, azimuth_deg: float = 0.0, base: tuple[float, float] = BASE) -> list[float]:
    """The point ``metres`` from ``base`` along a geodesic at ``azimuth_deg`` (0 = north), checked both ways."""
    lon, lat = connection.execute(text(
        "SELECT ST_X(p::geometry), ST_Y(p::geometry) FROM "
        "ST_Project(ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography, :d, radians(:az)) AS p"),
        {"lon": base[0], "lat": base[1], "d": metres, "az": azimuth_deg}).one()
    assert distance(connection, (lon, lat), base) == pytest.approx(metres, abs=0.01)
    return [lon, lat]


def distance(connection, a: tuple[float, float] | list[float], b: tuple[float, float] | list[float]) -> float:
    return connection.execute(text(
        "SELECT ST_Distance(ST_SetSRID(ST_MakePoint(:ax, :ay), 4326)::geography, "
        "ST_SetSRID(ST_MakePoint(:bx, :by), 4326)::geography)"),
        {"ax": a[0], "ay": a[1], "bx": b[0], "by": b[1]}).scalar_one()


def create(client, report_body, coordinates, **changes) -> dict:
    response = client.post("/api/v1/reports", json=report_body(
        location={"type": "Point", "coordinates": list(coordinates)}, **changes))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def suggested(client, report_body, coordinates=BASE, **changes) -> list[dict]:
    """Post a new report and return the references it was offered, checking the shape on the way."""
    suggestions = create(client, report_body, coordinates, **changes)["suggestions"]
    for s in suggestions:
        assert set(s) == SUGGESTION_KEYS
        assert s["url"] == f"/r/{s['reference']}"
    return suggestions


def refs(suggestions: list[dict]) -> list[str]:
    return [s["reference"] for s in suggestions]


def set_status(connection, report_id: str, status: str, *, days_ago: float, old: str = "new") -> None:
    """Move a report to ``status`` as a moderator would have ``days_ago`` days ago (history is append-only)."""
    connection.execute(text(
        "UPDATE reports SET status = :s, version = version + 1, updated_at = now(), "
        "closed_at = CASE WHEN :closed THEN now() - make_interval(secs => :secs) END "
        "WHERE id = :id"), {"s": status, "id": report_id, "secs": days_ago * 86400,
                            "closed": status in ("resolved", "rejected")})
    connection.execute(text(
        "INSERT INTO report_events (report_id, at, actor_role, old_status, new_status) "
        "VALUES (:id, now() - make_interval(secs => :secs), 'moderator', :old, :s)"),
        {"id": report_id, "secs": days_ago * 86400, "old": old, "s": status})


def mark_duplicate(client, make_token, report: dict, original: dict) -> dict:
    token = make_token("moderator")
    version = client.get(f"/api/v1/reports/{report['id']}").get_json()["version"]
    response = client.patch(f"/api/v1/reports/{report['id']}/status", headers=auth(token),
                            json={"status": "duplicate", "duplicate_of": original["reference"], "version": version})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# --- the radius -------------------------------------------------------------------------------------------------

def test_249_metres_is_suggested_and_251_is_not(client, report_body, connection):
    inside = create(client, report_body, offset(connection, 249))
    outside = create(client, report_body, offset(connection, 251, 90))
    suggestions = suggested(client, report_body)
    assert refs(suggestions) == [inside["reference"]]
    assert suggestions[0]["distance_m"] == 249
    assert suggestions[0]["status"] == "new"
    assert outside["reference"] not in refs(suggestions)


def test_a_category_radius_is_honoured(client, report_body, connection):
    # flooding sets 500 m in sample_data/categories.json; its subtypes inherit it.
    radius = "SELECT duplicate_radius_m FROM categories WHERE code = :code"
    assert connection.scalar(text(radius), {"code": "flooding.blocked_drain"}) == 500
    assert connection.scalar(text(radius), {"code": "waste.burning"}) == 250
    drain = create(client, report_body, offset(connection, 450), category="flooding.blocked_drain")
    create(client, report_body, offset(connection, 510, 90), category="flooding.blocked_drain")
    burning = create(client, report_body, offset(connection, 450), category="waste.burning")
    probe = suggested(client, report_body, category="flooding.blocked_drain")
    assert refs(probe) == [drain["reference"]]
    assert probe[0]["distance_m"] == 450
    assert burning["reference"] not in refs(suggested(client, report_body, category="waste.burning"))

    connection.execute(text("UPDATE categories SET duplicate_radius_m = 100 WHERE code = 'flooding.blocked_drain'"))
    near = create(client, report_body, offset(connection, 99, 180), category="flooding.blocked_drain")
    found = refs(suggested(client, report_body, category="flooding.blocked_drain"))
    assert near["reference"] in found and drain["reference"] not in found


def test_radius_must_be_from_1_to_5000_metres(connection):
    for bad in (0, 5001, -250):
        with pytest.raises(IntegrityError, match="categories_duplicate_radius_check"):
            with connection.begin_nested():
                connection.execute(text("UPDATE categories SET duplicate_radius_m = :r WHERE code = 'waste'"),
                                   {"r": bad})


def test_other_category_is_not_suggested(client, report_body, connection):
    same = create(client, report_body, offset(connection, 40), category="waste.burning")
    create(client, report_body, offset(connection, 5), category="waste.illegal_dumping")
    create(client, report_body, offset(connection, 5), category="waste")  # the group is not its subtypes
    assert refs(suggested(client, report_body, category="waste.burning")) == [same["reference"]]


# --- which statuses count ---------------------------------------------------------------------------------------

def test_open_statuses_count(client, report_body, connection):
    made = {}
    for i, status in enumerate(("new", "acknowledged", "in_progress")):
        made[status] = create(client, report_body, offset(connection, 20 + 10 * i))
        if status != "new":
            set_status(connection, made[status]["id"], status, days_ago=400)
    suggestions = suggested(client, report_body)
    assert [(s["reference"], s["status"]) for s in suggestions] == [
        (made[s]["reference"], s) for s in ("new", "acknowledged", "in_progress")]


def test_resolved_29_days_ago_is_suggested_but_not_31(client, report_body, connection):
    recent = create(client, report_body, offset(connection, 30))
    old = create(client, report_body, offset(connection, 20))
    set_status(connection, recent["id"], "resolved", days_ago=29)
    set_status(connection, old["id"], "resolved", days_ago=31)
    suggestions = suggested(client, report_body)
    assert refs(suggestions) == [recent["reference"]]
    assert suggestions[0]["status"] == "resolved"


def test_resolution_time_is_the_event_not_a_later_note(client, report_body, connection):
    old = create(client, report_body, offset(connection, 20))
    set_status(connection, old["id"], "resolved", days_ago=40)
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    moderator = User(username="note-taker", role="moderator")
    session.add(moderator)
    session.flush()
    report = session.get(Report, uuid.UUID(old["id"]))
    assert report is not None
    add_note(session, report, note="Still fixed.", expected_version=report.version, actor=moderator,
             now=datetime.now(timezone.utc))
    session.commit()
    # The note is a "resolved → resolved" event today and bumps updated_at, but the report became resolved 40 days ago.
    assert connection.scalar(text("SELECT count(*) FROM report_events WHERE report_id = :id AND new_status = 'resolved' "
                                  "AND at > now() - interval '1 day'"), {"id": old["id"]}) == 1
    assert suggested(client, report_body) == []


def test_resolved_again_recently_counts(client, report_body, connection):
    report = create(client, report_body, offset(connection, 20))
    set_status(connection, report["id"], "resolved", days_ago=90)
    set_status(connection, report["id"], "in_progress", days_ago=60, old="resolved")
    set_status(connection, report["id"], "resolved", days_ago=3, old="in_progress")
    assert refs(suggested(client, report_body)) == [report["reference"]]


def test_rejected_duplicate_and_hidden_are_not_suggested(client, report_body, connection, make_token):
    original = create(client, report_body, offset(connection, 100))
    rejected = create(client, report_body, offset(connection, 10))
    duplicate = create(client, report_body, offset(connection, 20))
    hidden = create(client, report_body, offset(connection, 30))
    set_status(connection, rejected["id"], "rejected", days_ago=1)
    mark_duplicate(client, make_token, duplicate, original)
    connection.execute(text("UPDATE reports SET hidden = true WHERE id = :id"), {"id": hidden["id"]})
    assert refs(suggested(client, report_body)) == [original["reference"]]


def test_a_report_never_suggests_itself_and_a_resend_gets_the_same_suggestions(client, report_body, connection):
    other = create(client, report_body, offset(connection, 60))
    client_id = str(uuid.uuid4())
    first = client.post("/api/v1/reports", json=report_body(client_id=client_id))
    again = client.post("/api/v1/reports", json=report_body(client_id=client_id))
    assert first.status_code == 201 and again.status_code == 200
    assert again.get_json()["replayed"] is True
    assert first.get_json()["suggestions"] == again.get_json()["suggestions"]
    assert refs(again.get_json()["suggestions"]) == [other["reference"]]


# --- order and count --------------------------------------------------------------------------------------------

def test_nearest_first_and_at_most_five(client, report_body, connection):
    placed = [(206, 0), (30, 135), (205, 90), (120, 270), (10, 45), (180, 200), (60, 315)]  # scrambled
    by_distance = {metres: create(client, report_body, offset(connection, metres, azimuth))["reference"]
                   for metres, azimuth in placed}
    suggestions = suggested(client, report_body)
    assert refs(suggestions) == [by_distance[m] for m in (10, 30, 60, 120, 180)]
    assert [s["distance_m"] for s in suggestions] == [10, 30, 60, 120, 180]

    # In metres, not degrees: 205 m east comes before 206 m north, though a degree of
    # longitude is shorter here, so the east point is further away in degrees.
    everything = queries.duplicate_candidates(connection, category_code="waste.overflowing_bin", lon=BASE[0],
                                              lat=BASE[1], exclude_id=None, now=datetime.now(timezone.utc), limit=20)
    order = [r.reference for r in everything if r.distance_m > 0]  # leave out the probe at BASE
    assert order == [by_distance[m] for m in (10, 30, 60, 120, 180, 205, 206)]
    east, north = offset(connection, 205, 90), offset(connection, 206, 0)
    assert abs(east[0] - BASE[0]) > abs(north[1] - BASE[1])


def test_no_suggestions_is_an_empty_list(client, report_body):
    assert create(client, report_body, BASE)["suggestions"] == []


# --- privacy ----------------------------------------------------------------------------------------------------

def test_suggestions_carry_no_contact_data_or_ids(client, report_body, connection):
    contact = {"name": "Sokha Chan", "phone": "+855 12 345 678", "email": "sokha@example.org", "consent": True}
    first = create(client, report_body, offset(connection, 50), contact=contact)
    response = client.post("/api/v1/reports", json=report_body())
    assert response.status_code == 201
    body = response.get_json()
    assert refs(body["suggestions"]) == [first["reference"]]
    assert set(body["suggestions"][0]) == SUGGESTION_KEYS
    for secret in (b"Sokha", b"345 678", b"sokha@example.org", b"contact", first["id"].encode(),
                   first["tracking_token"].encode()):
        assert secret not in response.data, secret
    page = client.get(body["suggestions"][0]["url"])
    assert page.status_code == 200


# --- confirmations ----------------------------------------------------------------------------------------------

def test_confirmations_count_visible_duplicates(client, report_body, connection, make_token):
    original = create(client, report_body, BASE)
    assert client.get(f"/api/v1/reports/{original['reference']}").get_json()["confirmations"] == 0
    second = create(client, report_body, offset(connection, 15))
    third = create(client, report_body, offset(connection, 25))
    assert refs(create(client, report_body, offset(connection, 5))["suggestions"])[0] == original["reference"]

    marked = mark_duplicate(client, make_token, second, original)
    assert marked["duplicate_of"] == original["reference"] and marked["confirmations"] == 0
    mark_duplicate(client, make_token, third, second)  # points at the root, the original
    view = client.get(f"/api/v1/reports/{original['id']}").get_json()
    assert view["confirmations"] == 2
    assert view["status"] == "new"  # the original is kept as it was
    assert client.get(f"/api/v1/reports/{second['id']}").get_json()["status"] == "duplicate"  # and so is the copy

    connection.execute(text("UPDATE reports SET hidden = true WHERE id = :id"), {"id": third["id"]})
    assert client.get(f"/api/v1/reports/{original['id']}").get_json()["confirmations"] == 1
    listed = client.get("/api/v1/reports?limit=500").get_json()["items"]
    assert {item["reference"]: item["confirmations"] for item in listed}[original["reference"]] == 1


# --- the SQL and the pure rule agree ----------------------------------------------------------------------------

def test_sql_implements_the_pure_rule(client, report_body, connection):
    now = datetime.now(timezone.utc)
    cases = [  # (category, metres, azimuth, status, resolved days ago, hidden)
        ("waste.burning", 100, 0, "new", None, False),
        ("waste.burning", 249.5, 30, "acknowledged", None, False),
        ("waste.burning", 250.5, 60, "in_progress", None, False),
        ("waste.burning", 120, 90, "resolved", 29.9, False),
        ("waste.burning", 130, 120, "resolved", 30.1, False),
        ("waste.burning", 140, 150, "rejected", 2, False),
        ("waste.burning", 150, 180, "new", None, True),
        ("waste.missed_collection", 50, 210, "new", None, False),
        ("waste.burning", 0, 0, "new", None, False),
    ]
    expected, rows = set(), []
    for category, metres, azimuth, status, days_ago, hidden in cases:
        point = offset(connection, metres, azimuth)
        made = create(client, report_body, point, category=category)
        if status != "new":
            set_status(connection, made["id"], status, days_ago=days_ago or 1)
        if hidden:
            connection.execute(text("UPDATE reports SET hidden = true WHERE id = :id"), {"id": made["id"]})
        resolved_at = now - timedelta(days=days_ago) if status == "resolved" else None
        if is_duplicate_candidate(report_category="waste.burning", candidate_category=category,
                                  distance_m=distance(connection, point, BASE), status=status,
                                  resolved_at=resolved_at, now=now, hidden=hidden, rule=DuplicateRule()):
            expected.add(made["reference"])
        rows.append(made)
    found = queries.duplicate_candidates(connection, category_code="waste.burning", lon=BASE[0], lat=BASE[1],
                                         exclude_id=None, now=now, limit=50)
    assert {r.reference for r in found} == expected
    assert len(expected) == 4  # the test exercises both sides of the rule
    assert [r.distance_m for r in found] == sorted(r.distance_m for r in found)


# --- the index --------------------------------------------------------------------------------------------------

def test_the_search_is_served_by_the_geography_index(connection):
    """Many reports of one category across the city: the plan must use the index on location::geography."""
    connection.execute(text("""
        INSERT INTO reports (id, reference, category_code, location, city_id, source, observed_at, payload_sha256)
        SELECT gen_random_uuid(), 'IX-' || g, 'waste.burning',
               ST_SetSRID(ST_MakePoint(104.85 + random() * 0.1, 11.5 + random() * 0.1), 4326),
               (SELECT id FROM areas WHERE code = 'PP'), 'seed', now(), md5(g::text)
        FROM generate_series(1, 5000) AS g"""))
    connection.execute(text("ANALYZE reports"))
    plans: list[str] = []

    def explain(conn, cursor, statement, parameters, context, executemany):
        if "ST_DWithin" in statement:
            statement = "EXPLAIN " + statement
        return statement, parameters

    event.listen(connection, "before_cursor_execute", explain, retval=True)
    try:
        plans = [row[0] for row in queries.duplicate_candidates(
            connection, category_code="waste.burning", lon=BASE[0], lat=BASE[1], exclude_id=None,
            now=datetime.now(timezone.utc))]
    finally:
        event.remove(connection, "before_cursor_execute", explain)
    plan = "\n".join(plans)
    assert "reports_location_geography_gist" in plan, plan
    assert "Seq Scan on reports" not in plan, plan


# --- loading radii from categories.json -------------------------------------------------------------------------

def _write_categories(tmp_path, subtypes: list[dict], **group: object) -> None:
    top = {"code": "waste", "icon": "trash", "label_en": "Waste", "label_km": "សំរាម", **group, "subtypes": subtypes}
    (tmp_path / "categories.json").write_text(json.dumps({"categories": [top]}, ensure_ascii=False), encoding="utf-8")


def test_seed_loads_radii_subtypes_inherit_and_absent_keeps_stored(connection, tmp_path):
    def radii() -> dict[str, int]:
        return dict(connection.execute(text("SELECT code, duplicate_radius_m FROM categories "
                                            "WHERE code LIKE 'waste%' ORDER BY code")).all())

    sub = {"label_en": "x", "label_km": "x"}
    _write_categories(tmp_path, [{**sub, "code": "waste.burning"},
                                 {**sub, "code": "waste.illegal_dumping", "duplicate_radius_m": 120},
                                 {**sub, "code": "waste.test_added"}], duplicate_radius_m=400)
    load_categories(connection, tmp_path)
    assert {k: v for k, v in radii().items() if k in ("waste", "waste.burning", "waste.illegal_dumping",
                                                      "waste.test_added")} == {
        "waste": 400, "waste.burning": 400, "waste.illegal_dumping": 120, "waste.test_added": 400}

    _write_categories(tmp_path, [{**sub, "code": "waste.burning"}, {**sub, "code": "waste.illegal_dumping"},
                                 {**sub, "code": "waste.test_other"}])
    load_categories(connection, tmp_path)
    after = radii()
    assert (after["waste"], after["waste.burning"], after["waste.illegal_dumping"]) == (400, 400, 120)  # kept
    assert after["waste.test_other"] == 250  # new, so the column default


@pytest.mark.parametrize("bad", [0, 5001, "300", 12.5])
def test_seed_refuses_a_bad_radius_before_writing(connection, tmp_path, bad):
    _write_categories(tmp_path, [{"code": "waste.burning", "label_en": "x", "label_km": "x",
                                  "duplicate_radius_m": bad}])
    with pytest.raises(ValueError, match="waste.burning"):
        load_categories(connection, tmp_path)
    assert connection.scalar(text("SELECT label_en FROM categories WHERE code = 'waste.burning'")) == "Waste burning"


def test_marking_a_duplicate_puts_the_original_in_the_change_feed(client, report_body, make_token, connection):
    """Devices keep reports by id: the original's new confirmations count must reach them too."""
    original = create(client, report_body, BASE)
    copy = create(client, report_body, BASE)

    def changes(report: dict) -> int:
        return connection.execute(text("SELECT count(*) FROM changes WHERE report_id = :id"),
                                  {"id": report["id"]}).scalar_one()

    before = changes(original)
    mark_duplicate(client, make_token, copy, original)
    assert changes(original) == before + 1
    assert client.get(f"/api/v1/reports/{original['id']}").get_json()["confirmations"] == 1
