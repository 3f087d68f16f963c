"""All SQL that touches geometry or reads in bulk lives here, never in views.

Functions take a SQLAlchemy ``Session`` (or ``Connection``) and plain values,
and return plain rows or JSON text. Parameters are always bound, never
interpolated; the few identifiers chosen at run time come from fixed tables.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import text
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session

from geo import duplicates

Executor = Session | Connection

# Public columns of a report, shared by the single view and the list.
_PUBLIC_REPORT_SELECT = """
    SELECT r.id, r.reference, r.category_code, c.label_en AS category_label_en, c.label_km AS category_label_km,
           r.description, r.landmark, ST_X(r.location) AS lon, ST_Y(r.location) AS lat, r.accuracy_m,
           r.status, dup.reference AS duplicate_of_reference, r.source, r.observed_at, r.observed_at_flag,
           r.received_at, r.updated_at, r.version,
           city.code AS city_code, city.name_en AS city_name_en, city.name_km AS city_name_km,
           d.code AS district_code, d.name_en AS district_name_en, d.name_km AS district_name_km,
           cm.code AS commune_code, cm.name_en AS commune_name_en, cm.name_km AS commune_name_km,
           COALESCE((SELECT array_agg(rp.photo_sha256 ORDER BY rp.added_at, rp.photo_sha256)
                     FROM report_photos rp WHERE rp.report_id = r.id), '{}') AS photos,
           (SELECT count(*) FROM reports conf
            WHERE conf.duplicate_of = r.id AND NOT conf.hidden)::int AS confirmations
    FROM reports r
    JOIN categories c ON c.code = r.category_code
    JOIN areas city ON city.id = r.city_id
    LEFT JOIN areas d ON d.id = r.district_id
    LEFT JOIN areas cm ON cm.id = r.commune_id
    LEFT JOIN reports dup ON dup.id = r.duplicate_of
"""


@dataclass(frozen=True)
class AreaMatch:
    """The areas a point falls in, one per level (district/commune may be missing)."""

    city_id: int
    city_code: str
    district_id: int | None
    commune_id: int | None


def locate_point(db: Executor, lon: float, lat: float) -> AreaMatch | None:
    """Which city, khan and sangkat cover a point: one GiST-indexed query."""
    rows = db.execute(
        text(
            "SELECT id, level, code FROM areas "
            "WHERE ST_Covers(geom, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)) "
            "ORDER BY CASE level WHEN 'city' THEN 0 WHEN 'district' THEN 1 ELSE 2 END, id"
        ),
        {"lon": lon, "lat": lat},
    ).all()
    by_level: dict[str, Row[Any]] = {}
    for row in rows:
        by_level.setdefault(row.level, row)
    city = by_level.get("city")
    if city is None:
        return None
    district = by_level.get("district")
    commune = by_level.get("commune")
    return AreaMatch(city.id, city.code, district.id if district else None, commune.id if commune else None)


def service_area_names(db: Executor) -> list[str]:
    return list(db.scalars(text("SELECT name_en FROM areas WHERE level = 'city' ORDER BY name_en")))


def next_reference_numbers(db: Executor, count: int) -> list[int]:
    return list(db.scalars(text("SELECT nextval('report_reference_seq') FROM generate_series(1, :n)"), {"n": count}))


def public_report(db: Executor, *, report_id: uuid.UUID | None = None, reference: str | None = None,
                  include_hidden: bool = False) -> Row[Any] | None:
    """One report's public columns, by id or by reference."""
    where = "r.id = :id" if report_id is not None else "r.reference = :reference"
    if not include_hidden:
        where += " AND NOT r.hidden"
    return db.execute(text(f"{_PUBLIC_REPORT_SELECT} WHERE {where}"),
                      {"id": report_id, "reference": reference}).first()


def report_history(db: Executor, report_id: uuid.UUID) -> Sequence[Row[Any]]:
    """The public history: when the status changed and what the city said."""
    return db.execute(
        text("SELECT at, old_status, new_status, note, actor_role FROM report_events "
             "WHERE report_id = :id ORDER BY id"),
        {"id": report_id},
    ).all()


