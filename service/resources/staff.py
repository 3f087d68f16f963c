"""The staff pages: sign-in, the triage queue, a report's full record and the triage actions.

Server-rendered in the reader's language like the phone pages, but behind a
Flask-Login session (``service.staff_auth``) instead of bearer tokens. Every
POST carries a CSRF token, checked here and only here. Moderators and admins
triage; planners read; field workers and residents have no staff pages.

Each action goes through ``intake.change_status`` or ``intake.add_note``, so it
is a ``report_events`` row (shown on the public ``/r/<reference>`` page) and a
compare-and-set on the version the moderator saw: a stale form gets a 409 page,
never a silent overwrite.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as cookie_session
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_login import login_user, logout_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from service import queries
from service.db import get_session
from service.errors import ApiError
from service.intake import add_note, attach_photo, change_status, find_report
from service.messages import translated
from service.models import OPEN_STATUSES, REPORT_STATUSES
from service.photos import PhotoRejected, StoredPhoto, sanitise_upload, thumbnail
from service.ratelimit import limiter
from service.references import normalise_reference
from service.resources.filters import decode_cursor, encode_cursor
from service.resources.pages import LANG_COOKIE, category_groups, localised
from service.staff_auth import (
    READER_ROLES,
    TRIAGE_ROLES,
    authenticate,
    csrf,
    require_staff_role,
    signed_in,
)
from service.worker_cache import cached

log = logging.getLogger(__name__)

staff_blp = Blueprint("staff", __name__, url_prefix="/staff")

PAGE_SIZE = 50
NEARBY_RADIUS_M = 500
NOTE_MAX = 2000  # as StatusChangeSchema.note
OPEN_ENDPOINTS = ("staff.login",)
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: Marks the history note of a hide, so the staff history says what happened (stored, so not translated).
HIDE_NOTE_PREFIX = "Hidden as abuse: "

#: action in the URL → the status it moves to (None: hide, which changes no status).
ACTIONS: dict[str, str | None] = {
    "acknowledge": "acknowledged",
    "start": "in_progress",
    "resolve": "resolved",
    "reject": "rejected",
    "duplicate": "duplicate",
    "hide": None,
}


# --- the gate: sign-in, CSRF, headers --------------------------------------------------------------------------

def _safe_next(target: str | None) -> str | None:
    """Only a path of the staff pages on this site: never an open redirect."""
    if not target or "\\" in target or any(ord(ch) < 32 for ch in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/staff/") or target.startswith("//"):
        return None
    return target


@staff_blp.before_request
def _gate() -> Response | None:
    """Anonymous visitors go to the sign-in page; every POST must carry this session's CSRF token."""
    if request.endpoint not in OPEN_ENDPOINTS and signed_in() is None:
        wanted = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("staff.login", next=_safe_next(wanted)), 303)
    if request.method == "POST":
        csrf.protect()
    return None


