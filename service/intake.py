"""Report intake and triage: the rules, carried out in the request's session.

Helpers here ``flush()`` but never ``commit()``: the view owns the unit of work.
Creation is idempotent on the client-generated id (ODK Central's instance-ID
rule): the same id with the same content is a harmless resend, the same id with
other content is a conflict. The insert uses ``ON CONFLICT DO NOTHING`` on the
primary key, so concurrent resends cannot both insert (no check-then-insert).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from service import queries
from service.auth import hash_secret, new_secret
from service.errors import ApiError
from service.models import Category, Photo, Report, ReportEvent, ReportPhoto, User
from service.photos import StoredPhoto
from service.references import normalise_reference, reference_for
from sync.decisions import ClockCorrection
from sync.decisions import canonical_hash as canonical_payload_hash

MAX_PHOTOS_PER_REPORT = 6
CLOSED_STATUSES = ("resolved", "rejected", "duplicate")


@dataclass(frozen=True)
class CreatedReport:
    """What the reporter is told: the stored report's public handles and, once, its token."""

    id: uuid.UUID
    reference: str
    status: str
    version: int
    received_at: datetime
    observed_at_flag: str | None
    tracking_token: str | None
    replayed: bool


def category_problem(category: Category | None, code: str) -> ApiError | None:
    """Why a report cannot use this category, or None when it can."""
    if category is None:
        return ApiError("report.unknown_category", _("There is no category %(code)s.", code=code),
                        errors={"category": [_("Unknown category.")]})
    if not category.active:
        return ApiError("report.inactive_category", _("The category %(code)s is no longer in use.", code=code),
                        errors={"category": [_("Inactive category.")]})
    return None


def active_category(session: Session, code: str) -> Category:
    category = session.get(Category, code)
    problem = category_problem(category, code)
    if problem is not None:
        raise problem
    assert category is not None
    return category


def observed_time_flag(observed_at: datetime, now: datetime, future_tolerance: timedelta) -> str | None:
    """Phone clocks are wrong: keep the time, but flag one that cannot be true."""
    if observed_at > now + future_tolerance:
        return "future"
    if observed_at < now - timedelta(days=366 * 5):
        return "too_old"
    return None


def outside_service_area(session: Session) -> ApiError:
    names = ", ".join(queries.service_area_names(session))
    return ApiError("report.outside_service_area",
                    _("This place is outside the areas civicmap serves (%(areas)s).", areas=names),
                    errors={"location": [_("Outside the service areas.")]})


def report_row(payload: dict[str, Any], *, category_code: str, match: queries.AreaMatch, number: int, source: str,
               user: User | None, now: datetime, future_tolerance: timedelta, clock: ClockCorrection | None,
               device_id: int | None, tracking_token_hash: str | None) -> dict[str, Any]:
    """The ``reports`` row for a new report: the one place that maps a payload to columns."""
    lon, lat = payload["location"]["coordinates"]
    observed_at = payload.get("observed_at") or now
    flag = observed_time_flag(observed_at, now, future_tolerance)
    if clock is not None:
        observed_at, flag = clock.observed_at, clock.flag
    contact = payload.get("contact") or {}
    return {
        "id": payload.get("client_id") or uuid.uuid4(),
        "reference": reference_for(match.city_code, number),
        "category_code": category_code,
        "description": payload.get("description", ""),
        "landmark": payload.get("landmark", ""),
        "location": f"SRID=4326;POINT({lon!r} {lat!r})",
        "accuracy_m": payload.get("accuracy_m"),
        "city_id": match.city_id,
        "district_id": match.district_id,
        "commune_id": match.commune_id,
        "status": "new",
        "source": source,
        "observed_at": observed_at,
        "observed_at_flag": flag,
        "observed_at_device": payload.get("observed_at") if clock is not None else None,
        "clock_offset_s": clock.offset.total_seconds() if clock is not None else None,
        "device_id": device_id,
        "received_at": now,
        "updated_at": now,
        "version": 1,
        "payload_sha256": canonical_payload_hash(payload),
        "contact_name": contact.get("name"),
        "contact_phone": contact.get("phone"),
        "contact_email": contact.get("email"),
        "contact_consent": bool(contact.get("consent")),
        "tracking_token_hash": tracking_token_hash,
        "created_by": user.id if user else None,
    }