def duplicate_candidates(db: Executor, *, category_code: str, lon: float, lat: float, exclude_id: uuid.UUID | None,
                         now: datetime, limit: int = duplicates.MAX_SUGGESTIONS) -> Sequence[Row[Any]]:
    """Reports a new one may duplicate, nearest first: the rule of ``geo.duplicates``, in SQL.

    Same category; within the category's ``duplicate_radius_m`` (geodesic
    metres, ``ST_DWithin`` on geography, inclusive, served by the GiST index on
    ``location::geography``); open, or resolved at or after ``now`` minus 30
    days, where "resolved at" is the latest event that moved the report *into*
    ``resolved`` (a note on a resolved report does not count); not hidden; not
    ``exclude_id``. Ordered by the same geodesic distance (``<->`` on the
    geometry would compare degrees, and a degree of longitude is shorter than
    one of latitude), then oldest first. ``confirmations`` counts the visible
    reports marked as duplicates of each.
    """
    return db.execute(text("""
        SELECT r.id, r.reference, r.status, round(d.metres)::int AS distance_m, r.received_at,
               (SELECT count(*) FROM reports conf
                WHERE conf.duplicate_of = r.id AND NOT conf.hidden)::int AS confirmations
        FROM reports r
        CROSS JOIN LATERAL (SELECT ST_Distance(r.location::geography,
                                               ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography) AS metres) d
        WHERE ST_DWithin(r.location::geography, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography,
                         (SELECT c.duplicate_radius_m FROM categories c WHERE c.code = :category))
          AND r.category_code = :category
          AND NOT r.hidden
          AND r.id IS DISTINCT FROM :exclude_id
          AND (r.status = ANY(:open_statuses)
               OR (r.status = :resolved AND EXISTS (
                   SELECT 1 FROM report_events e
                   WHERE e.report_id = r.id AND e.new_status = :resolved
                     AND e.old_status IS DISTINCT FROM :resolved AND e.at >= :resolved_since)))
        ORDER BY d.metres, r.received_at, r.id
        LIMIT :limit"""),
        {"lon": lon, "lat": lat, "category": category_code, "exclude_id": exclude_id,
         "open_statuses": list(duplicates.OPEN_STATUSES), "resolved": duplicates.RESOLVED_STATUS,
         "resolved_since": now - duplicates.RESOLVED_WINDOW, "limit": limit}).all()


@dataclass(frozen=True)
class AreaRef:
    id: int
    level: str
    code: str


_AREA_COLUMNS = {"city": "city_id", "district": "district_id", "commune": "commune_id"}


@dataclass(frozen=True)
class ReportFilters:
    """Filters shared by the report list, the map layers, the tiles and the exports."""

    bbox: tuple[float, float, float, float] | None = None
    categories: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    area: AreaRef | None = None
    since: datetime | None = None
    until: datetime | None = None
    include_hidden: bool = False  # staff views only; every public path leaves it False


def filter_sql(filters: ReportFilters, params: dict[str, Any]) -> list[str]:
    """WHERE clauses (joined with AND by the caller) for ``filters``; hidden reports match only for staff."""
    clauses = ["TRUE" if filters.include_hidden else "NOT r.hidden"]
    if filters.bbox is not None:
        clauses.append("r.location && ST_MakeEnvelope(:min_lon, :min_lat, :max_lon, :max_lat, 4326)")
        params.update(zip(("min_lon", "min_lat", "max_lon", "max_lat"), filters.bbox))
    if filters.categories:
        # A top-level code ("waste") matches all its subtypes ("waste.burning").
        clauses.append("(r.category_code = ANY(:categories) OR split_part(r.category_code, '.', 1) = ANY(:categories))")
        params["categories"] = list(filters.categories)
    if filters.statuses:
        clauses.append("r.status = ANY(:statuses)")
        params["statuses"] = list(filters.statuses)
    if filters.area is not None:
        # The column comes from a fixed table, so each level uses its own index.
        clauses.append(f"r.{_AREA_COLUMNS[filters.area.level]} = :area_id")
        params["area_id"] = filters.area.id
    if filters.since is not None:
        clauses.append("r.received_at >= :since")
        params["since"] = filters.since
    if filters.until is not None:
        clauses.append("r.received_at < :until")
        params["until"] = filters.until
    return clauses