@staff_blp.after_request
def _staff_headers(response: Response) -> Response:
    """Staff pages hold contact details: never cached, never framed, never referred elsewhere."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    # The staff map sets its own policy (its inline Folium script by hash, and the base tiles' host).
    response.headers.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self'; "
                                "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
    asked = request.args.get("lang")
    if asked in ("en", "km") and request.cookies.get(LANG_COOKIE) != asked:
        response.set_cookie(LANG_COOKIE, asked, max_age=365 * 86400, samesite="Lax", secure=request.is_secure)
    return response


@staff_blp.context_processor
def _staff_globals() -> dict[str, Any]:
    lang = str(get_locale() or "en")
    other = "en" if lang == "km" else "km"
    here = {**(request.view_args or {}), **request.args.to_dict(), "lang": other}
    lang_url = url_for(request.endpoint, **here) if request.endpoint and request.method == "GET" else f"?lang={other}"
    return {"current_user": signed_in(), "lang_url": lang_url}


def _page(template: str, code: int = 200, **context: Any) -> Response:
    response = current_app.response_class(render_template(template, **context), status=code,
                                          mimetype="text/html")
    response.headers["Content-Language"] = str(get_locale() or "en")
    response.headers["Vary"] = "Accept-Language, Cookie"
    return response


def _error_page(status: int, message: str, *, reload_url: str | None = None) -> Response:
    return _page("staff/error.html", status, status=status, phrase=HTTPStatus(status).phrase, message=message,
                 reload_url=reload_url)


# --- errors as pages --------------------------------------------------------------------------------------------

@staff_blp.errorhandler(CSRFError)
def _csrf_refused(exc: CSRFError) -> Response:
    log.info("staff form refused: %s", exc.description)
    return _error_page(400, _("This form could not be accepted: it has expired or did not come from this site. "
                              "Go back, reload the page and try again."))


@staff_blp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    return _error_page(exc.status, exc.message)


@staff_blp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    messages = {
        403: _("Your role may not use this page. Staff pages are for moderators, planners and administrators."),
        404: _("Nothing here: check the address."),
        405: _("This method is not allowed on this address."),
        413: _("The request body is larger than this server accepts."),
        429: _("Too many attempts. Wait a minute and try again."),
    }
    user = signed_in()
    if status == 403 and request.method == "POST" and user is not None and user.may_read:
        messages[403] = _("Your role may read reports but not change them: moderators and administrators triage.")
    return _error_page(status, messages.get(status, HTTPStatus(status).phrase))


@staff_blp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on a staff page")
    return _error_page(500, _("Something went wrong on our side; it has been logged."))


# --- sign-in ----------------------------------------------------------------------------------------------------

@staff_blp.get("/")
def home() -> Response:
    return redirect(url_for("staff.reports"))


@staff_blp.route("/login", methods=["GET", "POST"])
# Failed sign-ins only (a success redirects), per client address: guessing is slow, an office NAT is not locked out.
@limiter.limit("10/minute", methods=["POST"], deduct_when=lambda response: response.status_code != 303)
def login() -> Response:
    """Sign in with a username and password; a wrong one gets the form again, without saying which part."""
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if signed_in() is not None:
            return redirect(target or url_for("staff.reports"))
        return _page("staff/login.html", next=target, username="")
    username = request.form.get("username", "")[:64]
    password = request.form.get("password", "")
    user, disabled = authenticate(username, password) if username.strip() and password else (None, False)
    if user is None:
        error = _("This account is disabled.") if disabled else _("The username or password is not right.")
        log.info("staff sign-in refused for %r", username)
        return _page("staff/login.html", 403 if disabled else 401, error=error, username=username, next=target)
    cookie_session.clear()  # a fresh session (and CSRF token) for the signed-in user
    login_user(user)
    cookie_session.permanent = True
    log.info("staff sign-in: %s (%s)", user.username, user.role)
    return redirect(target or url_for("staff.reports"), 303)


@staff_blp.post("/logout")
def logout() -> Response:
    logout_user()
    cookie_session.clear()
    return redirect(url_for("staff.login"), 303)


# --- the queue --------------------------------------------------------------------------------------------------

def _area_options() -> list[dict[str, Any]]:
    """Cities, their khans and sangkats in tree order, for the area filter."""
    rows = cached("area_picker", lambda: list(queries.area_picker(get_session())), seconds=300)
    children: dict[int | None, list[Any]] = {}
    for row in rows:
        children.setdefault(row.parent_id, []).append(row)
    out: list[dict[str, Any]] = []

    def walk(parent: int | None, depth: int) -> None:
        for row in sorted(children.get(parent, []), key=lambda r: localised(r, "name")):
            out.append({"code": row.code, "label": "\u2003" * depth + localised(row, "name")})
            walk(row.id, depth + 1)

    walk(None, 0)
    return out


def _queue_statuses(choice: str) -> tuple[str, ...]:
    if choice == "all":
        return ()
    if choice in REPORT_STATUSES:
        return (choice,)
    return OPEN_STATUSES


@staff_blp.get("/reports")
@require_staff_role(*READER_ROLES)
def reports() -> Response:
    """The triage queue: open reports by default, newest first, filtered, one page at a time (no total count)."""
    session = get_session()
    status = request.args.get("status", "open")
    if status not in ("open", "all", *REPORT_STATUSES):
        status = "open"
    groups = category_groups()
    known_categories = {g["code"] for g in groups} | {s["code"] for g in groups for s in g["subtypes"]}
    category = request.args.get("category", "")
    category = category if category in known_categories else ""
    area_code = request.args.get("area", "").strip()
    area = queries.find_area(session, area_code) if area_code else None
    problem = _("There is no area %(code)s.", code=area_code) if area_code and area is None else None
    text = normalise_reference(request.args.get("q", ""))[:32]
    filters = queries.ReportFilters(statuses=_queue_statuses(status), categories=(category,) if category else (),
                                    area=area)
    cursor = request.args.get("cursor")
    after = decode_cursor(cursor) if cursor else None
    rows = queries.staff_report_list(session, filters, reference_text=text, limit=PAGE_SIZE + 1, after=after)
    shown = rows[:PAGE_SIZE]
    kept = {"status": status, "category": category, "area": area.code if area else "", "q": text}
    kept = {k: v for k, v in kept.items() if v}
    next_url = None
    if len(rows) > PAGE_SIZE:
        last = shown[-1]
        next_url = url_for("staff.reports", **kept, cursor=encode_cursor(last.received_at, last.id))
    items = [{"row": r, "category": localised(r, "category_label"), "area": _area_text(r)} for r in shown]
    return _page("staff/reports.html", items=items, groups=groups, areas=_area_options(), status=status,
                 category=category, area_code=area.code if area else area_code, q=text, problem=problem,
                 next_url=next_url, first_url=url_for("staff.reports", **kept) if cursor else None,
                 statuses=REPORT_STATUSES)


def _area_text(row: Any) -> str:
    parts = [localised(row, f"{level}_name") for level in ("district", "commune") if getattr(row, f"{level}_code")]
    return ", ".join(parts) or localised(row, "city_name")


# --- one report -------------------------------------------------------------------------------------------------

def _detail(reference: str, *, status: int = 200, error: str | None = None, failed: str | None = None,
            values: dict[str, str] | None = None) -> Response:
    session = get_session()
    row = queries.staff_report(session, normalise_reference(reference))
    if row is None:
        raise ApiError("report.not_found", _("There is no report %(ref)s.", ref=reference), 404)
    now = datetime.now(timezone.utc)
    duplicates = queries.duplicate_candidates(session, category_code=row.category_code, lon=row.lon, lat=row.lat,
                                              exclude_id=row.id, now=now)
    nearby = [{"row": n, "category": localised(n, "category_label")}
              for n in queries.nearby_reports(session, lon=row.lon, lat=row.lat, exclude_id=row.id,
                                              radius_m=NEARBY_RADIUS_M)]
    history = queries.staff_report_history(session, row.id)
    photo_endpoint = "staff.photo" if row.hidden else "photos.photo"  # the public address serves visible ones only
    return _page("staff/report.html", status, report=row, category=localised(row, "category_label"),
                 area=_area_text(row), history=history, duplicates=duplicates, nearby=nearby,
                 nearby_radius=NEARBY_RADIUS_M, photo_endpoint=photo_endpoint, error=error, failed=failed,
                 values=values or {}, done=request.args.get("done") in ACTIONS, open_statuses=OPEN_STATUSES)


@staff_blp.get("/reports/<reference>")
@require_staff_role(*READER_ROLES)
def report(reference: str) -> Response:
    """Everything about one report: contact details (staff only), photos, history, possible duplicates, neighbours."""
    normalised = normalise_reference(reference)
    if normalised != reference:
        return redirect(url_for("staff.report", reference=normalised), 301)
    return _detail(reference)


@staff_blp.get("/photos/<sha256>")
@require_staff_role(*READER_ROLES)
def photo(sha256: str) -> Response:
    """A stored photo of any report, hidden ones included (the public address serves visible reports only)."""
    row = queries.stored_photo(get_session(), sha256) if SHA256_RE.match(sha256) else None
    if row is None:
        raise ApiError("photo.not_found", _("There is no photo with this hash."), 404)
    content = bytes(row.content)
    response = current_app.response_class(thumbnail(content) if request.args.get("size") == "thumb" else content,
                                          mimetype=row.mime)
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response


def _form_version() -> int:
    raw = request.form.get("version", "")
    if not raw.isdigit():
        raise ApiError("request.bad_version", _("The form did not say which version of the report you saw. "
                                                "Reload the report and try again."), 400)
    return int(raw)


def _after_photo() -> StoredPhoto | None:
    upload = request.files.get("photo")
    if upload is None or not upload.filename:
        return None
    return sanitise_upload(upload, current_app.config["CIVICMAP"])


def _missing_input(action: str, note: str, duplicate_of: str) -> str | None:
    """What the action's form lacks, in words, or None."""
    if len(note) > NOTE_MAX:
        return _("The note is too long (at most %(n)s characters).", n=NOTE_MAX)
    if action == "resolve" and not note:
        return _("Say what was done: a note is needed to resolve a report.")
    if action in ("reject", "hide") and not note:
        return _("Give a reason.")
    if action == "duplicate" and not duplicate_of:
        return _("Give the reference of the report this one duplicates.")
    return None


