"""Reference client for the offline sync protocol (docs/sync-protocol.md), standard library only.

A phone (or a laptop at a hub) keeps what it collected in a :class:`LocalQueue`,
an SQLite file, and a :class:`SyncClient` carries it to the server when a link
is up:

* :meth:`SyncClient.push` sends the pending items in batches of
  ``batch_size`` (gzip), one new ``batch_id`` per batch. The batch is written
  to the queue's ``meta`` table *before* it is sent, so a retry, or a whole new
  run after a crash or a flat battery, resends the identical batch (same
  ``batch_id``, same items in the same order; only ``sent_at`` is refreshed, as
  §7 of the protocol asks) and the server answers it as a replay instead of
  storing anything twice. Network errors, timeouts, 408, 429 and 5xx are
  retried with exponential backoff and jitter (``Retry-After`` honoured); any
  other 4xx is not retried: the batch's items are marked with the error. Then
  the photos the server reported missing are uploaded in ``Content-Range``
  pieces, resuming from the server's ``Upload-Offset`` after every failure.
* :meth:`SyncClient.pull` follows the change feed until ``more`` is false,
  stores the changes and brings the version and status of the queue's own
  reports up to date ("newer wins").

The network is one small function, :data:`Transport` (``HttpRequest`` in,
``HttpResponse`` out, ``OSError``/``http.client.HTTPException`` on failure);
:func:`http_transport` is the real one and tests wrap it to drop links.
``sleep``, the random generator for jitter and the device clock are injected
too, so retries are testable without waiting.

A queue belongs to one process at a time: two pushes of one file at once are
not supported (SQLite keeps the file consistent, but both would send).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import math
import os
import random
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final, Literal, Self
from urllib.parse import quote, urlencode, urlsplit

__all__ = [
    "HttpRequest",
    "HttpResponse",
    "ItemOutcome",
    "ItemState",
    "LocalQueue",
    "PhotoSource",
    "PullSummary",
    "PushSummary",
    "QueueError",
    "QueueItem",
    "RequestError",
    "SyncClient",
    "SyncError",
    "Transport",
    "TransportFailed",
    "http_transport",
]

ItemState = Literal["pending", "created", "unchanged", "conflict", "rejected"]
#: The item results the server gives, in the order summaries list them.
RESULT_KINDS: Final[tuple[str, ...]] = ("created", "unchanged", "conflict", "rejected")
#: States after which an item is on the server (its photos may still be needed there).
SENT_STATES: Final[tuple[str, ...]] = ("created", "unchanged")
#: Exceptions that mean "the link failed; nothing is known about what the server did".
TRANSIENT_ERRORS: Final[tuple[type[BaseException], ...]] = (OSError, http.client.HTTPException)
#: Request errors that are about the credentials, not the items: stop and keep the items pending.
CREDENTIAL_ERRORS: Final[frozenset[str]] = frozenset({"sync.device_mismatch"})
DEFAULT_CHUNK_BYTES: Final[int] = 64 * 1024
USER_AGENT: Final[str] = "civicmap-sync-client/1"

PhotoSource = str | os.PathLike[str] | bytes


class SyncError(Exception):
    """A sync step that cannot go on (see :class:`TransportFailed`, :class:`RequestError`)."""


class QueueError(SyncError):
    """The queue refuses a change: e.g. an item already sent would be replaced by other content."""


class TransportFailed(SyncError):
    """The link kept failing (or the server kept answering 408/429/5xx) through every retry."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(f"{message} (after {attempts} attempt{'s' if attempts != 1 else ''})")
        self.attempts = attempts


class RequestError(SyncError):
    """The server refused a whole request (a 4xx other than 408/429): the API's error body."""

    def __init__(self, status: int, error: str, message: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{error} ({status}): {message}")
        self.status = status
        self.error = error
        self.message = message
        self.body: dict[str, Any] = dict(body or {})

    def as_result(self) -> dict[str, Any]:
        """What is stored as the ``result`` of each item of a refused batch."""
        return {"result": "rejected", "error": self.error, "message": self.message,
                "errors": self.body.get("errors") or {}, "request_status": self.status}


# --- transport ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request: absolute ``url``, header names as sent, the ``body`` bytes."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = b""
    timeout: float = 30.0


@dataclass(frozen=True)
class HttpResponse:
    """One HTTP response; ``headers`` has lower-case names."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body as JSON (``ValueError`` if it is not)."""
        return json.loads(self.body.decode("utf-8"))


#: Sends one request and returns the response; raises ``OSError`` or ``http.client.HTTPException``
#: when the link fails. Swap it to test, to add a proxy, or to count bytes.
Transport = Callable[[HttpRequest], HttpResponse]


def http_transport(request: HttpRequest) -> HttpResponse:
    """The default :data:`Transport`: one ``http.client`` connection per request (flaky links
    break connections anyway; a fresh one never inherits a half-dead socket)."""
    parts = urlsplit(request.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {request.url!r}")
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=request.timeout)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = request.body if request.body or request.method in ("POST", "PUT", "PATCH") else None
        connection.request(request.method, target, body=body, headers=dict(request.headers))
        response = connection.getresponse()
        data = response.read()
        return HttpResponse(response.status, {name.lower(): value for name, value in response.getheaders()}, data)
    finally:
        connection.close()


# --- the local queue ---------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    client_id    TEXT PRIMARY KEY,
    op           TEXT NOT NULL CHECK (op IN ('create', 'update')),
    payload      TEXT NOT NULL,
    base_version INTEGER,
    photos       TEXT NOT NULL DEFAULT '[]',
    state        TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'created', 'unchanged', 'conflict', 'rejected')),
    result       TEXT,
    server_id    TEXT,
    reference    TEXT,
    version      INTEGER,
    status       TEXT,
    label        TEXT,
    batch_id     TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_state ON items (state);
