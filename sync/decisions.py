"""Sync decisions: pure functions of (incoming item, stored state) → what to do.

The service reads the stored state (under the locks it takes), calls one of
these functions, carries out the :class:`Decision` in SQL and reports the
outcome. Because every decision depends only on its arguments, two
concurrent replays of one item that each re-read the row after losing the
insert race reach the same answer: one ``created``, the other ``unchanged``.

* :func:`canonical_hash` — the idempotency hash of a payload, byte-for-byte the
  one ``service.intake.canonical_payload_hash`` stores in ``reports.payload_sha256``.
* :func:`decide_create`, :func:`decide_update` (with :class:`RolePolicy`),
  :func:`missing_photos` — the per-item rules.
* :func:`plan_batch`, :func:`batch_fingerprint` — replays of a whole batch.
* :func:`correct_clock` — device-clock skew: raw time kept, corrected time
  derived, implausible times flagged. Ordering never uses device clocks.
* :func:`parse_content_range`, :func:`plan_chunk`, :func:`photo_head`,
  :func:`verify_photo` — resumable photo uploads.
* :func:`encode_cursor`, :func:`decode_cursor`, :func:`paginate_changes` —
  the change feed's opaque cursor over a server-side sequence.

No Flask, no SQLAlchemy, no session, no clock: ``now`` is always an argument.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final, Generic, Literal, NamedTuple, TypeVar
from uuid import UUID

import orjson

from sync.protocol import ItemResult, ProtocolError, ResultKind, SyncBatch, SyncItem

__all__ = [
    "Action",
    "AppliedUpdate",
    "BatchPlan",
    "ChangePage",
    "ChunkPlan",
    "ClockCorrection",
    "ContentRange",
    "Decision",
    "POLICIES",
    "RolePolicy",
    "StatusChange",
    "StoredBatch",
    "StoredReport",
    "advisory_lock_key",
    "batch_fingerprint",
    "canonical_hash",
    "correct_clock",
    "decide_create",
    "decide_update",
    "decode_cursor",
    "encode_cursor",
    "item_hash",
    "missing_photos",
    "paginate_changes",
    "parse_content_range",
    "photo_head",
    "plan_batch",
    "plan_chunk",
    "policy_for",
    "verify_photo",
]

UTC = timezone.utc

# --- hashing -------------------------------------------------------------------------------------------------


def _utc_times(value: Any) -> Any:
    """The payload with every datetime written as UTC, so one instant has one spelling."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Mapping):
        return {k: _utc_times(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_utc_times(v) for v in value]
    return value


def canonical_hash(payload: Mapping[str, Any]) -> str:
    """sha256 hex of a normalised payload: sorted keys, ``client_id`` left out, times in UTC.

    This is the hash stored in ``reports.payload_sha256`` and compared on every
    resend, by the sync protocol and by ``POST /reports`` alike (the service
    imports it from here). The same instant written with another UTC offset is
    the same content. Pass the *normalised* payload (``ReportCreateSchema().load``
    output, or :attr:`SyncItem.payload`), never raw JSON.
    """
    content = {k: _utc_times(v) for k, v in payload.items() if k != "client_id"}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def item_hash(item: SyncItem) -> str:
    """The idempotency hash of an item's content: :func:`canonical_hash` of its normalised payload.

    ``base_version`` and ``photos`` are not part of it: resending an applied
    update with another base_version is still a resend, and photos are
    linked additively.
    """
    return canonical_hash(item.payload)


def advisory_lock_key(value: UUID, namespace: str = "civicmap.sync") -> int:
    """A signed 64-bit key for ``pg_advisory_xact_lock`` derived from a UUID (batch_id or client_id)."""
    digest = hashlib.sha256(namespace.encode("utf-8") + b"\0" + value.bytes).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# --- stored state ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredReport:
    """What the decisions need to know of a stored report.

    ``state`` is optional: the service may put the report's public JSON
    representation there, and it is returned as ``current`` on conflicts;
    without it ``current`` is :meth:`summary`.
    """

    id: UUID
    reference: str
    version: int
    payload_hash: str
    status: str
    state: Mapping[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        return {"id": str(self.id), "reference": self.reference, "version": self.version, "status": self.status}

    def current(self) -> Mapping[str, Any]:
        return self.state if self.state is not None else self.summary()


@dataclass(frozen=True)
class AppliedUpdate:
    """An ``update`` item the server already applied: its ``client_id`` is its idempotency key.

    ``version`` is the report version the update produced.
    """

    client_id: UUID
    report_id: UUID
    payload_hash: str
    version: int


@dataclass(frozen=True)
class StatusChange:
    """What an accepted ``update`` does: compare-and-set on ``expected_version``, then +1.

    ``new_status`` ``None`` means a note only (an event with no status
    change); ``note`` may be ``""`` for a status change without a note.
    """

    report_id: UUID
    new_status: str | None
    note: str
    expected_version: int


Action = Literal["insert", "apply", "none"]


@dataclass(frozen=True)
class Decision:
    """The verdict on one item.

    ``action``: ``insert`` (create the report), ``apply`` (carry out
    ``change``) or ``none``. ``result`` is the result the item gets once the
    action is done. ``report`` is the stored report the decision was made
    against (if any); ``current`` is set on conflicts.
    """

    action: Action
    result: ResultKind
    report: StoredReport | None = None
    change: StatusChange | None = None
    error: str | None = None
    message: str | None = None
    current: Mapping[str, Any] | None = None
    version: int | None = None

    def to_result(self, item: SyncItem, stored: StoredReport | None = None,
                  missing_photos: Sequence[str] = ()) -> ItemResult:
        """The item's :class:`ItemResult`.

        After ``insert`` or ``apply`` pass ``stored``: the report as it now is
        (its id, reference and new version). ``missing_photos``: the item's
        photos the server does not hold yet (see :func:`missing_photos`).
        """
        if self.action in ("insert", "apply"):
            if stored is None:
                raise ValueError(f"after {self.action!r}, pass the stored report")
            return ItemResult(client_id=item.client_id, result="created", id=stored.id, reference=stored.reference,
                              version=stored.version, missing_photos=tuple(missing_photos), index=item.index)
        report = stored or self.report
        if self.result == "rejected":
            return ItemResult(client_id=item.client_id, result="rejected", error=self.error, message=self.message,
                              index=item.index)
        return ItemResult(
            client_id=item.client_id,
            result=self.result,
            id=report.id if report else None,
            reference=report.reference if report else None,
            version=self.version if self.version is not None else (report.version if report else None),
            missing_photos=tuple(missing_photos) if self.result == "unchanged" else (),
            current=self.current,
            error=self.error,
            message=self.message,
            index=item.index,
        )


def _rejected(error: str, message: str, report: StoredReport | None = None) -> Decision:
    return Decision("none", "rejected", report=report, error=error, message=message)


def decide_create(item: SyncItem, existing: StoredReport | None, tombstoned: bool = False) -> Decision:
    """Insert, or recognise a resend, of a ``create`` item.

    ``existing`` is the report stored under ``item.client_id`` (a report's
    id is its creating client_id), ``tombstoned`` whether a report with this
    id was deleted. Rules:

    * tombstoned → rejected ``sync.deleted``: a deleted submission cannot come back;
    * nothing stored → ``insert`` (→ ``created``);
    * same :func:`canonical_hash` → ``unchanged`` with the original id and reference;
    * another hash → ``conflict`` ``sync.client_id_conflict``; nothing is overwritten.
    """
    if item.op != "create":
        raise ValueError(f"decide_create got an item with op {item.op!r}")
    if tombstoned:
        return _rejected("sync.deleted", "This report was deleted; it cannot be sent again.")
    if existing is None:
        return Decision("insert", "created")
    if existing.payload_hash == item_hash(item):
        return Decision("none", "unchanged", report=existing)
    return Decision("none", "conflict", report=existing, error="sync.client_id_conflict",
                    message="A different report was already sent with this client_id; nothing was overwritten.",
                    current=existing.current())


@dataclass(frozen=True)
class RolePolicy:
    """What a role may do through ``update`` items.

    ``settable``: statuses it may set. ``note_required_for``: target
    statuses that need a non-blank note. ``note_required_leaving``: current
    statuses a report may leave only with a note (reopening). ``locked_from``:
    current statuses it may not move a report out of (moderators' decisions).
    """

    role: str
    may_note: bool
    settable: frozenset[str]
    note_required_for: frozenset[str] = frozenset()
    note_required_leaving: frozenset[str] = frozenset()
    locked_from: frozenset[str] = frozenset()


_OPEN_AND_RESOLVED = frozenset({"new", "acknowledged", "in_progress", "resolved"})

#: Field workers (digital ambassadors) may note any report in their area and move it among
#: new/acknowledged/in_progress/resolved; resolving or reopening a resolved report needs a note;
#: rejected and duplicate are moderators' decisions they cannot set or undo. Moderators and admins
#: may set any status but ``duplicate`` (which needs ``duplicate_of``: use the moderation API).
#: Planners read only.
POLICIES: Final[Mapping[str, RolePolicy]] = {
    "field_worker": RolePolicy("field_worker", may_note=True, settable=_OPEN_AND_RESOLVED,
                               note_required_for=frozenset({"resolved"}),
                               note_required_leaving=frozenset({"resolved"}),
                               locked_from=frozenset({"rejected", "duplicate"})),
    "moderator": RolePolicy("moderator", may_note=True, settable=_OPEN_AND_RESOLVED | {"rejected"}),
    "admin": RolePolicy("admin", may_note=True, settable=_OPEN_AND_RESOLVED | {"rejected"}),
    "planner": RolePolicy("planner", may_note=False, settable=frozenset()),
}
_NOBODY = RolePolicy("none", may_note=False, settable=frozenset())


def policy_for(role: str) -> RolePolicy:
    """The policy of a role; an unknown role may do nothing."""
    return POLICIES.get(role, _NOBODY)


def decide_update(item: SyncItem, current: StoredReport | None, *, policy: RolePolicy,
                  applied: AppliedUpdate | None = None, in_area: bool = True, tombstoned: bool = False) -> Decision:
    """Apply, or refuse, an ``update`` item (a status and/or a note) against the report as stored.

    ``current``: the report named by ``payload["report_id"]``, read under a
    row lock. ``applied``: the update already stored under this item's
    client_id, if any. ``in_area``: whether the report lies in the user's
    area (the service knows). Checked in this order:

    1. already applied: same hash → ``unchanged``; other hash → ``conflict`` ``sync.client_id_conflict``;
    2. report deleted → rejected ``sync.deleted``; not found → rejected ``sync.report_not_found``;
    3. role may not update / report outside the area → rejected ``sync.forbidden`` / ``sync.outside_area``;
    4. ``base_version`` given and not the current version → ``conflict`` ``sync.stale_version``
       with ``current``; a status change always carries one (the parser insists), a note alone may omit it;
    5. the transition: ``sync.status_not_allowed``, ``sync.report_closed``, ``sync.note_required``,
       ``sync.nothing_to_change`` (all rejected);
    6. otherwise ``apply`` (→ ``created``) with a compare-and-set on the version read.
    """
    if item.op != "update":
        raise ValueError(f"decide_update got an item with op {item.op!r}")
    report_id: UUID = item.payload["report_id"]
    new_status: str | None = item.payload.get("status")
    note: str = item.payload.get("note", "")

    if applied is not None:
        if applied.payload_hash == item_hash(item) and applied.report_id == report_id:
            return Decision("none", "unchanged", report=current,
                            version=current.version if current is not None else applied.version)
        return Decision("none", "conflict", report=current, error="sync.client_id_conflict",
                        message="A different update was already sent with this client_id; nothing was changed.",
                        current=current.current() if current is not None else None)
    if tombstoned:
        return _rejected("sync.deleted", "This report was deleted.")
    if current is None:
        return _rejected("sync.report_not_found", f"There is no report {report_id}.")
    if not policy.may_note and not policy.settable:
        return _rejected("sync.forbidden", "Your role cannot change reports.", current)
    if not in_area:
        return _rejected("sync.outside_area", "This report is outside your area.", current)
    if item.base_version is not None and item.base_version != current.version:
        return Decision("none", "conflict", report=current, error="sync.stale_version",
                        message=f"The report changed since version {item.base_version}; it is now at version "
                                f"{current.version}. Look at it again before you change it.",
                        current=current.current())
    has_note = bool(note.strip())
    if new_status is None:
        if not policy.may_note:
            return _rejected("sync.forbidden", "Your role cannot add notes.", current)
    else:
        if new_status not in policy.settable:
            hint = " Use the moderation API." if new_status == "duplicate" and policy.settable else ""
            return _rejected("sync.status_not_allowed", f"Your role cannot set status {new_status}.{hint}", current)
        if new_status != current.status:
            if current.status in policy.locked_from:
                return _rejected("sync.report_closed",
                                 f"This report is {current.status}; only a moderator can change that.", current)
            if not has_note and (new_status in policy.note_required_for
                                 or current.status in policy.note_required_leaving):
                return _rejected("sync.note_required", "Say in a note what was done or why this is reopened.",
                                 current)
        elif not has_note:
            return _rejected("sync.nothing_to_change", f"The report is already {new_status}.", current)
    return Decision("apply", "created", report=current,
                    change=StatusChange(report_id=current.id, new_status=new_status, note=note,
                                        expected_version=current.version))


def missing_photos(referenced: Sequence[str], stored: Collection[str]) -> tuple[str, ...]:
    """The referenced sha256 values the server does not hold complete, in the item's order."""
    held = {s.lower() for s in stored}
    return tuple(s for s in referenced if s.lower() not in held)


# --- batch replays ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredBatch:
    """A batch as first received: kept so that replays answer the same way."""

    batch_id: UUID
    device_id: str
    fingerprint: str
    received_at: datetime
    sent_at: datetime


@dataclass(frozen=True)
class BatchPlan:
    """How to process a batch: ``replay`` or first arrival, and the clock to use for its items."""

    replay: bool
    fingerprint: str
    received_at: datetime
    clock_offset: timedelta


def batch_fingerprint(batch: SyncBatch) -> str:
    """sha256 of what a batch asks for: device, items in order (ids, ops, payload hashes,
    base versions, photos) and the rejected items' errors. ``sent_at`` is left out, so a
    client may refresh it on every attempt."""
    entries: list[Any] = []
    for item in batch.items:
        entries.append([item.index, str(item.client_id), item.op, item_hash(item), item.base_version,
                        list(item.photos)])
    for result in batch.rejected:
        entries.append([result.index, str(result.client_id) if result.client_id else None, "rejected",
                        result.error, result.to_json()["errors"]])
    entries.sort(key=lambda e: e[0])
    body = orjson.dumps({"device_id": batch.device_id, "items": entries}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


def plan_batch(batch: SyncBatch, stored: StoredBatch | None, received_at: datetime) -> BatchPlan:
    """First arrival or replay of ``batch.batch_id``.

    A replay (same device, same :func:`batch_fingerprint`) reuses the first
    arrival's ``received_at`` and clock offset, so corrected times and the
    response are the same as the first time. The same batch_id from another
    device or with other content is 409 ``sync.batch_conflict``: a client must
    send changed items in a new batch.
    """
    _require_aware(received_at, "received_at")
    fingerprint = batch_fingerprint(batch)
    if stored is None:
        return BatchPlan(False, fingerprint, received_at, received_at - batch.sent_at)
    if stored.batch_id != batch.batch_id:
        raise ValueError("stored batch is another batch")
    if stored.device_id != batch.device_id or stored.fingerprint != fingerprint:
        raise ProtocolError("sync.batch_conflict",
                            "This batch_id was already used for other content; send new items in a new batch.", 409,
                            extra={"batch_id": str(batch.batch_id)})
    return BatchPlan(True, fingerprint, stored.received_at, stored.received_at - stored.sent_at)


# --- clocks --------------------------------------------------------------------------------------------------

#: civicmap did not exist before this: a corrected time earlier is a broken clock.
EPOCH: Final[datetime] = datetime(2020, 1, 1, tzinfo=UTC)
MAX_AGE: Final[timedelta] = timedelta(days=365)
MAX_SKEW: Final[timedelta] = timedelta(days=1)
CLOCK_FLAGS: Final[tuple[str, ...]] = ("future", "before_epoch", "too_old", "large_skew")


class ClockCorrection(NamedTuple):
    """``observed_at`` corrected (UTC), the device's ``offset`` and a ``flag`` or ``None``."""

    observed_at: datetime
    offset: timedelta
    flag: str | None


def _require_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be timezone-aware")


def correct_clock(observed_at_device: datetime, sent_at_device: datetime, received_at: datetime,
                  tolerance: timedelta, *, max_skew: timedelta = MAX_SKEW, max_age: timedelta = MAX_AGE,
                  epoch: datetime = EPOCH) -> ClockCorrection:
    """Correct a device time by the device clock's offset, and flag what still cannot be true.

    ``offset = received_at − sent_at_device`` (server clock minus device
    clock at sending; transfer time included), ``observed_at =
    observed_at_device + offset``. Store the raw device time too. The first
    matching flag wins:

    * ``future``: the corrected time is after ``received_at + tolerance``
      (the device claims it saw the problem after sending it);
    * ``before_epoch``: the corrected time is before 2020-01-01 UTC;
    * ``too_old``: the corrected time is more than ``max_age`` (a year) before ``received_at``;
    * ``large_skew``: ``|offset| > max_skew`` (a day): the correction itself is large;
      the time is probably right but worth a look.

    All three datetimes must be timezone-aware (``ValueError`` otherwise).
    """
    _require_aware(observed_at_device, "observed_at_device")
    _require_aware(sent_at_device, "sent_at_device")
    _require_aware(received_at, "received_at")
    if tolerance < timedelta(0):
        raise ValueError("tolerance must not be negative")
    offset = received_at - sent_at_device
    corrected = (observed_at_device + offset).astimezone(UTC)
    flag: str | None = None
    if corrected > received_at + tolerance:
        flag = "future"
    elif corrected < epoch:
        flag = "before_epoch"
    elif corrected < received_at - max_age:
        flag = "too_old"
    elif abs(offset) > max_skew:
        flag = "large_skew"
    return ClockCorrection(corrected, offset, flag)


# --- resumable photo uploads ----------------------------------------------------------------------------------

_CONTENT_RANGE_RE = re.compile(r"bytes ([0-9]{1,16})-([0-9]{1,16})/([0-9]{1,16})", re.IGNORECASE)


@dataclass(frozen=True)
class ContentRange:
    """``Content-Range: bytes start-end/total`` (``end`` inclusive, as in HTTP)."""

    start: int
    end: int
    total: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @classmethod
    def whole(cls, length: int, total_limit: int) -> ContentRange:
        """The range of a PUT without ``Content-Range``: the whole photo in one body."""
        if length <= 0:
            return _bad_range("The photo is empty.")
        return parse_content_range(f"bytes 0-{length - 1}/{length}", total_limit)

    def header(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.total}"


def _bad_range(message: str) -> ContentRange:
    raise ProtocolError("sync.bad_content_range", message, 400)


def parse_content_range(header: str, total_limit: int) -> ContentRange:
    """Parse a request's ``Content-Range``: ``bytes 0-204799/3145728``.

    400 ``sync.bad_content_range`` for anything else (the total must be
    known: ``*`` is refused), an empty photo or ``start > end``; 413
    ``sync.photo_too_large`` when ``total > total_limit``; 416
    ``sync.range_not_satisfiable`` when ``end >= total``.
    """
    if not isinstance(header, str):
        return _bad_range("Content-Range must be text.")
    match = _CONTENT_RANGE_RE.fullmatch(header.strip())
    if match is None:
        return _bad_range(f"Content-Range must read 'bytes <first>-<last>/<total>', got {header[:80]!r}.")
    start, end, total = (int(g) for g in match.groups())
    if total == 0:
        return _bad_range("The photo is empty.")
    if total > total_limit:
        raise ProtocolError("sync.photo_too_large",
                            f"The photo has {total} bytes; at most {total_limit} are accepted.", 413,
                            extra={"max_photo_bytes": total_limit})
    if start > end:
        return _bad_range(f"Content-Range starts after it ends ({start} > {end}).")
    if end >= total:
        raise ProtocolError("sync.range_not_satisfiable", f"Byte {end} is past the end of a {total}-byte photo.", 416,
                            headers={"Content-Range": f"bytes */{total}"})
    return ContentRange(start, end, total)


@dataclass(frozen=True)
class ChunkPlan:
    """What to do with a chunk: drop its first ``skip`` bytes (already stored), append the
    next ``append`` bytes, after which ``offset`` bytes of ``total`` are stored."""

    skip: int
    append: int
    offset: int
    total: int
    complete: bool
    truncated: bool


def plan_chunk(stored_bytes: int, rng: ContentRange, *, upload_length: int | None = None,
               received: int | None = None) -> ChunkPlan:
    """Decide whether a chunk continues the stored prefix of an upload.

    ``stored_bytes``: bytes of this sha256 already stored (contiguous from
    0). ``upload_length``: the total declared when the upload began (``None``
    if nothing is stored). ``received``: body bytes that actually arrived
    (fewer than ``rng.length`` when the link dropped mid-body; the prefix that
    arrived is still kept). Rules:

    * ``rng.start == stored_bytes``: append;
    * ``rng.start < stored_bytes``: overlap with what is stored is skipped
      (idempotent resend), the rest appended; a chunk wholly stored appends nothing;
    * ``rng.start > stored_bytes``: 409 ``sync.upload_gap`` with
      ``Upload-Offset: stored_bytes``: resume there;
    * another total than the upload began with: 409 ``sync.upload_length_mismatch``;
    * more body than the range: 400 ``sync.bad_content_range``.
    """
    if stored_bytes < 0:
        raise ValueError("stored_bytes must not be negative")
    offset_headers = {"Upload-Offset": str(stored_bytes)}
    if (upload_length is not None and upload_length != rng.total) or stored_bytes > rng.total:
        raise ProtocolError("sync.upload_length_mismatch",
                            f"This upload began with {upload_length} bytes, not {rng.total}.", 409,
                            headers=offset_headers, extra={"offset": stored_bytes, "length": upload_length})
    arrived = rng.length if received is None else received
    if arrived < 0:
        raise ValueError("received must not be negative")
    if arrived > rng.length:
        raise ProtocolError("sync.bad_content_range",
                            f"The body has {arrived} bytes but Content-Range announces {rng.length}.", 400)
    if rng.start > stored_bytes:
        raise ProtocolError("sync.upload_gap",
                            f"Only {stored_bytes} bytes are stored; send from byte {stored_bytes}.", 409,
                            headers=offset_headers, extra={"offset": stored_bytes})
    arrived_end = rng.start + arrived
    skip = min(stored_bytes - rng.start, arrived)
    append = max(0, arrived_end - stored_bytes)
    offset = stored_bytes + append
    return ChunkPlan(skip=skip, append=append, offset=offset, total=rng.total, complete=offset == rng.total,
                     truncated=arrived < rng.length)


def photo_head(stored_bytes: int, upload_length: int | None, complete: bool) -> tuple[int, dict[str, str]]:
    """Status and headers of ``HEAD /api/v1/sync/photos/{sha256}``.

    404 with ``Upload-Offset: 0`` when nothing is stored; otherwise 200 with
    ``Upload-Offset`` (bytes stored), ``Upload-Length`` (the photo's size),
    ``Upload-Complete`` (``?1`` stored and verified, ``?0`` partial) and
    ``Content-Length`` (bytes stored).
    """
    base = {"Cache-Control": "no-store"}
    if not complete and stored_bytes == 0:
        return 404, {**base, "Upload-Offset": "0"}
    total = stored_bytes if complete else upload_length
    headers = {**base, "Upload-Offset": str(stored_bytes), "Content-Length": str(stored_bytes),
               "Upload-Complete": "?1" if complete else "?0"}
    if total is not None:
        headers["Upload-Length"] = str(total)
    return 200, headers


def verify_photo(expected_sha256: str, content: bytes) -> None:
    """The completed upload must hash to its name: else 422 ``sync.photo_hash_mismatch`` (discard it)."""
    actual = hashlib.sha256(content).hexdigest()
    if not hmac.compare_digest(actual, expected_sha256.lower()):
        raise ProtocolError("sync.photo_hash_mismatch",
                            "The uploaded bytes do not match their sha256; the upload was discarded, start again.",
                            422, extra={"expected": expected_sha256.lower(), "actual": actual})


# --- change feed ---------------------------------------------------------------------------------------------

CURSOR_VERSION: Final[str] = "v1"
SEQ_MAX: Final[int] = 2**63 - 1  # PostgreSQL bigint
_CURSOR_TEXT_RE = re.compile(r"[A-Za-z0-9_-]{1,96}")
_SEQ_RE = re.compile(r"0|[1-9][0-9]{0,18}")
_CURSOR_KEY = b"civicmap.sync.cursor"


def _cursor_check(payload: str, secret: bytes) -> str:
    return hmac.new(secret or _CURSOR_KEY, payload.encode("ascii"), hashlib.sha256).hexdigest()[:12]


def encode_cursor(seq: int, *, secret: bytes = b"") -> str:
    """An opaque, URL-safe cursor for "everything after sequence number ``seq``".

    base64url (no padding) of ``v1:<seq>:<check>``, where ``check`` is 12 hex
    digits of an HMAC-SHA256 of ``v1:<seq>``. Without ``secret`` the check only
    catches typing and truncation; with one it also stops forged cursors.
    """
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= SEQ_MAX:
        raise ValueError(f"seq must be an integer in 0…{SEQ_MAX}, got {seq!r}")
    payload = f"{CURSOR_VERSION}:{seq}"
    raw = f"{payload}:{_cursor_check(payload, secret)}".encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(text: str, *, secret: bytes = b"") -> int:
    """The sequence number in a cursor made by :func:`encode_cursor`, or 400 ``sync.bad_cursor``.

    Refuses anything but the exact text :func:`encode_cursor` produces: other
    versions, a wrong check, non-canonical base64 or numbers.
    """
    def bad(why: str) -> ProtocolError:
        return ProtocolError("sync.bad_cursor", f"This cursor is not valid ({why}); pull again without a cursor.",
                             400)

    if not isinstance(text, str) or not _CURSOR_TEXT_RE.fullmatch(text):
        raise bad("not a cursor")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise bad("not a cursor") from None
    parts = raw.split(":")
    if len(parts) != 3:
        raise bad("not a cursor")
    version, seq_text, _check = parts
    if version != CURSOR_VERSION:
        raise bad(f"version {version[:8]!r}")
    if not _SEQ_RE.fullmatch(seq_text) or int(seq_text) > SEQ_MAX:
        raise bad("position")
    seq = int(seq_text)
    # One comparison covers the check digits and every non-canonical spelling (base64 padding bits).
    if not hmac.compare_digest(encode_cursor(seq, secret=secret), text):
        raise bad("checksum")
    return seq


T = TypeVar("T")


@dataclass(frozen=True)
class ChangePage(Generic[T]):
    """One page of the change feed: ``items``, the ``cursor`` to pass next and whether ``more`` follow.

    The cursor is always set: at the end of the feed it stays where it is,
    so the client polls with it later and gets only newer changes.
    """

    items: tuple[T, ...]
    cursor: str
    more: bool


def paginate_changes(rows: Sequence[T], *, after: int, limit: int, seq_of: Callable[[T], int],
                     secret: bytes = b"") -> ChangePage[T]:
    """Cut a page from ``rows``: up to ``limit + 1`` changes with ``seq > after``, ascending.

    (Fetch one row more than the page to know whether more follow.)
    ``ValueError`` if the rows are not strictly ascending after ``after``.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    previous = after
    for row in rows:
        seq = seq_of(row)
        if seq <= previous:
            raise ValueError(f"rows must have strictly ascending seq > {after}; got {seq} after {previous}")
        previous = seq
    page = tuple(rows[:limit])
    last = seq_of(page[-1]) if page else after
    return ChangePage(items=page, cursor=encode_cursor(last, secret=secret), more=len(rows) > limit)