def list_public_reports(db: Executor, filters: ReportFilters, limit: int,
                        after: tuple[datetime, uuid.UUID] | None = None) -> Sequence[Row[Any]]:
    """Newest first, keyset-paginated on (received_at, id): no OFFSET, no COUNT(*)."""
    params: dict[str, Any] = {"limit": limit}
    clauses = filter_sql(filters, params)
    if after is not None:
        clauses.append("(r.received_at, r.id) < (:after_at, :after_id)")
        params["after_at"], params["after_id"] = after
    sql = f"{_PUBLIC_REPORT_SELECT} WHERE {' AND '.join(clauses)} ORDER BY r.received_at DESC, r.id DESC LIMIT :limit"
    return db.execute(text(sql), params).all()


def area_picker(db: Executor) -> Sequence[Row[Any]]:
    """Every area with a point inside it and the radius of a circle of its size.

    The phone form's fallback when there is no GPS fix: the resident picks a
    sangkat, and the report is placed at that point with the radius as its accuracy.
    """
    return db.execute(text("""
        SELECT a.id, a.code, a.level, a.parent_id, a.name_en, a.name_km,
               round(ST_X(p)::numeric, 6)::float AS lon, round(ST_Y(p)::numeric, 6)::float AS lat,
               round(sqrt(ST_Area(a.geom::geography) / pi()))::int AS radius_m
        FROM areas a CROSS JOIN LATERAL ST_PointOnSurface(a.geom) AS p
        ORDER BY a.level, a.name_en""")).all()


def form_categories(db: Executor) -> Sequence[Row[Any]]:
    """Active categories in display order, groups before their subtypes."""
    return db.execute(text("SELECT code, parent_code, label_en, label_km, icon FROM categories WHERE active "
                           "ORDER BY sort_order, code")).all()


def upload_awaited_by_resident(db: Executor, upload_sha256: str) -> bool:
    """Whether a report sent without a device token lists this photo (residents may upload only those)."""
    return bool(db.scalar(text("SELECT EXISTS (SELECT 1 FROM sync_photo_links l JOIN reports r ON r.id = l.report_id "
                               "WHERE l.upload_sha256 = :sha AND r.device_id IS NULL)"), {"sha": upload_sha256}))


def find_area(db: Executor, code: str) -> AreaRef | None:
    row = db.execute(text("SELECT id, level, code FROM areas WHERE code = :code"), {"code": code}).first()
    return AreaRef(row.id, row.level, row.code) if row else None


def areas_geojson(db: Executor, level: str | None = None, parent_code: str | None = None) -> str:
    """All areas (optionally one level, or the children of one area) as GeoJSON, built in PostGIS."""
    clauses, params = ["TRUE"], {}
    if level is not None:
        clauses.append("a.level = :level")
        params["level"] = level
    if parent_code is not None:
        clauses.append("p.code = :parent_code")
        params["parent_code"] = parent_code
    sql = f"""
        SELECT json_build_object(
            'type', 'FeatureCollection',
            'attribution', 'Boundaries: geoBoundaries (CC BY 4.0)',
            'features', COALESCE(json_agg(json_build_object(
                'type', 'Feature',
                'id', a.code,
                'geometry', ST_AsGeoJSON(a.geom, 6)::json,
                'properties', json_build_object(
                    'code', a.code, 'level', a.level, 'parent', p.code,
                    'name_en', a.name_en, 'name_km', a.name_km)
            ) ORDER BY a.level, a.code), '[]'::json)
        )::text
        FROM areas a LEFT JOIN areas p ON p.id = a.parent_id
        WHERE {' AND '.join(clauses)}
    """
    return db.scalar(text(sql), params)


# --- offline sync ------------------------------------------------------------------------------------------------

def advisory_xact_lock(db: Executor, key: int) -> None:
    """Serialise work on one key (a batch or item id) until the transaction ends."""
    db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def try_advisory_xact_lock(db: Executor, key: int) -> bool:
    """Take the lock on ``key`` until the transaction ends, if nobody holds it; never wait."""
    return bool(db.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key}).scalar_one())


def sync_report_state(db: Executor, report_id: uuid.UUID, *, lock: bool = False) -> Row[Any] | None:
    """What the sync decisions need of a report (optionally row-locked)."""
    return db.execute(
        text("SELECT id, reference, version, payload_sha256, status, district_id, commune_id, city_id "
             "FROM reports WHERE id = :id" + (" FOR UPDATE" if lock else "")),
        {"id": report_id},
    ).first()


