"""Who may use what: every rule of the app's URL map, for every kind of caller, decided in one table.

``MATRIX`` has one row per rule and method (HEAD only where a view defines it
itself, never OPTIONS). For each caller a row gives either the exact status of
an allowed request or how it is refused:

- ``UNAUTHORISED``: 401 in the one JSON error shape with ``WWW-Authenticate: Bearer``
  (``auth.required`` without a token, ``auth.invalid_token`` with a token of the wrong kind);
- ``FORBIDDEN``: 403, ``auth.forbidden`` on the API, the staff "not allowed" page on /staff;
- ``LOGIN``: 303 to /staff/login (``next=`` the page asked for, on a GET).

The callers are anonymous, a user of each role in ``USER_ROLES`` and a field
device (``dev_`` token). On the API and the public pages users send their
bearer token; on /staff they sign in through the real form (session cookie,
CSRF token), and the device sends its bearer token, which must open no staff
page. Each rule is also tried by an admin holding the other side's credential
(their token on /staff, their staff session cookie elsewhere), who must be
answered exactly as an anonymous caller.

Allowed requests get real objects (a report, its photo, a photo a resident's
batch is waiting for), so they reach their view and succeed; ``done`` checks
that the view did its work when allowed, and that nothing changed when refused.
A new route fails ``test_every_rule_has_a_decision`` until someone adds its row.
"""

from __future__ import annotations

import hashlib
import io
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any
from urllib.parse import unquote

import pytest
from flask import Flask, url_for
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import text
from werkzeug.security import generate_password_hash
from werkzeug.test import TestResponse

from service.auth import hash_secret, new_secret
from service.models import USER_ROLES
from tests.test_staff import PASSWORD, csrf_from, jpeg

PRINCIPALS = ("anonymous", *USER_ROLES, "device")
READERS = ("moderator", "planner", "admin")  # service.staff_auth.READER_ROLES, written out: the table decides
TRIAGERS = ("moderator", "admin")  # service.staff_auth.TRIAGE_ROLES

LOGIN = "login redirect"
UNAUTHORISED = "401"
FORBIDDEN = "403"
DENIALS = (LOGIN, UNAUTHORISED, FORBIDDEN)


def everyone(status: int, **exceptions: int | str) -> dict[str, int | str]:
    """Residents need no account: anyone may, whatever token they carry."""
    return {**{p: status for p in PRINCIPALS}, **exceptions}


def api(status: int, *roles: str) -> dict[str, int | str]:
    """The bearer-token API for ``roles`` and admins: no token is 401, another role 403, a device token 401."""
    allowed = {*roles, "admin"}
    return {"anonymous": UNAUTHORISED, "device": UNAUTHORISED,
            **{r: status if r in allowed else FORBIDDEN for r in USER_ROLES}}


def device(status: int, *, resident: int | str = UNAUTHORISED) -> dict[str, int | str]:
    """Sync: a device token, or (``resident``) none from a resident's phone; user tokens are not device tokens."""
    return {"anonymous": resident, "device": status, **{r: UNAUTHORISED for r in USER_ROLES}}


def staff(status: int, roles: tuple[str, ...]) -> dict[str, int | str]:
    """Staff pages for signed-in ``roles``; other roles 403; without a session (a token is none) sign in first."""
    return {"anonymous": LOGIN, "device": LOGIN, **{r: status if r in roles else FORBIDDEN for r in USER_ROLES}}


@dataclass
class Req:
    """A request: the URL's values for ``url_for`` and a body; ``csrf`` adds the caller's own form token."""

    values: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    data: Any = None
    content_type: str | None = None
    csrf: bool = False


@dataclass(frozen=True)
class Row:
    expect: dict[str, int | str]
    request: Callable[[World], Req] = lambda w: Req()
    #: Did the view do its work (a write happened, its own answer came back)? True when allowed, else False.
    done: Callable[[World, TestResponse], bool] | None = None
    #: Where an allowed redirect goes (a prefix of Location).
    location: str | None = None


# --- the table: (method, rule) → who may --------------------------------------------------------------------------

