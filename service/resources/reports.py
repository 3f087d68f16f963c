"""Reports: intake from residents, the public view and list, status changes by moderators, photos."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import current_app, request, url_for
from flask.views import MethodView
from flask_babel import gettext as _
from flask_smorest import Blueprint
from sqlalchemy.engine import Row

from service import queries
from service.auth import STAFF_ROLES, current_user, hash_secret, require_roles, secrets_equal
from service.db import get_session
from service.errors import ApiError
from service.messages import translated
from service.intake import attach_photo, change_status, create_report, find_report, parse_id_or_reference
from service.photos import PhotoRejected, sanitise_upload
from service.resources.filters import decode_cursor, encode_cursor, report_filters
from service.schemas import (
    PhotoStoredSchema,
    ReportCreatedSchema,
    ReportCreateSchema,
    ReportListQuerySchema,
    ReportPageSchema,
    ReportPublicSchema,
    StatusChangeSchema,
)

blp = Blueprint("reports", __name__, url_prefix="/api/v1", description="Report intake, tracking and triage")


@blp.before_request
def _json_bodies_only() -> None:
    if request.method in ("POST", "PUT", "PATCH") and request.endpoint != "reports.ReportPhotos" \
            and not request.is_json:
        raise ApiError("request.unsupported_media_type", _("Send the body as JSON (Content-Type: application/json)."),
                       415)


def _area(row: Row[Any], level: str) -> dict[str, str] | None:
    code = getattr(row, f"{level}_code")
    if code is None:
        return None
    return {"code": code, "name_en": getattr(row, f"{level}_name_en"), "name_km": getattr(row, f"{level}_name_km")}


def public_report_dict(row: Row[Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The public shape of a report row from ``queries``; contact data is never selected."""
    out = {
        "id": row.id,
        "reference": row.reference,
        "category": row.category_code,
        "category_label_en": row.category_label_en,
        "category_label_km": row.category_label_km,
        "description": row.description,
        "landmark": row.landmark,
        "location": {"type": "Point", "coordinates": [row.lon, row.lat]},
        "accuracy_m": row.accuracy_m,
        "status": row.status,
        "duplicate_of": row.duplicate_of_reference,
        "source": row.source,
        "observed_at": row.observed_at,
        "observed_at_flag": row.observed_at_flag,
        "received_at": row.received_at,
        "updated_at": row.updated_at,
        "version": row.version,
        "city": _area(row, "city"),
        "district": _area(row, "district"),
        "commune": _area(row, "commune"),
        "photos": [{"sha256": sha, "url": url_for("photos.photo", sha256=sha)} for sha in row.photos],
        "confirmations": row.confirmations,
    }
    if history is not None:
        out["history"] = history
    return out


def _history(report_id: uuid.UUID) -> list[dict[str, Any]]:
    return [
        {"at": e.at, "old_status": e.old_status, "new_status": e.new_status, "note": e.note,
         "by": "resident" if e.actor_role == "resident" else "city" if e.actor_role in ("moderator", "admin")
         else "field_worker"}
        for e in queries.report_history(get_session(), report_id)
    ]


def _duplicate_suggestions(payload: dict[str, Any], report_id: uuid.UUID, now: datetime) -> list[dict[str, Any]]:
    """Reports this one may duplicate (``geo.duplicates``): public handles only, never ids or contact details.

    A resend has the same category and place as the stored report (its content
    hash matched), so the payload serves for both.
    """
    lon, lat = payload["location"]["coordinates"]
    rows = queries.duplicate_candidates(get_session(), category_code=payload["category"], lon=lon, lat=lat,
                                        exclude_id=report_id, now=now)
    return [{"reference": r.reference, "status": r.status, "distance_m": r.distance_m,
             "url": url_for("pages.track", reference=r.reference)} for r in rows]


