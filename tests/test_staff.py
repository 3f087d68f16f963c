"""The staff pages: sign-in with a session and CSRF tokens, the triage queue, a report's record and the actions."""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import text

from service.auth import hash_password
from service.resources import staff as staff_module
from tests.conftest import auth

PASSWORD = "mekong-river-42"
ROLES = ("anonymous", "field_worker", "moderator", "planner", "admin")
READERS = ("moderator", "planner", "admin")
TRIAGERS = ("moderator", "admin")
CONTACT = {"name": "Sok Dara", "phone": "+855 12 345 678", "email": "dara@example.org", "consent": True}
CONFLICT = "Someone else changed this report first"


# --- helpers ----------------------------------------------------------------------------------------------------

@pytest.fixture()
def make_user(connection) -> Callable[..., str]:
    """Create an account with a password in the test database; returns its username."""
    counter = iter(range(1_000_000))

    def factory(role: str, *, active: bool = True, password: str | None = PASSWORD) -> str:
        username = f"staff-{role}-{next(counter)}"
        connection.execute(text("INSERT INTO users (username, role, password_hash, active) "
                                "VALUES (:u, :r, :p, :a)"),
                           {"u": username, "r": role, "p": hash_password(password) if password else None,
                            "a": active})
        return username

    return factory


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def fresh_token(client: FlaskClient, page: str = "/staff/login") -> str:
    """A real CSRF token of this client's session, read from a rendered page."""
    response = client.get(page)
    return csrf_from(response.get_data(as_text=True))


def login(client: FlaskClient, username: str, password: str = PASSWORD, **extra: str):
    token = fresh_token(client)
    return client.post("/staff/login", data={"csrf_token": token, "username": username, "password": password,
                                             **extra})


def client_as(client: FlaskClient, make_user, role: str) -> FlaskClient:
    if role != "anonymous":
        response = login(client, make_user(role))
        assert response.status_code == 303, response.get_data(as_text=True)
    return client


def token_for(client: FlaskClient) -> str:
    """A CSRF token for a signed-in client (any staff page has one: the sign-out form), or none for anonymous."""
    response = client.get("/staff/reports")
    if response.status_code in (302, 303):
        return ""
    return csrf_from(response.get_data(as_text=True))


def new_report(client: FlaskClient, body: dict) -> dict:
    response = client.post("/api/v1/reports", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def events(connection, reference: str) -> list[tuple]:
    return [tuple(r) for r in connection.execute(text(
        "SELECT e.old_status, e.new_status, e.note, e.actor_role FROM report_events e JOIN reports r "
        "ON r.id = e.report_id WHERE r.reference = :ref ORDER BY e.id"), {"ref": reference})]


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), (20, 120, 60)).save(out, "JPEG")
    return out.getvalue()


def action_data(action: str, other_reference: str) -> dict[str, object]:
    return {"acknowledge": {}, "start": {"note": "Crew booked for Friday"},
            "resolve": {"note": "Bin emptied"}, "reject": {"note": "Private land"},
            "duplicate": {"duplicate_of": other_reference}, "hide": {"note": "Insults"}}[action]


# --- the role matrix --------------------------------------------------------------------------------------------

PAGE_EXPECTATIONS = {"anonymous": 303, "field_worker": 403, "moderator": 200, "planner": 200, "admin": 200}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", ["queue", "detail", "photo"])
def test_role_matrix_pages(client, make_user, report_body, role, page):
    report = new_report(client, report_body())
    if page == "photo":
        stored = client.post(f"/api/v1/reports/{report['id']}/photos", headers={"X-Tracking-Token":
                                                                                 report["tracking_token"]},
                             data={"photo": (io.BytesIO(jpeg()), "a.jpg")}, content_type="multipart/form-data")
        assert stored.status_code == 201
        url = f"/staff/photos/{stored.get_json()[0]['sha256']}"
    else:
        url = {"queue": "/staff/reports", "detail": f"/staff/reports/{report['reference']}"}[page]
    client_as(client, make_user, role)
    response = client.get(url)
    assert response.status_code == PAGE_EXPECTATIONS[role]
    if role == "anonymous":
        assert response.headers["Location"].startswith("/staff/login?next=")
    elif role == "field_worker":
        assert "Your role may not use this page" in response.get_data(as_text=True)
        assert response.mimetype == "text/html"
    elif page == "photo":
        assert response.mimetype == "image/jpeg"
    else:
        assert report["reference"] in response.get_data(as_text=True)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", list(staff_module.ACTIONS))