MATRIX: dict[tuple[str, str], Row] = {
    # Public pages and API reads: residents have no account, so anyone may, whatever token they carry.
    ("GET", "/"): Row(everyone(302), location="/report"),  # only points at the form
    ("GET", "/healthz"): Row(everyone(200)),  # load balancers ask without credentials
    ("GET", "/report"): Row(everyone(200)),  # the resident's form
    ("POST", "/report"): Row(everyone(303), lambda w: w.no_js_form(), location="/r/",  # the same, without JS
                             done=lambda w, r: w.reports_marked() == 1),
    ("GET", "/r"): Row(everyone(200)),  # "follow a report"
    ("GET", "/r/<reference>"): Row(everyone(200), lambda w: Req({"reference": w.report["reference"]})),
    ("GET", "/field"): Row(everyone(200)),  # the page only: what it sends needs the device token
    ("GET", "/sw.js"): Row(everyone(200)),  # the public pages' service worker
    ("GET", "/api/v1/docs"): Row(everyone(200)),  # the API is documented in the open
    ("GET", "/api/v1/docs/assets/<path:filename>"): Row(everyone(200), lambda w: Req({"filename": "index.css"})),
    ("GET", "/api/v1/openapi.json"): Row(everyone(200)),
    ("GET", "/api/v1/categories"): Row(everyone(200)),  # reference data
    ("GET", "/api/v1/areas"): Row(everyone(200)),
    ("GET", "/api/v1/reports"): Row(everyone(200)),  # public reports, never contact details
    ("GET", "/api/v1/photos/<sha256>"): Row(everyone(200), lambda w: Req({"sha256": w.photo})),  # visible reports'
    ("GET", "/api/v1/layers/reports"): Row(everyone(200)),  # open maps and statistics
    ("GET", "/api/v1/layers/heatmap"): Row(everyone(200)),
    ("GET", "/api/v1/layers/areas"): Row(everyone(200)),
    ("GET", "/api/v1/tiles/reports/<z>/<x>/<y>.mvt"): Row(everyone(200), lambda w: w.tile()),  # 200: not empty
    ("GET", "/api/v1/exports/reports.<fmt>"): Row(everyone(200), lambda w: Req({"fmt": "csv"})),  # open data
    # Public, but the view reads the bearer token (staff see hidden reports; a report records who sent it), and a
    # token that is sent but is not a user token (a device's dev_ one) is refused, never taken as anonymous.
    ("GET", "/api/v1/reports/<id_or_reference>"): Row(everyone(200, device=UNAUTHORISED),
                                                      lambda w: Req({"id_or_reference": w.report["reference"]})),
    ("POST", "/api/v1/reports"): Row(everyone(201, device=UNAUTHORISED), lambda w: w.report_body(),
                                     done=lambda w, r: w.reports_marked() == 1),
    # Triage through the API: moderators and admins; planners read, field workers report.
    ("PATCH", "/api/v1/reports/<uuid:report_id>/status"): Row(api(200, "moderator"), lambda w: Req(
        {"report_id": w.report["id"]}, json={"status": "acknowledged", "note": "Seen", "version": 1}),
        done=lambda w, r: w.events() == 2),
    # Photos: the reporter (tracking token: tests/test_photos_api.py), field workers and moderators; not planners.
    ("POST", "/api/v1/reports/<uuid:report_id>/photos"): Row(api(201, "field_worker", "moderator"), lambda w: Req(
        {"report_id": w.report["id"]}, data={"photo": (io.BytesIO(jpeg()), "a.jpg")},
        content_type="multipart/form-data"), done=lambda w, r: w.photos_of_report() == 1),
    # Sync: a field device's dev_ token, or none from a resident's phone, which may push new reports and upload
    # the photos they list; a user's bearer token is not a device token.
    ("POST", "/api/v1/sync/batches"): Row(device(200, resident=200), lambda w: w.batch(),
                                          done=lambda w, r: w.reports_marked() == 1),
    ("PUT", "/api/v1/sync/photos/<sha256>"): Row(device(200, resident=200), lambda w: Req(
        {"sha256": w.upload_sha}, data=w.upload, content_type="application/octet-stream"),
        done=lambda w, r: w.upload_stored()),
    ("HEAD", "/api/v1/sync/photos/<sha256>"): Row(  # where to resume; nothing stored yet is 404 with offset 0
        device(404, resident=404), lambda w: Req({"sha256": w.upload_sha}),
        done=lambda w, r: r.headers.get("Upload-Offset") == "0"),
    ("GET", "/api/v1/sync/changes"): Row(device(200)),  # the device's own area
    ("GET", "/api/v1/sync/device"): Row(device(200)),  # "who am I", for field mode
    # Staff pages: a session, never a bearer token. Moderators, planners and admins read, moderators and admins
    # triage; field workers have accounts, so they can sign in, but they get no staff page.
    ("GET", "/staff/login"): Row(everyone(200, field_worker=302, moderator=302, planner=302, admin=302),
                                 location="/staff/reports"),  # signed in already: on to the queue
    ("POST", "/staff/login"): Row(everyone(303), lambda w: w.login_form(), location="/staff/reports"),  # anyone
    ("POST", "/staff/logout"): Row(staff(303, USER_ROLES), lambda w: Req(csrf=True), location="/staff/login",
                                   done=lambda w, r: w.signed_out()),  # no session, nothing to end: the gate
    ("GET", "/staff/"): Row(staff(302, USER_ROLES), location="/staff/reports"),  # a redirect; the queue decides
    ("GET", "/staff/reports"): Row(staff(200, READERS)),  # the triage queue
    ("GET", "/map"): Row(everyone(200)),  # the public planner map: public data only
    ("GET", "/dashboard"): Row(everyone(302), location="/staff/dashboard"),  # the public address of the dashboard
    ("GET", "/staff/map"): Row(staff(200, READERS)),  # the staff planner map
    ("GET", "/staff/map/reports"): Row(staff(200, READERS)),  # its single reports, hidden ones included
    ("GET", "/staff/dashboard"): Row(staff(200, READERS)),  # statistics: planners above all
    ("GET", "/staff/dashboard/statistics.csv"): Row(staff(200, READERS)),
    ("GET", "/staff/dashboard/weekly.csv"): Row(staff(200, READERS)),
    ("GET", "/staff/reports/<reference>"): Row(staff(200, READERS), lambda w: Req(
        {"reference": w.report["reference"]})),  # with the reporter's contact details
    ("GET", "/staff/photos/<sha256>"): Row(staff(200, READERS), lambda w: Req({"sha256": w.photo})),  # hidden too
    ("POST", "/staff/reports/<reference>/<any(acknowledge, start, resolve, reject, duplicate, hide):action>"): Row(
        staff(303, TRIAGERS), lambda w: w.resolve_form(), location="/staff/reports/",  # planners only read
        done=lambda w, r: w.events() == 2),
}