@staff_blp.post("/reports/<reference>/<any(acknowledge, start, resolve, reject, duplicate, hide):action>")
@require_staff_role(*TRIAGE_ROLES)
def report_action(reference: str, action: str) -> Response:
    """One triage step on the version the moderator saw; a stale version is a 409 page."""
    session = get_session()
    report = find_report(session, normalise_reference(reference))
    ref = report.reference
    expected = _form_version()
    note = request.form.get("note", "").strip()
    duplicate_of = normalise_reference(request.form.get("duplicate_of", ""))
    values = {"note": note, "duplicate_of": duplicate_of}
    problem = _missing_input(action, note, duplicate_of)
    if problem is not None:
        return _detail(ref, status=422, error=problem, failed=action, values=values)
    try:
        photo = _after_photo() if action == "resolve" else None
    except PhotoRejected as exc:
        return _detail(ref, status=exc.status, error=translated(exc.error, exc.message),
                       failed=action, values=values)
    user = signed_in()
    assert user is not None
    now = datetime.now(timezone.utc)
    new_status = ACTIONS[action]
    try:
        if new_status is None:  # hide
            add_note(session, report, note=HIDE_NOTE_PREFIX + note, expected_version=expected, actor=user.account,
                     now=now)
            queries.set_report_hidden(session, report.id, True)
        else:
            change_status(session, report, new_status=new_status, note=note, expected_version=expected,
                          duplicate_of=duplicate_of if action == "duplicate" else None, actor=user.account, now=now)
            if photo is not None:
                attach_photo(session, report, photo)
    except ApiError as exc:
        session.rollback()
        if exc.error == "report.version_conflict":
            return _error_page(409, _("Someone else changed this report first, so your change was not saved. "
                                      "Reload the report to see what they did, then try again."),
                               reload_url=url_for("staff.report", reference=ref))
        # An unknown original is the form's mistake here, not a missing page.
        status = 422 if exc.status == 404 else exc.status
        return _detail(ref, status=status, error=exc.message, failed=action, values=values)
    session.commit()
    log.info("staff %s: %s %s (version %s)", user.username, action, ref, expected)
    return redirect(url_for("staff.report", reference=ref, done=action), 303)
