"""Typed SQLAlchemy 2 models: the civicmap schema.

The Alembic migrations in ``service/migrations`` create this schema; the models
mirror it for ORM use on small, single-row paths. Bulk reads (layers, exports)
use plain SQL in ``service/queries.py`` instead.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from geoalchemy2 import Geometry, WKBElement
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from geo.duplicates import DEFAULT_RADIUS_M, MAX_RADIUS_M, MIN_RADIUS_M

REPORT_STATUSES = ("new", "acknowledged", "in_progress", "resolved", "rejected", "duplicate")
OPEN_STATUSES = ("new", "acknowledged", "in_progress")
REPORT_SOURCES = ("web", "api", "field_sync", "phone_form", "seed", "open311", "openrosa")
AREA_LEVELS = ("city", "district", "commune")
USER_ROLES = ("field_worker", "moderator", "planner", "admin")
DESCRIPTION_MAX = 2000
LANDMARK_MAX = 200


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    pass


class Area(Base):
    """An administrative area: city → district (khan) → commune (sangkat)."""

    __tablename__ = "areas"
    __table_args__ = (CheckConstraint(_in("level", AREA_LEVELS), name="areas_level_check"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    level: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"), index=True)
    name_en: Mapped[str] = mapped_column(String(200))
    name_km: Mapped[str] = mapped_column(String(200), server_default="")
    source_id: Mapped[str | None] = mapped_column(String(64))
    geom: Mapped[WKBElement] = mapped_column(Geometry("MULTIPOLYGON", srid=4326, spatial_index=False))


class Category(Base):
    """A report category: four top-level codes and dotted subtypes (``waste.burning``)."""

    __tablename__ = "categories"
    __table_args__ = (
        CheckConstraint(f"duplicate_radius_m BETWEEN {MIN_RADIUS_M} AND {MAX_RADIUS_M}",
                        name="categories_duplicate_radius_check"),
    )

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent_code: Mapped[str | None] = mapped_column(ForeignKey("categories.code"), index=True)
    label_en: Mapped[str] = mapped_column(String(200))
    label_km: Mapped[str] = mapped_column(String(200))
    icon: Mapped[str] = mapped_column(String(64), server_default="")
    sort_order: Mapped[int] = mapped_column(Integer, server_default="0")
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # How near another report of this category must be to be suggested as a duplicate (geo.duplicates).
    duplicate_radius_m: Mapped[int] = mapped_column(Integer, server_default=str(DEFAULT_RADIUS_M))


class Report(Base):
    """One resident's or field worker's report of a problem at a place."""

    __tablename__ = "reports"
    __table_args__ = (
        CheckConstraint(_in("status", REPORT_STATUSES), name="reports_status_check"),
        CheckConstraint(_in("source", REPORT_SOURCES), name="reports_source_check"),
        CheckConstraint(f"char_length(description) <= {DESCRIPTION_MAX}", name="reports_description_length"),
        CheckConstraint(f"char_length(landmark) <= {LANDMARK_MAX}", name="reports_landmark_length"),
        CheckConstraint("version >= 1", name="reports_version_positive"),
        CheckConstraint("accuracy_m IS NULL OR accuracy_m >= 0", name="reports_accuracy_check"),
        CheckConstraint("(status = 'duplicate') = (duplicate_of IS NOT NULL)", name="reports_duplicate_of_check"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    reference: Mapped[str] = mapped_column(String(16), unique=True)
    category_code: Mapped[str] = mapped_column(ForeignKey("categories.code"))
    description: Mapped[str] = mapped_column(Text, server_default="")
    landmark: Mapped[str] = mapped_column(Text, server_default="")
    location: Mapped[WKBElement] = mapped_column(Geometry("POINT", srid=4326, spatial_index=False))
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    city_id: Mapped[int] = mapped_column(ForeignKey("areas.id"))
    district_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"))
    commune_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"))
    status: Mapped[str] = mapped_column(String(16), server_default="new")
    duplicate_of: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("reports.id"))
    source: Mapped[str] = mapped_column(String(16))
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    observed_at_flag: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    payload_sha256: Mapped[str] = mapped_column(String(64))
    contact_name: Mapped[str | None] = mapped_column(String(200))
    contact_phone: Mapped[str | None] = mapped_column(String(40))
    contact_email: Mapped[str | None] = mapped_column(String(254))
    contact_consent: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    tracking_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    hidden: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    observed_at_device: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    clock_offset_s: Mapped[float | None] = mapped_column(Float)

    category: Mapped[Category] = relationship(lazy="joined")


class ReportEvent(Base):
    """Append-only history of a report: status changes and notes."""

    __tablename__ = "report_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    report_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("reports.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor_role: Mapped[str] = mapped_column(String(16))
    old_status: Mapped[str | None] = mapped_column(String(16))
    new_status: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, server_default="")


class Photo(Base):
    """A sanitised photo (re-encoded, EXIF stripped), addressed by the sha256 of its bytes."""

    __tablename__ = "photos"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    mime: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    byte_size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ReportPhoto(Base):
    """Which photos belong to which report, in upload order."""

    __tablename__ = "report_photos"

    report_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("reports.id"), primary_key=True)
    photo_sha256: Mapped[str] = mapped_column(ForeignKey("photos.sha256"), primary_key=True, index=True)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class User(Base):
    """A staff member or field worker. Residents never need an account."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", USER_ROLES), name="users_role_check"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), server_default="")
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiToken(Base):
    """A bearer token; only the sha256 of the secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(lazy="joined")


class Device(Base):
    """A field worker's phone: it pushes batches with its own token, for one area."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    area_id: Mapped[int] = mapped_column(ForeignKey("areas.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(lazy="joined")
    area: Mapped[Area] = relationship(lazy="joined")