def test_role_matrix_actions(client, connection, make_user, report_body, role, action):
    report = new_report(client, report_body())
    other = new_report(client, report_body(description="the same bin, again"))
    client_as(client, make_user, role)
    data = {"version": "1", "csrf_token": token_for(client), **action_data(action, other["reference"])}
    response = client.post(f"/staff/reports/{report['reference']}/{action}", data=data)
    changed = len(events(connection, report["reference"])) > 1
    if role == "anonymous":
        assert response.status_code == 303 and response.headers["Location"].startswith("/staff/login")
        assert not changed
    elif role in ("field_worker", "planner"):
        assert response.status_code == 403
        assert not changed
    else:
        assert response.status_code == 303, response.get_data(as_text=True)
        assert response.headers["Location"].startswith(f"/staff/reports/{report['reference']}?done={action}")
        assert changed


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix_logout(client, make_user, role):
    client_as(client, make_user, role)
    response = client.post("/staff/logout", data={"csrf_token": token_for(client)})
    assert response.status_code == 303 and response.headers["Location"].startswith("/staff/login")
    after = client.get("/staff/reports")
    assert after.status_code == 303  # signed out (or never signed in)


def test_planner_sees_the_record_but_no_action_forms(client, make_user, report_body):
    report = new_report(client, report_body(contact=CONTACT))
    client_as(client, make_user, "planner")
    html = client.get(f"/staff/reports/{report['reference']}").get_data(as_text=True)
    assert CONTACT["phone"] in html
    assert "/acknowledge" not in html and "/hide" not in html


def test_moderator_sees_the_action_forms_each_with_token_and_version(client, make_user, report_body):
    report = new_report(client, report_body())
    client_as(client, make_user, "moderator")
    html = client.get(f"/staff/reports/{report['reference']}").get_data(as_text=True)
    forms = re.findall(r'<form method="post" action="/staff/reports/[^"]+/(\w+)"(.*?)</form>', html, re.S)
    assert {name for name, _body in forms} == set(staff_module.ACTIONS)
    for _name, body in forms:
        assert 'name="csrf_token"' in body and 'name="version" value="1"' in body


# --- sign-in ----------------------------------------------------------------------------------------------------

def test_sign_in_and_the_session_cookie(client, make_user):
    response = login(client, make_user("moderator"))
    assert response.status_code == 303 and response.headers["Location"] == "/staff/reports"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/staff" in cookie
    assert "Secure" not in cookie  # development: plain http works
    page = client.get("/staff/reports")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store" and page.headers["X-Frame-Options"] == "DENY"