STAFF_FORBIDDEN = ("Your role may not use this page.",  # a role without staff pages
                   "Your role may read reports but not change them")  # a planner posting a triage action
ERROR_KEYS = {"code", "status", "error", "message", "errors"}
DOUN_PENH = (104.9282, 11.5625)
#: An admin with the other side's credential: their token on /staff, their staff session cookie elsewhere.
CROSSED = "admin, with the other side's credential"


def explicit_methods(rule: Any) -> set[str]:
    """The rule's methods: HEAD only where the view defines it (not Flask's automatic one for GET), no OPTIONS."""
    methods = set(rule.methods) - {"OPTIONS"}
    if "GET" in methods:
        methods.discard("HEAD")
    return methods


def app_rules(app: Flask) -> dict[tuple[str, str], Any]:
    return {(method, rule.rule): rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"
            for method in explicit_methods(rule)}


def test_every_rule_has_a_decision(app):
    """A new route (or method) cannot ship until the table says who may use it; a removed one must leave it."""
    rules = app_rules(app)
    missing = sorted(f"{method} {path} ({rules[(method, path)].endpoint})" for method, path in rules.keys() - MATRIX)
    stale = sorted(f"{method} {path}" for method, path in MATRIX.keys() - rules)
    assert not missing, "decide who may use these in MATRIX:\n" + "\n".join(missing)
    assert not stale, "MATRIX has rows for routes the app no longer has:\n" + "\n".join(stale)
    for row in MATRIX.values():
        assert set(row.expect) == set(PRINCIPALS)