def stored_batch(db: Executor, batch_id: uuid.UUID) -> Row[Any] | None:
    return db.execute(text("SELECT batch_id, device_id, fingerprint, sent_at, received_at, response "
                           "FROM sync_batches WHERE batch_id = :id"), {"id": batch_id}).first()


def save_batch(db: Executor, *, batch_id: uuid.UUID, device_id: int | None, fingerprint: str, sent_at: datetime,
               received_at: datetime, item_count: int, response_json: str) -> None:
    db.execute(text("INSERT INTO sync_batches (batch_id, device_id, fingerprint, sent_at, received_at, item_count, "
                    "response) VALUES (:batch_id, :device_id, :fingerprint, :sent_at, :received_at, :item_count, "
                    "CAST(:response AS jsonb))"),
               {"batch_id": batch_id, "device_id": device_id, "fingerprint": fingerprint, "sent_at": sent_at,
                "received_at": received_at, "item_count": item_count, "response": response_json})


def applied_update(db: Executor, client_id: uuid.UUID) -> Row[Any] | None:
    return db.execute(text("SELECT client_id, report_id, payload_hash, version FROM sync_applied_updates "
                           "WHERE client_id = :id"), {"id": client_id}).first()


def record_applied_update(db: Executor, *, client_id: uuid.UUID, report_id: uuid.UUID, payload_hash: str,
                          version: int, device_id: int) -> None:
    db.execute(text("INSERT INTO sync_applied_updates (client_id, report_id, payload_hash, version, device_id) "
                    "VALUES (:client_id, :report_id, :payload_hash, :version, :device_id)"),
               {"client_id": client_id, "report_id": report_id, "payload_hash": payload_hash, "version": version,
                "device_id": device_id})


def report_in_area(db: Executor, report_id: uuid.UUID, area_id: int) -> bool:
    """Whether a report lies in an area (a city, khan or sangkat) by its stored area ids."""
    return bool(db.scalar(text(
        "SELECT EXISTS (SELECT 1 FROM reports r WHERE r.id = :rid AND :aid IN (r.city_id, r.district_id, r.commune_id))"),
        {"rid": report_id, "aid": area_id}))


def link_pending_photos(db: Executor, report_id: uuid.UUID, upload_shas: Sequence[str]) -> None:
    """Remember which photos a synced report references, whether or not they have arrived."""
    if upload_shas:
        db.execute(text("INSERT INTO sync_photo_links (report_id, upload_sha256) "
                        "SELECT :rid, unnest(CAST(:shas AS varchar[])) ON CONFLICT DO NOTHING"),
                   {"rid": report_id, "shas": list(upload_shas)})


def completed_uploads(db: Executor, upload_shas: Sequence[str]) -> set[str]:
    """Which of these uploads have arrived whole and been stored as photos."""
    if not upload_shas:
        return set()
    return set(db.scalars(text("SELECT upload_sha256 FROM sync_uploads WHERE upload_sha256 = ANY(:shas) "
                               "AND stored_sha256 IS NOT NULL"), {"shas": list(upload_shas)}))


def upload_state(db: Executor, upload_sha256: str) -> Row[Any] | None:
    """How much of an upload is stored, its declared size, and the photo it became (if complete)."""
    return db.execute(text("SELECT octet_length(content) AS stored_bytes, total_bytes, stored_sha256 "
                           "FROM sync_uploads WHERE upload_sha256 = :sha"), {"sha": upload_sha256}).first()


def append_upload(db: Executor, *, upload_sha256: str, device_id: int | None, total_bytes: int, chunk: bytes) -> None:
    db.execute(text("""
        INSERT INTO sync_uploads (upload_sha256, device_id, total_bytes, content) VALUES (:sha, :dev, :total, :chunk)
        ON CONFLICT (upload_sha256) DO UPDATE SET content = sync_uploads.content || EXCLUDED.content,
                                                  updated_at = now()"""),
               {"sha": upload_sha256, "dev": device_id, "total": total_bytes, "chunk": chunk})


