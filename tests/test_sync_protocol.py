"""Pure tests of the offline batch-sync protocol (sync/): no database, no Flask app.

Every rule of the protocol has a test here: idempotent creates and updates,
conflicts, tombstones, lenient item parsing, limits, gzip bombs, clock skew,
resumable photo uploads and the change-feed cursor. The service's own schema
and hash are imported only to prove that sync agrees with them.
"""

from __future__ import annotations

import ast
import base64
import gzip
import hashlib
import math
import subprocess
import sys
import time
import tracemalloc
import uuid
import zlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from marshmallow import ValidationError

from service import models as service_models
from service import schemas as service_schemas
from service.intake import MAX_PHOTOS_PER_REPORT, canonical_payload_hash
from sync.decisions import (
    POLICIES,
    AppliedUpdate,
    ContentRange,
    StoredBatch,
    StoredReport,
    advisory_lock_key,
    batch_fingerprint,
    canonical_hash,
    correct_clock,
    decide_create,
    decide_update,
    decode_cursor,
    encode_cursor,
    item_hash,
    missing_photos,
    paginate_changes,
    parse_content_range,
    photo_head,
    plan_batch,
    plan_chunk,
    policy_for,
    verify_photo,
)
from sync.protocol import (
    DESCRIPTION_MAX,
    LANDMARK_MAX,
    REPORT_STATUSES,
    SERVER_OWNED_FIELDS,
    BatchLimits,
    BatchResponse,
    ItemResult,
    ProtocolError,
    SyncItem,
    assemble_results,
    decode_json,
    inflate_gzip,
    normalise_create_payload,
    parse_batch,
    parse_sha256,
    read_body,
)

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc
ICT = timezone(timedelta(hours=7))  # Phnom Penh
RECEIVED = datetime(2025, 3, 10, 9, 0, 0, tzinfo=UTC)
TOLERANCE = timedelta(minutes=5)
PHOTO_A = hashlib.sha256(b"photo a").hexdigest()
PHOTO_B = hashlib.sha256(b"photo b").hexdigest()


def new_id() -> str:
    return str(uuid.uuid4())


def create_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "category": "waste.overflowing_bin",
        "description": "ធុងសំរាមពេញ — bin full since Monday",
        "location": {"type": "Point", "coordinates": [104.9282, 11.5564]},
        "accuracy_m": 12,
        "observed_at": "2025-03-10T15:20:00+07:00",
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not ...}


def create_item(client_id: str | None = None, **payload_overrides: Any) -> dict[str, Any]:
    return {"client_id": client_id or new_id(), "op": "create", "payload": create_payload(**payload_overrides)}


def update_item(report_id: str, base_version: int | None = 3, client_id: str | None = None,
                **payload: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"client_id": client_id or new_id(), "op": "update",
                            "payload": {"report_id": report_id, **payload}}
    if base_version is not None:
        item["base_version"] = base_version
    return item


def envelope(items: list[Any], **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"device_id": "amb-042-pixel3a", "batch_id": new_id(),
                            "sent_at": "2025-03-10T15:59:58+07:00", "items": items}
    data.update(overrides)
    return data


def one_item(raw_item: dict[str, Any]) -> SyncItem:
    batch = parse_batch(envelope([raw_item]))
    assert batch.rejected == (), batch.rejected
    return batch.items[0]


def stored(item: SyncItem, *, version: int = 1, status: str = "new", reference: str = "PP-7KQ2X") -> StoredReport:
    return StoredReport(id=item.client_id, reference=reference, version=version, payload_hash=item_hash(item),
                        status=status)


def report(status: str = "acknowledged", version: int = 3, **kw: Any) -> StoredReport:
    return StoredReport(id=kw.pop("id", uuid.uuid4()), reference="PP-3H8MD", version=version,
                        payload_hash="0" * 64, status=status, **kw)


def raises(error: str, status: int) -> Any:
    """pytest.raises for a ProtocolError with this key and status."""
    class _Check:
        def __enter__(self) -> pytest.ExceptionInfo[ProtocolError]:
            self.ctx = pytest.raises(ProtocolError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc: Any) -> bool:
            handled = self.ctx.__exit__(*exc)
            assert (self.info.value.error, self.info.value.status) == (error, status), self.info.value
            return bool(handled)
    return _Check()


# --- the hash: sync and service must agree ------------------------------------------------------------------

AGREEING_PAYLOADS = [
    pytest.param(create_payload(), id="typical"),
    pytest.param(create_payload(description=..., accuracy_m=..., observed_at=...), id="minimal"),
    pytest.param(create_payload(observed_at="2025-03-10T08:20:00Z", accuracy_m="7.5"), id="utc-z-and-string-number"),
    pytest.param(create_payload(observed_at="2025-03-10T15:20:00.123456+07:00", accuracy_m=0), id="microseconds"),
    pytest.param(create_payload(landmark="ក្បែរផ្សារថ្មី near Phsar Thmei", location={"coordinates": [105, 11],
                                                                                       "type": "Point"}),
                 id="khmer-int-coords"),
    pytest.param(create_payload(contact={"name": "Sokha", "phone": "+855 12 345 678", "email": "sokha@example.kh",
                                         "consent": True}), id="contact"),
    pytest.param(create_payload(contact={"consent": "yes", "phone": "012-345-678"}), id="consent-yes"),
    pytest.param(create_payload(description="x" * DESCRIPTION_MAX, landmark="y" * LANDMARK_MAX), id="max-lengths"),
]


@pytest.mark.parametrize("raw", AGREEING_PAYLOADS)
def test_create_payload_normalised_and_hashed_exactly_as_the_service_does(raw: dict[str, Any]) -> None:
    client_id = uuid.uuid4()
    ours, errors = normalise_create_payload(raw, client_id)
    theirs = service_schemas.ReportCreateSchema().load({**raw, "client_id": str(client_id)})
    assert errors == {}
    assert ours == theirs
    assert canonical_hash(ours) == canonical_payload_hash(theirs)
    assert canonical_hash(ours) == canonical_payload_hash(dict(ours))


REFUSED_PAYLOADS = [
    pytest.param(create_payload(location={"type": "Point", "coordinates": [104.9, 91]}), id="latitude-91"),
    pytest.param(create_payload(location={"type": "Point", "coordinates": [math.nan, 11.5]}), id="nan"),
    pytest.param(create_payload(location={"type": "Point", "coordinates": ["104.9", 11.5]}), id="string-coord"),
    pytest.param(create_payload(location={"type": "Point", "coordinates": [104.9]}), id="one-coord"),
    pytest.param(create_payload(location={"type": "LineString", "coordinates": [104.9, 11.5]}), id="not-point"),
    pytest.param(create_payload(location=...), id="no-location"),
    pytest.param(create_payload(category=...), id="no-category"),
    pytest.param(create_payload(category=""), id="empty-category"),
    pytest.param(create_payload(description="x" * (DESCRIPTION_MAX + 1)), id="long-description"),
    pytest.param(create_payload(landmark=None), id="null-landmark"),
    pytest.param(create_payload(accuracy_m=math.inf), id="inf-accuracy"),
    pytest.param(create_payload(accuracy_m=True), id="bool-accuracy"),
    pytest.param(create_payload(accuracy_m=-1), id="negative-accuracy"),
    pytest.param(create_payload(observed_at="2025-03-10T15:20:00"), id="naive-observed"),
    pytest.param(create_payload(observed_at="yesterday"), id="bad-observed"),
    pytest.param(create_payload(status="resolved"), id="server-owned"),
    pytest.param(create_payload(photo="x"), id="unknown-field"),
    pytest.param(create_payload(contact={"name": "Dara", "consent": False}), id="no-consent"),
    pytest.param(create_payload(contact={"email": "not-an-email", "consent": True}), id="bad-email"),
    pytest.param(create_payload(contact={"phone": "call me", "consent": True}), id="bad-phone"),
    pytest.param(create_payload(contact={"consent": True, "age": 30}), id="contact-unknown"),
]


