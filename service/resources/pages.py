"""The pages people open on a phone: the report form, tracking, field-worker mode, the service worker.

Server-rendered in the reader's language (Khmer or English), and enhanced by
small plain scripts in ``static/js``. Without JavaScript the form posts here
as multipart and the answer is a confirmation page; with JavaScript the page
keeps reports in IndexedDB and sends them through the sync protocol
(``/api/v1/sync/batches``), so a report made offline is sent by itself,
exactly once. These routes are HTML, so they are not in the OpenAPI document.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import get_locale
from flask_babel import gettext as _
from marshmallow import ValidationError

from service import queries
from service.db import get_session
from service.errors import ApiError
from service.intake import (
    attach_photo,
    create_report,
    find_report,
    parse_id_or_reference,
)
from service.messages import translated
from service.photos import PhotoRejected, StoredPhoto, sanitise_upload
from service.report_form import MAX_FORM_PHOTOS, PickedArea, read_report_form
from service.schemas import ReportCreateSchema
from service.ui_strings import browser_strings
from service.worker_cache import cached

pages_blp = Blueprint("pages", __name__)

STATIC = Path(__file__).resolve().parent.parent.parent / "static"
#: What the service worker keeps so the form opens with no connection (besides the page itself).
SHELL_ASSETS = ("css/app.css", "js/store.js", "js/report.js", "js/field.js", "icons.svg")
LANG_COOKIE = "lang"


# --- assets -------------------------------------------------------------------------------------------------------

def asset_version(name: str) -> str:
    """A short hash of a static file's content: its URL changes whenever the file does."""
    versions = current_app.extensions.setdefault("civicmap.asset_versions", {})
    if name not in versions or current_app.debug:
        versions[name] = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:10]
    return versions[name]


def asset_url(name: str) -> str:
    """The cache-forever URL of a static file (``?v=`` its content hash)."""
    return url_for("static", filename=name, v=asset_version(name))


TEMPLATES = STATIC.parent / "templates"
CATALOGS = STATIC.parent / "service" / "translations"


def _pages_source_hash() -> str:
    """The templates and compiled catalogs the cached pages are made from (read once per worker)."""
    versions = current_app.extensions.setdefault("civicmap.asset_versions", {})
    if "_pages" not in versions or current_app.debug:
        digest = hashlib.sha256()
        for path in sorted([*TEMPLATES.rglob("*.html"), *CATALOGS.rglob("*.mo")]):
            digest.update(path.name.encode() + path.read_bytes())
        versions["_pages"] = digest.hexdigest()
    return versions["_pages"]


def shell_version() -> str:
    """A hash of everything a cached page is made of: its assets, templates, translations and categories.

    The service worker carries it, so when any of them changes phones get a
    new worker, drop their old caches and fetch the page again.
    """
    categories = cached("form_categories", lambda: queries.form_categories(get_session()))
    parts = [asset_version(n) for n in SHELL_ASSETS] + [_pages_source_hash(), repr([tuple(r) for r in categories])]
    return hashlib.sha256("".join(parts).encode()).hexdigest()[:10]


@pages_blp.app_context_processor
def _page_globals() -> dict[str, Any]:
    lang = str(get_locale() or "en")
    return {"asset_url": asset_url, "lang": lang, "other_lang": "en" if lang == "km" else "km"}


@pages_blp.after_app_request
def _remember_language(response: Response) -> Response:
    """The visible language switch (``?lang=``) sticks: it is kept in a cookie for the next visit."""
    asked = request.args.get("lang")
    if asked in ("en", "km") and request.cookies.get(LANG_COOKIE) != asked and request.blueprint in ("pages", "maps"):
        response.set_cookie(LANG_COOKIE, asked, max_age=365 * 86400, samesite="Lax",
                            secure=request.is_secure, httponly=False)
    return response