def first_event_row(row: dict[str, Any], user: User | None) -> dict[str, Any]:
    return {"report_id": row["id"], "at": row["received_at"], "actor_id": row["created_by"],
            "actor_role": user.role if user else "resident", "old_status": None, "new_status": "new", "note": ""}


def create_report(session: Session, payload: dict[str, Any], *, source: str, user: User | None,
                  now: datetime, future_tolerance: timedelta, clock: ClockCorrection | None = None,
                  device_id: int | None = None) -> CreatedReport:
    """Store a new report, or recognise a resend of one already stored.

    ``clock`` is the sync protocol's correction of a device's time: the
    corrected time is stored as ``observed_at`` and the phone's own as
    ``observed_at_device``.
    """
    category = active_category(session, payload["category"])
    lon, lat = payload["location"]["coordinates"]
    match = queries.locate_point(session, lon, lat)
    if match is None:
        raise outside_service_area(session)
    token = new_secret("trk_")
    (number,) = queries.next_reference_numbers(session, 1)
    values = report_row(payload, category_code=category.code, match=match, number=number, source=source, user=user,
                        now=now, future_tolerance=future_tolerance, clock=clock, device_id=device_id,
                        tracking_token_hash=hash_secret(token))
    inserted = session.execute(
        insert(Report).values(values).on_conflict_do_nothing(index_elements=["id"]).returning(Report.id)
    ).scalar()
    if inserted is None:
        existing = session.get(Report, values["id"], populate_existing=True)
        assert existing is not None  # the conflict was on this id
        if existing.payload_sha256 != values["payload_sha256"]:
            raise ApiError("report.client_id_conflict",
                           _("A different report was already sent with this client_id."), 409,
                           extra={"id": str(existing.id), "reference": existing.reference})
        return CreatedReport(existing.id, existing.reference, existing.status, existing.version,
                             existing.received_at, existing.observed_at_flag, None, True)

    session.execute(insert(ReportEvent).values(first_event_row(values, user)))
    queries.record_report_change(session, values["id"])
    return CreatedReport(values["id"], values["reference"], "new", 1, now, values["observed_at_flag"], token, False)


def parse_id_or_reference(text: str) -> tuple[uuid.UUID | None, str | None]:
    """A UUID, or else a reference as people type it (any case, O for 0, L for 1)."""
    try:
        return uuid.UUID(text), None
    except ValueError:
        return None, normalise_reference(text)


def find_report(session: Session, id_or_reference: str, *, for_update: bool = False) -> Report:
    """A report by UUID or by its public reference, or a 404."""
    report_id, reference = parse_id_or_reference(id_or_reference)
    stmt = select(Report).where(Report.id == report_id if report_id else Report.reference == reference)
    if for_update:
        stmt = stmt.with_for_update(of=Report)
    report = session.scalars(stmt).first()
    if report is None:
        raise ApiError("report.not_found", _("There is no report %(ref)s.", ref=id_or_reference), 404)
    return report


def _version_conflict(session: Session, report: Report) -> ApiError:
    session.refresh(report)
    return ApiError("report.version_conflict",
                    _("Someone changed this report first (version %(v)s); reload and try again.", v=report.version),
                    409, extra={"current_version": report.version})