@blp.route("/reports")
class Reports(MethodView):
    @blp.arguments(ReportListQuerySchema, location="query")
    @blp.response(200, ReportPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List public reports, newest first (keyset-paginated, no total count)"""
        filters = report_filters(args)
        after = decode_cursor(args["cursor"]) if "cursor" in args else None
        limit = args["limit"]
        rows = queries.list_public_reports(get_session(), filters, limit + 1, after)
        items = [public_report_dict(r) for r in rows[:limit]]
        next_cursor = encode_cursor(rows[limit - 1].received_at, rows[limit - 1].id) if len(rows) > limit else None
        return {"items": items, "next_cursor": next_cursor}

    @blp.arguments(ReportCreateSchema)
    @blp.response(201, ReportCreatedSchema)
    @blp.alt_response(200, schema=ReportCreatedSchema, description="A resend of a report already stored")
    def post(self, payload: dict[str, Any]) -> Any:
        """Report a problem (no account needed)"""
        user = current_user()
        now = datetime.now(timezone.utc)
        tolerance = timedelta(hours=current_app.config["CIVICMAP"].future_tolerance_hours)
        result = create_report(get_session(), payload, source="api", user=user, now=now, future_tolerance=tolerance)
        get_session().commit()
        body = dataclasses.asdict(result)
        body["suggestions"] = _duplicate_suggestions(payload, result.id, now)
        location = url_for("reports.ReportById", id_or_reference=result.reference)
        return body, (200 if result.replayed else 201), {"Location": location}


@blp.route("/reports/<id_or_reference>")
class ReportById(MethodView):
    @blp.response(200, ReportPublicSchema)
    def get(self, id_or_reference: str) -> Any:
        """One report's public view and history, by id or reference (e.g. PP-7K3Q9)"""
        user = current_user()
        staff = user is not None and user.role in STAFF_ROLES
        report_id, reference = parse_id_or_reference(id_or_reference)
        row = queries.public_report(get_session(), report_id=report_id, reference=reference, include_hidden=staff)
        if row is None:
            raise ApiError("report.not_found", _("There is no report %(ref)s.", ref=id_or_reference), 404)
        return public_report_dict(row, _history(row.id)), 200, {"ETag": f'"{row.version}"'}


def _expected_version(body: dict[str, Any]) -> int:
    header = request.headers.get("If-Match")
    if header:
        tag = header.strip().removeprefix("W/").strip('"')
        if not tag.isdigit():
            raise ApiError("request.bad_if_match", _("If-Match must be the report's version, e.g. \"3\"."), 400)
        return int(tag)
    if "version" in body:
        return int(body["version"])
    raise ApiError("report.version_required", _("Send the version you saw (If-Match header or version field)."), 428)


@blp.route("/reports/<uuid:report_id>/status")
class ReportStatus(MethodView):
    @require_roles("moderator")
    @blp.arguments(StatusChangeSchema)
    @blp.response(200, ReportPublicSchema)
    def patch(self, body: dict[str, Any], report_id: uuid.UUID) -> Any:
        """Change a report's status (moderators); needs the current version"""
        session = get_session()
        expected = _expected_version(body)
        report = find_report(session, str(report_id))
        user = current_user()
        assert user is not None
        change_status(session, report, new_status=body["status"], note=body["note"], expected_version=expected,
                      duplicate_of=body.get("duplicate_of"), actor=user, now=datetime.now(timezone.utc))
        session.commit()
        row = queries.public_report(session, report_id=report.id, include_hidden=True)
        return public_report_dict(row, _history(report.id)), 200, {"ETag": f'"{row.version}"'}


def _may_add_photos(report_id: uuid.UUID, tracking_token_hash: str | None) -> None:
    """The reporter (tracking token) or a field worker or staff member (bearer token) may add photos."""
    tracking = request.headers.get("X-Tracking-Token") or request.form.get("tracking_token")
    if tracking:
        if tracking_token_hash is None or not secrets_equal(hash_secret(tracking), tracking_token_hash):
            raise ApiError("auth.invalid_tracking_token", _("This tracking token does not belong to this report."),
                           403)
        return
    user = current_user()
    if user is None:
        raise ApiError("auth.required", _("Send the report's tracking token or a staff token."), 401,
                       headers={"WWW-Authenticate": "Bearer"})
    if user.role not in ("field_worker", "moderator", "admin"):
        raise ApiError("auth.forbidden", _("Your role may not add photos."), 403)


@blp.route("/reports/<uuid:report_id>/photos")
class ReportPhotos(MethodView):
    @blp.response(201, PhotoStoredSchema(many=True))
    @blp.doc(requestBody={"content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": {"photo": {"type": "string", "format": "binary"},
                                         "tracking_token": {"type": "string"}}}}}})
    def post(self, report_id: uuid.UUID) -> Any:
        """Add photos to a report (multipart field `photo`, one or more); EXIF is stripped"""
        session = get_session()
        report = find_report(session, str(report_id), for_update=True)
        _may_add_photos(report.id, report.tracking_token_hash)
        files = request.files.getlist("photo")
        if not files:
            raise ApiError("photo.missing", _("Send the picture as a multipart field named photo."), 400,
                           errors={"photo": [_("Missing.")]})
        cfg = current_app.config["CIVICMAP"]
        stored = []
        for upload in files:
            try:
                photo = sanitise_upload(upload, cfg)
            except PhotoRejected as exc:
                message = translated(exc.error, exc.message)
                raise ApiError(exc.error, message, exc.status, errors={"photo": [message]}) from exc
            attach_photo(session, report, photo)
            stored.append({"sha256": photo.sha256, "url": url_for("photos.photo", sha256=photo.sha256),
                           "width": photo.width, "height": photo.height, "bytes": len(photo.content)})
        session.commit()
        return stored
