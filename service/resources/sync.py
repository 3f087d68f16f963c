"""Offline batch sync for field devices: push batches (more routes follow: photos, change feed).

The rules live in ``sync/`` (pure); ``service.sync_push`` carries them out.
See docs/sync-protocol.md for the wire format.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from flask import current_app, request
from flask.views import MethodView
from flask_babel import gettext as _
from flask_smorest import Blueprint

from service.auth import current_device
from service.db import get_session
from service.errors import ApiError
from service.messages import translated
from service.sync_push import push_batch
from sync.protocol import BatchLimits, ProtocolError, decode_json, parse_batch, read_body

blp = Blueprint("sync", __name__, url_prefix="/api/v1/sync", description="Offline batch sync for field devices")

#: Endpoints that take ``Content-Encoding: gzip`` (they inflate it themselves, with a limit).
GZIP_ENDPOINTS = frozenset({"sync.SyncBatches"})


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
        """Push a batch of offline reports and updates (device token; gzip welcome)"""
        device = current_device()
        limits = batch_limits()
        if request.mimetype != "application/json":
            raise ApiError("request.unsupported_media_type",
                           _("Send the body as JSON (Content-Type: application/json)."), 415)
        try:
            body = read_body(request.get_data(cache=True), request.headers.get("Content-Encoding"), limits)
            batch = parse_batch(decode_json(body), limits)
        except ProtocolError as exc:
            raise api_error(exc) from exc
        if batch.device_id != str(device.id):
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
