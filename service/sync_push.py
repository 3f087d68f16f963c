"""Carry out a pushed sync batch: the ``sync`` package decides, this module writes.

One transaction for the whole batch, one savepoint per item, so one bad item
never sinks the others. Locks, never check-then-insert:

* the batch id takes an advisory lock, so concurrent replays of one batch run
  one after the other and the later ones answer from the stored response;
* each item's client_id takes an advisory lock, so the same item in two
  batches (two tabs, two phones) is decided once; report inserts also use
  ``ON CONFLICT DO NOTHING`` on the primary key.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from service import queries
from service.errors import ApiError
from service.intake import (
    add_note,
    category_problem,
    change_status,
    create_report,
    find_report,
    outside_service_area,
    report_row,
)
from service.models import Category, Device
from service.sync_uploads import attach_uploaded_photos
from sync.decisions import (
    AppliedUpdate,
    StoredBatch,
    StoredReport,
    advisory_lock_key,
    correct_clock,
    decide_create,
    decide_update,
    item_hash,
    missing_photos,
    plan_batch,
    policy_for,
)
from sync.protocol import BatchResponse, ItemResult, SyncBatch, SyncItem, assemble_results

log = logging.getLogger(__name__)


def _stored_report(db: Session, report_id: uuid.UUID, *, lock: bool = False) -> StoredReport | None:
    row = queries.sync_report_state(db, report_id, lock=lock)
    if row is None:
        return None
    return StoredReport(id=row.id, reference=row.reference, version=row.version, payload_hash=row.payload_sha256,
                        status=row.status)


#: The ``device_id`` a resident's phone puts in its batches: it has no token and no device number.
RESIDENT_DEVICE_ID = "resident"


def device_label(device_id: int | None) -> str:
    """A batch's ``device_id`` as the protocol spells it."""
    return RESIDENT_DEVICE_ID if device_id is None else str(device_id)


def _source(device: Device | None) -> str:
    return "field_sync" if device is not None else "phone_form"


def push_batch(db: Session, batch: SyncBatch, device: Device | None, *, now: datetime,
               future_tolerance: timedelta) -> dict[str, Any]:
    """Process (or answer a replay of) one batch and return the JSON response body.

    ``device`` is None for a resident's phone (the ``/report`` form): it may
    only create reports, which are stored with no user and no device.
    """
    queries.advisory_xact_lock(db, advisory_lock_key(batch.batch_id, "civicmap.batch"))
    stored = queries.stored_batch(db, batch.batch_id)
    if stored is not None:
        previous = StoredBatch(stored.batch_id, device_label(stored.device_id), stored.fingerprint, stored.received_at,
                               stored.sent_at)
        plan_batch(batch, previous, now)  # another device or other content: 409 sync.batch_conflict
        return {**stored.response, "replayed": True}

    plan = plan_batch(batch, None, now)
    results: list[ItemResult] = []  # assemble_results adds the items the parser rejected
    fast = _insert_fresh_creates(db, batch, device, received_at=plan.received_at, future_tolerance=future_tolerance)
    for item in batch.items:
        if item.index in fast:
            results.append(fast[item.index])
            continue
        savepoint = db.begin_nested()
        try:
            result = _push_item(db, item, batch, device, received_at=plan.received_at,
                                future_tolerance=future_tolerance)
            savepoint.commit()
        except ApiError as exc:
            savepoint.rollback()
            if exc.status == 409:
                current = _stored_report(db, item.client_id if item.op == "create" else item.payload["report_id"])
                result = ItemResult(client_id=item.client_id, result="conflict", error=exc.error,
                                    message=exc.message, index=item.index,
                                    id=current.id if current else None,
                                    reference=current.reference if current else None,
                                    version=current.version if current else None,
                                    current=current.summary() if current else None)
            else:
                result = ItemResult.rejected(item.index, item.client_id, exc.error, exc.message, exc.errors)
        results.append(result)
    response = BatchResponse(batch.batch_id, plan.received_at, plan.clock_offset,
                             assemble_results(batch, results)).to_json()
    queries.save_batch(db, batch_id=batch.batch_id, device_id=device.id if device else None, fingerprint=plan.fingerprint,
                       sent_at=batch.sent_at, received_at=plan.received_at, item_count=batch.item_count,
                       response_json=orjson.dumps(response).decode())
    return response


def _insert_fresh_creates(db: Session, batch: SyncBatch, device: Device | None, *, received_at: datetime,
                          future_tolerance: timedelta) -> dict[int, ItemResult]:
    """Store the batch's new reports with a few set-based statements instead of ~10 per item.

    Only ``create`` items whose client_id is not stored yet take this path;
    resends, updates and anything that fails here go item by item (the
    caller's per-item path), so the rules and results are the same. Locks are
    taken for every create of the batch at once, in key order.
    """
    creates = [item for item in batch.items if item.op == "create"]
    if not creates:
        return {}
    queries.advisory_xact_locks(db, [advisory_lock_key(item.client_id) for item in creates])
    stored = queries.sync_report_states(db, [item.client_id for item in creates])
    fresh = [item for item in creates if item.client_id not in stored]
    if not fresh:
        return {}
    savepoint = db.begin_nested()
    try:
        results = _insert_fresh(db, fresh, batch, device, received_at=received_at,
                                future_tolerance=future_tolerance)
        savepoint.commit()
        return results
    except (IntegrityError, DataError, ApiError):
        # A statement-level refusal: redo the items one by one. A lost connection
        # (OperationalError) is not caught: the request fails with 503 and the phone retries.
        log.warning("set-based insert of batch %s failed; storing its items one by one", batch.batch_id,
                    exc_info=True)
        savepoint.rollback()
        return {}