def _html(body: str, status: int = 200) -> Response:
    response = current_app.response_class(body, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Vary"] = "Accept-Language, Cookie"
    response.headers["Content-Language"] = str(get_locale() or "en")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# --- what the form shows ------------------------------------------------------------------------------------------

def localised(row: Any, field: str = "label") -> str:
    """``<field>_km`` for Khmer readers when there is one, else ``<field>_en`` (staff pages use it too)."""
    km = getattr(row, f"{field}_km")
    return km if str(get_locale()) == "km" and km else getattr(row, f"{field}_en")


def category_groups() -> list[dict[str, Any]]:
    """The four groups and their subtypes, labelled from the categories table in the reader's language."""
    rows = cached("form_categories", lambda: queries.form_categories(get_session()))
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.parent_code is None:
            groups[row.code] = {"code": row.code, "label": localised(row), "icon": row.icon or row.code,
                                "subtypes": []}
    for row in rows:
        if row.parent_code in groups:
            groups[row.parent_code]["subtypes"].append({"code": row.code, "label": localised(row)})
    return [g for g in groups.values() if g["subtypes"]]


def area_rows() -> list[Any]:
    return cached("area_picker", lambda: list(queries.area_picker(get_session())), seconds=300)


def picked_areas() -> dict[str, PickedArea]:
    return {r.code: PickedArea(r.code, r.lon, r.lat, r.radius_m) for r in area_rows() if r.level == "commune"}


def area_choices() -> list[dict[str, Any]]:
    """Cities → khans → sangkats for the "choose the area" list, with each sangkat's point and radius."""
    rows = area_rows()
    by_parent: dict[int | None, list[Any]] = {}
    for row in rows:
        by_parent.setdefault(row.parent_id, []).append(row)

    def name(row: Any) -> str:
        return localised(row, "name")

    return [{"name": name(city), "khans": [
        {"name": name(khan), "sangkats": [
            {"code": s.code, "name": name(s), "lon": s.lon, "lat": s.lat, "r": s.radius_m}
            for s in sorted(by_parent.get(khan.id, []), key=name)]}
        for khan in sorted(by_parent.get(city.id, []), key=name)]}
        for city in rows if city.level == "city"]


def _render_form(template: str, *, values: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                 status: int = 200) -> Response:
    values = values or {}
    body = render_template(template, groups=category_groups(), cities=area_choices(), strings=browser_strings(),
                           values=values, errors=errors or {}, client_id=values.get("client_id") or uuid.uuid4(),
                           max_photos=MAX_FORM_PHOTOS, shell_version=shell_version())
    return _html(body, status)


# --- the form -----------------------------------------------------------------------------------------------------

@pages_blp.get("/report")
def report_form() -> Response:
    """The resident's form: works offline once opened, and without JavaScript."""
    return _render_form("report.html")


def _form_photos(cfg: Any, errors: dict[str, str]) -> list[StoredPhoto]:
    uploads = [f for f in request.files.getlist("photo") if f.filename]
    if len(uploads) > MAX_FORM_PHOTOS:
        errors["photo"] = _("You can add up to %(max)s photos.", max=MAX_FORM_PHOTOS)
        return []
    photos = []
    for upload in uploads:
        try:
            photos.append(sanitise_upload(upload, cfg))
        except PhotoRejected as exc:
            errors["photo"] = translated(exc.error, exc.message)
            return []
    return photos


@pages_blp.before_request
def _room_for_photos() -> None:
    """The no-JS form carries up to three photos as the phone took them (the JS path shrinks them first)."""
    if request.endpoint == "pages.report_submit":
        request.max_content_length = MAX_FORM_PHOTOS * current_app.config["CIVICMAP"].max_photo_bytes + 64 * 1024


@pages_blp.post("/report")
def report_submit() -> Response:
    """The form posted without JavaScript (multipart): store the report and its photos, or say what to fix."""
    cfg = current_app.config["CIVICMAP"]
    if any("\ufffd" in value for value in request.form.values()):
        # werkzeug replaced bytes that were not UTF-8: refuse rather than store mangled text.
        raise ApiError("form.bad_encoding", _("The form was not sent as UTF-8 text; please type it again."), 400)
    payload, errors = read_report_form(request.form, picked_areas())
    photos = _form_photos(cfg, errors)
    values = {k: v for k, v in request.form.items() if k not in ("lon", "lat", "accuracy_m")}
    if not errors:
        try:
            payload = ReportCreateSchema().load(payload)
        except ValidationError as exc:  # what the form checks did not catch, still next to its field
            for field in exc.messages:
                errors["location" if field in ("location", "accuracy_m") else str(field)] = _("Please check this.")
    if errors:
        return _render_form("report.html", values=values, errors=errors, status=422)
    session = get_session()
    now = datetime.now(timezone.utc)
    try:
        created = create_report(session, payload, source="web", user=None, now=now,
                                future_tolerance=timedelta(hours=cfg.future_tolerance_hours))
    except ApiError as exc:
        session.rollback()
        field = next(iter(exc.errors), "location" if exc.error == "report.outside_service_area" else "category")
        return _render_form("report.html", values=values, errors={field: exc.message}, status=exc.status)
    if not created.replayed:
        report = find_report(session, str(created.id), for_update=True)
        for photo in photos:
            attach_photo(session, report, photo)
    session.commit()
    return redirect(url_for("pages.track", reference=created.reference, sent=1), 303)


# --- tracking -----------------------------------------------------------------------------------------------------

def _who(role: str) -> str:
    if role == "resident":
        return _("You")
    if role in ("moderator", "admin", "planner"):
        return _("City staff")
    return _("Digital ambassador")


@pages_blp.get("/r")
def track_lookup() -> Response:
    """"Follow a report": type a reference, get its page."""
    reference = request.args.get("ref", "").strip()
    if reference:
        return redirect(url_for("pages.track", reference=reference))
    return _html(render_template("track_lookup.html"))


@pages_blp.get("/r/<reference>")
def track(reference: str) -> Response:
    """A report's public page: its status, the timeline of what happened, and what the city said."""
    session = get_session()
    report_id, normalised = parse_id_or_reference(reference)
    row = queries.public_report(session, report_id=report_id, reference=normalised)
    if row is None:
        return _html(render_template("track_lookup.html", not_found=reference), 404)
    if normalised and normalised != reference:
        return redirect(url_for("pages.track", reference=normalised), 301)
    events = [{"at": e.at, "status": e.new_status, "old_status": e.old_status, "note": e.note,
               "who": _who(e.actor_role)} for e in queries.report_history(session, row.id)]
    return _html(render_template("track.html", report=row, events=events, sent=request.args.get("sent") == "1",
                                 category=localised(row, "category_label")))


# --- field-worker mode and the service worker ---------------------------------------------------------------------

@pages_blp.get("/field")
def field() -> Response:
    """Field-worker mode: the same form for many reports, device sign-in, sync with progress, area updates."""
    return _render_form("field.html")


@pages_blp.get("/sw.js")
def service_worker() -> Response:
    """The service worker, served from the root so it may control /report, /field and /r/…"""
    source = (STATIC / "js" / "sw.js").read_text(encoding="utf-8")
    assets = [asset_url(name) for name in SHELL_ASSETS]
    header = (f"const SHELL_VERSION = {shell_version()!r};\n"
              f"const SHELL_ASSETS = {assets!r};\n")
    response = current_app.response_class(header + source, mimetype="text/javascript")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Service-Worker-Allowed"] = "/"
    response.add_etag()  # the browser's update check on every visit is then a 304 with no body
    return response.make_conditional(request)
