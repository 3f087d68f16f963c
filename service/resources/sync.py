"""Offline batch sync for field devices: push batches, resumable photo uploads, the change feed.

The rules live in ``sync/`` (pure); ``service.sync_push`` carries them out.
See docs/sync-protocol.md for the wire format.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from flask import current_app, request, url_for
from flask.views import MethodView
from flask_babel import gettext as _
from flask_smorest import Blueprint
from marshmallow import fields, validate
from sqlalchemy import select

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from service import queries
from service.auth import current_device, current_device_or_resident
from service.db import get_session
from service.errors import ApiError
from service.messages import translated
from service.ratelimit import device_key, limiter, sync_limit
from service.models import Area, Category
from service.resources.reports import public_report_dict
from service.schemas import QuerySchema
from service.sync_push import RESIDENT_DEVICE_ID, device_label, push_batch
from service.sync_uploads import UploadLimits, UploadRefused, UploadState, receive_chunk
from sync.decisions import decode_cursor, paginate_changes, parse_content_range, photo_head
from sync.protocol import BatchLimits, ProtocolError, decode_json, parse_batch, parse_sha256, read_body

blp = Blueprint("sync", __name__, url_prefix="/api/v1/sync", description="Offline batch sync for field devices")
limiter.limit(sync_limit, key_func=device_key)(blp)

#: Most items a resident's phone (no device token) may send in one batch.
RESIDENT_MAX_ITEMS = 20

#: Endpoints that take ``Content-Encoding: gzip`` (they inflate it themselves, with a limit).
GZIP_ENDPOINTS = frozenset({"sync.SyncBatches"})
#: Endpoints that read their body themselves, keeping what arrived if the link drops.
STREAMING_ENDPOINTS = frozenset({"sync.SyncPhoto"})


def batch_limits() -> BatchLimits:
    cfg = current_app.config["CIVICMAP"]
    return BatchLimits(max_items=cfg.sync_max_items, max_body_bytes=cfg.sync_max_body_bytes,
                       max_inflated_bytes=cfg.sync_max_inflated_bytes)


def api_error(exc: ProtocolError) -> ApiError:
    return ApiError(exc.error, translated(exc.error, exc.message), exc.status, errors=exc.errors,
                    headers=exc.headers, extra=exc.extra)


@blp.route("/batches")
class SyncBatches(MethodView):
    @blp.response(200, description="One result per item, in request order (see docs/sync-protocol.md)")
    @blp.doc(requestBody={"content": {"application/json": {"schema": {"type": "object"}}}},
             security=[{"bearer": []}])
    def post(self) -> Any:
        """Push a batch of offline reports and updates (device token, or none from a resident's phone; gzip welcome)"""
        device = current_device_or_resident()
        limits = batch_limits()
        if request.mimetype != "application/json":
            raise ApiError("request.unsupported_media_type",
                           _("Send the body as JSON (Content-Type: application/json)."), 415)
        try:
            body = read_body(request.get_data(cache=True), request.headers.get("Content-Encoding"), limits)
            batch = parse_batch(decode_json(body), limits)
        except ProtocolError as exc:
            raise api_error(exc) from exc
        if device is None:
            _check_resident_batch(batch.device_id, batch.item_count)
        elif batch.device_id != device_label(device.id):
            raise ApiError("sync.device_mismatch", _("device_id must be the id of the device this token belongs to."),
                           422, errors={"device_id": [_("Not this token's device.")]})
        session = get_session()
        tolerance = timedelta(hours=current_app.config["CIVICMAP"].future_tolerance_hours)
        try:
            response = push_batch(session, batch, device, now=datetime.now(timezone.utc), future_tolerance=tolerance)
        except ProtocolError as exc:
            raise api_error(exc) from exc
        session.commit()
        return response


def _check_resident_batch(device_id: str, item_count: int) -> None:
    """A batch without a token comes from a resident's phone: it says so, and it is small."""
    if device_id != RESIDENT_DEVICE_ID:
        raise ApiError("auth.required", _("Sync needs the device token given when the phone was registered."), 401,
                       headers={"WWW-Authenticate": "Bearer"})
    if item_count > RESIDENT_MAX_ITEMS:
        raise ApiError("sync.too_many_items",
                       _("A phone without a device token may send at most %(n)s reports at a time.",
                         n=RESIDENT_MAX_ITEMS), 413)


def _resident_may_upload(sha: str) -> None:
    """Without a token, only a photo that a resident's report lists may be uploaded."""
    if not queries.upload_awaited_by_resident(get_session(), sha):
        raise ApiError("sync.photo_not_expected",
                       _("Send the report that lists this photo first, then its photo."), 403)


@blp.route("/device")
class SyncDevice(MethodView):
    @blp.response(200, description="The device this token belongs to: its number (the batches' device_id) and area")
    @blp.doc(security=[{"bearer": []}])
    def get(self) -> Any:
        """Who am I: the device behind the token, for field mode's sign-in"""
        device = current_device()
        session = get_session()
        area = session.get(Area, device.area_id)
        return {"device_id": str(device.id), "name": device.name, "role": device.user.role,
                "area": {"code": area.code, "level": area.level, "name_en": area.name_en, "name_km": area.name_km}
                if area else None}


def _read_what_arrives(limit: int) -> bytes:
    """The body, or as much of it as arrived before the client went away (kept, not lost)."""
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            block = request.stream.read(64 * 1024)
            if not block:
                break
            total += len(block)
            if total > limit:
                raise RequestEntityTooLarge()
            chunks.append(block)
    except (ClientDisconnected, ConnectionError):
        pass
    return b"".join(chunks)


def _upload_headers(state: UploadState) -> dict[str, str]:
    return {"Upload-Offset": str(state.offset), "Upload-Length": str(state.total),
            "Upload-Complete": "?1" if state.complete else "?0", "Cache-Control": "no-store"}


@blp.route("/photos/<sha256>")
class SyncPhoto(MethodView):
    @blp.response(200, description="What is stored: Upload-Offset, Upload-Length, Upload-Complete headers")
    @blp.doc(security=[{"bearer": []}])
    def head(self, sha256: str) -> Any:
        """How much of a photo upload the server holds (resume from Upload-Offset)"""
        device = current_device_or_resident()
        sha = _sha(sha256)
        if device is None:
            _resident_may_upload(sha)
        state = queries.upload_state(get_session(), sha)
        if state is None:
            status, headers = photo_head(0, None, False)
        elif state.stored_sha256 is not None:
            status, headers = photo_head(state.total_bytes, state.total_bytes, True)
        else:
            status, headers = photo_head(state.stored_bytes, state.total_bytes, False)
        return current_app.response_class(status=status, headers=headers)

    @blp.response(200, description="Upload progress, and the stored photo once complete")
    @blp.doc(security=[{"bearer": []}], requestBody={"content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary"}}}})
    def put(self, sha256: str) -> Any:
        """Upload a photo, whole or in Content-Range pieces; idempotent and resumable"""
        device = current_device_or_resident()
        sha = _sha(sha256)
        if device is None:
            _resident_may_upload(sha)
        cfg = current_app.config["CIVICMAP"]
        limits = UploadLimits(cfg.max_photo_bytes, cfg.max_photo_pixels, cfg.photo_max_edge)
        session = get_session()
        try:
            header = request.headers.get("Content-Range")
            rng = parse_content_range(header, cfg.max_photo_bytes) if header else None
            data = _read_what_arrives(cfg.max_photo_bytes)
            state = receive_chunk(session, sha, data, rng, device, limits)
        except ProtocolError as exc:
            raise api_error(exc) from exc
        except UploadRefused as exc:
            session.commit()  # the discarded upload stays discarded
            raise ApiError(exc.error, exc.message, exc.status, errors={"photo": [exc.message]}) from exc
        session.commit()
        photo = ({"sha256": state.photo_sha256, "url": url_for("photos.photo", sha256=state.photo_sha256)}
                 if state.photo_sha256 else None)
        body = {"upload_sha256": sha, "offset": state.offset, "total": state.total, "complete": state.complete,
                "photo": photo}
        return body, 200, _upload_headers(state)