def test_production_cookies_are_secure(config, engine):
    from service.app import create_app

    app = create_app(dataclasses.replace(config, env="production"), engine=engine)
    assert app.config["SESSION_COOKIE_SECURE"] and app.config["REMEMBER_COOKIE_SECURE"]
    assert app.config["SESSION_COOKIE_HTTPONLY"] and app.config["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_wrong_password_and_unknown_user_look_the_same(client, make_user):
    username = make_user("moderator")
    wrong_password = login(client, username, "not-the-password")
    unknown_user = login(client, "nobody-by-this-name", PASSWORD)
    for response in (wrong_password, unknown_user):
        html = response.get_data(as_text=True)
        assert response.status_code == 401
        assert "The username or password is not right." in html
        assert "password is wrong" not in html.lower() and "no such user" not in html.lower()
        assert 'name="csrf_token"' in html  # the form again, ready to retry
    assert client.get("/staff/reports").status_code == 303  # still not signed in


def test_disabled_account_and_account_without_password_are_refused(client, make_user):
    disabled = login(client, make_user("moderator", active=False))
    assert disabled.status_code == 403 and "This account is disabled." in disabled.get_data(as_text=True)
    no_password = login(client, make_user("moderator", password=None), "")
    assert no_password.status_code == 401
    assert client.get("/staff/reports").status_code == 303


def test_disabling_or_changing_the_password_ends_the_session(client, connection, make_user):
    username = make_user("moderator")
    login(client, username)
    assert client.get("/staff/reports").status_code == 200
    connection.execute(text("UPDATE users SET password_hash = :p WHERE username = :u"),
                       {"p": hash_password("a-new-password"), "u": username})
    assert client.get("/staff/reports").status_code == 303
    login(client, username, "a-new-password")
    assert client.get("/staff/reports").status_code == 200
    connection.execute(text("UPDATE users SET active = false WHERE username = :u"), {"u": username})
    assert client.get("/staff/reports").status_code == 303


def test_sign_in_returns_to_the_page_asked_for_but_never_off_site(client, make_user):
    username = make_user("moderator")
    first = client.get("/staff/reports?status=all")
    assert first.headers["Location"] == "/staff/login?next=/staff/reports?status%3Dall"
    back = login(client, username, next="/staff/reports?status=all")
    assert back.headers["Location"] == "/staff/reports?status=all"
    client.post("/staff/logout", data={"csrf_token": token_for(client)})
    for evil in ("https://evil.example/staff/", "//evil.example/staff/", "/\\evil.example", "/api/v1/reports"):
        response = login(client, username, next=evil)
        assert response.headers["Location"] == "/staff/reports", evil
        client.post("/staff/logout", data={"csrf_token": token_for(client)})


def test_repeated_wrong_passwords_are_slowed_down(client, make_user):
    username = make_user("moderator")
    for _ in range(12):  # successful sign-ins do not count
        assert login(client, username).status_code == 303
        client.post("/staff/logout", data={"csrf_token": token_for(client)})
    statuses = [login(client, username, "guess-%d" % i).status_code for i in range(11)]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    assert "Too many attempts" in login(client, username).get_data(as_text=True)  # even the right password


# --- CSRF -------------------------------------------------------------------------------------------------------

def test_a_form_without_csrf_token_is_refused(client, connection, make_user, report_body):
    username = make_user("moderator")
    client.get("/staff/login")
    no_token = client.post("/staff/login", data={"username": username, "password": PASSWORD})
    assert no_token.status_code == 400 and no_token.mimetype == "text/html"
    assert "did not come from this site" in no_token.get_data(as_text=True)
    assert client.get("/staff/reports").status_code == 303

    report = new_report(client, report_body())
    login(client, username)
    refused = client.post(f"/staff/reports/{report['reference']}/acknowledge", data={"version": "1"})
    assert refused.status_code == 400 and "did not come from this site" in refused.get_data(as_text=True)
    forged = client.post(f"/staff/reports/{report['reference']}/acknowledge",
                         data={"version": "1", "csrf_token": "forged"})
    assert forged.status_code == 400
    assert len(events(connection, report["reference"])) == 1


def test_the_api_and_the_resident_form_need_no_csrf_token(client, report_body, make_token):
    report = new_report(client, report_body())
    changed = client.patch(f"/api/v1/reports/{report['id']}/status", headers=auth(make_token("moderator")),
                           json={"status": "acknowledged", "version": 1})
    assert changed.status_code == 200
    assert client.get("/report").status_code == 200


# --- actions ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("action,status,note", [
    ("acknowledge", "acknowledged", "We have seen it"),
    ("start", "in_progress", "Crew booked for Friday"),
    ("resolve", "resolved", "Bin emptied and cleaned"),
    ("reject", "rejected", "This is private land"),
    ("duplicate", "duplicate", "Already reported nearby"),
])
def test_each_action_is_an_event_on_the_public_page(client, connection, make_user, report_body, action, status,
                                                    note):
    original = new_report(client, report_body())
    report = new_report(client, report_body(description="again"))
    client_as(client, make_user, "moderator")
    data = {"version": "1", "note": note, "csrf_token": token_for(client)}
    if action == "duplicate":
        data["duplicate_of"] = original["reference"].lower()  # typed as people type it
    response = client.post(f"/staff/reports/{report['reference']}/{action}", data=data)
    assert response.status_code == 303
    assert events(connection, report["reference"])[-1] == ("new", status, note, "moderator")
    saved = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Saved." in saved
    public = client.get(f"/r/{report['reference']}").get_data(as_text=True)
    assert note in public and "City staff" in public
    assert client.get(f"/api/v1/reports/{report['reference']}").get_json()["status"] == status


