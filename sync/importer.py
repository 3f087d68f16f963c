"""Paper surveys to sync items: a spreadsheet (CSV) or GeoJSON file becomes ``(client_id, payload)`` pairs.

Ambassadors often collect on paper and type the sheets in later. Each row
becomes a ``create`` item whose payload is the body of ``POST /api/v1/reports``
and whose ``client_id`` is **stable**: a UUID5 in :data:`NAMESPACE` of the
row's identity, so importing (and pushing) the same file twice gives the same
ids, and the server answers ``unchanged`` instead of storing anything new.

The identity of a row (see :func:`row_key`):

* its ``survey_id`` (or ``id``) column when filled: the row keeps its id when
  someone corrects a typo, and the server then answers ``conflict`` rather
  than storing a second report (correct it with an update instead);
* otherwise its normalised content (the payload itself), so only the same
  content gives the same id. A row corrected in the sheet is then a new report.

Survey ids often restart at 1 in every sheet: pass ``id_scope`` (for example
the survey campaign's name) so that "row 1" of two campaigns are two reports.
The file name is deliberately not part of the key: renaming or copying the
file changes nothing.

CSV columns (header names are case-insensitive; spaces and hyphens count as
underscores; other columns are ignored and listed in
:attr:`ImportResult.ignored_columns`):

=====================  ======================================================
``category``           required, a category code such as ``waste.overflowing_bin``
``lon``, ``lat``       required (also ``longitude``/``latitude``, ``lng``), WGS84 degrees
``description``        optional, up to 2000 characters
``landmark``           optional, up to 200 characters
``observed_at``        optional (also ``observed``, ``date``): ISO 8601. A time
                       without a UTC offset, or a bare date (``2025-03-10``,
                       read as midnight), is taken as **Phnom Penh time,
                       UTC+07:00** (Cambodia has no daylight saving time).
``accuracy_m``         optional, metres (also ``accuracy``)
``contact_name``,      optional; sent only when ``consent`` is yes (``yes``,
``contact_phone``,     ``y``, ``true``, ``1``, ``បាទ``, ``ចាស``). Without
``contact_email``,     consent the contact is left out and a warning says so.
``consent``
``survey_id``, ``id``  optional, the row's identity (see above)
=====================  ======================================================

Files must be UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8"
writes one); Khmer text is kept exactly as typed (no Unicode normalisation,
only surrounding spaces are trimmed). Numbers may use Khmer digits (``១០៤.៩``)
or a decimal comma. The delimiter is ``,``, ``;`` or a tab, whichever the
header line uses most. Row numbers are spreadsheet rows: the header is row
1, the first data row is row 2. Empty rows are skipped.

A bad row is reported (:attr:`ImportResult.errors`, with its row number and
why) and not imported; the good rows still are. Each payload is checked with
:func:`sync.protocol.normalise_create_payload`, the server's own rules, so the
only checks left to the server are the category list and the service area.

GeoJSON: a ``FeatureCollection`` (or one ``Feature``) of ``Point`` features;
the properties use the CSV's column names, the coordinates come from the
geometry, and a feature's own ``id`` member also counts as its survey id.
"""

from __future__ import annotations

import csv
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

from sync.protocol import normalise_create_payload

__all__ = [
    "NAMESPACE",
    "PHNOM_PENH_TIME",
    "ImportResult",
    "ImportedItem",
    "RowProblem",
    "SurveyFileError",
    "items_from_csv",
    "items_from_file",
    "items_from_geojson",
    "row_key",
    "row_to_payload",
]

#: The UUID5 namespace of imported rows. Never change it: every id ever imported depends on it.
NAMESPACE: Final[uuid.UUID] = uuid.UUID("b7f0e3a4-2c61-5d8e-9a13-4c2f8e6d1b05")
#: Bumped only if the key's normalisation changes (it would re-key every content-keyed row).
KEY_VERSION: Final[str] = "v1"
#: Times without a UTC offset are Phnom Penh time (ICT, UTC+07:00 all year).
PHNOM_PENH_TIME: Final[timezone] = timezone(timedelta(hours=7), "ICT")

