"""Query-string filters and keyset cursors shared by the report list, the layers, the tiles and the exports.

One place turns the parsed query (``schemas.ReportFilterQuerySchema``) into
``queries.ReportFilters``, so every route refuses the same bad input the same
way: a malformed or inverted bbox, an unknown category, status or area, a
time range that ends before it starts.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import orjson
from flask_babel import gettext as _

from geo.coordinates import CoordinateError, parse_bbox
from service import queries
from service.db import get_session
from service.errors import ApiError
from service.layer_queries import category_codes
from service.messages import translated
from service.models import REPORT_STATUSES


def encode_cursor(received_at: datetime, report_id: uuid.UUID) -> str:
    raw = orjson.dumps([received_at.isoformat(), str(report_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, rid = orjson.loads(raw)
        return datetime.fromisoformat(at), uuid.UUID(rid)
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise ApiError("request.bad_cursor", _("This cursor is not one we gave out."), 400,
                       errors={"cursor": [_("Invalid cursor.")]}) from exc


def bbox_from(text: str) -> tuple[float, float, float, float]:
    try:
        box = parse_bbox(text)
    except CoordinateError as exc:
        message = translated(exc.error, exc.message)
        raise ApiError(exc.error, message, 400, errors={"bbox": [exc.message]}) from exc
    return box.as_tuple()


def report_filters(args: dict[str, Any]) -> queries.ReportFilters:
    """Validated filters from a parsed query string; a 400 in the one error shape otherwise."""
    bbox = bbox_from(args["bbox"]) if "bbox" in args else None
    statuses = tuple(args.get("status", ()))
    unknown = [s for s in statuses if s not in REPORT_STATUSES]
    if unknown:
        raise ApiError("request.unknown_status", _("Unknown status: %(s)s.", s=", ".join(unknown)), 400,
                       errors={"status": [_("One of: %(all)s.", all=", ".join(REPORT_STATUSES))]})
    categories = tuple(args.get("category", ()))
    if categories:
        unknown = sorted(set(categories) - category_codes(get_session()))
        if unknown:
            raise ApiError("request.unknown_category", _("Unknown category: %(c)s.", c=", ".join(unknown)), 400,
                           errors={"category": [_("See /api/v1/categories for the codes.")]})
    area = None
    if "area" in args:
        area = queries.find_area(get_session(), args["area"])
        if area is None:
            raise ApiError("request.unknown_area", _("There is no area %(code)s.", code=args["area"]), 400,
                           errors={"area": [_("Unknown area code.")]})
    if "since" in args and "until" in args and args["since"] >= args["until"]:
        raise ApiError("request.bad_time_range", _("since must be before until."), 400,
                       errors={"until": [_("Must be after since.")]})
    return queries.ReportFilters(bbox=bbox, categories=categories, statuses=statuses,
                                 area=area, since=args.get("since"), until=args.get("until"))