def _insert_fresh(db: Session, fresh: list[SyncItem], batch: SyncBatch, device: Device | None, *, received_at: datetime,
                  future_tolerance: timedelta) -> dict[int, ItemResult]:
    results: dict[int, ItemResult] = {}
    categories = {c.code: c for c in db.scalars(select(Category))}
    matches = queries.locate_points(db, [tuple(item.payload["location"]["coordinates"]) for item in fresh])
    insertable: list[tuple[SyncItem, queries.AreaMatch]] = []
    outside: ApiError | None = None
    for item, match in zip(fresh, matches):
        code = item.payload["category"]
        problem = category_problem(categories.get(code), code)
        if problem is None and match is None:
            outside = outside or outside_service_area(db)
            problem = outside
        if problem is not None:
            results[item.index] = ItemResult.rejected(item.index, item.client_id, problem.error, problem.message,
                                                      problem.errors)
        else:
            assert match is not None
            insertable.append((item, match))
    if not insertable:
        return results
    numbers = queries.next_reference_numbers(db, len(insertable))
    rows = []
    for (item, match), number in zip(insertable, numbers):
        payload = dict(item.payload)
        observed = payload.get("observed_at")
        clock = correct_clock(observed, batch.sent_at, received_at, future_tolerance) if observed else None
        rows.append(report_row(payload, category_code=payload["category"], match=match, number=number,
                               source=_source(device), user=device.user if device else None,
                               now=received_at, future_tolerance=future_tolerance, clock=clock,
                               device_id=device.id if device else None,
                               tracking_token_hash=None))
    inserted = queries.insert_reports(db, rows)
    kept = [(item, row) for (item, _match), row in zip(insertable, rows) if row["id"] in inserted]
    if kept:
        kept_ids = [row["id"] for _item, row in kept]
        queries.insert_first_events(db, kept_ids, received_at, device.user.id if device else None,
                                    device.user.role if device else "resident")
        queries.record_report_changes(db, kept_ids)
    for item, row in kept:
        missing: tuple[str, ...] = ()
        if item.photos:
            queries.link_pending_photos(db, row["id"], item.photos)
            attach_uploaded_photos(db, row["id"], item.photos)
            missing = missing_photos(item.photos, queries.completed_uploads(db, item.photos))
        results[item.index] = ItemResult(client_id=item.client_id, result="created", id=row["id"],
                                         reference=row["reference"], version=1, missing_photos=missing,
                                         index=item.index)
    # Items that lost a race to another writer (not in `inserted`) are left to the per-item path.
    return results


def _push_item(db: Session, item: SyncItem, batch: SyncBatch, device: Device | None, *, received_at: datetime,
               future_tolerance: timedelta) -> ItemResult:
    queries.advisory_xact_lock(db, advisory_lock_key(item.client_id))
    if item.op == "create":
        return _push_create(db, item, batch, device, received_at=received_at, future_tolerance=future_tolerance)
    return _push_update(db, item, device, received_at=received_at)


def _push_create(db: Session, item: SyncItem, batch: SyncBatch, device: Device | None, *, received_at: datetime,
                 future_tolerance: timedelta) -> ItemResult:
    existing = _stored_report(db, item.client_id)
    decision = decide_create(item, existing)
    if decision.action != "insert":
        stored = decision.report
        missing = missing_photos(item.photos, queries.completed_uploads(db, item.photos)) if stored else ()
        return decision.to_result(item, missing_photos=missing)
    payload = dict(item.payload)
    observed = payload.get("observed_at")
    clock = correct_clock(observed, batch.sent_at, received_at, future_tolerance) if observed else None
    created = create_report(db, payload, source=_source(device), user=device.user if device else None,
                            now=received_at, future_tolerance=future_tolerance, clock=clock,
                            device_id=device.id if device else None)
    queries.link_pending_photos(db, created.id, item.photos)
    attach_uploaded_photos(db, created.id, item.photos)
    stored = StoredReport(created.id, created.reference, created.version, item_hash(item), created.status)
    return decision.to_result(item, stored=stored,
                              missing_photos=missing_photos(item.photos, queries.completed_uploads(db, item.photos)))


def _push_update(db: Session, item: SyncItem, device: Device | None, *, received_at: datetime) -> ItemResult:
    report_id: uuid.UUID = item.payload["report_id"]
    applied_row = queries.applied_update(db, item.client_id)
    applied = AppliedUpdate(applied_row.client_id, applied_row.report_id, applied_row.payload_hash,
                            applied_row.version) if applied_row else None
    current = _stored_report(db, report_id, lock=True)
    in_area = device is not None and current is not None and queries.report_in_area(db, report_id, device.area_id)
    role = device.user.role if device is not None else "resident"  # residents may not update: no policy
    decision = decide_update(item, current, policy=policy_for(role), applied=applied, in_area=in_area)
    if decision.action != "apply":
        return decision.to_result(item)
    assert device is not None
    change = decision.change
    assert change is not None
    report = find_report(db, str(report_id), for_update=True)
    if change.new_status is None:
        report = add_note(db, report, note=change.note, expected_version=change.expected_version,
                          actor=device.user, now=received_at)
    else:
        report = change_status(db, report, new_status=change.new_status, note=change.note,
                               expected_version=change.expected_version, duplicate_of=None, actor=device.user,
                               now=received_at)
    queries.record_applied_update(db, client_id=item.client_id, report_id=report.id, payload_hash=item_hash(item),
                                  version=report.version, device_id=device.id)
    return decision.to_result(item, stored=StoredReport(report.id, report.reference, report.version,
                                                        report.payload_sha256, report.status))