_ALIASES: Final[dict[str, str]] = {
    "category": "category", "category_code": "category",
    "description": "description",
    "landmark": "landmark",
    "lon": "lon", "lng": "lon", "long": "lon", "longitude": "lon", "x": "lon",
    "lat": "lat", "latitude": "lat", "y": "lat",
    "observed_at": "observed_at", "observed": "observed_at", "date": "observed_at",
    "accuracy_m": "accuracy_m", "accuracy": "accuracy_m",
    "contact_name": "contact_name", "contact_phone": "contact_phone", "contact_email": "contact_email",
    "consent": "consent", "contact_consent": "consent",
    "survey_id": "survey_id", "id": "survey_id",
}
_REQUIRED: Final[tuple[str, ...]] = ("category", "lon", "lat")
_YES: Final[frozenset[str]] = frozenset({"yes", "y", "true", "t", "1", "ok", "បាទ", "ចាស", "បាទ/ចាស"})
_NO: Final[frozenset[str]] = frozenset({"no", "n", "false", "f", "0", "", "ទេ"})
_KHMER_DIGITS: Final[dict[int, str]] = {0x17E0 + i: str(i) for i in range(10)}
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class SurveyFileError(ValueError):
    """The whole file cannot be read: not UTF-8, not CSV/GeoJSON, or required columns missing."""


@dataclass(frozen=True)
class RowProblem:
    """Why a row was not imported (``errors``) or what was changed in it (``warnings``)."""

    row: int
    messages: tuple[str, ...]
    where: str = "row"

    def __str__(self) -> str:
        return f"{self.where} {self.row}: {'; '.join(self.messages)}"


@dataclass(frozen=True)
class ImportedItem:
    """One imported row: the item's stable ``client_id``, its ``payload``, the ``row`` it came from."""

    client_id: str
    payload: dict[str, Any]
    row: int
    key: str
    label: str


@dataclass
class ImportResult:
    """The rows that became items, and those that did not. Iterating gives ``(client_id, payload)`` pairs."""

    source: str
    items: list[ImportedItem] = field(default_factory=list)
    errors: list[RowProblem] = field(default_factory=list)
    warnings: list[RowProblem] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return ((item.client_id, item.payload) for item in self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[str]:
        return [item.label for item in self.items]


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return str(value).strip()


def _number(raw: str, name: str, errors: list[str]) -> float | None:
    text = raw.translate(_KHMER_DIGITS).replace(" ", "")
    if text.count(",") == 1 and "." not in text:
        text = text.replace(",", ".")  # decimal comma
    if not _NUMBER_RE.fullmatch(text):
        errors.append(f"{name}: {raw!r} is not a number")
        return None
    return float(text)


def _observed_at(raw: str, errors: list[str]) -> str | None:
    text = raw.translate(_KHMER_DIGITS)
    try:
        if _DATE_RE.fullmatch(text):
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=PHNOM_PENH_TIME).isoformat()
        parsed = datetime.fromisoformat(text)
    except ValueError:
        errors.append(f"observed_at: {raw!r} is not an ISO 8601 date or time (e.g. 2025-03-10 or "
                      "2025-03-10T14:30+07:00)")
        return None
    if parsed.tzinfo is None or parsed.tzinfo.utcoffset(parsed) is None:
        parsed = parsed.replace(tzinfo=PHNOM_PENH_TIME)
    return parsed.isoformat()