@pytest.mark.parametrize("raw", REFUSED_PAYLOADS)
def test_create_payload_refused_where_the_service_refuses_it(raw: dict[str, Any]) -> None:
    ours, errors = normalise_create_payload(raw, uuid.uuid4())
    assert ours is None and errors
    with pytest.raises(ValidationError) as info:
        service_schemas.ReportCreateSchema().load(raw)
    assert set(errors) == set(info.value.messages)  # the same fields are blamed


def test_canonical_hash_is_pinned_so_stored_hashes_stay_valid() -> None:
    payload = {"client_id": uuid.UUID("8d1f5c1e-2b7a-4c55-9a43-0f6f1d2a3b4c"), "category": "flooding.road",
               "description": "Road under water", "landmark": "", "accuracy_m": 8.0,
               "location": {"type": "Point", "coordinates": [104.9282, 11.5564]},
               "observed_at": datetime(2025, 3, 10, 15, 20, tzinfo=ICT)}
    canonical_bytes = (
        b'{"accuracy_m":8.0,"category":"flooding.road","description":"Road under water","landmark":"",'
        b'"location":{"coordinates":[104.9282,11.5564],"type":"Point"},"observed_at":"2025-03-10T08:20:00+00:00"}')
    golden = hashlib.sha256(canonical_bytes).hexdigest()
    assert canonical_hash(payload) == golden, "the payload hash changed: stored payload_sha256 values break"
    assert canonical_payload_hash(payload) == golden


def test_canonical_hash_ignores_client_id_and_key_order_but_not_content() -> None:
    a = {"client_id": uuid.uuid4(), "category": "waste", "description": "x"}
    b = {"description": "x", "category": "waste", "client_id": uuid.uuid4()}
    assert canonical_hash(a) == canonical_hash(b)
    assert canonical_hash(a) != canonical_hash({**a, "description": "y"})


def test_canonical_hash_writes_one_instant_one_way_whatever_the_offset() -> None:
    local = {"observed_at": datetime(2025, 3, 10, 15, 20, tzinfo=ICT), "contact": {"at": datetime(2025, 1, 1, tzinfo=ICT)}}
    utc = {"observed_at": datetime(2025, 3, 10, 8, 20, tzinfo=UTC), "contact": {"at": datetime(2024, 12, 31, 17, tzinfo=UTC)}}
    assert canonical_hash(local) == canonical_hash(utc)
    assert canonical_hash(local) != canonical_hash({"observed_at": datetime(2025, 3, 10, 15, 20, tzinfo=UTC)})


def test_sync_constants_mirror_the_service() -> None:
    assert REPORT_STATUSES == service_models.REPORT_STATUSES
    assert SERVER_OWNED_FIELDS == service_schemas.SERVER_OWNED_FIELDS
    assert (DESCRIPTION_MAX, LANDMARK_MAX) == (service_models.DESCRIPTION_MAX, service_models.LANDMARK_MAX)
    assert BatchLimits().max_photos_per_item == MAX_PHOTOS_PER_REPORT
    assert set(POLICIES) == set(service_models.USER_ROLES)