# --- callers and their objects ------------------------------------------------------------------------------------

#: The test accounts' password hash: cheap, so that about 200 sign-ins cost nothing, and checked by the real
#: sign-in all the same (werkzeug reads the method from the hash).
FAST_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")


@pytest.fixture()
def accounts(connection, make_device) -> dict[str, Any]:
    """An account per role (password and API token) and a field device, in this test's transaction."""
    out: dict[str, Any] = {}
    for role in USER_ROLES:
        username, token = f"matrix-{role}", new_secret()
        user_id = connection.execute(text(
            "INSERT INTO users (username, role, password_hash) VALUES (:u, :r, :p) RETURNING id"),
            {"u": username, "r": role, "p": FAST_HASH}).scalar_one()
        connection.execute(text("INSERT INTO api_tokens (user_id, token_hash) VALUES (:u, :h)"),
                           {"u": user_id, "h": hash_secret(token)})
        out[role] = {"username": username, "token": token}
    out["device"], out["device_id"] = make_device("PP")
    return out


class World:
    """Real objects for one caller's request, made on first use without credentials (as a resident would)."""

    def __init__(self, client: FlaskClient, connection: Any, accounts: dict[str, Any], principal: str) -> None:
        self.client, self.connection, self.principal = client, connection, principal
        self.device_id = accounts["device_id"]
        #: Who the sign-in form is for: a signed-in caller themselves, anyone else a moderator.
        self.username = accounts[principal if principal in USER_ROLES else "moderator"]["username"]
        self.marker = f"matrix {uuid.uuid4()}"

    @cached_property
    def report(self) -> dict[str, Any]:
        response = self.client.post("/api/v1/reports", json={
            "category": "waste.overflowing_bin", "description": f"{self.marker} (made for the request)",
            "location": {"type": "Point", "coordinates": list(DOUN_PENH)}, "accuracy_m": 8})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    @cached_property
    def photo(self) -> str:
        """The sha256 of a photo of ``report``, added by its reporter."""
        response = self.client.post(f"/api/v1/reports/{self.report['id']}/photos",
                                    headers={"X-Tracking-Token": self.report["tracking_token"]},
                                    data={"photo": (io.BytesIO(jpeg()), "a.jpg")}, content_type="multipart/form-data")
        assert response.status_code == 201, response.get_json()
        return response.get_json()[0]["sha256"]

    @cached_property
    def upload(self) -> bytes:
        """A new photo's bytes; for a resident, one their phone's batch has just listed (else it is refused)."""
        out = io.BytesIO()
        Image.new("RGB", (64, 48), (20, 90, 200)).save(out, "JPEG")
        photo = out.getvalue() + self.marker.encode()  # trailing bytes: each caller's photo is another
        if self.principal == "anonymous":
            listed = self.batch(photos=[hashlib.sha256(photo).hexdigest()], device_id="resident")
            response = self.client.post("/api/v1/sync/batches", json=listed.json)
            assert response.get_json()["results"][0]["missing_photos"], response.get_json()
        return photo

    @property
    def upload_sha(self) -> str:
        return hashlib.sha256(self.upload).hexdigest()

    def report_body(self) -> Req:
        return Req(json={"category": "street.pothole", "description": self.marker,
                         "location": {"type": "Point", "coordinates": list(DOUN_PENH)}})

    def batch(self, *, photos: list[str] | None = None, device_id: str | None = None) -> Req:
        item = {"client_id": str(uuid.uuid4()), "op": "create",
                "payload": {"category": "flooding.blocked_drain", "description": self.marker,
                            "location": {"type": "Point", "coordinates": list(DOUN_PENH)}}}
        if photos:
            item["photos"] = photos
        claimed = device_id or (str(self.device_id) if self.principal == "device" else "resident")
        return Req(json={"device_id": claimed, "batch_id": str(uuid.uuid4()),
                         "sent_at": datetime.now(timezone.utc).isoformat(), "items": [item]})

    def tile(self) -> Req:
        """The zoom-14 tile around ``report`` (so it is not an empty 204)."""
        assert self.report
        n, (lon, lat) = 2 ** 14, DOUN_PENH
        y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
        return Req({"z": "14", "x": str(int((lon + 180) / 360 * n)), "y": str(int(y))})

    def no_js_form(self) -> Req:
        return Req(data={"client_id": str(uuid.uuid4()), "category": "waste.overflowing_bin",
                         "lon": str(DOUN_PENH[0]), "lat": str(DOUN_PENH[1]), "accuracy_m": "12", "area": "",
                         "landmark": "", "description": self.marker}, content_type="multipart/form-data")

    def login_form(self) -> Req:
        return Req(data={"username": self.username, "password": PASSWORD}, csrf=True)

    def resolve_form(self) -> Req:
        return Req(values={"reference": self.report["reference"], "action": "resolve"},
                   data={"version": "1", "note": "Bin emptied"}, csrf=True)

    def count(self, sql: str, **params: Any) -> int:
        return self.connection.execute(text(sql), params).scalar_one()

    def reports_marked(self) -> int:
        return self.count("SELECT count(*) FROM reports WHERE description = :d", d=self.marker)

    def events(self) -> int:
        return self.count("SELECT count(*) FROM report_events WHERE report_id = :id", id=self.report["id"])

    def photos_of_report(self) -> int:
        return self.count("SELECT count(*) FROM report_photos WHERE report_id = :id", id=self.report["id"])

    def upload_stored(self) -> bool:
        return self.count("SELECT count(*) FROM sync_uploads WHERE upload_sha256 = :s AND stored_sha256 IS NOT NULL",
                          s=self.upload_sha) == 1

    def signed_out(self) -> bool:
        """Signing out deletes the session cookie (a refused sign-out leaves the anonymous session's CSRF token)."""
        return self.client.get_cookie("session", path="/staff") is None