def change_status(session: Session, report: Report, *, new_status: str, note: str, expected_version: int,
                  duplicate_of: str | None, actor: User, now: datetime) -> Report:
    """Move a report to a new status, recording the event; stale versions are refused."""
    original_id = None
    if new_status == "duplicate":
        if not duplicate_of:
            raise ApiError("report.duplicate_of_required", _("Say which report this one duplicates."),
                           errors={"duplicate_of": [_("Required with status duplicate.")]})
        original = find_report(session, duplicate_of)
        seen: set[uuid.UUID] = set()
        while original.duplicate_of is not None and original.id not in seen:  # point at the root
            seen.add(original.id)
            original = session.get(Report, original.duplicate_of) or original
        if original.id == report.id:
            raise ApiError("report.duplicate_of_self", _("A report cannot duplicate itself."),
                           errors={"duplicate_of": [_("Same report.")]})
        original_id = original.id
    elif duplicate_of:
        raise ApiError("report.duplicate_of_unexpected", _("duplicate_of goes only with status duplicate."),
                       errors={"duplicate_of": [_("Only with status duplicate.")]})

    old_status = report.status
    old_original_id = report.duplicate_of
    values: dict[str, Any] = {
        "status": new_status,
        "duplicate_of": original_id,
        "version": Report.version + 1,
        "updated_at": now,
    }
    if old_status == "new" and new_status != "new" and report.acknowledged_at is None:
        values["acknowledged_at"] = now
    if new_status in CLOSED_STATUSES:
        values["closed_at"] = report.closed_at if old_status in CLOSED_STATUSES else now
    else:
        values["closed_at"] = None
    # Compare-and-set on the version: two moderators cannot both win.
    done = session.execute(
        update(Report).where(Report.id == report.id, Report.version == expected_version).values(values)
        .returning(Report.version)
    ).scalar()
    if done is None:
        raise _version_conflict(session, report)
    session.add(ReportEvent(report_id=report.id, actor_id=actor.id, actor_role=actor.role, old_status=old_status,
                            new_status=new_status, note=note))
    session.flush()
    queries.record_report_change(session, report.id)
    for counted in {original_id, old_original_id} - {None}:  # their public confirmations count changed
        queries.record_report_change(session, counted)
    session.refresh(report)
    return report


def add_note(session: Session, report: Report, *, note: str, expected_version: int, actor: User,
             now: datetime) -> Report:
    """A note in the history without a status change; it still bumps the version (compare-and-set)."""
    done = session.execute(
        update(Report).where(Report.id == report.id, Report.version == expected_version)
        .values(version=Report.version + 1, updated_at=now).returning(Report.version)
    ).scalar()
    if done is None:
        raise _version_conflict(session, report)
    session.add(ReportEvent(report_id=report.id, actor_id=actor.id, actor_role=actor.role, old_status=report.status,
                            new_status=report.status, note=note))
    session.flush()
    queries.record_report_change(session, report.id)
    session.refresh(report)
    return report


def store_photo(session: Session, photo: StoredPhoto) -> None:
    """Store a sanitised photo, once per content."""
    session.execute(insert(Photo).values(
        sha256=photo.sha256, content=photo.content, mime=photo.mime, width=photo.width, height=photo.height,
        byte_size=len(photo.content)).on_conflict_do_nothing(index_elements=["sha256"]))


def attach_photo(session: Session, report: Report, photo: StoredPhoto) -> None:
    """Store a sanitised photo (once per content) and link it to the report (once)."""
    store_photo(session, photo)
    link_photo(session, report, photo.sha256)


def link_photo(session: Session, report: Report, photo_sha256: str) -> None:
    """Link a stored photo to a report, at most once and at most MAX_PHOTOS_PER_REPORT in all."""
    linked = set(session.scalars(select(ReportPhoto.photo_sha256).where(ReportPhoto.report_id == report.id)))
    if photo_sha256 in linked:
        return
    if len(linked) >= MAX_PHOTOS_PER_REPORT:
        raise ApiError("photo.too_many", _("A report can have at most %(n)s photos.", n=MAX_PHOTOS_PER_REPORT), 422)
    session.execute(insert(ReportPhoto).values(report_id=report.id, photo_sha256=photo_sha256)
                    .on_conflict_do_nothing())
    session.flush()
    queries.record_report_change(session, report.id)