CREATE INDEX IF NOT EXISTS items_server_id ON items (server_id);
CREATE TABLE IF NOT EXISTS photos (
    sha256          TEXT PRIMARY KEY,
    path            TEXT,
    blob            BLOB,
    size            INTEGER NOT NULL,
    uploaded_offset INTEGER NOT NULL DEFAULT 0,
    complete        INTEGER NOT NULL DEFAULT 0,
    error           TEXT,
    CHECK ((path IS NULL) <> (blob IS NULL))
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE IF NOT EXISTS changes (
    seq       INTEGER PRIMARY KEY,
    kind      TEXT,
    report_id TEXT,
    json      TEXT NOT NULL,
    pulled_at TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _dumps(value: Any) -> str:
    """Compact JSON that keeps Khmer readable and refuses NaN/Infinity (the server refuses them too)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class QueueItem:
    """One row of the queue's ``items`` table."""

    client_id: str
    op: str
    payload: dict[str, Any]
    base_version: int | None
    photos: tuple[str, ...]
    state: str
    result: dict[str, Any] | None
    server_id: str | None
    reference: str | None
    version: int | None
    status: str | None
    label: str | None
    updated_at: str

    def wire(self) -> dict[str, Any]:
        """The item as it goes into a batch (``items[]`` of §1)."""
        item: dict[str, Any] = {"client_id": self.client_id, "op": self.op, "payload": self.payload}
        if self.base_version is not None:
            item["base_version"] = self.base_version
        if self.photos:
            item["photos"] = list(self.photos)
        return item


@dataclass(frozen=True)
class ItemOutcome:
    """What became of one item in a push: the server's result, or the request error that refused its batch."""

    client_id: str
    op: str
    result: str
    label: str | None = None
    id: str | None = None
    reference: str | None = None
    version: int | None = None
    error: str | None = None
    message: str | None = None
    errors: Mapping[str, Any] = field(default_factory=dict)
    missing_photos: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Photo:
    sha256: str
    path: str | None
    size: int


class LocalQueue:
    """The device's outbox and inbox: an SQLite file (created if missing).

    Tables: ``items`` (what to push and what became of it), ``photos`` (the
    files items refer to, by sha256, with upload progress), ``meta`` (device
    id, server URL, change cursor, the batch in flight) and ``changes`` (what
    :meth:`SyncClient.pull` brought). Every change is one transaction. Close
    it (or use ``with``) when done.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._db.execute("PRAGMA busy_timeout = 5000")
            self._db.executescript(_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- meta -----------------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        with self._tx() as db:
            self._set_meta(db, key, value)

    @staticmethod
    def _set_meta(db: sqlite3.Connection, key: str, value: str | None) -> None:
        if value is None:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    # -- adding items ---------------------------------------------------------------------------------------------

    def add_create(self, payload: Mapping[str, Any], photos: Sequence[PhotoSource] = (), client_id: str | None = None,
                   *, label: str | None = None) -> str:
        """Queue a new report and return its ``client_id`` (a new uuid4 unless a stable one is given).

        ``payload`` is the body of ``POST /api/v1/reports``. ``photos`` are file
        paths (kept as paths, read at upload time) or bytes (kept in the
        queue). Adding the same ``client_id`` with the same content again does
        nothing; with other content it replaces a still-pending item and
        raises :class:`QueueError` for one already sent (send an update
        instead). ``label`` is free text shown in summaries (e.g. the survey row).
        """
        return self._put_create(payload, photos, client_id, label)[0]

    def import_items(self, items: Iterable[tuple[str, Mapping[str, Any]]], *,
                     labels: Sequence[str | None] | None = None) -> dict[str, list[str]]:
        """Queue ``(client_id, payload)`` pairs (as made by :mod:`sync.importer`) idempotently.

        Returns client ids by what happened: ``added``, ``existing`` (already
        queued with this content: importing a file twice adds nothing),
        ``replaced`` (pending, content changed) and ``refused`` (already sent
        with other content; nothing changed).
        """
        outcome: dict[str, list[str]] = {"added": [], "existing": [], "replaced": [], "refused": []}
        for index, (client_id, payload) in enumerate(items):
            label = labels[index] if labels is not None else None
            try:
                _, what = self._put_create(payload, (), client_id, label)
            except QueueError:
                what = "refused"
            outcome[what].append(client_id)
        return outcome

    def _put_create(self, payload: Mapping[str, Any], photos: Sequence[PhotoSource], client_id: str | None,
                    label: str | None) -> tuple[str, str]:
        if not isinstance(payload, Mapping):
            raise TypeError("payload must be a mapping")
        cid = str(uuid.UUID(client_id)) if client_id is not None else str(uuid.uuid4())
        body = dict(payload)
        if "client_id" in body and str(body["client_id"]) != cid:
            raise ValueError("payload client_id differs from the item's")
        body.pop("client_id", None)
        stored_photos = [self._photo_record(source) for source in photos]
        shas = list(dict.fromkeys(p[0] for p in stored_photos))
        return cid, self._put_item(cid, "create", body, None, shas, label, stored_photos)

    def add_update(self, report_id: str, *, status: str | None = None, note: str | None = None,
                   base_version: int | None = None, client_id: str | None = None, label: str | None = None) -> str:
        """Queue a status change and/or a note on a report; returns the item's ``client_id``.

        ``report_id`` is the report's id (for a report created from this
        queue, its create item's ``client_id``). A status needs a
        ``base_version``; left out, it is the version this queue last saw of
        the report (1 for a create still pending in the queue).
        """
        rid = str(uuid.UUID(str(report_id)))
        if status is None and not (note or "").strip():
            raise ValueError("an update needs a status, a note, or both")
        if status is not None and base_version is None:
            base_version = self.known_version(rid)
            if base_version is None:
                raise ValueError(f"no version known for report {rid}; pass base_version")
        payload: dict[str, Any] = {"report_id": rid}
        if status is not None:
            payload["status"] = status
        if note is not None:
            payload["note"] = note
        cid = str(uuid.UUID(client_id)) if client_id is not None else str(uuid.uuid4())
        self._put_item(cid, "update", payload, base_version, [], label, [])
        return cid

    def known_version(self, report_id: str) -> int | None:
        """The newest version of a report this queue knows (1 for its own create still pending)."""
        row = self._db.execute("SELECT max(version) FROM items WHERE server_id = ? OR client_id = ?",
                               (report_id, report_id)).fetchone()
        if row and row[0] is not None:
            return int(row[0])
        pending = self._db.execute("SELECT 1 FROM items WHERE client_id = ? AND op = 'create' AND state = 'pending'",
                                   (report_id,)).fetchone()
        return 1 if pending else None

    def _put_item(self, client_id: str, op: str, payload: dict[str, Any], base_version: int | None,
                  photos: list[str], label: str | None, stored_photos: list[tuple[str, str | None, bytes | None, int]]
                  ) -> str:
        payload_json = _dumps(payload)
        photos_json = _dumps(photos)
        now = _now()
        with self._tx() as db:
            for sha, path, blob, size in stored_photos:
                db.execute("INSERT INTO photos (sha256, path, blob, size) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT (sha256) DO NOTHING", (sha, path, blob, size))
            row = db.execute("SELECT op, payload, base_version, photos, state FROM items WHERE client_id = ?",
                             (client_id,)).fetchone()
            if row is None:
                db.execute("INSERT INTO items (client_id, op, payload, base_version, photos, label, created_at, "
                           "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (client_id, op, payload_json, base_version, photos_json, label, now, now))
                return "added"
            same = (row[0] == op and json.loads(row[1]) == payload and row[2] == base_version
                    and json.loads(row[3]) == photos)
            if same:
                return "existing"
            if row[4] != "pending":
                raise QueueError(f"item {client_id} was already sent ({row[4]}) with other content; "
                                 "send an update or a new item instead")
            db.execute("UPDATE items SET op = ?, payload = ?, base_version = ?, photos = ?, label = coalesce(?, label), "
                       "result = NULL, updated_at = ? WHERE client_id = ?",
                       (op, payload_json, base_version, photos_json, label, now, client_id))
            return "replaced"

    @staticmethod
    def _photo_record(source: PhotoSource) -> tuple[str, str | None, bytes | None, int]:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            if not data:
                raise ValueError("a photo cannot be empty")
            return hashlib.sha256(data).hexdigest(), None, data, len(data)
        path = Path(os.fspath(source)).resolve()
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
        if size == 0:
            raise ValueError(f"photo {path} is empty")
        return digest.hexdigest(), str(path), None, size

    # -- reading items --------------------------------------------------------------------------------------------

    _ITEM_COLUMNS = ("client_id, op, payload, base_version, photos, state, result, server_id, reference, version, "
                     "status, label, updated_at")

    @staticmethod
    def _item(row: Sequence[Any]) -> QueueItem:
        return QueueItem(client_id=row[0], op=row[1], payload=json.loads(row[2]), base_version=row[3],
                         photos=tuple(json.loads(row[4])), state=row[5],
                         result=json.loads(row[6]) if row[6] else None, server_id=row[7], reference=row[8],
                         version=row[9], status=row[10], label=row[11], updated_at=row[12])

    def pending(self) -> list[QueueItem]:
        """Items not yet answered by the server, in the order they were queued."""
        return self.items("pending")

    def pending_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM items WHERE state = 'pending'").fetchone()[0])

    def items(self, state: str | None = None) -> list[QueueItem]:
        """All items (or those in ``state``), in the order they were queued."""
        sql = f"SELECT {self._ITEM_COLUMNS} FROM items"
        args: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            args = (state,)
        return [self._item(row) for row in self._db.execute(sql + " ORDER BY rowid", args)]

    def get(self, client_id: str) -> QueueItem | None:
        row = self._db.execute(f"SELECT {self._ITEM_COLUMNS} FROM items WHERE client_id = ?",
                               (client_id,)).fetchone()
        return self._item(row) if row else None

    def counts(self) -> dict[str, int]:
        """Items per state."""
        out = {state: 0 for state in ("pending", *RESULT_KINDS)}
        for state, count in self._db.execute("SELECT state, count(*) FROM items GROUP BY state"):
            out[state] = count
        return out

    def requeue(self, client_ids: Iterable[str]) -> int:
        """Put items back to ``pending`` (e.g. rejected ones after fixing the cause); returns how many."""
        ids = [str(c) for c in client_ids]
        with self._tx() as db:
            return sum(db.execute("UPDATE items SET state = 'pending', updated_at = ? WHERE client_id = ? "
                                  "AND state <> 'pending'", (_now(), cid)).rowcount for cid in ids)

    # -- the batch in flight --------------------------------------------------------------------------------------

    def inflight_batch(self) -> dict[str, Any] | None:
        """``{"batch_id", "device_id", "items"}`` of a batch sent without an answer yet, if any."""
        raw = self.get_meta("inflight_batch")
        return json.loads(raw) if raw else None

    def set_inflight_batch(self, batch: Mapping[str, Any] | None) -> None:
        self.set_meta("inflight_batch", _dumps(batch) if batch is not None else None)

    # -- results --------------------------------------------------------------------------------------------------

    def record_results(self, results: Sequence[Mapping[str, Any]], client_ids: Sequence[str] | None = None, *,
                       batch_id: str | None = None) -> list[ItemOutcome]:
        """Store the server's per-item results (``results[]`` of §1) and clear the batch in flight.

        ``client_ids`` are the batch's items in order: a result whose
        ``client_id`` is null (unreadable) is matched by its ``index``.
        Photos that a ``created``/``unchanged`` result does not list as
        missing are already on the server and are marked complete.
        """
        outcomes: list[ItemOutcome] = []
        now = _now()
        with self._tx() as db:
            for result in results:
                cid = result.get("client_id")
                if cid is None and client_ids is not None and isinstance(result.get("index"), int):
                    cid = client_ids[result["index"]]
                row = db.execute("SELECT op, photos, label FROM items WHERE client_id = ?", (cid,)).fetchone()
                if row is None:
                    continue
                kind = str(result.get("result"))
                if kind not in RESULT_KINDS:
                    raise SyncError(f"unknown result {kind!r} for item {cid}")
                version = result.get("version")
                db.execute("UPDATE items SET state = ?, result = ?, server_id = coalesce(?, server_id), "
                           "reference = coalesce(?, reference), version = coalesce(?, version), batch_id = ?, "
                           "updated_at = ? WHERE client_id = ?",
                           (kind, _dumps(dict(result)), result.get("id"), result.get("reference"), version, batch_id,
                            now, cid))
                if result.get("id") and isinstance(version, int):
                    # Every item about this report learns its newest version (base the next update on it).
                    db.execute("UPDATE items SET version = ? WHERE server_id = ? AND (version IS NULL OR version < ?)",
                               (version, result["id"], version))
                missing = tuple(result.get("missing_photos") or ())
                if kind in SENT_STATES:
                    for sha in json.loads(row[1]):
                        if sha not in missing:
                            db.execute("UPDATE photos SET complete = 1, uploaded_offset = size WHERE sha256 = ?",
                                       (sha,))
                current = result.get("current")
                if isinstance(current, Mapping) and current.get("status"):
                    db.execute("UPDATE items SET status = ? WHERE client_id = ?", (current["status"], cid))
                outcomes.append(ItemOutcome(
                    client_id=str(cid), op=row[0], result=kind, label=row[2], id=result.get("id"),
                    reference=result.get("reference"), version=version, error=result.get("error"),
                    message=result.get("message"), errors=result.get("errors") or {}, missing_photos=missing))
            self._set_meta(db, "inflight_batch", None)
        return outcomes

    def record_request_error(self, client_ids: Sequence[str], error: RequestError, *, keep_pending: bool = False
                             ) -> list[ItemOutcome]:
        """Mark a refused batch's items with the request's error and clear the batch in flight.

        They become ``rejected`` (not pushed again until :meth:`requeue`),
        or stay ``pending`` with the error noted when ``keep_pending`` (a
        credential problem: the items are fine, the next push sends them).
        """
        outcomes: list[ItemOutcome] = []
        result = error.as_result()
        with self._tx() as db:
            for cid in client_ids:
                row = db.execute("SELECT op, label FROM items WHERE client_id = ?", (cid,)).fetchone()
                if row is None:
                    continue
                db.execute("UPDATE items SET state = ?, result = ?, updated_at = ? WHERE client_id = ?",
                           ("pending" if keep_pending else "rejected", _dumps(result), _now(), cid))
                if not keep_pending:
                    outcomes.append(ItemOutcome(client_id=cid, op=row[0], result="rejected", label=row[1],
                                                error=error.error, message=error.message,
                                                errors=result["errors"]))
            self._set_meta(db, "inflight_batch", None)
        return outcomes

    # -- photos ---------------------------------------------------------------------------------------------------

    def photos_to_upload(self) -> list[str]:
        """sha256 of photos the server still needs: referenced by a sent item, not complete, not failed for good."""
        needed: dict[str, None] = {}
        rows = self._db.execute("SELECT photos FROM items WHERE state IN ('created', 'unchanged') AND photos <> '[]' "
                                "ORDER BY rowid")
        for (photos,) in rows:
            for sha in json.loads(photos):
                needed[sha] = None
        if not needed:
            return []
        open_uploads = {row[0] for row in self._db.execute("SELECT sha256 FROM photos WHERE complete = 0 AND "
                                                           "error IS NULL")}
        return [sha for sha in needed if sha in open_uploads]

    def photo_state(self, sha256: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT size, uploaded_offset, complete, error, path FROM photos WHERE sha256 = ?",
                               (sha256,)).fetchone()
        if row is None:
            return None
        return {"size": row[0], "uploaded_offset": row[1], "complete": bool(row[2]), "error": row[3], "path": row[4]}

    def photo_bytes(self, sha256: str) -> bytes:
        """The photo's bytes, checked against its sha256 (a file changed since it was queued is refused)."""
        row = self._db.execute("SELECT path, blob FROM photos WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            raise QueueError(f"photo {sha256} is not in the queue")
        data = bytes(row[1]) if row[1] is not None else Path(row[0]).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise QueueError(f"photo file {row[0]} changed since it was queued")
        return data

    def set_photo_progress(self, sha256: str, *, offset: int | None = None, complete: bool | None = None,
                           error: str | None = None) -> None:
        with self._tx() as db:
            if offset is not None:
                db.execute("UPDATE photos SET uploaded_offset = ? WHERE sha256 = ?", (offset, sha256))
            if complete is not None:
                db.execute("UPDATE photos SET complete = ? WHERE sha256 = ?", (int(complete), sha256))
            if error is not None:
                db.execute("UPDATE photos SET error = ? WHERE sha256 = ?", (error, sha256))

    # -- changes --------------------------------------------------------------------------------------------------

    def store_changes(self, changes: Sequence[Mapping[str, Any]], cursor: str | None) -> int:
        """Store a page of the change feed and its cursor in one transaction.

        A report change updates the queue's items about that report when its
        version is at least the one held ("newer wins"); a removed or
        deleted report marks them ``removed``. Returns how many items changed.
        """
        updated = 0
        now = _now()
        with self._tx() as db:
            for change in changes:
                seq = change.get("seq")
                kind = change.get("kind", "report")
                report_id = change.get("id") if kind == "report" else None
                db.execute("INSERT OR REPLACE INTO changes (seq, kind, report_id, json, pulled_at) "
                           "VALUES (?, ?, ?, ?, ?)", (seq if isinstance(seq, int) else None, kind, report_id,
                                                      _dumps(dict(change)), now))
                if report_id is None:
                    continue
                report = change.get("report")
                if change.get("removed") or change.get("deleted") or not isinstance(report, Mapping):
                    updated += db.execute("UPDATE items SET status = 'removed', updated_at = ? "
                                          "WHERE server_id = ? OR (op = 'create' AND client_id = ?)",
                                          (now, report_id, report_id)).rowcount
                    continue
                version = report.get("version", change.get("version"))
                if not isinstance(version, int):
                    continue
                updated += db.execute(
                    "UPDATE items SET version = ?, status = ?, reference = coalesce(reference, ?), updated_at = ? "
                    "WHERE (server_id = ? OR (op = 'create' AND client_id = ?)) AND (version IS NULL OR version <= ?) "
                    "AND (status IS NOT ? OR version IS NOT ?)",
                    (version, report.get("status"), report.get("reference"), now, report_id, report_id, version,
                     report.get("status"), version)).rowcount
            self._set_meta(db, "cursor", cursor)
        return updated

    def changes(self) -> list[dict[str, Any]]:
        """Every change pulled so far, in feed order."""
        return [json.loads(row[0]) for row in self._db.execute("SELECT json FROM changes ORDER BY seq")]


# --- summaries ---------------------------------------------------------------------------------------------------


@dataclass
class PushSummary:
    """What one :meth:`SyncClient.push` did.

    ``counts`` has every result kind; ``outcomes`` one entry per item
    answered in this push. ``stopped`` says why the push ended early (the
    link is down, the token is refused); the items not sent stay pending
    and the batch in flight is resent by the next push. ``pending`` is what
    the queue still has to send afterwards.
    """

    counts: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in RESULT_KINDS})
    outcomes: list[ItemOutcome] = field(default_factory=list)
    batches: int = 0
    attempts: int = 0
    retries: int = 0
    replayed: int = 0
    batch_ids: list[str] = field(default_factory=list)
    photos_uploaded: list[str] = field(default_factory=list)
    photo_failures: dict[str, str] = field(default_factory=dict)
    stopped: str | None = None
    pending: int = 0

    @property
    def ok(self) -> bool:
        """Everything was delivered (items answered, photos uploaded); conflicts/rejections may still need a look."""
        return self.stopped is None and not self.photo_failures and self.pending == 0

    def problems(self) -> list[ItemOutcome]:
        """The items a person has to look at: conflicts and rejections."""
        return [o for o in self.outcomes if o.result in ("conflict", "rejected")]

    def _add(self, outcomes: Iterable[ItemOutcome]) -> None:
        for outcome in outcomes:
            self.outcomes.append(outcome)
            self.counts[outcome.result] = self.counts.get(outcome.result, 0) + 1


@dataclass(frozen=True)
class PullSummary:
    """What one :meth:`SyncClient.pull` brought: ``changes`` over ``pages`` pages, ``updated`` queue items."""

    changes: int
    pages: int
    updated: int
    cursor: str | None
    restarted: bool = False


# --- the client --------------------------------------------------------------------------------------------------


@dataclass
class _Chunk:
    items: list[dict[str, Any]]
    batch_id: str | None = None


def _retry_after(response: HttpResponse) -> float | None:
    value = response.header("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _is_retryable(status: int) -> bool:
    return status in (408, 429) or 500 <= status <= 599


def _request_error(response: HttpResponse) -> RequestError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        return RequestError(response.status, body["error"], str(body.get("message") or ""), body)
    text = response.body[:200].decode("utf-8", "replace").strip()
    return RequestError(response.status, f"http.{response.status}", text or f"HTTP {response.status}")


class SyncClient:
    """Pushes a :class:`LocalQueue` to a civicmap server and pulls its change feed.

    ``base_url`` is the server's root (``https://civicmap.example``);
    ``token`` a device token (``dev_…``); ``device_id`` that device's id.
    ``backoff`` is the first retry delay in seconds, doubled on each retry up
    to ``max_backoff``, each delay drawn between half and all of it from
    ``rng`` (pass a seeded ``random.Random`` for reproducible runs).
    ``max_retries`` bounds consecutive retries of one request. ``sleep``,
    ``transport`` and ``clock`` (the device clock, for ``sent_at``) can be
    swapped in tests.
    """

    def __init__(self, base_url: str, token: str, device_id: str | int, queue: LocalQueue, *, batch_size: int = 100,
                 gzip: bool = True, max_retries: int = 8, backoff: float = 0.5, max_backoff: float = 300.0,
                 rng: random.Random | None = None, timeout: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, transport: Transport = http_transport,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, clock: Callable[[], datetime] | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        if max_retries < 0 or backoff < 0 or max_backoff < 0:
            raise ValueError("max_retries, backoff and max_backoff must not be negative")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.device_id = str(device_id)
        self.queue = queue
        self.batch_size = batch_size
        self.gzip = gzip
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.rng = rng if rng is not None else random.Random()
        self.timeout = timeout
        self.sleep = sleep
        self.transport = transport
        self.chunk_bytes = chunk_bytes
        self.clock = clock or (lambda: datetime.now(UTC).astimezone())
        self._attempts = 0
        self._retries = 0

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        return self.base_url + path + (f"?{urlencode(query)}" if query else "")

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "User-Agent": USER_AGENT, "Accept": "application/json",
                **extra}

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): exponential, jittered, capped;
        never less than the server's ``Retry-After`` (itself capped at ``max_backoff``)."""
        base = min(self.max_backoff, self.backoff * (2 ** min(attempt, 62)))
        wait = base / 2 + self.rng.uniform(0, base / 2)
        if retry_after is not None and math.isfinite(retry_after):
            wait = max(wait, min(max(retry_after, 0.0), self.max_backoff))
        return wait

    def _exchange(self, make_request: Callable[[], HttpRequest], *, expect_json: bool = False) -> HttpResponse:
        """Send until an answer that is not worth retrying; ``TransportFailed`` after ``max_retries`` retries.

        Retried: link failures, 408, 429, 5xx, and (``expect_json``) a 2xx
        whose body is not JSON, such as a Wi-Fi captive portal's page.
        """
        attempt = 0
        while True:
            retry_after: float | None = None
            self._attempts += 1
            try:
                response = self.transport(make_request())
            except TRANSIENT_ERRORS as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                if _is_retryable(response.status):
                    failure = f"HTTP {response.status}"
                    retry_after = _retry_after(response)
                elif expect_json and 200 <= response.status < 300 and not _is_json(response):
                    failure = f"HTTP {response.status} without a JSON body"
                else:
                    return response
            if attempt >= self.max_retries:
                raise TransportFailed(failure, attempt + 1)
            self.sleep(self.delay(attempt, retry_after))
            attempt += 1
            self._retries += 1

    def _bind_meta(self) -> None:
        """Remember server and device in the queue; a cursor from another server or device is dropped."""
        if self.queue.get_meta("server_url") not in (None, self.base_url) or \
                self.queue.get_meta("device_id") not in (None, self.device_id):
            self.queue.set_meta("cursor", None)
        self.queue.set_meta("server_url", self.base_url)
        self.queue.set_meta("device_id", self.device_id)

    # -- push -----------------------------------------------------------------------------------------------------

    def _batch_request(self, chunk: _Chunk) -> HttpRequest:
        envelope = {"device_id": self.device_id, "batch_id": chunk.batch_id,
                    "sent_at": self.clock().isoformat(), "items": chunk.items}
        body = _dumps(envelope).encode("utf-8")
        headers = self._headers(**{"Content-Type": "application/json; charset=utf-8"})
        if self.gzip:
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        return HttpRequest("POST", self._url("/api/v1/sync/batches"), headers, body, self.timeout)

    def push(self, progress: Callable[[int], None] | None = None) -> PushSummary:
        """Send every pending item, then upload the photos the server is missing.

        ``progress(n)`` is called with the number of items answered after
        each batch (``click.progressbar``'s ``update`` fits). A batch left in
        flight by an earlier run is resent first, unchanged.
        """
        self._bind_meta()
        self._attempts = self._retries = 0
        summary = PushSummary()
        chunks: deque[_Chunk] = deque()
        inflight = self.queue.inflight_batch()
        in_flight_ids: set[str] = set()
        if inflight is not None and inflight.get("device_id") == self.device_id:
            chunks.append(_Chunk(list(inflight["items"]), str(inflight["batch_id"])))
            in_flight_ids = {item["client_id"] for item in inflight["items"]}
        elif inflight is not None:  # made for another device: its items are re-batched, keeping their client_ids
            self.queue.set_inflight_batch(None)
        pending = [item.wire() for item in self.queue.pending() if item.client_id not in in_flight_ids]
        for start in range(0, len(pending), self.batch_size):
            chunks.append(_Chunk(pending[start:start + self.batch_size]))

        while chunks:
            chunk = chunks.popleft()
            if chunk.batch_id is None:
                chunk.batch_id = str(uuid.uuid4())
                # Written before the first byte is sent: a crash now still resends this very batch.
                self.queue.set_inflight_batch({"batch_id": chunk.batch_id, "device_id": self.device_id,
                                               "items": chunk.items})
            client_ids = [item["client_id"] for item in chunk.items]
            try:
                response = self._exchange(lambda c=chunk: self._batch_request(c), expect_json=True)
            except TransportFailed as exc:
                summary.stopped = f"the server could not be reached: {exc}"
                break
            if response.status == 200:
                body = response.json()
                results = body.get("results") if isinstance(body, Mapping) else None
                if not isinstance(results, list) or len(results) != len(chunk.items):
                    summary.stopped = "the server's answer does not match the batch; it was kept to resend"
                    break
                summary._add(self.queue.record_results(results, client_ids, batch_id=chunk.batch_id))
                summary.batches += 1
                summary.batch_ids.append(chunk.batch_id)
                summary.replayed += bool(body.get("replayed"))
                if progress:
                    progress(len(chunk.items))
                continue
            error = _request_error(response)
            if response.status == 415 and self.gzip:
                self.gzip = False  # a server (or proxy) without gzip: the same batch again, uncompressed
                chunks.appendleft(chunk)
                continue
            if response.status == 413 and len(chunk.items) > 1:
                # Too big: two halves, each a new batch (new batch_id); the items keep their client_ids.
                self.queue.set_inflight_batch(None)
                half = len(chunk.items) // 2
                chunks.appendleft(_Chunk(chunk.items[half:]))
                chunks.appendleft(_Chunk(chunk.items[:half]))
                continue
            if response.status in (401, 403) or error.error in CREDENTIAL_ERRORS:
                self.queue.record_request_error(client_ids, error, keep_pending=True)
                summary.stopped = f"the server refused this device: {error}"
                break
            summary._add(self.queue.record_request_error(client_ids, error))
            if progress:
                progress(len(chunk.items))

        if summary.stopped is None:
            uploaded, failures = self.upload_photos()
            summary.photos_uploaded, summary.photo_failures = uploaded, failures
        summary.pending = self.queue.pending_count()
        summary.attempts, summary.retries = self._attempts, self._retries
        return summary

    # -- photos ---------------------------------------------------------------------------------------------------

    def upload_photos(self) -> tuple[list[str], dict[str, str]]:
        """Upload every photo the server still needs; returns (uploaded sha256s, {sha256: why it failed})."""
        uploaded: list[str] = []
        failures: dict[str, str] = {}
        for sha in self.queue.photos_to_upload():
            try:
                self.upload_photo(sha)
            except RequestError as exc:
                self.queue.set_photo_progress(sha, error=str(exc))
                failures[sha] = str(exc)
            except (TransportFailed, QueueError, OSError) as exc:
                failures[sha] = str(exc)
            else:
                uploaded.append(sha)
        return uploaded, failures

    def _photo_url(self, sha256: str) -> str:
        return self._url(f"/api/v1/sync/photos/{quote(sha256)}")

    def _photo_offset(self, sha256: str) -> tuple[int, bool]:
        """What the server holds of an upload: ``(Upload-Offset, complete)``."""
        response = self._exchange(lambda: HttpRequest("HEAD", self._photo_url(sha256), self._headers(),
                                                      timeout=self.timeout))
        if response.status == 404:
            return 0, False
        if response.status != 200:
            raise _request_error(response)
        return int(response.header("Upload-Offset") or 0), response.header("Upload-Complete") == "?1"

    def upload_photo(self, sha256: str) -> None:
        """Upload one photo in ``chunk_bytes`` pieces: ``HEAD`` for the stored offset, then ``PUT`` from it.

        After a failed piece the server is asked again (``HEAD``) and the
        upload goes on from what it stored, so no stored byte is sent twice.
        ``max_retries`` bounds *consecutive* failures; every piece that
        lands resets the count. Raises :class:`RequestError` when the server
        refuses the photo for good (e.g. ``sync.photo_hash_mismatch``,
        ``photo.not_an_image``), :class:`TransportFailed` when the link stays down.
        """
        data = self.queue.photo_bytes(sha256)
        total = len(data)
        offset: int | None = None
        failures = 0
        while True:
            retry_after: float | None = None
            try:
                if offset is None:
                    offset, complete = self._photo_offset(sha256)
                    self.queue.set_photo_progress(sha256, offset=offset)
                    if complete:
                        self.queue.set_photo_progress(sha256, offset=total, complete=True)
                        return
                # Every byte stored but not finished: resending the last one makes the server finish it.
                offset = min(offset, total - 1)
                end = min(offset + self.chunk_bytes, total) - 1
                self._attempts += 1
                response = self.transport(HttpRequest(
                    "PUT", self._photo_url(sha256),
                    self._headers(**{"Content-Type": "application/octet-stream",
                                     "Content-Range": f"bytes {offset}-{end}/{total}"}),
                    data[offset:end + 1], self.timeout))
            except TRANSIENT_ERRORS as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                stored = response.header("Upload-Offset")
                if response.status in (200, 201):
                    offset = int(stored) if stored is not None else end + 1
                    failures = 0
                    complete = response.header("Upload-Complete") == "?1"
                    self.queue.set_photo_progress(sha256, offset=offset, complete=complete or None)
                    if complete:
                        return
                    continue
                error = _request_error(response)
                if response.status == 409 and error.error == "sync.upload_gap" and stored is not None:
                    offset = int(stored)  # the server holds less than we thought: go on from there
                    continue
                if not _is_retryable(response.status):
                    raise error
                failure = f"HTTP {response.status}"
                retry_after = _retry_after(response)
            if failures >= self.max_retries:
                raise TransportFailed(f"photo {sha256[:12]}…: {failure}", failures + 1)
            self.sleep(self.delay(failures, retry_after))
            failures += 1
            self._retries += 1
            offset = None  # ask the server what it kept before sending more

    # -- pull -----------------------------------------------------------------------------------------------------

    def pull(self, *, limit: int = 100) -> PullSummary:
        """Follow the change feed from the stored cursor until ``more`` is false.

        Each page is stored with its cursor in one transaction, so an
        interrupted pull goes on where it stopped. A cursor the server calls
        bad (``sync.bad_cursor``) is dropped and the feed read from the
        start, which is safe because changes are keyed by report and version.
        """
        if not 1 <= limit <= 500:
            raise ValueError("limit must be within 1…500")
        self._bind_meta()
        cursor = self.queue.get_meta("cursor")
        changes = pages = updated = 0
        restarted = False
        while True:
            query: dict[str, Any] = {"limit": limit}
            if cursor:
                query["cursor"] = cursor
            url = self._url("/api/v1/sync/changes", query)
            response = self._exchange(lambda u=url: HttpRequest("GET", u, self._headers(), timeout=self.timeout),
                                      expect_json=True)
            if response.status != 200:
                error = _request_error(response)
                if error.error == "sync.bad_cursor" and cursor and not restarted:
                    cursor, restarted = None, True
                    self.queue.set_meta("cursor", None)
                    continue
                raise error
            page = response.json()
            items = page.get("items", page.get("changes", []))
            cursor = page.get("cursor") or cursor
            updated += self.queue.store_changes(items, cursor)
            changes += len(items)
            pages += 1
            if not page.get("more"):
                return PullSummary(changes, pages, updated, cursor, restarted)


def _is_json(response: HttpResponse) -> bool:
    try:
        response.json()
    except ValueError:
        return False
    return True