def upload_content(db: Executor, upload_sha256: str) -> bytes:
    return bytes(db.scalar(text("SELECT content FROM sync_uploads WHERE upload_sha256 = :sha"),
                           {"sha": upload_sha256}))


def finish_upload(db: Executor, upload_sha256: str, stored_sha256: str) -> None:
    """Mark an upload complete and free its raw bytes: the sanitised photo is what we keep."""
    db.execute(text("UPDATE sync_uploads SET stored_sha256 = :stored, content = ''::bytea, updated_at = now() "
                    "WHERE upload_sha256 = :sha"), {"sha": upload_sha256, "stored": stored_sha256})


def discard_upload(db: Executor, upload_sha256: str) -> None:
    db.execute(text("DELETE FROM sync_uploads WHERE upload_sha256 = :sha"), {"sha": upload_sha256})


def reports_waiting_for_upload(db: Executor, upload_sha256: str) -> list[uuid.UUID]:
    return list(db.scalars(text("SELECT report_id FROM sync_photo_links WHERE upload_sha256 = :sha "
                                "ORDER BY report_id"), {"sha": upload_sha256}))


def stored_photos_of_uploads(db: Executor, upload_shas: Sequence[str]) -> list[str]:
    """The sanitised photo hashes of the completed uploads among these."""
    if not upload_shas:
        return []
    return list(db.scalars(text("SELECT stored_sha256 FROM sync_uploads WHERE upload_sha256 = ANY(:shas) "
                                "AND stored_sha256 IS NOT NULL"), {"shas": list(upload_shas)}))


# --- change feed -------------------------------------------------------------------------------------------------

def record_report_change(db: Executor, report_id: uuid.UUID) -> None:
    """Tell the devices' change feed that a report changed (numbered at commit)."""
    db.execute(text("INSERT INTO changes (kind, report_id, city_id, district_id, commune_id) "
                    "SELECT 'report', id, city_id, district_id, commune_id FROM reports WHERE id = :id"),
               {"id": report_id})


def record_category_changes(db: Executor) -> None:
    db.execute(text("INSERT INTO changes (kind, category_code) SELECT 'category', code FROM categories"))


def changes_after(db: Executor, after: int, area_id: int, limit: int) -> Sequence[Row[Any]]:
    """The next numbered changes a device of an area should hear about, oldest first."""
    return db.execute(text("""
        SELECT seq, kind, report_id, category_code FROM changes
        WHERE seq > :after AND (kind = 'category' OR :area IN (city_id, district_id, commune_id))
        ORDER BY seq LIMIT :limit"""), {"after": after, "area": area_id, "limit": limit}).all()


def public_reports_by_id(db: Executor, report_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Row[Any]]:
    """Public rows of several reports at once (hidden ones are left out)."""
    if not report_ids:
        return {}
    rows = db.execute(text(f"{_PUBLIC_REPORT_SELECT} WHERE r.id = ANY(:ids) AND NOT r.hidden"),
                      {"ids": list(report_ids)}).all()
    return {row.id: row for row in rows}


def last_change_number(db: Executor) -> int:
    """The highest feed number given out so far (0 before the first)."""
    return db.scalar(text("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM change_seq")) or 0


# --- set-based sync (one statement per batch, not per item) ------------------------------------------------------

def advisory_xact_locks(db: Executor, keys: Sequence[int]) -> None:
    """Take many advisory locks in one statement, in key order (so two batches cannot deadlock)."""
    if keys:
        db.execute(text("SELECT pg_advisory_xact_lock(k) FROM "
                        "(SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS ordered"),
                   {"keys": sorted(set(keys))})


def sync_report_states(db: Executor, report_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Row[Any]]:
    rows = db.execute(text("SELECT id, reference, version, payload_sha256, status FROM reports "
                           "WHERE id = ANY(:ids)"), {"ids": list(report_ids)}).all()
    return {row.id: row for row in rows}