def test_resolve_needs_a_note_and_keeps_an_after_photo(client, connection, make_user, report_body):
    report = new_report(client, report_body())
    client_as(client, make_user, "admin")
    url = f"/staff/reports/{report['reference']}/resolve"
    refused = client.post(url, data={"version": "1", "note": " ", "csrf_token": token_for(client)})
    assert refused.status_code == 422
    assert "a note is needed to resolve" in refused.get_data(as_text=True)
    assert len(events(connection, report["reference"])) == 1
    done = client.post(url, data={"version": "1", "note": "Cleared", "csrf_token": token_for(client),
                                  "photo": (io.BytesIO(jpeg()), "after.jpg")}, content_type="multipart/form-data")
    assert done.status_code == 303
    photos = client.get(f"/api/v1/reports/{report['reference']}").get_json()["photos"]
    assert len(photos) == 1
    assert photos[0]["url"] in client.get(f"/r/{report['reference']}").get_data(as_text=True)


def test_resolve_with_a_bad_photo_changes_nothing(client, connection, make_user, report_body):
    report = new_report(client, report_body())
    client_as(client, make_user, "moderator")
    response = client.post(f"/staff/reports/{report['reference']}/resolve",
                           data={"version": "1", "note": "Cleared", "csrf_token": token_for(client),
                                 "photo": (io.BytesIO(b"not a picture"), "x.jpg")},
                           content_type="multipart/form-data")
    assert response.status_code == 422 and "not a photo we can read" in response.get_data(as_text=True)
    assert len(events(connection, report["reference"])) == 1


@pytest.mark.parametrize("action", ["reject", "hide", "duplicate"])
def test_reason_or_original_is_required(client, connection, make_user, report_body, action):
    report = new_report(client, report_body())
    client_as(client, make_user, "moderator")
    response = client.post(f"/staff/reports/{report['reference']}/{action}",
                           data={"version": "1", "csrf_token": token_for(client)})
    assert response.status_code == 422
    assert 'role="alert"' in response.get_data(as_text=True)
    assert len(events(connection, report["reference"])) == 1


def test_duplicate_of_an_unknown_or_the_same_report_is_a_form_error(client, connection, make_user, report_body):
    report = new_report(client, report_body())
    client_as(client, make_user, "moderator")
    url = f"/staff/reports/{report['reference']}/duplicate"
    unknown = client.post(url, data={"version": "1", "duplicate_of": "PP-ZZZZZ", "csrf_token": token_for(client)})
    assert unknown.status_code == 422 and "There is no report PP-ZZZZZ" in unknown.get_data(as_text=True)
    itself = client.post(url, data={"version": "1", "duplicate_of": report["reference"],
                                    "csrf_token": token_for(client)})
    assert itself.status_code == 422 and "cannot duplicate itself" in itself.get_data(as_text=True)
    assert len(events(connection, report["reference"])) == 1


