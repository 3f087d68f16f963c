"""The offline batch-sync wire format: plain data, parsed and checked without a server.

Digital ambassadors collect reports offline and push them in batches over
flaky 2G/3G links (``POST /api/v1/sync/batches``). This module turns the bytes
of such a request into typed, frozen dataclasses and back:

* :func:`read_body` enforces the body-size limit and inflates
  ``Content-Encoding: gzip`` with :func:`inflate_gzip`, which stops a gzip
  bomb after at most ``max_inflated_bytes + 1`` bytes of output instead of
  inflating it fully;
* :func:`decode_json` parses the JSON;
* :func:`parse_batch` checks the envelope (``device_id``, ``batch_id``,
  ``sent_at``, ``items``) and parses every item *leniently*: a broken item
  becomes a pre-rejected :class:`ItemResult` in :attr:`SyncBatch.rejected`
  and never sinks the others. Only a broken envelope raises
  :class:`ProtocolError`;
* :class:`ItemResult` and :class:`BatchResponse` are the answer, with
  ``to_json()`` giving JSON-ready dicts.

A ``create`` item's payload is normalised exactly as
``service.schemas.ReportCreateSchema().load`` would normalise it (same
defaults, floats, aware datetimes, GeoJSON point), so
:func:`sync.decisions.canonical_hash` of it equals the hash POST /reports
stores for the same report; the tests check the two against each other.

Everything here is pure: no Flask, no SQLAlchemy, no database, no clock. It
imports only the standard library, orjson, ``geo.coordinates`` and
marshmallow's e-mail validator (so e-mail acceptance matches the service's
exactly). Errors carry a stable dotted key (``sync.…``), an English sentence
and the HTTP status; the service translates the sentence by key.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal
from uuid import UUID

import orjson
from marshmallow import ValidationError
from marshmallow.validate import Email

from geo.coordinates import CoordinateError, validate_lon_lat

__all__ = [
    "BatchLimits",
    "BatchResponse",
    "CREATE_FIELDS",
    "DESCRIPTION_MAX",
    "LANDMARK_MAX",
    "NOTE_MAX",
    "OPS",
    "ProtocolError",
    "REPORT_STATUSES",
    "ResultKind",
    "SERVER_OWNED_FIELDS",
    "ItemResult",
    "SyncBatch",
    "SyncItem",
    "assemble_results",
    "decode_json",
    "inflate_gzip",
    "normalise_create_payload",
    "normalise_update_payload",
    "parse_batch",
    "parse_sha256",
    "read_body",
]

#: The operations a batch item may carry.
OPS: Final[tuple[str, ...]] = ("create", "update")

#: Mirrors ``service.models.REPORT_STATUSES`` (a test keeps them equal; sync may not import service).
REPORT_STATUSES: Final[tuple[str, ...]] = ("new", "acknowledged", "in_progress", "resolved", "rejected",
                                           "duplicate")
#: Mirrors ``service.models.DESCRIPTION_MAX`` / ``LANDMARK_MAX``.
DESCRIPTION_MAX: Final[int] = 2000
LANDMARK_MAX: Final[int] = 200
#: Longest note on an ``update`` item (as ``StatusChangeSchema.note``).
NOTE_MAX: Final[int] = 2000
#: Mirrors ``service.schemas.SERVER_OWNED_FIELDS``: refused in a create payload.
SERVER_OWNED_FIELDS: Final[tuple[str, ...]] = ("id", "status", "version", "received_at", "updated_at", "hidden",
                                               "reference", "tracking_token", "source", "duplicate_of")
#: The fields of a create payload (``ReportCreateSchema``).
CREATE_FIELDS: Final[tuple[str, ...]] = ("client_id", "category", "description", "landmark", "location",
                                         "accuracy_m", "observed_at", "contact")
UPDATE_FIELDS: Final[tuple[str, ...]] = ("report_id", "status", "note")
ENVELOPE_FIELDS: Final[tuple[str, ...]] = ("device_id", "batch_id", "sent_at", "items")
ITEM_FIELDS: Final[tuple[str, ...]] = ("client_id", "op", "payload", "base_version", "photos")
DEVICE_ID_MAX: Final[int] = 128
#: base_version is a database integer.
VERSION_MAX: Final[int] = 2**31 - 1

ResultKind = Literal["created", "unchanged", "conflict", "rejected"]

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_PHONE_RE = re.compile(r"^\+?[0-9][0-9 \-]{4,38}$")  # as ContactSchema.phone
_EMAIL = Email()
# marshmallow.fields.Boolean's truthy values (True and 1.0 equal 1); consent must be one of them.
_TRUTHY: Final[frozenset[object]] = frozenset({"t", "T", "true", "True", "TRUE", "on", "On", "ON", "y", "Y", "yes",
                                               "Yes", "YES", "1", 1})
_FALSY: Final[frozenset[object]] = frozenset({"f", "F", "false", "False", "FALSE", "off", "Off", "OFF", "n", "N",
                                              "no", "No", "NO", "0", 0})

# Messages as marshmallow words them, so a client sees one vocabulary on both endpoints.
_MISSING = "Missing data for required field."
_NULL = "Field may not be null."
_UNKNOWN = "Unknown field."
_NOT_STRING = "Not a valid string."
_SERVER_OWNED = "Set by the server; clients cannot set it."


class ProtocolError(Exception):
    """A request the sync protocol refuses as a whole (or a photo chunk it refuses).

    Same attributes as ``service.errors.ApiError`` so the service converts one
    into the other field by field: ``error`` (stable key), ``message``
    (English), ``status`` (HTTP), ``errors`` (field errors), ``headers`` (to
    send, e.g. ``Upload-Offset``) and ``extra`` (more JSON members).
    """

    def __init__(self, error: str, message: str, status: int = 422, *, errors: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(error, message, status)
        self.error = error
        self.message = message
        self.status = status
        self.errors: dict[str, Any] = dict(errors or {})
        self.headers: dict[str, str] = dict(headers or {})
        self.extra: dict[str, Any] = dict(extra or {})

    def __str__(self) -> str:
        return f"{self.error} ({self.status}): {self.message}"


@dataclass(frozen=True)
class BatchLimits:
    """Size limits of one push; the service builds these from its configuration.

    ``max_body_bytes`` bounds the body as it arrives (compressed or not);
    ``max_inflated_bytes`` bounds it after gzip inflation (and an identity body
    too). The defaults fit 500 typical items with ample room: a report is
    about 0.5–1 KB of JSON, at most ~13 KB with a 2000-character Khmer
    description written with ``\\u`` escapes.
    """

    max_items: int = 500
    max_body_bytes: int = 2 * 1024 * 1024
    max_inflated_bytes: int = 8 * 1024 * 1024
    max_photos_per_item: int = 6

    def __post_init__(self) -> None:
        for name in ("max_items", "max_body_bytes", "max_inflated_bytes", "max_photos_per_item"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BatchLimits.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class SyncItem:
    """One item of a batch that parsed cleanly.

    ``payload`` is normalised: for ``create`` it is what
    ``ReportCreateSchema().load`` returns (with ``client_id`` set to the
    item's), ready for ``service.intake.create_report``; for ``update`` it is
    ``{"report_id": UUID, "status"?: str, "note"?: str}``. Treat it as
    read-only. ``photos`` are lower-case sha256 hex digests of the photo
    bytes the client will upload, without duplicates, in the client's order.
    ``index`` is the item's position in the request's ``items`` array.
    """

    client_id: UUID
    op: str
    payload: Mapping[str, Any]
    base_version: int | None
    photos: tuple[str, ...]
    index: int = 0


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one item, reported back in request order.

    ``result`` is one of:

    * ``created``: this request stored the item: a new report (``create``) or
      a new version of one (``update``);
    * ``unchanged``: the item was stored before (a resend); ``id`` and
      ``reference`` are the original ones;
    * ``conflict``: nothing was stored; ``current`` holds the server's state
      (another payload under the same ``client_id``, or a stale
      ``base_version``);
    * ``rejected``: nothing was stored and resending the same item cannot
      help; ``error`` says why, ``errors`` which fields.

    ``version`` is the report's version now (base the next update on it).
    ``missing_photos`` are the sha256 values the server still needs.
    ``client_id`` is ``None`` only when the item's own ``client_id`` was
    unreadable; ``index`` always identifies the item.
    """

    client_id: UUID | None
    result: ResultKind
    id: UUID | None = None
    reference: str | None = None
    version: int | None = None
    errors: Mapping[str, Any] = field(default_factory=dict)
    missing_photos: tuple[str, ...] = ()
    current: Mapping[str, Any] | None = None
    error: str | None = None
    message: str | None = None
    index: int = 0

    @classmethod
    def rejected(cls, index: int, client_id: UUID | None, error: str, message: str,
                 errors: Mapping[str, Any] | None = None) -> ItemResult:
        """A rejection, e.g. for a service-side refusal such as ``report.outside_service_area``."""
        return cls(client_id=client_id, result="rejected", errors=dict(errors or {}), error=error,
                   message=message, index=index)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; every key is always present (``null`` when empty)."""
        return {
            "index": self.index,
            "client_id": str(self.client_id) if self.client_id is not None else None,
            "result": self.result,
            "id": str(self.id) if self.id is not None else None,
            "reference": self.reference,
            "version": self.version,
            "missing_photos": list(self.missing_photos),
            "error": self.error,
            "message": self.message,
            "errors": _json_ready(self.errors),
            "current": _json_ready(self.current) if self.current is not None else None,
        }


@dataclass(frozen=True)
class SyncBatch:
    """A parsed push: the envelope, the items that parsed, and the items that did not.

    ``items`` and ``rejected`` together cover every index of the request's
    ``items`` array exactly once. ``sent_at`` is the device's clock, kept
    raw; it is never used for ordering.
    """

    device_id: str
    batch_id: UUID
    sent_at: datetime
    items: tuple[SyncItem, ...]
    rejected: tuple[ItemResult, ...] = ()

    @property
    def item_count(self) -> int:
        return len(self.items) + len(self.rejected)


@dataclass(frozen=True)
class BatchResponse:
    """The answer to a push: one result per item, in request order.

    ``received_at`` and ``clock_offset`` (``received_at − sent_at``) are those
    of the batch's *first* arrival, so a replay answers with the same values.
    """

    batch_id: UUID
    received_at: datetime
    clock_offset: timedelta
    results: tuple[ItemResult, ...]
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        counts = {kind: 0 for kind in ("created", "unchanged", "conflict", "rejected")}
        for result in self.results:
            counts[result.result] += 1
        return {
            "batch_id": str(self.batch_id),
            "received_at": self.received_at.isoformat(),
            "clock_offset_s": round(self.clock_offset.total_seconds(), 3),
            "replayed": self.replayed,
            "counts": counts,
            "results": [result.to_json() for result in self.results],
        }


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# --- body ------------------------------------------------------------------------------------------------------


def inflate_gzip(body: bytes, max_bytes: int) -> bytes:
    """Inflate a gzip body, refusing to produce more than ``max_bytes``.

    Output is requested from zlib with ``max_length`` never above what is
    still allowed plus one byte, so a gzip bomb (50 MB of zeros fit in
    ~50 KB) costs at most ``max_bytes + 1`` bytes of memory before it is
    refused with 413 ``sync.body_too_large``. Several concatenated gzip
    members are inflated in turn (RFC 1952). Empty, truncated or corrupt
    data, or trailing bytes that are not a gzip member, give 400
    ``sync.corrupt_gzip``.
    """
    if max_bytes < 0:
        raise ValueError("max_bytes must not be negative")
    if not body:
        raise ProtocolError("sync.corrupt_gzip", "The gzip body is empty.", 400)
    out = bytearray()
    data = bytes(body)
    try:
        while data:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip wrapper only
            while not inflater.eof:
                chunk = inflater.decompress(data, max_bytes + 1 - len(out))
                out += chunk
                if len(out) > max_bytes:
                    raise ProtocolError("sync.body_too_large",
                                        f"The body inflates to more than {max_bytes} bytes; send smaller batches.",
                                        413, extra={"max_inflated_bytes": max_bytes})
                data = inflater.unconsumed_tail
                if not data and not chunk and not inflater.eof:
                    raise ProtocolError("sync.corrupt_gzip", "The gzip body is truncated.", 400)
            data = inflater.unused_data
    except zlib.error as exc:
        raise ProtocolError("sync.corrupt_gzip", f"The body is not valid gzip ({exc}).", 400) from None
    return bytes(out)


def read_body(body: bytes, content_encoding: str | None, limits: BatchLimits) -> bytes:
    """The JSON bytes of a push, after the size limits and ``Content-Encoding``.

    The service must stop reading the request stream after
    ``limits.max_body_bytes + 1`` bytes (chunked bodies included) and pass what
    it read; this function then refuses it. ``identity`` (or no header) and
    ``gzip`` are accepted; anything else is 415 ``sync.unsupported_encoding``.
    """
    if len(body) > limits.max_body_bytes:
        raise ProtocolError("sync.body_too_large",
                            f"The body is larger than {limits.max_body_bytes} bytes; send smaller batches.", 413,
                            extra={"max_body_bytes": limits.max_body_bytes})
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > limits.max_inflated_bytes:
            raise ProtocolError("sync.body_too_large",
                                f"The body is larger than {limits.max_inflated_bytes} bytes; send smaller batches.",
                                413, extra={"max_inflated_bytes": limits.max_inflated_bytes})
        return body
    if encoding in ("gzip", "x-gzip"):
        return inflate_gzip(body, limits.max_inflated_bytes)
    raise ProtocolError("sync.unsupported_encoding",
                        f"Content-Encoding {content_encoding!r} is not supported; use gzip or none.", 415)


def decode_json(body: bytes) -> Any:
    """Parse JSON strictly (UTF-8 only; no NaN or Infinity literals), or 400 ``sync.invalid_json``."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("sync.invalid_json", f"The body is not valid JSON ({exc}).", 400) from None


# --- envelope and items ---------------------------------------------------------------------------------------


def parse_batch(data: object, limits: BatchLimits | None = None) -> SyncBatch:
    """Check a decoded push and parse its items, each on its own.

    Raises :class:`ProtocolError` only for the envelope:

    * not a JSON object, unknown members, a missing or invalid ``device_id``
      (1–128 characters), ``batch_id`` (UUID) or ``sent_at`` (ISO 8601 with
      a UTC offset), ``items`` not an array: 422 ``sync.invalid_batch`` with
      field ``errors``;
    * more than ``limits.max_items`` items: 413 ``sync.too_many_items``;
    * one ``client_id`` on two items: 422 ``sync.duplicate_client_id``, with
      the ids in ``extra["client_ids"]``; which one was meant is unknowable.

    Every other problem rejects just that item: see :func:`_parse_item`.
    """
    limits = limits or BatchLimits()
    if not isinstance(data, Mapping):
        raise ProtocolError("sync.invalid_batch", "The body must be a JSON object.", 422,
                            errors={"_schema": ["Invalid input type."]})
    errors: dict[str, list[str]] = {}
    for key in data:
        if key not in ENVELOPE_FIELDS:
            errors[str(key)] = [_UNKNOWN]

    raw_items = data.get("items")
    if "items" not in data:
        errors["items"] = [_MISSING]
    elif not isinstance(raw_items, list):
        errors["items"] = ["Not a valid list."]
    elif len(raw_items) > limits.max_items:
        raise ProtocolError("sync.too_many_items",
                            f"A batch may hold at most {limits.max_items} items, this one has {len(raw_items)}; "
                            "split it.", 413, extra={"max_items": limits.max_items})

    device_id = data.get("device_id")
    if "device_id" not in data:
        errors["device_id"] = [_MISSING]
    elif not isinstance(device_id, str) or not device_id.strip():
        errors["device_id"] = ["Not a valid device id."]
    elif len(device_id) > DEVICE_ID_MAX:
        errors["device_id"] = [f"Longer than maximum length {DEVICE_ID_MAX}."]

    batch_id = None
    if "batch_id" not in data:
        errors["batch_id"] = [_MISSING]
    else:
        batch_id = _uuid(data["batch_id"])
        if batch_id is None:
            errors["batch_id"] = ["Not a valid UUID."]

    sent_at = None
    if "sent_at" not in data:
        errors["sent_at"] = [_MISSING]
    else:
        sent_at, message = _aware_datetime(data["sent_at"])
        if message:
            errors["sent_at"] = [message]

    if errors:
        raise ProtocolError("sync.invalid_batch", "The batch envelope is invalid.", 422, errors=errors)
    assert isinstance(raw_items, list) and isinstance(device_id, str)
    assert batch_id is not None and sent_at is not None

    parsed = [_parse_item(index, raw, limits) for index, raw in enumerate(raw_items)]
    seen: set[UUID] = set()
    duplicates: list[UUID] = []
    for client_id in (_item_client_id(p) for p in parsed):
        if client_id is None:
            continue
        if client_id in seen and client_id not in duplicates:
            duplicates.append(client_id)
        seen.add(client_id)
    if duplicates:
        raise ProtocolError("sync.duplicate_client_id",
                            "Two items of this batch share a client_id; every item needs its own.", 422,
                            extra={"client_ids": [str(c) for c in duplicates]})
    return SyncBatch(
        device_id=device_id,
        batch_id=batch_id,
        sent_at=sent_at,
        items=tuple(p for p in parsed if isinstance(p, SyncItem)),
        rejected=tuple(p for p in parsed if isinstance(p, ItemResult)),
    )


def _item_client_id(parsed: SyncItem | ItemResult) -> UUID | None:
    return parsed.client_id


def _parse_item(index: int, raw: object, limits: BatchLimits) -> SyncItem | ItemResult:
    """One item, or its rejection. Item-level keys:

    * ``sync.invalid_item``: not an object, unknown members, no valid
      ``client_id``, a bad ``base_version`` or ``photos``;
    * ``sync.unknown_op``: ``op`` is not one of :data:`OPS`;
    * ``sync.invalid_payload``: the payload fails validation (``errors`` says where).
    """
    if not isinstance(raw, Mapping):
        return ItemResult.rejected(index, None, "sync.invalid_item", "An item must be a JSON object.",
                                   {"_schema": ["Invalid input type."]})
    client_id = _uuid(raw.get("client_id"))
    errors: dict[str, Any] = {str(k): [_UNKNOWN] for k in raw if k not in ITEM_FIELDS}
    if client_id is None:
        errors["client_id"] = [_MISSING if "client_id" not in raw else "Not a valid UUID."]

    base_version = raw.get("base_version")
    if base_version is not None and (isinstance(base_version, bool) or not isinstance(base_version, int)
                                     or not 1 <= base_version <= VERSION_MAX):
        errors["base_version"] = ["Must be a positive integer."]
        base_version = None

    photos, photo_errors = _photos(raw.get("photos", []), limits.max_photos_per_item)
    if photo_errors:
        errors["photos"] = photo_errors

    if errors:
        return ItemResult.rejected(index, client_id, "sync.invalid_item", "This item is malformed.", errors)
    assert client_id is not None

    op = raw.get("op")
    if op not in OPS:
        return ItemResult.rejected(index, client_id, "sync.unknown_op",
                                   f"Unknown op {op!r}; use one of: {', '.join(OPS)}.",
                                   {"op": [f"Must be one of: {', '.join(OPS)}."]})

    payload_raw = raw.get("payload")
    if "payload" not in raw:
        return ItemResult.rejected(index, client_id, "sync.invalid_payload", "The item has no payload.",
                                   {"payload": [_MISSING]})
    if op == "create":
        if base_version is not None:
            return ItemResult.rejected(index, client_id, "sync.invalid_item",
                                       "base_version goes only with op update.",
                                       {"base_version": ["Only with op update."]})
        payload, payload_errors = normalise_create_payload(payload_raw, client_id)
    else:
        payload, payload_errors = normalise_update_payload(payload_raw)
        if payload is not None and "status" in payload and base_version is None:
            payload, payload_errors = None, {"base_version": ["Required when setting status."]}
    if payload is None:
        return ItemResult.rejected(index, client_id, "sync.invalid_payload", "The item's payload is invalid.",
                                   payload_errors)
    return SyncItem(client_id=client_id, op=op, payload=payload, base_version=base_version, photos=photos,
                    index=index)


def _uuid(value: object) -> UUID | None:
    """A UUID from its string forms, as marshmallow's ``fields.UUID`` reads them."""
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        return None
    try:
        return UUID(value)
    except ValueError:
        return None


def _aware_datetime(value: object) -> tuple[datetime | None, str | None]:
    """An aware datetime, as ``fields.AwareDateTime()`` reads it (``datetime.fromisoformat``)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None, "Not a valid datetime."
    elif value is None:
        return None, _NULL
    else:
        return None, "Not a valid datetime."
    if parsed.tzinfo is None or parsed.tzinfo.utcoffset(parsed) is None:
        return None, "Not a valid aware datetime."
    return parsed, None


def _photos(value: object, max_photos: int) -> tuple[tuple[str, ...], list[str]]:
    if not isinstance(value, list):
        return (), ["Not a valid list."]
    out: list[str] = []
    for entry in value:
        if not isinstance(entry, str) or not _SHA256_RE.fullmatch(entry):
            return (), ["Each photo is the sha256 of its bytes: 64 hexadecimal characters."]
        digest = entry.lower()
        if digest not in out:
            out.append(digest)
    if len(out) > max_photos:
        return (), [f"At most {max_photos} photos per item."]
    return tuple(out), []


def parse_sha256(text: str) -> str:
    """The lower-case sha256 from a photo URL, or 400 ``sync.bad_sha256``."""
    if not isinstance(text, str) or not _SHA256_RE.fullmatch(text):
        raise ProtocolError("sync.bad_sha256", "A photo is named by the sha256 of its bytes: 64 hex characters.",
                            400)
    return text.lower()


def _string(data: Mapping[str, Any], key: str, errors: dict[str, Any], *, max_len: int, min_len: int = 0,
            required: bool = False, default: str | None = None) -> str | None:
    if key not in data:
        if required:
            errors[key] = [_MISSING]
        return default
    value = data[key]
    if value is None:
        errors[key] = [_NULL]
    elif not isinstance(value, str):
        errors[key] = [_NOT_STRING]
    elif min_len and len(value) < min_len:
        errors[key] = [f"Shorter than minimum length {min_len}."]
    elif len(value) > max_len:
        errors[key] = [f"Longer than maximum length {max_len}."]
    else:
        return value
    return None


def normalise_create_payload(data: object, client_id: UUID) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Validate a ``create`` payload like ``ReportCreateSchema().load`` and normalise it the same way.

    Returns ``(payload, {})`` or ``(None, field_errors)``. The payload gets
    ``description`` and ``landmark`` defaulted to ``""``, ``accuracy_m`` as
    a float, ``location`` as ``{"type": "Point", "coordinates": [lon, lat]}``
    with float coordinates checked by ``geo.coordinates.validate_lon_lat``
    (NaN, ±inf, latitude 91… refused), ``observed_at`` as an aware datetime
    (device clock, unchanged), and ``client_id`` set to the item's (a
    payload ``client_id`` must match it). Category existence and the service
    area need the database: the service checks those.
    """
    if not isinstance(data, Mapping):
        return None, {"_schema": ["Invalid input type."]}
    owned = sorted(str(k) for k in data if k in SERVER_OWNED_FIELDS)
    if owned:
        return None, {k: [_SERVER_OWNED] for k in owned}
    errors: dict[str, Any] = {str(k): [_UNKNOWN] for k in data if k not in CREATE_FIELDS}
    out: dict[str, Any] = {"client_id": client_id}

    if "client_id" in data:
        own = _uuid(data["client_id"]) if data["client_id"] is not None else None
        if own is None:
            errors["client_id"] = ["Not a valid UUID."]
        elif own != client_id:
            errors["client_id"] = ["Differs from the item's client_id."]

    category = _string(data, "category", errors, max_len=64, min_len=1, required=True)
    if category is not None:
        out["category"] = category
    description = _string(data, "description", errors, max_len=DESCRIPTION_MAX, default="")
    if description is not None:
        out["description"] = description
    landmark = _string(data, "landmark", errors, max_len=LANDMARK_MAX, default="")
    if landmark is not None:
        out["landmark"] = landmark

    if "location" not in data:
        errors["location"] = [_MISSING]
    else:
        location, location_errors = _point(data["location"])
        if location_errors:
            errors["location"] = location_errors
        else:
            out["location"] = location

    if "accuracy_m" in data:
        accuracy, message = _float(data["accuracy_m"], 0.0, 100_000.0)
        if message:
            errors["accuracy_m"] = [message]
        else:
            out["accuracy_m"] = accuracy

    if "observed_at" in data:
        observed_at, message = _aware_datetime(data["observed_at"])
        if message:
            errors["observed_at"] = [message]
        else:
            out["observed_at"] = observed_at

    if "contact" in data:
        contact, contact_errors = _contact(data["contact"])
        if contact_errors:
            errors["contact"] = contact_errors
        else:
            out["contact"] = contact

    if errors:
        return None, errors
    return out, {}


def _point(value: object) -> tuple[dict[str, Any] | None, Any]:
    if value is None:
        return None, [_NULL]
    if not isinstance(value, Mapping):
        return None, {"_schema": ["Invalid input type."]}
    errors: dict[str, Any] = {str(k): [_UNKNOWN] for k in value if k not in ("type", "coordinates")}
    if "type" not in value:
        errors["type"] = [_MISSING]
    elif not isinstance(value["type"], str) or value["type"] != "Point":
        errors["type"] = ["Must be equal to Point."]
    coordinates = value.get("coordinates")
    lon_lat: tuple[float, float] | None = None
    if "coordinates" not in value:
        errors["coordinates"] = [_MISSING]
    elif coordinates is None:
        errors["coordinates"] = [_NULL]
    elif isinstance(coordinates, (str, bytes, Mapping)) or not isinstance(coordinates, Sequence):
        errors["coordinates"] = ["Not a valid list."]
    elif len(coordinates) != 2:
        errors["coordinates"] = ["Length must be 2."]
    else:
        try:
            lon_lat = validate_lon_lat(coordinates[0], coordinates[1])
        except CoordinateError as exc:
            errors["coordinates"] = [exc.message]
    if errors:
        return None, errors
    assert lon_lat is not None
    return {"type": "Point", "coordinates": [lon_lat[0], lon_lat[1]]}, {}


def _float(value: object, low: float, high: float) -> tuple[float | None, str | None]:
    """As ``fields.Float(allow_nan=False, validate=Range(low, high))``."""
    if value is None:
        return None, _NULL
    if value is True or value is False:
        return None, "Not a valid number."
    try:
        number = float(value)  # type: ignore[arg-type]  # str, int, float; anything else is refused below
    except (TypeError, ValueError):
        return None, "Not a valid number."
    except OverflowError:
        return None, "Number too large."
    if not math.isfinite(number):
        return None, "Special numeric values (nan or infinity) are not permitted."
    if not low <= number <= high:
        return None, f"Must be greater than or equal to {low:g} and less than or equal to {high:g}."
    return number, None


def _contact(value: object) -> tuple[dict[str, Any] | None, Any]:
    if value is None:
        return None, [_NULL]
    if not isinstance(value, Mapping):
        return None, {"_schema": ["Invalid input type."]}
    errors: dict[str, Any] = {str(k): [_UNKNOWN] for k in value if k not in ("name", "phone", "email", "consent")}
    out: dict[str, Any] = {}
    name = _string(value, "name", errors, max_len=200)
    if name is not None:
        out["name"] = name
    phone = _string(value, "phone", errors, max_len=40)
    if phone is not None:
        if _PHONE_RE.match(phone):
            out["phone"] = phone
        else:
            errors["phone"] = ["Not a phone number."]
    email = _string(value, "email", errors, max_len=254)
    if email is not None:
        try:
            _EMAIL(email)
            out["email"] = email
        except ValidationError:
            errors["email"] = ["Not a valid email address."]
    if "consent" not in value:
        errors["consent"] = [_MISSING]
    else:
        consent = value["consent"]
        try:
            truthy, falsy = consent in _TRUTHY, consent in _FALSY
        except TypeError:  # unhashable
            truthy = falsy = False
        if consent is None:
            errors["consent"] = [_NULL]
        elif not truthy and not falsy:
            errors["consent"] = ["Not a valid boolean."]
        elif falsy:
            errors["consent"] = ["Contact details are kept only with consent: set consent to true, "
                                 "or leave contact out."]
        else:
            out["consent"] = True
    if errors:
        return None, errors
    return out, {}


def normalise_update_payload(data: object) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Validate an ``update`` payload: ``{"report_id": uuid, "status"?: str, "note"?: str}``.

    ``report_id`` is the report's server id (for a report created through
    sync, the ``client_id`` of its create item). At least a status or a
    non-blank note is required. Whether this user may make this change is
    decided later, against the stored report (:func:`sync.decisions.decide_update`).
    """
    if not isinstance(data, Mapping):
        return None, {"_schema": ["Invalid input type."]}
    errors: dict[str, Any] = {str(k): [_UNKNOWN] for k in data if k not in UPDATE_FIELDS}
    out: dict[str, Any] = {}
    if "report_id" not in data:
        errors["report_id"] = [_MISSING]
    else:
        report_id = _uuid(data["report_id"])
        if report_id is None:
            errors["report_id"] = ["Not a valid UUID."]
        else:
            out["report_id"] = report_id
    if "status" in data:
        status = data["status"]
        if status not in REPORT_STATUSES or not isinstance(status, str):
            errors["status"] = [f"Must be one of: {', '.join(REPORT_STATUSES)}."]
        else:
            out["status"] = status
    note = _string(data, "note", errors, max_len=NOTE_MAX)
    if note is not None:
        out["note"] = note
    if not errors and "status" not in out and not (out.get("note") or "").strip():
        errors["_schema"] = ["Send a status, a note, or both."]
    if errors:
        return None, errors
    return out, {}


def assemble_results(batch: SyncBatch, decided: Sequence[ItemResult]) -> tuple[ItemResult, ...]:
    """Merge the pre-rejected items with the service's results, in request order.

    Raises ``ValueError`` unless there is exactly one result per item: an
    item silently dropped is the bug this protocol exists to prevent.
    """
    by_index: dict[int, ItemResult] = {}
    for result in (*batch.rejected, *decided):
        if result.index in by_index:
            raise ValueError(f"two results for item {result.index}")
        by_index[result.index] = result
    expected = set(range(batch.item_count))
    if set(by_index) != expected:
        missing = sorted(expected - set(by_index))
        extra = sorted(set(by_index) - expected)
        raise ValueError(f"results do not match the items (missing {missing}, unexpected {extra})")
    return tuple(by_index[i] for i in range(batch.item_count))