def locate_points(db: Executor, points: Sequence[tuple[float, float]]) -> list[AreaMatch | None]:
    """``locate_point`` for many points in one GiST-indexed join; results in the same order."""
    if not points:
        return []
    rows = db.execute(text("""
        SELECT i.idx,
               min(a.id) FILTER (WHERE a.level = 'city') AS city_id,
               min(a.code) FILTER (WHERE a.level = 'city') AS city_code,
               min(a.id) FILTER (WHERE a.level = 'district') AS district_id,
               min(a.id) FILTER (WHERE a.level = 'commune') AS commune_id
        FROM unnest(CAST(:idx AS integer[]), CAST(:lon AS float8[]), CAST(:lat AS float8[])) AS i(idx, lon, lat)
        LEFT JOIN areas a ON ST_Covers(a.geom, ST_SetSRID(ST_MakePoint(i.lon, i.lat), 4326))
        GROUP BY i.idx"""),
        {"idx": list(range(len(points))), "lon": [p[0] for p in points], "lat": [p[1] for p in points]}).all()
    found: list[AreaMatch | None] = [None] * len(points)
    for row in rows:
        if row.city_id is not None:
            found[row.idx] = AreaMatch(row.city_id, row.city_code, row.district_id, row.commune_id)
    return found


def record_report_changes(db: Executor, report_ids: Sequence[uuid.UUID]) -> None:
    if report_ids:
        db.execute(text("INSERT INTO changes (kind, report_id, city_id, district_id, commune_id) "
                        "SELECT 'report', id, city_id, district_id, commune_id FROM reports "
                        "WHERE id = ANY(:ids) ORDER BY received_at, id"), {"ids": list(report_ids)})


# Columns of a new report and the array type each is sent as, for inserting many at once.
_REPORT_ARRAY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "uuid"), ("reference", "text"), ("category_code", "text"), ("description", "text"),
    ("landmark", "text"), ("location", "text"), ("accuracy_m", "float8"), ("city_id", "integer"),
    ("district_id", "integer"), ("commune_id", "integer"), ("status", "text"), ("source", "text"),
    ("observed_at", "timestamptz"), ("observed_at_flag", "text"), ("observed_at_device", "timestamptz"),
    ("clock_offset_s", "float8"), ("device_id", "integer"), ("received_at", "timestamptz"),
    ("updated_at", "timestamptz"), ("version", "integer"), ("payload_sha256", "text"), ("contact_name", "text"),
    ("contact_phone", "text"), ("contact_email", "text"), ("contact_consent", "boolean"),
    ("tracking_token_hash", "text"), ("created_by", "integer"),
)


def insert_reports(db: Executor, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
    """Insert many new reports in one statement (one array per column); returns the ids stored.

    Ids already present are skipped (``ON CONFLICT DO NOTHING``): their
    items lost a race and go the per-item way. ``location`` is EWKT text.
    """
    if not rows:
        return set()
    names = [name for name, _type in _REPORT_ARRAY_COLUMNS]
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _REPORT_ARRAY_COLUMNS)
    selected = ", ".join("ST_GeomFromEWKT(location)" if name == "location" else name for name in names)
    sql = (f"INSERT INTO reports ({', '.join(names)}) SELECT {selected} FROM unnest({arrays}) AS t({', '.join(names)}) "
           "ON CONFLICT (id) DO NOTHING RETURNING id")
    return set(db.scalars(text(sql), {name: [row[name] for row in rows] for name in names}))


def insert_first_events(db: Executor, report_ids: Sequence[uuid.UUID], at: datetime, actor_id: int | None,
                        actor_role: str) -> None:
    """The "new" event of many reports made by one actor at one time, in one statement."""
    if report_ids:
        db.execute(text("INSERT INTO report_events (report_id, at, actor_id, actor_role, old_status, new_status, note) "
                        "SELECT id, :at, :actor_id, :actor_role, NULL, 'new', '' FROM unnest(CAST(:ids AS uuid[])) AS id"),
                   {"ids": list(report_ids), "at": at, "actor_id": actor_id, "actor_role": actor_role})



def revoke_api_token(db: Executor, token_hash: str) -> bool:
    return bool(db.execute(text("UPDATE api_tokens SET revoked_at = now() WHERE token_hash = :h "
                                "AND revoked_at IS NULL"), {"h": token_hash}).rowcount)


def revoke_device(db: Executor, device_id: int) -> bool:
    return bool(db.execute(text("UPDATE devices SET revoked_at = now() WHERE id = :id AND revoked_at IS NULL"),
                           {"id": device_id}).rowcount)


# --- staff pages (triage) ----------------------------------------------------------------------------------------