def test_a_stale_version_is_a_409_page_and_changes_nothing(client, connection, make_user, make_token, report_body):
    report = new_report(client, report_body())
    client_as(client, make_user, "moderator")
    page = client.get(f"/staff/reports/{report['reference']}").get_data(as_text=True)
    assert 'name="version" value="1"' in page
    token = csrf_from(page)
    # Another moderator acts first, through the API.
    other = client.patch(f"/api/v1/reports/{report['id']}/status", headers=auth(make_token("moderator")),
                         json={"status": "acknowledged", "note": "first", "version": 1})
    assert other.status_code == 200
    for action, extra in (("reject", {"note": "too late"}), ("hide", {"note": "too late"})):
        response = client.post(f"/staff/reports/{report['reference']}/{action}",
                               data={"version": "1", "csrf_token": token, **extra})
        html = response.get_data(as_text=True)
        assert response.status_code == 409 and response.mimetype == "text/html"
        assert CONFLICT in html
        assert f'href="/staff/reports/{report["reference"]}"' in html  # the reload link
    assert [e[1] for e in events(connection, report["reference"])] == ["new", "acknowledged"]
    assert connection.execute(text("SELECT hidden, version FROM reports WHERE reference = :r"),
                              {"r": report["reference"]}).one() == (False, 2)


def test_hide_removes_the_report_from_public_view(client, connection, make_user, report_body):
    report = new_report(client, report_body(description="rude words"))
    client_as(client, make_user, "moderator")
    response = client.post(f"/staff/reports/{report['reference']}/hide",
                           data={"version": "1", "note": "Insults a neighbour", "csrf_token": token_for(client)})
    assert response.status_code == 303
    assert client.get(f"/api/v1/reports/{report['reference']}").status_code == 404
    assert client.get(f"/r/{report['reference']}").status_code == 404
    assert report["reference"] not in str(client.get("/api/v1/reports").get_json())
    last = events(connection, report["reference"])[-1]
    assert last == ("new", "new", "Hidden as abuse: Insults a neighbour", "moderator")
    assert connection.execute(text("SELECT version FROM reports WHERE reference = :r"),
                              {"r": report["reference"]}).scalar() == 2
    staff_page = client.get(f"/staff/reports/{report['reference']}")
    assert staff_page.status_code == 200 and "Hidden from the public" in staff_page.get_data(as_text=True)
    queue = client.get("/staff/reports").get_data(as_text=True)
    assert report["reference"] in queue  # staff still see it


# --- the record: contact details are for staff only ------------------------------------------------------------

def test_contact_details_on_the_staff_page_never_on_the_public_page(client, make_user, report_body):
    report = new_report(client, report_body(contact=CONTACT))
    public = client.get(f"/r/{report['reference']}").get_data(as_text=True)
    api = client.get(f"/api/v1/reports/{report['reference']}").get_data(as_text=True)
    for value in (CONTACT["name"], CONTACT["phone"], CONTACT["email"]):
        assert value not in public and value not in api
    client_as(client, make_user, "moderator")
    staff_page = client.get(f"/staff/reports/{report['reference']}").get_data(as_text=True)
    for value in (CONTACT["name"], CONTACT["phone"], CONTACT["email"]):
        assert value in staff_page
    queue = client.get("/staff/reports").get_data(as_text=True)
    assert CONTACT["phone"] not in queue  # the list stays free of contact details


def test_detail_lists_duplicates_and_nearby_reports_with_distances(client, make_user, report_body):
    report = new_report(client, report_body())
    same_category = new_report(client, report_body(location={"type": "Point", "coordinates": [104.9292, 11.5625]}))
    other_category = new_report(client, report_body(category="street.pothole",
                                                    location={"type": "Point", "coordinates": [104.9300, 11.5630]}))
    far = new_report(client, report_body(location={"type": "Point", "coordinates": [104.9400, 11.5625]}))
    client_as(client, make_user, "planner")
    html = client.get(f"/staff/reports/{report['reference']}").get_data(as_text=True)
    dupes = html.split('id="dupes-h"')[1].split('id="nearby-h"')[0]
    nearby = html.split('id="nearby-h"')[1]
    assert same_category["reference"] in dupes and other_category["reference"] not in dupes
    assert same_category["reference"] in nearby and other_category["reference"] in nearby
    assert far["reference"] not in nearby  # about 1.3 km away
    assert re.search(r"\b109 m away", nearby)


