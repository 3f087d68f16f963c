"""Resumable photo uploads for field devices: carry out ``sync.decisions.plan_chunk``.

A phone uploads a photo under the sha256 of its bytes, in pieces
(``Content-Range``) or whole. What arrives is appended to ``sync_uploads``;
bytes already stored are skipped, so a resent piece costs nothing, and the
prefix of a body cut off by a dropped link is kept. When the last byte
arrives the whole is checked against its sha256, sanitised exactly like
``POST /reports/{id}/photos`` (re-encoded, EXIF stripped), stored as a photo,
and linked to every synced report that references it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service import queries
from service.errors import ApiError
from service.intake import MAX_PHOTOS_PER_REPORT, find_report, link_photo, store_photo
from service.messages import translated
from service.models import Device
from service.photos import PhotoRejected, StoredPhoto, sanitise_photo
from sync.decisions import ContentRange, advisory_lock_key, plan_chunk, verify_photo
from sync.protocol import ProtocolError


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    max_pixels: int
    max_edge: int


@dataclass(frozen=True)
class UploadState:
    offset: int
    total: int
    complete: bool
    photo_sha256: str | None


def _lock(db: Session, upload_sha256: str) -> None:
    queries.advisory_xact_lock(db, advisory_lock_key(uuid.UUID(upload_sha256[:32]), "civicmap.upload"))


def receive_chunk(db: Session, upload_sha256: str, data: bytes, rng: ContentRange | None, device: Device | None,
                  limits: UploadLimits) -> UploadState:
    """Store what this request carried; finish the photo when it is whole."""
    _lock(db, upload_sha256)
    state = queries.upload_state(db, upload_sha256)
    if state is not None and state.stored_sha256 is not None:  # already complete: a harmless resend
        return UploadState(state.total_bytes, state.total_bytes, True, state.stored_sha256)
    rng = rng or ContentRange.whole(len(data), limits.max_bytes)
    stored_bytes = state.stored_bytes if state is not None else 0
    plan = plan_chunk(stored_bytes, rng, upload_length=state.total_bytes if state is not None else None,
                      received=len(data))
    if plan.append or state is None:
        queries.append_upload(db, upload_sha256=upload_sha256, device_id=device.id if device else None, total_bytes=plan.total,
                              chunk=data[plan.skip:plan.skip + plan.append])
    if not plan.complete:
        return UploadState(plan.offset, plan.total, False, None)
    photo = _finish(db, upload_sha256, limits)
    return UploadState(plan.total, plan.total, True, photo.sha256)


def _finish(db: Session, upload_sha256: str, limits: UploadLimits) -> StoredPhoto:
    content = queries.upload_content(db, upload_sha256)
    try:
        verify_photo(upload_sha256, content)
        photo = sanitise_photo(content, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels,
                               max_edge=limits.max_edge)
    except (ProtocolError, PhotoRejected) as exc:
        # Nothing of a bad upload is kept: the phone starts again, or gives up on that photo.
        queries.discard_upload(db, upload_sha256)
        raise UploadRefused(exc.error, translated(exc.error, exc.message), exc.status) from exc
    store_photo(db, photo)
    for report_id in queries.reports_waiting_for_upload(db, upload_sha256):
        report = find_report(db, str(report_id), for_update=True)
        try:
            link_photo(db, report, photo.sha256)
        except ApiError as exc:
            if exc.error != "photo.too_many":
                raise
    queries.finish_upload(db, upload_sha256, photo.sha256)
    return photo


class UploadRefused(Exception):
    """A completed upload that cannot be kept; it has been discarded (the caller commits that)."""

    def __init__(self, error: str, message: str, status: int) -> None:
        super().__init__(message)
        self.error, self.message, self.status = error, message, status


def attach_uploaded_photos(db: Session, report_id: uuid.UUID, upload_shas: tuple[str, ...]) -> None:
    """Link photos that arrived before the report that references them."""
    stored = queries.stored_photos_of_uploads(db, upload_shas)
    if not stored:
        return
    report = find_report(db, str(report_id), for_update=True)
    for sha in stored[:MAX_PHOTOS_PER_REPORT]:
        link_photo(db, report, sha)