def _staff_select(extra_columns: str) -> str:
    """The public report select with staff-only columns in front (hidden reports are the caller's choice)."""
    head, rest = _PUBLIC_REPORT_SELECT.split("SELECT", 1)
    return f"{head}SELECT {extra_columns},{rest}"


def staff_report_list(db: Executor, filters: ReportFilters, *, reference_text: str = "", limit: int = 50,
                      after: tuple[datetime, uuid.UUID] | None = None) -> Sequence[Row[Any]]:
    """The triage queue: newest first, keyset-paginated on (received_at, id), hidden reports included.

    ``reference_text`` matches anywhere in the reference (``PP-7K`` or ``7K3``).
    No contact columns: the list is read on a shared screen.
    """
    params: dict[str, Any] = {"limit": limit}
    clauses = [c for c in filter_sql(filters, params) if c != "NOT r.hidden"]  # staff see hidden reports too
    if reference_text:
        escaped = reference_text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append("r.reference ILIKE :reference_pattern ESCAPE '\\'")
        params["reference_pattern"] = f"%{escaped}%"
    if after is not None:
        clauses.append("(r.received_at, r.id) < (:after_at, :after_id)")
        params["after_at"], params["after_id"] = after
    where = " AND ".join(clauses) or "TRUE"
    sql = f"{_staff_select('r.hidden')} WHERE {where} ORDER BY r.received_at DESC, r.id DESC LIMIT :limit"
    return db.execute(text(sql), params).all()


def staff_report(db: Executor, reference: str) -> Row[Any] | None:
    """Everything staff see of one report, hidden or not, including the reporter's contact details."""
    columns = ("r.hidden, r.contact_name, r.contact_phone, r.contact_email, r.contact_consent, r.acknowledged_at, "
               "r.closed_at, r.observed_at_device, r.clock_offset_s, r.device_id, "
               "(SELECT u.username FROM users u WHERE u.id = r.created_by) AS created_by_username")
    return db.execute(text(f"{_staff_select(columns)} WHERE r.reference = :reference"),
                      {"reference": reference}).first()


def staff_report_history(db: Executor, report_id: uuid.UUID) -> Sequence[Row[Any]]:
    """A report's history with who did each step (the public history says only "city staff")."""
    return db.execute(
        text("SELECT e.at, e.old_status, e.new_status, e.note, e.actor_role, u.username AS actor_username "
             "FROM report_events e LEFT JOIN users u ON u.id = e.actor_id WHERE e.report_id = :id ORDER BY e.id"),
        {"id": report_id},
    ).all()


def nearby_reports(db: Executor, *, lon: float, lat: float, exclude_id: uuid.UUID | None, radius_m: float = 500,
                   limit: int = 20) -> Sequence[Row[Any]]:
    """Every report within ``radius_m`` geodesic metres, any status, hidden too (for staff), nearest first.

    Same index and distance as ``duplicate_candidates``, without its category and status rules.
    """
    return db.execute(text("""
        SELECT r.id, r.reference, r.category_code, c.label_en AS category_label_en, c.label_km AS category_label_km,
               r.status, r.hidden, r.received_at, round(d.metres)::int AS distance_m
        FROM reports r
        JOIN categories c ON c.code = r.category_code
        CROSS JOIN LATERAL (SELECT ST_Distance(r.location::geography,
                                               ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography) AS metres) d
        WHERE ST_DWithin(r.location::geography, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography, :radius)
          AND r.id IS DISTINCT FROM :exclude_id
        ORDER BY d.metres, r.received_at, r.id
        LIMIT :limit"""),
        {"lon": lon, "lat": lat, "radius": radius_m, "exclude_id": exclude_id, "limit": limit}).all()


def set_report_hidden(db: Executor, report_id: uuid.UUID, hidden: bool) -> None:
    """Hide a report from every public view (abuse); the caller records why and bumps the version."""
    db.execute(text("UPDATE reports SET hidden = :hidden WHERE id = :id"), {"id": report_id, "hidden": hidden})


def stored_photo(db: Executor, sha256: str) -> Row[Any] | None:
    """A stored photo's bytes whatever report it belongs to (the staff pages show hidden reports' photos)."""
    return db.execute(text("SELECT content, mime FROM photos WHERE sha256 = :sha"), {"sha": sha256}).first()