def sign_in(client: FlaskClient, username: str) -> None:
    form = client.get("/staff/login")
    response = client.post("/staff/login", data={"csrf_token": csrf_from(form.get_data(as_text=True)),
                                                 "username": username, "password": PASSWORD})
    assert response.status_code == 303 and response.headers["Location"] == "/staff/reports", username


def form_token(client: FlaskClient) -> str:
    """This session's CSRF token: from the sign-in form, or, signed in, the sign-out form on any staff page."""
    page = client.get("/staff/login")
    if page.status_code == 302:
        page = client.get("/staff/reports")  # 200, or the 403 page for a field worker: both have it
    return csrf_from(page.get_data(as_text=True))


def staff_session_cookie(app: Flask, username: str) -> str:
    """A working staff session as a Cookie header (browsers keep it to /staff; here it is sent anyway)."""
    client = app.test_client()
    sign_in(client, username)
    cookie = client.get_cookie("session", path="/staff")
    assert cookie is not None
    header = f"session={cookie.value}"
    works = app.test_client(use_cookies=False).get("/staff/reports", headers={"Cookie": header})
    assert works.status_code == 200  # on the staff pages it signs the admin in
    return header


def is_staff(path: str) -> bool:
    return path.startswith("/staff")


def bearer(accounts: dict[str, Any], principal: str) -> dict[str, str]:
    if principal == "anonymous":
        return {}
    token = accounts["device"] if principal == "device" else accounts[principal]["token"]
    return {"Authorization": f"Bearer {token}"}


def send(app: Flask, client: FlaskClient, rule: Any, method: str, req: Req,
         headers: dict[str, str]) -> tuple[str, TestResponse]:
    """Send the request to exactly this rule; returns the URL and the (read and closed) response."""
    with app.test_request_context():
        url = url_for(rule.endpoint, **req.values)
    assert app.url_map.bind("localhost").match(url, method)[0] == rule.endpoint, f"{url} is not {rule.rule}"
    data = req.data
    if req.csrf:
        data = {**(data or {}), "csrf_token": form_token(client)}
    response = client.open(url, method=method, json=req.json, data=data, content_type=req.content_type,
                           headers=headers)
    response.get_data()  # read, then close (a file from send_file stays open otherwise)
    response.close()
    return url, response