def test_sync_imports_neither_service_nor_flask_nor_sqlalchemy() -> None:
    for path in (ROOT / "sync").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{path.name} needs a module docstring"
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] not in {"service", "flask", "sqlalchemy", "geoalchemy2", "flask_babel"}, \
                    f"{path.name} imports {name}"
    code = ("import sys, sync.protocol, sync.decisions; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'service', 'flask', 'sqlalchemy'}); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --- parse_batch: the envelope -----------------------------------------------------------------------------


def test_a_valid_batch_parses_into_normalised_items() -> None:
    report_id = new_id()
    data = envelope([create_item(), update_item(report_id, status="in_progress")])
    data["items"][0]["photos"] = [PHOTO_A.upper(), PHOTO_B, PHOTO_A]
    batch = parse_batch(data)
    assert batch.rejected == ()
    assert batch.batch_id == uuid.UUID(data["batch_id"]) and batch.device_id == "amb-042-pixel3a"
    assert batch.sent_at == datetime(2025, 3, 10, 8, 59, 58, tzinfo=UTC)
    create, update = batch.items
    assert create.op == "create" and create.index == 0 and create.base_version is None
    assert create.payload["client_id"] == create.client_id
    assert create.payload["accuracy_m"] == 12.0 and isinstance(create.payload["accuracy_m"], float)
    assert create.payload["observed_at"] == datetime(2025, 3, 10, 15, 20, tzinfo=ICT)
    assert create.payload["landmark"] == ""
    assert create.photos == (PHOTO_A, PHOTO_B)  # lower-cased, de-duplicated, in order
    assert update.payload == {"report_id": uuid.UUID(report_id), "status": "in_progress"}
    assert update.base_version == 3 and update.index == 1


@pytest.mark.parametrize(("bad_item", "error", "field"), [
    pytest.param({"client_id": None, "op": "create", "payload": create_payload()}, "sync.invalid_item",
                 "client_id", id="null-client-id"),
    pytest.param({"client_id": "not-a-uuid", "op": "create", "payload": create_payload()}, "sync.invalid_item",
                 "client_id", id="bad-uuid"),
    pytest.param({"op": "create", "payload": create_payload()}, "sync.invalid_item", "client_id", id="no-client-id"),
    pytest.param({"client_id": new_id(), "op": "delete", "payload": {}}, "sync.unknown_op", "op", id="unknown-op"),
    pytest.param({"client_id": new_id(), "op": "create"}, "sync.invalid_payload", "payload", id="no-payload"),
    pytest.param(create_item(location={"type": "Point", "coordinates": [104.9, math.nan]}), "sync.invalid_payload",
                 "location", id="nan-coordinates"),
    pytest.param(create_item(location={"type": "Point", "coordinates": [104.9, 91]}), "sync.invalid_payload",
                 "location", id="latitude-91"),
    pytest.param(create_item(status="resolved"), "sync.invalid_payload", "status", id="server-owned"),
    pytest.param({**create_item(), "base_version": 2}, "sync.invalid_item", "base_version",
                 id="base-version-on-create"),
    pytest.param({**create_item(), "base_version": 0}, "sync.invalid_item", "base_version", id="base-version-zero"),
    pytest.param({**create_item(), "base_version": True}, "sync.invalid_item", "base_version",
                 id="base-version-bool"),
    pytest.param({**create_item(), "photos": ["abc"]}, "sync.invalid_item", "photos", id="bad-photo-hash"),
    pytest.param({**create_item(), "photos": [hashlib.sha256(bytes([i])).hexdigest() for i in range(7)]},
                 "sync.invalid_item", "photos", id="seven-photos"),
    pytest.param({**create_item(), "extra": 1}, "sync.invalid_item", "extra", id="unknown-item-field"),
    pytest.param(update_item(new_id(), base_version=None, status="resolved", note="fixed"), "sync.invalid_payload",
                 "base_version", id="status-without-base-version"),
    pytest.param(update_item(new_id(), status="closed"), "sync.invalid_payload", "status", id="unknown-status"),
    pytest.param(update_item(new_id(), note="   "), "sync.invalid_payload", "_schema", id="empty-update"),
    pytest.param(update_item("PP-3H8MD", note="x"), "sync.invalid_payload", "report_id", id="update-by-reference"),
])
def test_one_bad_item_is_rejected_and_the_others_parse(bad_item: dict[str, Any], error: str, field: str) -> None:
    good_before, good_after = create_item(), update_item(new_id(), note="Still blocked.", base_version=None)
    batch = parse_batch(envelope([good_before, bad_item, good_after]))
    assert [i.index for i in batch.items] == [0, 2]
    assert [str(i.client_id) for i in batch.items] == [good_before["client_id"], good_after["client_id"]]
    (rejected,) = batch.rejected
    assert (rejected.index, rejected.result, rejected.error) == (1, "rejected", error)
    assert field in rejected.errors
    client_id = bad_item.get("client_id")
    expected = uuid.UUID(client_id) if isinstance(client_id, str) and client_id != "not-a-uuid" else None
    assert rejected.client_id == expected


def test_a_non_object_item_is_rejected_by_index() -> None:
    batch = parse_batch(envelope(["oops", create_item()]))
    assert [r.index for r in batch.rejected] == [0] and batch.rejected[0].client_id is None
    assert [i.index for i in batch.items] == [1]


def test_payload_client_id_must_match_the_item() -> None:
    item = create_item()
    item["payload"]["client_id"] = new_id()
    (rejected,) = parse_batch(envelope([item])).rejected
    assert rejected.errors == {"client_id": ["Differs from the item's client_id."]}
    item["payload"]["client_id"] = item["client_id"]
    assert parse_batch(envelope([item])).rejected == ()


def test_duplicate_client_id_in_one_batch_is_refused() -> None:
    twice = new_id()
    with raises("sync.duplicate_client_id", 422) as info:
        parse_batch(envelope([create_item(twice), create_item(), update_item(new_id(), note="x", client_id=twice)]))
    assert info.value.extra["client_ids"] == [twice]


def test_item_count_limit() -> None:
    parse_batch(envelope([create_item() for _ in range(500)]))
    with raises("sync.too_many_items", 413) as info:
        parse_batch(envelope([create_item() for _ in range(501)]))
    assert info.value.extra == {"max_items": 500}
    with raises("sync.too_many_items", 413):
        parse_batch(envelope([create_item() for _ in range(3)]), BatchLimits(max_items=2))


def test_an_empty_batch_is_valid() -> None:
    batch = parse_batch(envelope([]))
    assert batch.items == () and batch.rejected == () and batch.item_count == 0


@pytest.mark.parametrize(("change", "fields"), [
    pytest.param({"batch_id": ...}, {"batch_id"}, id="no-batch-id"),
    pytest.param({"batch_id": "batch-1"}, {"batch_id"}, id="bad-batch-id"),
    pytest.param({"batch_id": 42}, {"batch_id"}, id="int-batch-id"),
    pytest.param({"sent_at": "2025-03-10T15:59:58"}, {"sent_at"}, id="naive-sent-at"),
    pytest.param({"sent_at": 1741597198}, {"sent_at"}, id="epoch-seconds"),
    pytest.param({"device_id": ""}, {"device_id"}, id="empty-device"),
    pytest.param({"device_id": "d" * 129}, {"device_id"}, id="long-device"),
    pytest.param({"items": {"0": {}}}, {"items"}, id="items-not-a-list"),
    pytest.param({"items": ...}, {"items"}, id="no-items"),
    pytest.param({"compress": True}, {"compress"}, id="unknown-member"),
    pytest.param({"batch_id": ..., "sent_at": ...}, {"batch_id", "sent_at"}, id="all-errors-at-once"),
])
def test_a_bad_envelope_refuses_the_batch(change: dict[str, Any], fields: set[str]) -> None:
    data = {k: v for k, v in {**envelope([create_item()]), **change}.items() if v is not ...}
    with raises("sync.invalid_batch", 422) as info:
        parse_batch(data)
    assert set(info.value.errors) == fields


@pytest.mark.parametrize("data", [[], "batch", None, 3])
def test_a_body_that_is_not_an_object_is_refused(data: Any) -> None:
    with raises("sync.invalid_batch", 422):
        parse_batch(data)


def test_batch_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_items"):
        BatchLimits(max_items=0)


def test_parse_sha256() -> None:
    assert parse_sha256(PHOTO_A.upper()) == PHOTO_A
    for bad in ("", PHOTO_A[:-1], PHOTO_A + "0", "g" * 64):
        with raises("sync.bad_sha256", 400):
            parse_sha256(bad)


# --- bodies: size limits, gzip, JSON ---------------------------------------------------------------------------


def test_a_gzip_bomb_is_refused_quickly_without_inflating_it() -> None:
    bomb = gzip.compress(bytes(50 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100 * 1024  # ~50 KB on the wire
    limit = 8 * 1024 * 1024
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with raises("sync.body_too_large", 413) as info:
            inflate_gzip(bomb, limit)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.extra == {"max_inflated_bytes": limit}
    assert elapsed < 1.0
    assert peak < 3 * limit, f"peak {peak} bytes: the bomb was inflated far past the limit"


def test_gzip_inflates_up_to_exactly_the_limit() -> None:
    body = b"a" * 10_000
    assert inflate_gzip(gzip.compress(body), 10_000) == body
    with raises("sync.body_too_large", 413):
        inflate_gzip(gzip.compress(body), 9_999)


def test_concatenated_gzip_members_are_inflated() -> None:
    assert inflate_gzip(gzip.compress(b'{"a":') + gzip.compress(b"1}"), 100) == b'{"a":1}'


@pytest.mark.parametrize("body", [
    pytest.param(b"", id="empty"),
    pytest.param(b'{"device_id": "x"}', id="not-gzip"),
    pytest.param(gzip.compress(b"x" * 5000)[:-12], id="truncated"),
    pytest.param(gzip.compress(b"{}") + b"garbage!", id="trailing-garbage"),
    pytest.param(zlib.compress(b"{}"), id="zlib-not-gzip"),
    pytest.param(gzip.compress(b"{}")[:10] + b"\xff" * 20 + gzip.compress(b"{}")[30:], id="corrupt-deflate"),
])
def test_corrupt_gzip_is_a_bad_request(body: bytes) -> None:
    with raises("sync.corrupt_gzip", 400):
        inflate_gzip(body, 1024 * 1024)


def test_read_body_limits_and_encodings() -> None:
    limits = BatchLimits(max_body_bytes=1000, max_inflated_bytes=5000)
    raw = orjson.dumps(envelope([create_item()]))
    assert read_body(gzip.compress(raw), "gzip", BatchLimits()) == raw
    assert read_body(raw, None, BatchLimits()) == raw
    assert read_body(raw, "identity", BatchLimits()) == raw
    with raises("sync.body_too_large", 413):
        read_body(b"x" * 1001, None, limits)
    with raises("sync.body_too_large", 413):  # small on the wire, too big inflated
        read_body(gzip.compress(b" " * 5001), "gzip", limits)
    with raises("sync.unsupported_encoding", 415):
        read_body(raw, "br", BatchLimits())
    with raises("sync.unsupported_encoding", 415):
        read_body(raw, "gzip, gzip", BatchLimits())


@pytest.mark.parametrize("body", [b"", b"{", b'{"a": NaN}', b"\xff\xfe{}", b"{'a': 1}"])
def test_decode_json_is_strict(body: bytes) -> None:
    with raises("sync.invalid_json", 400):
        decode_json(body)


def test_decode_then_parse_round_trip() -> None:
    data = envelope([create_item()])
    body = read_body(gzip.compress(orjson.dumps(data)), "gzip", BatchLimits())
    assert parse_batch(decode_json(body)).items[0].client_id == uuid.UUID(data["items"][0]["client_id"])


# --- decide_create -----------------------------------------------------------------------------------------------


def test_a_new_create_is_inserted_and_reported_as_created() -> None:
    item = one_item(create_item())
    decision = decide_create(item, None, tombstoned=False)
    assert (decision.action, decision.result) == ("insert", "created")
    row = stored(item)
    result = decision.to_result(item, stored=row, missing_photos=[PHOTO_A])
    assert (result.result, result.id, result.reference, result.version) == ("created", item.client_id, "PP-7KQ2X", 1)
    assert result.missing_photos == (PHOTO_A,)
    with pytest.raises(ValueError):
        decision.to_result(item)  # the service must say what it stored


def test_a_replayed_create_is_unchanged_with_the_original_ids() -> None:
    raw = create_item()
    first = one_item(raw)
    row = stored(first, version=4, status="in_progress")
    replay = one_item(orjson.loads(orjson.dumps(raw)))  # as re-sent over the wire
    decision = decide_create(replay, row, tombstoned=False)
    assert (decision.action, decision.result) == ("none", "unchanged")
    result = decision.to_result(replay, missing_photos=())
    assert (result.id, result.reference, result.version, result.error) == (row.id, row.reference, 4, None)


def test_a_create_sent_before_through_post_reports_is_unchanged() -> None:
    raw = create_item()
    loaded = service_schemas.ReportCreateSchema().load({**raw["payload"], "client_id": raw["client_id"]})
    row = StoredReport(id=uuid.UUID(raw["client_id"]), reference="PP-AAAAA", version=1,
                       payload_hash=canonical_payload_hash(loaded), status="new")
    assert decide_create(one_item(raw), row, tombstoned=False).result == "unchanged"


def test_same_client_id_with_another_payload_is_a_conflict_and_nothing_is_overwritten() -> None:
    raw = create_item()
    row = stored(one_item(raw))
    changed = one_item({**raw, "payload": {**raw["payload"], "description": "bin full AND burning"}})
    decision = decide_create(changed, row, tombstoned=False)
    assert (decision.action, decision.result, decision.error) == ("none", "conflict", "sync.client_id_conflict")
    result = decision.to_result(changed)
    assert (result.id, result.reference) == (row.id, row.reference)
    assert result.current == row.summary()


def test_a_deleted_submission_cannot_come_back() -> None:
    item = one_item(create_item())
    for existing in (None, stored(item)):
        decision = decide_create(item, existing, tombstoned=True)
        assert (decision.action, decision.result, decision.error) == ("none", "rejected", "sync.deleted")
        assert decision.to_result(item).id is None


def test_decide_create_refuses_an_update_item() -> None:
    with pytest.raises(ValueError):
        decide_create(one_item(update_item(new_id(), note="x")), None)


def test_concurrent_replays_reach_one_row() -> None:
    """The service's pattern: decide, INSERT … ON CONFLICT DO NOTHING, and on losing re-read and decide again."""
    item = one_item(create_item())
    table: dict[uuid.UUID, StoredReport] = {}

    def insert_on_conflict_do_nothing(row: StoredReport) -> bool:
        if row.id in table:
            return False
        table[row.id] = row
        return True

    first, second = decide_create(item, None), decide_create(item, None)  # both read before either inserted
    outcomes = []
    for decision in (first, second):
        assert decision.action == "insert"
        if insert_on_conflict_do_nothing(stored(item)):
            outcomes.append(decision.to_result(item, stored=table[item.client_id]))
        else:
            outcomes.append(decide_create(item, table[item.client_id]).to_result(item))
    assert len(table) == 1
    assert [o.result for o in outcomes] == ["created", "unchanged"]
    assert outcomes[0].id == outcomes[1].id == item.client_id


# --- decide_update ---------------------------------------------------------------------------------------------

FIELD_WORKER = POLICIES["field_worker"]


def test_an_update_on_the_current_version_is_applied_with_compare_and_set() -> None:
    current = report(status="acknowledged", version=3)
    item = one_item(update_item(str(current.id), base_version=3, status="in_progress", note="Crew on site."))
    decision = decide_update(item, current, policy=FIELD_WORKER)
    assert (decision.action, decision.result) == ("apply", "created")
    assert decision.change is not None
    assert (decision.change.new_status, decision.change.note, decision.change.expected_version) == \
        ("in_progress", "Crew on site.", 3)
    result = decision.to_result(item, stored=replace(current, version=4, status="in_progress"))
    assert (result.result, result.version) == ("created", 4)


def test_a_stale_base_version_is_a_conflict_returning_the_current_state() -> None:
    state = {"id": "x", "status": "resolved", "version": 5, "history": [{"note": "Fixed by DPWT"}]}
    current = report(status="resolved", version=5, state=state)
    item = one_item(update_item(str(current.id), base_version=3, status="in_progress"))
    decision = decide_update(item, current, policy=FIELD_WORKER)
    assert (decision.action, decision.result, decision.error) == ("none", "conflict", "sync.stale_version")
    result = decision.to_result(item)
    assert result.current == state and result.version == 5 and result.id == current.id


def test_a_stale_note_only_update_conflicts_but_one_without_base_version_is_appended() -> None:
    current = report(version=5)
    stale = one_item(update_item(str(current.id), base_version=4, note="Still overflowing."))
    assert decide_update(stale, current, policy=FIELD_WORKER).result == "conflict"
    unversioned = one_item(update_item(str(current.id), base_version=None, note="Still overflowing."))
    decision = decide_update(unversioned, current, policy=FIELD_WORKER)
    assert decision.action == "apply" and decision.change is not None
    assert (decision.change.new_status, decision.change.expected_version) == (None, 5)


def test_an_update_of_a_missing_or_deleted_report_is_rejected() -> None:
    item = one_item(update_item(new_id(), note="x"))
    assert decide_update(item, None, policy=FIELD_WORKER).error == "sync.report_not_found"
    assert decide_update(item, report(), policy=FIELD_WORKER, tombstoned=True).error == "sync.deleted"


@pytest.mark.parametrize(("current_status", "payload", "error"), [
    pytest.param("new", {"status": "rejected", "note": "spam"}, "sync.status_not_allowed", id="reject"),
    pytest.param("new", {"status": "duplicate", "note": "dup"}, "sync.status_not_allowed", id="duplicate"),
    pytest.param("in_progress", {"status": "resolved"}, "sync.note_required", id="resolve-without-note"),
    pytest.param("in_progress", {"status": "resolved", "note": "  "}, "sync.note_required", id="blank-note"),
    pytest.param("resolved", {"status": "in_progress"}, "sync.note_required", id="reopen-without-note"),
    pytest.param("rejected", {"status": "acknowledged", "note": "it is real"}, "sync.report_closed",
                 id="undo-rejection"),
    pytest.param("duplicate", {"status": "new", "note": "not a duplicate"}, "sync.report_closed",
                 id="undo-duplicate"),
    pytest.param("acknowledged", {"status": "acknowledged"}, "sync.nothing_to_change", id="same-status"),
])
def test_disallowed_transitions_for_a_field_worker_are_rejected(current_status: str, payload: dict[str, Any],
                                                               error: str) -> None:
    current = report(status=current_status, version=2)
    item = one_item(update_item(str(current.id), base_version=2, **payload))
    decision = decide_update(item, current, policy=FIELD_WORKER)
    assert (decision.action, decision.result, decision.error) == ("none", "rejected", error)
    assert decision.to_result(item).result == "rejected"


@pytest.mark.parametrize(("current_status", "payload"), [
    pytest.param("new", {"status": "acknowledged"}, id="acknowledge"),
    pytest.param("acknowledged", {"status": "in_progress"}, id="start"),
    pytest.param("in_progress", {"status": "resolved", "note": "Bin emptied 10:40."}, id="resolve-with-note"),
    pytest.param("resolved", {"status": "in_progress", "note": "Overflowing again."}, id="reopen-with-note"),
    pytest.param("rejected", {"note": "Photo of it today."}, id="note-on-rejected"),
    pytest.param("acknowledged", {"status": "acknowledged", "note": "Seen again."}, id="same-status-with-note"),
])
def test_allowed_field_worker_updates_are_applied(current_status: str, payload: dict[str, Any]) -> None:
    current = report(status=current_status, version=2)
    item = one_item(update_item(str(current.id), base_version=2, **payload))
    assert decide_update(item, current, policy=FIELD_WORKER).action == "apply"


def test_roles_and_areas() -> None:
    current = report(status="new", version=1)
    reject = one_item(update_item(str(current.id), base_version=1, status="rejected", note="Not a city matter."))
    note = one_item(update_item(str(current.id), base_version=1, note="x"))
    assert decide_update(reject, current, policy=POLICIES["moderator"]).action == "apply"
    assert decide_update(reject, current, policy=policy_for("admin")).action == "apply"
    assert decide_update(note, current, policy=POLICIES["planner"]).error == "sync.forbidden"
    assert decide_update(note, current, policy=policy_for("resident")).error == "sync.forbidden"
    assert decide_update(note, current, policy=FIELD_WORKER, in_area=False).error == "sync.outside_area"
    assert decide_update(note, current, policy=FIELD_WORKER, in_area=True).action == "apply"


def test_a_replayed_update_is_unchanged_even_with_another_base_version() -> None:
    current = report(status="in_progress", version=4)
    raw = update_item(str(current.id), base_version=3, status="in_progress", note="Crew on site.")
    item = one_item(raw)
    applied = AppliedUpdate(client_id=item.client_id, report_id=current.id, payload_hash=item_hash(item), version=4)
    decision = decide_update(item, current, policy=FIELD_WORKER, applied=applied)
    assert (decision.action, decision.result) == ("none", "unchanged")
    assert decision.to_result(item).version == 4
    rebased = one_item({**raw, "base_version": 4})
    assert decide_update(rebased, current, policy=FIELD_WORKER, applied=applied).result == "unchanged"
    other = one_item({**raw, "payload": {**raw["payload"], "note": "Crew left."}})
    decision = decide_update(other, current, policy=FIELD_WORKER, applied=applied)
    assert (decision.result, decision.error) == ("conflict", "sync.client_id_conflict")


def test_decide_update_refuses_a_create_item() -> None:
    with pytest.raises(ValueError):
        decide_update(one_item(create_item()), report(), policy=FIELD_WORKER)


def test_missing_photos_keeps_the_item_order() -> None:
    assert missing_photos((PHOTO_A, PHOTO_B), {PHOTO_B.upper()}) == (PHOTO_A,)
    assert missing_photos((PHOTO_A, PHOTO_B), set()) == (PHOTO_A, PHOTO_B)
    assert missing_photos((PHOTO_A,), {PHOTO_A}) == ()


# --- whole batches: replays and the response ------------------------------------------------------------------


def test_a_replayed_batch_reuses_the_first_arrival_and_a_changed_one_conflicts() -> None:
    data = envelope([create_item(), update_item(new_id(), note="x", base_version=None), "bad"])
    first = parse_batch(data)
    plan = plan_batch(first, None, RECEIVED)
    assert not plan.replay and plan.clock_offset == RECEIVED - first.sent_at
    record = StoredBatch(first.batch_id, first.device_id, plan.fingerprint, RECEIVED, first.sent_at)

    later = RECEIVED + timedelta(hours=2)
    resent = parse_batch({**data, "sent_at": "2025-03-10T17:59:50+07:00"})  # refreshed sent_at: still a replay
    replay = plan_batch(resent, record, later)
    assert replay.replay and replay.received_at == RECEIVED and replay.clock_offset == plan.clock_offset

    changed = parse_batch({**data, "items": [create_item(), *data["items"][1:]]})
    with raises("sync.batch_conflict", 409):
        plan_batch(changed, record, later)
    with raises("sync.batch_conflict", 409):
        plan_batch(parse_batch({**data, "device_id": "another-phone"}), record, later)


def test_the_fingerprint_covers_content_but_not_sent_at() -> None:
    data = envelope([create_item()])
    base = batch_fingerprint(parse_batch(data))
    assert batch_fingerprint(parse_batch({**data, "sent_at": "2030-01-01T00:00:00Z"})) == base
    item = data["items"][0]
    for changed in ({**item, "photos": [PHOTO_A]},
                    {**item, "payload": {**item["payload"], "accuracy_m": 13}},
                    {**item, "client_id": new_id()}):
        assert batch_fingerprint(parse_batch({**data, "items": [changed]})) != base


def test_the_response_has_one_result_per_item_in_order() -> None:
    current = report(status="resolved", version=5)
    data = envelope([
        create_item(),                                                     # 0 created
        update_item(str(current.id), base_version=2, status="in_progress", note="again"),  # 1 conflict
        {"client_id": new_id(), "op": "merge", "payload": {}},              # 2 rejected at parse
        create_item(),                                                     # 3 unchanged
    ])
    batch = parse_batch(data)
    create, update, replay = batch.items
    results = [
        decide_create(create, None).to_result(create, stored=stored(create), missing_photos=(PHOTO_A,)),
        decide_update(update, current, policy=FIELD_WORKER).to_result(update),
        decide_create(replay, stored(replay, reference="PP-22222")).to_result(replay),
    ]
    ordered = assemble_results(batch, list(reversed(results)))
    assert [(r.index, r.result) for r in ordered] == [(0, "created"), (1, "conflict"), (2, "rejected"),
                                                      (3, "unchanged")]
    response = BatchResponse(batch.batch_id, RECEIVED, RECEIVED - batch.sent_at, ordered)
    body = orjson.loads(orjson.dumps(response.to_json()))
    assert body["counts"] == {"created": 1, "unchanged": 1, "conflict": 1, "rejected": 1}
    assert body["clock_offset_s"] == 2.0 and body["batch_id"] == data["batch_id"]
    assert body["results"][0]["missing_photos"] == [PHOTO_A] and body["results"][0]["id"] == str(create.client_id)
    assert body["results"][1]["current"] == current.summary() and body["results"][1]["error"] == "sync.stale_version"
    assert body["results"][2]["error"] == "sync.unknown_op" and body["results"][2]["id"] is None
    assert set(body["results"][3]) == {"index", "client_id", "result", "id", "reference", "version",
                                       "missing_photos", "error", "message", "errors", "current"}


def test_assemble_results_refuses_a_missing_or_doubled_result() -> None:
    batch = parse_batch(envelope([create_item(), create_item()]))
    first = decide_create(batch.items[0], None).to_result(batch.items[0], stored=stored(batch.items[0]))
    with pytest.raises(ValueError, match="missing"):
        assemble_results(batch, [first])
    with pytest.raises(ValueError, match="two results"):
        assemble_results(batch, [first, first])


def test_a_service_side_rejection_becomes_an_item_result() -> None:
    result = ItemResult.rejected(4, uuid.uuid4(), "report.outside_service_area", "Outside the service areas.",
                                 {"location": ["Outside the service areas."]})
    assert result.to_json()["errors"] == {"location": ["Outside the service areas."]}
    assert result.to_json()["result"] == "rejected" and result.to_json()["index"] == 4


def test_advisory_lock_keys_are_stable_signed_64_bit() -> None:
    value = uuid.UUID("8d1f5c1e-2b7a-4c55-9a43-0f6f1d2a3b4c")
    key = advisory_lock_key(value)
    assert key == advisory_lock_key(value) and -(2**63) <= key < 2**63
    assert key != advisory_lock_key(uuid.uuid4())
    assert key != advisory_lock_key(value, namespace="batch")


# --- clock skew -------------------------------------------------------------------------------------------------


def test_a_phone_three_hours_behind_is_corrected() -> None:
    truth = datetime(2025, 3, 10, 7, 30, tzinfo=UTC)
    behind = timedelta(hours=3)
    observed_device = (truth - behind).astimezone(ICT)
    sent_device = RECEIVED - behind - timedelta(seconds=4)  # 4 s upload over 2G
    fix = correct_clock(observed_device, sent_device, RECEIVED, TOLERANCE)
    assert fix.offset == behind + timedelta(seconds=4)
    assert fix.observed_at == truth + timedelta(seconds=4)
    assert fix.observed_at.tzinfo == UTC
    assert fix.flag is None


def test_a_phone_set_to_2015_is_corrected_and_flagged_as_large_skew() -> None:
    skew = datetime(2015, 6, 1, tzinfo=UTC) - RECEIVED
    truth = RECEIVED - timedelta(hours=6)
    fix = correct_clock(truth + skew, RECEIVED + skew, RECEIVED, TOLERANCE)
    assert (truth + skew).year == 2015
    assert fix.observed_at == truth and fix.offset == -skew
    assert fix.flag == "large_skew"


def test_a_phone_in_the_future_is_corrected_and_flagged() -> None:
    ahead = timedelta(days=2, hours=1)
    truth = RECEIVED - timedelta(minutes=30)
    fix = correct_clock(truth + ahead, RECEIVED + ahead, RECEIVED, TOLERANCE)
    assert fix.observed_at == truth and fix.offset == -ahead and fix.flag == "large_skew"


def test_an_observation_after_sending_is_flagged_future() -> None:
    sent = RECEIVED - timedelta(seconds=3)
    assert correct_clock(sent + TOLERANCE, sent, RECEIVED, TOLERANCE).flag is None  # within tolerance after fix
    fix = correct_clock(sent + timedelta(hours=2), sent, RECEIVED, TOLERANCE)
    assert fix.flag == "future" and fix.observed_at > RECEIVED


def test_old_observations_are_flagged() -> None:
    assert correct_clock(RECEIVED - timedelta(days=364), RECEIVED, RECEIVED, TOLERANCE).flag is None
    assert correct_clock(RECEIVED - timedelta(days=366), RECEIVED, RECEIVED, TOLERANCE).flag == "too_old"
    before = datetime(2019, 12, 31, 23, 59, tzinfo=UTC)
    assert correct_clock(before, RECEIVED, RECEIVED, TOLERANCE).flag == "before_epoch"


def test_the_skew_threshold_is_one_day() -> None:
    day = timedelta(days=1)
    assert correct_clock(RECEIVED - day, RECEIVED - day, RECEIVED, TOLERANCE).flag is None
    late = day + timedelta(seconds=1)
    assert correct_clock(RECEIVED - late, RECEIVED - late, RECEIVED, TOLERANCE).flag == "large_skew"


@pytest.mark.parametrize("naive", [0, 1, 2])
def test_naive_datetimes_are_refused(naive: int) -> None:
    args = [RECEIVED, RECEIVED, RECEIVED]
    args[naive] = datetime(2025, 3, 10, 9, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        correct_clock(args[0], args[1], args[2], TOLERANCE)


def test_clock_offset_flows_from_a_parsed_batch() -> None:
    batch = parse_batch(envelope([create_item(observed_at="2025-03-10T12:50:00+07:00")],
                                 sent_at="2025-03-10T12:59:58+07:00"))  # phone 3 h behind
    item = batch.items[0]
    fix = correct_clock(item.payload["observed_at"], batch.sent_at, RECEIVED, TOLERANCE)
    assert fix.observed_at == datetime(2025, 3, 10, 8, 50, 2, tzinfo=UTC) and fix.flag is None


# --- resumable photo uploads ----------------------------------------------------------------------------------

MB3 = 3 * 1024 * 1024
PHOTO_LIMIT = 8 * 1024 * 1024


def test_parse_content_range() -> None:
    rng = parse_content_range("bytes 0-204799/3145728", PHOTO_LIMIT)
    assert (rng.start, rng.end, rng.total, rng.length) == (0, 204799, MB3, 204800)
    assert rng.header() == "bytes 0-204799/3145728"
    assert parse_content_range("  Bytes 3145727-3145727/3145728 ", PHOTO_LIMIT).length == 1
    assert ContentRange.whole(10, PHOTO_LIMIT) == ContentRange(0, 9, 10)


@pytest.mark.parametrize(("header", "error", "status"), [
    ("", "sync.bad_content_range", 400),
    ("bytes 0-99", "sync.bad_content_range", 400),
    ("bytes */3145728", "sync.bad_content_range", 400),
    ("bytes 0-99/*", "sync.bad_content_range", 400),
    ("bits 0-99/100", "sync.bad_content_range", 400),
    ("bytes -5-99/100", "sync.bad_content_range", 400),
    ("bytes 0x0-99/100", "sync.bad_content_range", 400),
    ("bytes 50-10/100", "sync.bad_content_range", 400),
    ("bytes 0-0/0", "sync.bad_content_range", 400),
    ("bytes 0-99/99999999999999999", "sync.bad_content_range", 400),
    ("bytes 0-100/100", "sync.range_not_satisfiable", 416),
    ("bytes 200-299/100", "sync.range_not_satisfiable", 416),
    ("bytes 0-99/8388609", "sync.photo_too_large", 413),
])
def test_bad_content_ranges(header: str, error: str, status: int) -> None:
    with raises(error, status):
        parse_content_range(header, PHOTO_LIMIT)


def test_an_empty_whole_body_is_refused() -> None:
    with raises("sync.bad_content_range", 400):
        ContentRange.whole(0, PHOTO_LIMIT)


def test_chunk_plans_append_skip_overlap_and_refuse_gaps() -> None:
    rng = ContentRange(204800, 409599, MB3)
    append = plan_chunk(204800, rng, upload_length=MB3)
    assert (append.skip, append.append, append.offset, append.complete) == (0, 204800, 409600, False)
    overlap = plan_chunk(300000, rng, upload_length=MB3)
    assert (overlap.skip, overlap.append, overlap.offset) == (95200, 109600, 409600)
    stored_already = plan_chunk(500000, rng, upload_length=MB3)
    assert (stored_already.skip, stored_already.append, stored_already.offset) == (204800, 0, 500000)
    last = plan_chunk(MB3 - 10, ContentRange(MB3 - 10, MB3 - 1, MB3), upload_length=MB3)
    assert last.complete and last.offset == MB3
    truncated = plan_chunk(204800, rng, upload_length=MB3, received=1000)
    assert (truncated.append, truncated.offset, truncated.truncated) == (1000, 205800, True)
    with raises("sync.upload_gap", 409) as info:
        plan_chunk(100, rng, upload_length=MB3)
    assert info.value.headers["Upload-Offset"] == "100" and info.value.extra["offset"] == 100
    with raises("sync.upload_length_mismatch", 409):
        plan_chunk(204800, ContentRange(204800, 409599, MB3 + 1), upload_length=MB3)
    with raises("sync.bad_content_range", 400):
        plan_chunk(204800, rng, upload_length=MB3, received=204801)
    with pytest.raises(ValueError):
        plan_chunk(-1, rng)


@dataclass
class PhotoServer:
    """An in-memory stand-in for the service's photo endpoints, driven only by the sync functions."""

    limit: int = PHOTO_LIMIT
    uploads: dict[str, bytearray] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)
    complete: set[str] = field(default_factory=set)
    skipped: int = 0

    def head(self, sha: str) -> tuple[int, dict[str, str]]:
        data = self.uploads.get(sha, b"")
        return photo_head(len(data), self.lengths.get(sha), sha in self.complete)

    def put(self, sha: str, content_range: str, body: bytes, arrived: int | None = None) -> int:
        """Store a chunk; ``arrived`` < len(body) when the link dropped mid-body. Returns the offset."""
        sha = parse_sha256(sha)
        rng = parse_content_range(content_range, self.limit)
        if sha in self.complete:
            return rng.total
        stored_now = self.uploads.setdefault(sha, bytearray())
        plan = plan_chunk(len(stored_now), rng, upload_length=self.lengths.get(sha), received=arrived)
        self.lengths[sha] = rng.total
        self.skipped += plan.skip
        stored_now += body[plan.skip:plan.skip + plan.append]
        if plan.complete:
            try:
                verify_photo(sha, bytes(stored_now))
            except ProtocolError:
                del self.uploads[sha], self.lengths[sha]
                raise
            self.complete.add(sha)
        return plan.offset


class LinkDropped(Exception):
    pass


def test_a_3mb_photo_over_a_link_dropping_every_200kb_never_resends_a_stored_byte() -> None:
    photo = hashlib.shake_256(b"a 3 MB phone photo").digest(MB3)
    sha = hashlib.sha256(photo).hexdigest()
    server = PhotoServer()
    chunk, budget = 150 * 1024, 200 * 1024  # the link dies after every 200 KB, mostly mid-chunk
    sent_per_byte = bytearray(MB3)  # how many times each byte crossed the link
    link_left = budget
    whole_chunks = lost_answers = dropped_bodies = 0

    def send(offset: int) -> int:
        nonlocal link_left, whole_chunks, lost_answers, dropped_bodies
        body = photo[offset:offset + chunk]
        header = f"bytes {offset}-{offset + len(body) - 1}/{MB3}"
        arrived = min(len(body), link_left)
        for i in range(offset, offset + arrived):
            sent_per_byte[i] += 1
        link_left -= arrived
        new_offset = server.put(sha, header, body, arrived=arrived)  # the server keeps what arrived
        if arrived < len(body):
            link_left, dropped_bodies = budget, dropped_bodies + 1
            raise LinkDropped  # the connection died mid-body
        whole_chunks += 1
        if link_left == 0 or whole_chunks % 3 == 0:
            link_left, lost_answers = budget, lost_answers + 1
            raise LinkDropped  # the body arrived whole but the answer was lost
        return new_offset

    status, headers = server.head(sha)
    assert status == 404 and headers["Upload-Offset"] == "0"
    offset, attempts = 0, 0
    while offset < MB3:
        attempts += 1
        assert attempts < 100
        try:
            offset = send(offset)
        except LinkDropped:
            status, headers = server.head(sha)  # ask what arrived, resume exactly there
            offset = int(headers["Upload-Offset"])

    assert sha in server.complete and bytes(server.uploads[sha]) == photo
    assert min(sent_per_byte) == 1 and max(sent_per_byte) == 1  # every byte crossed the link exactly once
    assert server.skipped == 0
    assert dropped_bodies > 5 and lost_answers > 2  # the link really did drop, both ways
    status, headers = server.head(sha)
    assert status == 200 and headers["Upload-Complete"] == "?1" and headers["Upload-Length"] == str(MB3)


def test_a_client_that_resends_without_head_is_accepted_by_skipping_the_overlap() -> None:
    photo = bytes(range(256)) * 4000  # 1 024 000 bytes
    sha = hashlib.sha256(photo).hexdigest()
    server = PhotoServer()
    assert server.put(sha, f"bytes 0-499999/{len(photo)}", photo[:500000]) == 500000
    # the answer was lost; the client resends the same chunk, then one overlapping chunk
    assert server.put(sha, f"bytes 0-499999/{len(photo)}", photo[:500000]) == 500000
    assert server.put(sha, f"bytes 400000-{len(photo) - 1}/{len(photo)}", photo[400000:]) == len(photo)
    assert server.skipped == 500000 + 100000
    assert bytes(server.uploads[sha]) == photo and sha in server.complete
    # and a PUT of a photo already complete is a harmless no-op
    assert server.put(sha, f"bytes 0-9/{len(photo)}", photo[:10]) == len(photo)


def test_a_chunk_past_the_stored_offset_gets_409_with_the_offset_to_resume_from() -> None:
    photo = b"x" * 1000
    sha = hashlib.sha256(photo).hexdigest()
    server = PhotoServer()
    server.put(sha, "bytes 0-299/1000", photo[:300])
    with raises("sync.upload_gap", 409) as info:
        server.put(sha, "bytes 600-999/1000", photo[600:])
    resume = int(info.value.headers["Upload-Offset"])
    assert resume == 300
    assert server.put(sha, f"bytes {resume}-999/1000", photo[resume:]) == 1000


def test_a_hash_mismatch_is_422_and_the_partial_upload_is_discarded() -> None:
    photo = b"y" * 1000
    wrong_sha = hashlib.sha256(b"something else").hexdigest()
    server = PhotoServer()
    server.put(wrong_sha, "bytes 0-499/1000", photo[:500])
    assert server.head(wrong_sha)[1]["Upload-Complete"] == "?0"
    with raises("sync.photo_hash_mismatch", 422) as info:
        server.put(wrong_sha, "bytes 500-999/1000", photo[500:])
    assert info.value.extra["actual"] == hashlib.sha256(photo).hexdigest()
    assert server.head(wrong_sha)[0] == 404  # nothing kept: the client starts again


def test_photo_head_answers() -> None:
    assert photo_head(0, None, False) == (404, {"Cache-Control": "no-store", "Upload-Offset": "0"})
    status, headers = photo_head(204800, MB3, False)
    assert status == 200 and headers["Upload-Offset"] == "204800" and headers["Upload-Length"] == str(MB3)
    assert headers["Upload-Complete"] == "?0"
    status, headers = photo_head(MB3, MB3, True)
    assert headers["Upload-Complete"] == "?1" and headers["Content-Length"] == str(MB3)


def test_verify_photo() -> None:
    verify_photo(PHOTO_A.upper(), b"photo a")
    with raises("sync.photo_hash_mismatch", 422):
        verify_photo(PHOTO_A, b"photo b")


# --- the change feed cursor -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seq", [0, 1, 41, 10**12, 2**63 - 1])
def test_cursor_round_trip(seq: int) -> None:
    cursor = encode_cursor(seq)
    assert decode_cursor(cursor) == seq
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in cursor)
    assert str(seq) not in cursor or seq < 10  # opaque: not the plain number
    assert decode_cursor(encode_cursor(seq, secret=b"k"), secret=b"k") == seq


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


@pytest.mark.parametrize("make", [
    pytest.param(lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"), id="last-char-changed"),
    pytest.param(lambda c: c[:-3], id="truncated"),
    pytest.param(lambda c: c + "=", id="padding"),
    pytest.param(lambda c: c + "A", id="appended"),
    pytest.param(lambda c: _b64("v1:9999:" + _unb64(c).split(":")[2]), id="seq-edited-check-kept"),
    pytest.param(lambda c: _b64("v2:41:" + "0" * 12), id="other-version"),
    pytest.param(lambda c: _b64("v1:041:" + "0" * 12), id="leading-zero"),
    pytest.param(lambda c: _b64("v1:-1:" + "0" * 12), id="negative"),
    pytest.param(lambda c: "", id="empty"),
    pytest.param(lambda c: "41", id="plain-number"),
    pytest.param(lambda c: c + "!", id="not-url-safe"),
    pytest.param(lambda c: "A" * 200, id="too-long"),
])
def test_a_tampered_cursor_is_400(make: Any) -> None:
    with raises("sync.bad_cursor", 400):
        decode_cursor(make(encode_cursor(41)))


def test_a_cursor_with_changed_padding_bits_is_refused() -> None:
    cursor = next(c for c in map(encode_cursor, range(2000)) if len(c) % 4 in (2, 3))  # unused low bits at the end
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(cursor[-1])
    twin = cursor[:-1] + alphabet[last ^ 1]  # same bytes once decoded
    assert _unb64(twin) == _unb64(cursor) and twin != cursor
    with raises("sync.bad_cursor", 400):
        decode_cursor(twin)


def test_a_cursor_made_with_another_secret_is_refused() -> None:
    with raises("sync.bad_cursor", 400):
        decode_cursor(encode_cursor(41, secret=b"old"), secret=b"new")
    with raises("sync.bad_cursor", 400):
        decode_cursor(encode_cursor(41), secret=b"new")


@pytest.mark.parametrize("bad", [-1, 2**63, True, 1.0])
def test_encode_cursor_refuses_impossible_positions(bad: Any) -> None:
    with pytest.raises(ValueError):
        encode_cursor(bad)


def test_change_feed_pages_follow_the_server_sequence() -> None:
    changes = [{"seq": s, "id": n} for n, s in enumerate([3, 4, 9, 12, 13])]
    page = paginate_changes(changes[:3], after=0, limit=2, seq_of=lambda r: r["seq"])
    assert [r["seq"] for r in page.items] == [3, 4] and page.more and decode_cursor(page.cursor) == 4
    after = decode_cursor(page.cursor)
    rest = [c for c in changes if c["seq"] > after]
    page = paginate_changes(rest[:3], after=after, limit=2, seq_of=lambda r: r["seq"])
    assert [r["seq"] for r in page.items] == [9, 12] and page.more
    page = paginate_changes([c for c in changes if c["seq"] > 12], after=12, limit=2, seq_of=lambda r: r["seq"])
    assert [r["seq"] for r in page.items] == [13] and not page.more and decode_cursor(page.cursor) == 13
    empty = paginate_changes([], after=13, limit=2, seq_of=lambda r: r["seq"])
    assert empty.items == () and not empty.more and decode_cursor(empty.cursor) == 13  # poll again from here


def test_change_feed_rows_must_ascend_past_the_cursor() -> None:
    with pytest.raises(ValueError):
        paginate_changes([{"seq": 5}, {"seq": 4}], after=0, limit=10, seq_of=lambda r: r["seq"])
    with pytest.raises(ValueError):
        paginate_changes([{"seq": 5}], after=5, limit=10, seq_of=lambda r: r["seq"])