def _flatten(errors: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in errors.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(_flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out.append(f"{name}: {' '.join(str(v) for v in value)}")
        else:
            out.append(f"{name}: {value}")
    return out


def row_to_payload(values: Mapping[str, object]) -> tuple[dict[str, Any] | None, list[str], list[str]]:
    """One row (canonical column names, see the module docstring) to a create payload.

    Returns ``(payload, errors, warnings)``; ``payload`` is ``None`` when
    there are errors. The payload is JSON-ready (``observed_at`` an ISO string).
    """
    errors: list[str] = []
    warnings: list[str] = []
    raw = {key: _text(value) for key, value in values.items()}
    for name in _REQUIRED:
        if not raw.get(name):
            errors.append(f"{name}: missing")
    payload: dict[str, Any] = {}
    if raw.get("category"):
        payload["category"] = raw["category"].lower()
    lon = _number(raw["lon"], "lon", errors) if raw.get("lon") else None
    lat = _number(raw["lat"], "lat", errors) if raw.get("lat") else None
    if lon is not None and lat is not None:
        payload["location"] = {"type": "Point", "coordinates": [lon, lat]}
    for name in ("description", "landmark"):
        if raw.get(name):
            payload[name] = raw[name]
    if raw.get("accuracy_m"):
        accuracy = _number(raw["accuracy_m"], "accuracy_m", errors)
        if accuracy is not None:
            payload["accuracy_m"] = accuracy
    if raw.get("observed_at"):
        observed = _observed_at(raw["observed_at"], errors)
        if observed is not None:
            payload["observed_at"] = observed
    contact = {key: raw[f"contact_{key}"] for key in ("name", "phone", "email") if raw.get(f"contact_{key}")}
    consent = raw.get("consent", "").lower()
    if contact:
        if consent in _YES:
            payload["contact"] = {**contact, "consent": True}
        else:
            if consent not in _NO:
                warnings.append(f"consent: {raw.get('consent')!r} is not yes or no; read as no")
            warnings.append("contact details left out: no consent to keep them")
    if errors:
        return None, errors, warnings
    _, field_errors = normalise_create_payload(payload, uuid.UUID(int=0))
    if field_errors:
        return None, _flatten(field_errors), warnings
    return payload, [], warnings


def row_key(payload: Mapping[str, Any], survey_id: str | None, id_scope: str | None = None) -> str:
    """The identity a row's ``client_id`` is derived from (see the module docstring)."""
    scope = f"{id_scope}\x1f" if id_scope else ""
    if survey_id:
        return f"{KEY_VERSION}:survey:{scope}{survey_id}"
    canonical = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return f"{KEY_VERSION}:content:{scope}{canonical}"


def _client_id(key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, key))


class _Collector:
    def __init__(self, result: ImportResult, where: str, id_scope: str | None) -> None:
        self.result = result
        self.where = where
        self.id_scope = id_scope
        self.seen: dict[str, tuple[int, dict[str, Any]]] = {}

    def add(self, number: int, values: Mapping[str, object], survey_id: str | None) -> None:
        payload, errors, warnings = row_to_payload(values)
        if warnings:
            self.result.warnings.append(RowProblem(number, tuple(warnings), self.where))
        if payload is None:
            self.result.errors.append(RowProblem(number, tuple(errors), self.where))
            return
        key = row_key(payload, survey_id, self.id_scope)
        client_id = _client_id(key)
        if client_id in self.seen:
            first, first_payload = self.seen[client_id]
            if first_payload == payload:
                self.result.warnings.append(RowProblem(number, (f"the same as {self.where} {first}; skipped",),
                                                       self.where))
            else:
                message = f"survey_id {survey_id!r} is already used by {self.where} {first} with other content"
                self.result.errors.append(RowProblem(number, (message,), self.where))
            return
        self.seen[client_id] = (number, payload)
        label = f"{self.result.source} {self.where} {number}"
        self.result.items.append(ImportedItem(client_id, payload, number, key, label))


def _canonical(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def items_from_csv(path: str | os.PathLike[str], *, id_scope: str | None = None) -> ImportResult:
    """Read a survey spreadsheet saved as CSV (UTF-8, BOM optional); see the module docstring."""
    source = Path(path)
    try:
        with source.open(encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise SurveyFileError(f"{source.name} is not UTF-8 (byte {exc.start}); save it as \"CSV UTF-8\"") from None
    header_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=header_line.count)
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise SurveyFileError(f"{source.name} is empty") from None
    columns: list[str | None] = []
    result = ImportResult(source=source.name)
    for name in header:
        canonical = _ALIASES.get(_canonical(name))
        if canonical is None or canonical in columns:
            if name.strip():
                result.ignored_columns.append(name.strip())
            columns.append(None)
        else:
            columns.append(canonical)
    missing = [name for name in _REQUIRED if name not in columns]
    if missing:
        raise SurveyFileError(f"{source.name} has no {', '.join(missing)} column (found: {', '.join(header)})")
    collector = _Collector(result, "row", id_scope)
    for index, cells in enumerate(reader):
        number = index + 2
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(columns) and any(cell.strip() for cell in cells[len(columns):]):
            message = f"{len(cells)} cells but the header has {len(columns)} columns (an unquoted delimiter?)"
            result.errors.append(RowProblem(number, (message,)))
            continue
        values = {name: cells[i] if i < len(cells) else "" for i, name in enumerate(columns) if name}
        survey_id = _text(values.pop("survey_id", "")) or None
        collector.add(number, values, survey_id)
    return result


def items_from_geojson(path: str | os.PathLike[str], *, id_scope: str | None = None) -> ImportResult:
    """Read a GeoJSON ``FeatureCollection`` of survey points; see the module docstring."""
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise SurveyFileError(f"{source.name} is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise SurveyFileError(f"{source.name} is not JSON: {exc}") from None
    if isinstance(data, Mapping) and data.get("type") == "Feature":
        features: Any = [data]
    elif isinstance(data, Mapping) and data.get("type") == "FeatureCollection":
        features = data.get("features")
    else:
        raise SurveyFileError(f"{source.name} is not a GeoJSON Feature or FeatureCollection")
    if not isinstance(features, list):
        raise SurveyFileError(f"{source.name}: features is not a list")
    result = ImportResult(source=source.name)
    collector = _Collector(result, "feature", id_scope)
    for index, feature in enumerate(features):
        number = index + 1
        if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
            result.errors.append(RowProblem(number, ("not a GeoJSON Feature",), "feature"))
            continue
        geometry = feature.get("geometry")
        coordinates = geometry.get("coordinates") if isinstance(geometry, Mapping) else None
        if not isinstance(geometry, Mapping) or geometry.get("type") != "Point" or \
                not isinstance(coordinates, list) or len(coordinates) < 2:
            result.errors.append(RowProblem(number, ("geometry: a Point with [lon, lat] is needed",), "feature"))
            continue
        properties = feature.get("properties") or {}
        if not isinstance(properties, Mapping):
            result.errors.append(RowProblem(number, ("properties: not an object",), "feature"))
            continue
        values: dict[str, object] = {}
        for name, value in properties.items():
            canonical = _ALIASES.get(_canonical(str(name)))
            if canonical is None:
                if str(name) not in result.ignored_columns:
                    result.ignored_columns.append(str(name))
            elif canonical not in ("lon", "lat"):
                values.setdefault(canonical, value)
        values["lon"], values["lat"] = _coordinate(coordinates[0]), _coordinate(coordinates[1])
        survey_id = _text(values.pop("survey_id", None)) or _text(feature.get("id")) or None
        collector.add(number, values, survey_id)
    return result


def _coordinate(value: object) -> str:
    if isinstance(value, float):
        return repr(value)
    return _text(value)


def items_from_file(path: str | os.PathLike[str], *, id_scope: str | None = None) -> ImportResult:
    """:func:`items_from_csv` or :func:`items_from_geojson`, by the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        return items_from_csv(path, id_scope=id_scope)
    if suffix in (".geojson", ".json"):
        return items_from_geojson(path, id_scope=id_scope)
    raise SurveyFileError(f"{Path(path).name}: import a .csv or .geojson file")