# --- outcomes -----------------------------------------------------------------------------------------------------

def gist(response: TestResponse) -> str:
    return repr(response.get_data(as_text=True)[:300])


def json_error_problem(response: TestResponse, status: int, key: str, method: str) -> str | None:
    """None when the response is exactly this error in the one JSON shape (HEAD: status and header only)."""
    if response.status_code != status:
        return f"expected {status} {key}, got {response.status_code}: {gist(response)}"
    if method != "HEAD":
        body = response.get_json(silent=True) or {}
        if response.mimetype != "application/json" or set(body) != ERROR_KEYS or body["code"] != status \
                or body["error"] != key or not body["message"]:
            return f"expected the JSON error {key}, got {response.mimetype}: {gist(response)}"
    if status == 401 and not response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
        return "a 401 without WWW-Authenticate: Bearer"
    return None


def denial_problem(response: TestResponse, expected: str, *, method: str, url: str, token: bool) -> str | None:
    """None when the response is exactly the refusal expected."""
    if expected == LOGIN:
        location = unquote(response.headers.get("Location", ""))
        wanted = "/staff/login" + (f"?next={url}" if method == "GET" else "")
        if response.status_code != 303 or location != wanted:
            return f"expected 303 to {wanted}, got {response.status_code} to {location!r}"
        return None
    status = int(expected)
    if is_staff(url):  # pages for people: the staff error page
        if response.status_code != status or response.mimetype != "text/html" \
                or not any(words in response.get_data(as_text=True) for words in STAFF_FORBIDDEN):
            return f"expected the staff 'not allowed' page, got {response.status_code}: {gist(response)}"
        return None
    key = "auth.forbidden" if status == 403 else "auth.invalid_token" if token else "auth.required"
    return json_error_problem(response, status, key, method)


def allowed_problem(response: TestResponse, expected: int, row: Row) -> str | None:
    if response.status_code != expected:
        return f"expected {expected}, got {response.status_code}: {gist(response)}"
    if 300 <= expected < 400:
        location = response.headers.get("Location", "")
        if row.location is None or not location.startswith(row.location):
            return f"redirected to {location!r}, not {row.location!r}"
    return None


def outcome(app: Flask, connection: Any, accounts: dict[str, Any], rule: Any, method: str,
            principal: str) -> str | None:
    """What is wrong with how the rule answered this caller (None when it is exactly as the table says)."""
    row = MATRIX[(method, rule.rule)]
    crossed = principal == CROSSED
    expected = row.expect["anonymous" if crossed else principal]
    # A caller of their own, with their own cookies; one who sends a Cookie header by hand keeps no jar (the
    # test client would replace the header with the jar's cookies for the path: none, outside /staff).
    client = app.test_client(use_cookies=not (crossed and not is_staff(rule.rule)))
    world = World(client, connection, accounts, "anonymous" if crossed else principal)
    req = row.request(world)  # objects first, made without credentials
    headers: dict[str, str] = {}
    if crossed:
        headers = bearer(accounts, "admin") if is_staff(rule.rule) else \
            {"Cookie": staff_session_cookie(app, accounts["admin"]["username"])}
    elif is_staff(rule.rule) and principal in USER_ROLES:
        sign_in(client, accounts[principal]["username"])
    else:
        headers = bearer(accounts, principal)
    url, response = send(app, client, rule, method, req, headers)
    if expected in DENIALS:
        problem = denial_problem(response, str(expected), method=method, url=url, token="Authorization" in headers)
    else:
        problem = allowed_problem(response, int(expected), row)
    if problem is None and row.done is not None and row.done(world, response) is (expected in DENIALS):
        problem = "refused, but the change happened" if expected in DENIALS else "allowed, but the view did nothing"
    return problem