def test_unknown_report_is_a_404_page(client, make_user):
    client_as(client, make_user, "moderator")
    response = client.get("/staff/reports/PP-ZZZZZ")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "There is no report PP-ZZZZZ" in response.get_data(as_text=True)


# --- the queue --------------------------------------------------------------------------------------------------

def test_queue_defaults_to_open_reports_newest_first_and_filters(client, connection, make_user, make_token,
                                                                 report_body):
    first = new_report(client, report_body())
    pothole = new_report(client, report_body(category="street.pothole"))
    closed = new_report(client, report_body())
    client.patch(f"/api/v1/reports/{closed['id']}/status", headers=auth(make_token("moderator")),
                 json={"status": "rejected", "note": "no", "version": 1})
    sihanoukville = new_report(client, report_body(location={"type": "Point", "coordinates": [103.5140, 10.6260]}))
    client_as(client, make_user, "moderator")

    def listed(query: str = "") -> list[str]:
        html = client.get(f"/staff/reports{query}").get_data(as_text=True)
        return re.findall(r'<a class="reference" href="/staff/reports/([^"]+)"', html)

    assert listed() == [sihanoukville["reference"], pothole["reference"], first["reference"]]
    assert closed["reference"] in listed("?status=all")
    assert listed("?status=rejected") == [closed["reference"]]
    assert listed("?category=street") == [pothole["reference"]]
    assert listed("?category=street.pothole") == [pothole["reference"]]
    assert listed("?area=PP") == [pothole["reference"], first["reference"]]
    assert listed(f"?q={first['reference'][-4:].lower()}") == [first["reference"]]
    unknown_area = client.get("/staff/reports?area=XX-nowhere").get_data(as_text=True)
    assert "There is no area XX-nowhere." in unknown_area


def test_queue_pages_with_a_cursor(client, make_user, report_body, monkeypatch):
    monkeypatch.setattr(staff_module, "PAGE_SIZE", 2)
    made = [new_report(client, report_body(description=f"bin {i}"))["reference"] for i in range(5)]
    client_as(client, make_user, "moderator")
    seen: list[str] = []
    url: str | None = "/staff/reports"
    while url:
        html = client.get(url).get_data(as_text=True)
        seen += re.findall(r'<a class="reference" href="/staff/reports/([^"]+)"', html)
        match = re.search(r'<a class="button secondary" href="([^"]+)" rel="next">', html)
        url = match.group(1).replace("&amp;", "&") if match else None
    assert seen == list(reversed(made))
    bad = client.get("/staff/reports?cursor=nonsense")
    assert bad.status_code == 400 and bad.mimetype == "text/html"


def test_staff_pages_speak_khmer(client, make_user, report_body):
    report = new_report(client, report_body())
    client_as(client, make_user, "moderator")
    response = client.get(f"/staff/reports/{report['reference']}?lang=km")
    assert '<html lang="km">' in response.get_data(as_text=True)
    assert response.headers["Content-Language"] == "km"


# --- the CLI ----------------------------------------------------------------------------------------------------

def test_user_add_sets_a_password_from_stdin(app, client):
    from service.cli import main

    runner = app.test_cli_runner()
    result = runner.invoke(main, ["user", "add", "sreymom", "--role", "moderator", "--password-stdin"],
                           input="a long enough secret\n")
    assert result.exit_code == 0, result.output
    assert "token: cm_" in result.output  # the API token as before
    assert login(client, "sreymom", "a long enough secret").status_code == 303
    short = runner.invoke(main, ["user", "add", "vanna", "--role", "moderator", "--password-stdin"], input="short\n")
    assert short.exit_code != 0 and "at least 8 characters" in short.output
    both = runner.invoke(main, ["user", "add", "vanna", "--role", "moderator", "--password", "x" * 10,
                                "--password-stdin"], input="y" * 10 + "\n")
    assert both.exit_code != 0