def _sha(text: str) -> str:
    try:
        return parse_sha256(text)
    except ProtocolError as exc:
        raise api_error(exc) from exc


class ChangesQuerySchema(QuerySchema):
    cursor = fields.String(metadata={"description": "from the previous page; leave out to start from the beginning"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


def _cursor_secret() -> bytes:
    return current_app.config["SECRET_KEY"].encode("utf-8")


@blp.route("/changes")
class SyncChanges(MethodView):
    @blp.arguments(ChangesQuerySchema, location="query")
    @blp.response(200, description="Changes after the cursor, oldest first, and the cursor to pass next")
    @blp.doc(security=[{"bearer": []}])
    def get(self, args: dict[str, Any]) -> Any:
        """What changed in the device's area since the cursor: reports (status, notes, photos) and categories"""
        device = current_device()
        session = get_session()
        try:
            after = decode_cursor(args["cursor"], secret=_cursor_secret()) if "cursor" in args else 0
        except ProtocolError as exc:
            raise api_error(exc) from exc
        if after > queries.last_change_number(session):
            raise ApiError("sync.cursor_from_future", _("This cursor is ahead of the server; pull again without one."),
                           400)
        limit = args["limit"]
        rows = queries.changes_after(session, after, device.area_id, limit + 1)
        page = paginate_changes(rows, after=after, limit=limit, seq_of=lambda r: r.seq, secret=_cursor_secret())
        reports = queries.public_reports_by_id(session, [r.report_id for r in page.items if r.kind == "report"])
        categories = {c.code: c for c in session.scalars(select(Category))}
        items = []
        for change in page.items:
            if change.kind == "report":
                row = reports.get(change.report_id)
                items.append({"seq": change.seq, "kind": "report", "id": str(change.report_id),
                              "removed": row is None, "report": public_report_dict(row) if row else None})
            else:
                category = categories[change.category_code]
                items.append({"seq": change.seq, "kind": "category", "code": category.code, "category": {
                    "code": category.code, "parent": category.parent_code, "label_en": category.label_en,
                    "label_km": category.label_km, "icon": category.icon, "active": category.active}})
        return {"items": items, "cursor": page.cursor, "more": page.more}