@pytest.mark.parametrize("method,path", list(MATRIX), ids=[f"{m} {p}" for m, p in MATRIX])
def test_role_matrix(app, connection, accounts, method, path):
    """The rule answers each caller exactly as the table says: the allowed status, or the one refusal.

    One test per rule (an app per caller would cost 40 ms more each); each caller
    has their own client and objects in the test's transaction, and the failure
    lists every caller answered wrongly.
    """
    rule = app_rules(app).get((method, path))
    assert rule is not None, f"{method} {path} is not a rule of the app"
    expect = MATRIX[(method, path)].expect
    problems = [f"{method} {path} as {principal} (expected {expect.get(principal, expect['anonymous'])}): {problem}"
                for principal in (*PRINCIPALS, CROSSED)
                if (problem := outcome(app, connection, accounts, rule, method, principal)) is not None]
    assert not problems, "\n".join(problems)


# --- tokens that do not work --------------------------------------------------------------------------------------

#: API rules that read the bearer token: those where some caller is refused (staff pages read none).
TOKEN_RULES = [key for key, row in MATRIX.items()
               if not is_staff(key[1]) and any(v in DENIALS for v in row.expect.values())]


@pytest.mark.parametrize("method,path", TOKEN_RULES, ids=[f"{m} {p}" for m, p in TOKEN_RULES])
def test_unusable_tokens_are_refused_never_anonymous(app, connection, accounts, make_token, make_device,
                                                     method, path):
    """An unknown, malformed or revoked token, or one of a disabled account, is refused even where anonymous
    callers are welcome: a field worker must learn at once that their token stopped working."""
    rule = app_rules(app)[(method, path)]
    row = MATRIX[(method, path)]
    for_device = row.expect["device"] not in DENIALS  # else the rule takes user tokens (an admin's at least)
    if for_device:
        revoked, revoked_id = make_device("PP", revoked=True)
        disabled, disabled_id = make_device("PP")
        connection.execute(text("UPDATE users SET active = false FROM devices WHERE devices.user_id = users.id "
                                "AND devices.id = :id"), {"id": disabled_id})
        unknown = new_secret("dev_")
    else:
        revoked, disabled, unknown = make_token("admin", revoked=True), make_token("admin", active=False), new_secret()
        revoked_id = disabled_id = accounts["device_id"]
    cases = {  # name: (Authorization, the device its batch names, status, error)
        "unknown token": (f"Bearer {unknown}", accounts["device_id"], 401, "auth.invalid_token"),
        "malformed header": (f"Token {unknown}", accounts["device_id"], 401, "auth.malformed"),
        "revoked token": (f"Bearer {revoked}", revoked_id, 401, "auth.token_revoked"),
        "disabled account": (f"Bearer {disabled}", disabled_id, 403, "auth.user_inactive"),
    }
    problems = []
    for name, (header, device_id, status, key) in cases.items():
        world = World(app.test_client(), connection, {**accounts, "device_id": device_id},
                      "device" if for_device else "admin")
        _url, response = send(app, world.client, rule, method, row.request(world), {"Authorization": header})
        problem = json_error_problem(response, status, key, method)
        if problem is None and row.done is not None and row.done(world, response):
            problem = "refused, but the change happened"
        if problem is not None:
            problems.append(f"{method} {path}, {name}: {problem}")
    assert not problems, "\n".join(problems)


def test_a_staff_session_never_shows_hidden_reports_through_the_api(app, client, connection, accounts):
    """Hidden reports are served to staff tokens only: on the API a signed-in session is anonymous."""
    created = client.post("/api/v1/reports", json={"category": "waste.overflowing_bin", "description": "rude words",
                                                   "location": {"type": "Point", "coordinates": list(DOUN_PENH)}})
    reference = created.get_json()["reference"]
    connection.execute(text("UPDATE reports SET hidden = true WHERE reference = :r"), {"r": reference})
    url = f"/api/v1/reports/{reference}"
    plain = app.test_client(use_cookies=False)
    with_session = plain.get(url, headers={"Cookie": staff_session_cookie(app, accounts["admin"]["username"])})
    assert json_error_problem(with_session, 404, "report.not_found", "GET") is None
    assert plain.get(url, headers=bearer(accounts, "admin")).status_code == 200
