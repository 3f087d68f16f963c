"""Validation of client-supplied coordinates and bounding boxes.

Every longitude/latitude pair and every ``bbox`` query parameter that reaches
civicmap passes through here before it touches the database. Failures raise
:class:`CoordinateError`, whose ``error`` attribute is a stable, machine-readable
key (for API error bodies and translations) and whose ``message`` is a short
English sentence naming the offending value.

All coordinates are WGS84 degrees, longitude first (x, y), as in GeoJSON and
the OGC ``bbox`` convention.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = [
    "BBox",
    "CoordinateError",
    "parse_bbox",
    "validate_lon_lat",
]

LON_MIN, LON_MAX = -180.0, 180.0
LAT_MIN, LAT_MAX = -90.0, 90.0

# A plain decimal number: optional sign, digits with an optional fraction (or a
# bare fraction), optional exponent. Deliberately stricter than float(), which
# would also accept "nan", "inf", "1_000" and surrounding whitespace.
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class CoordinateError(ValueError):
    """A coordinate or bounding box that civicmap cannot accept.

    ``error`` is a stable dotted key such as ``"location.out_of_range"``;
    ``message`` is a human-readable sentence for logs and API responses.
    """

    def __init__(self, error: str, message: str) -> None:
        super().__init__(error, message)
        self.error = error
        self.message = message

    def __str__(self) -> str:
        return self.message


def _format_value(value: float) -> str:
    """Render a number compactly for an error message: ``91``, ``-181.5``."""
    return format(value, ".15g")


def _as_finite_float(value: object, name: str, error_prefix: str) -> float:
    """Convert an int/float (not bool, not str) to a finite float or raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CoordinateError(
            f"{error_prefix}.not_a_number",
            f"{name} must be a number, got {type(value).__name__}",
        )
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        raise CoordinateError(
            f"{error_prefix}.out_of_range", f"{name} is far outside the valid range"
        ) from None
    if not math.isfinite(number):
        raise CoordinateError(
            f"{error_prefix}.not_finite", f"{name} must be a finite number, got {number}"
        )
    return number


def _check_range(value: float, name: str, low: float, high: float, error: str) -> None:
    """Raise ``error`` unless ``low <= value <= high``."""
    if not low <= value <= high:
        raise CoordinateError(
            error,
            f"{name} {_format_value(value)} is outside "
            f"{_format_value(low).replace('-', '−')}…{_format_value(high)}",
        )


def validate_lon_lat(lon: object, lat: object) -> tuple[float, float]:
    """Return ``(lon, lat)`` as floats, or raise :class:`CoordinateError`.

    Accepts ``int`` and ``float`` (numpy floats included, since they subclass
    ``float``); rejects ``bool``, strings and everything else with
    ``"location.not_a_number"``. NaN and ±infinity give ``"location.not_finite"``;
    a longitude outside −180…180 or a latitude outside −90…90 gives
    ``"location.out_of_range"``.
    """
    lon_f = _as_finite_float(lon, "longitude", "location")
    lat_f = _as_finite_float(lat, "latitude", "location")
    _check_range(lon_f, "longitude", LON_MIN, LON_MAX, "location.out_of_range")
    _check_range(lat_f, "latitude", LAT_MIN, LAT_MAX, "location.out_of_range")
    return lon_f, lat_f


@dataclass(frozen=True)
class BBox:
    """A non-empty lon/lat rectangle in OGC order (min lon, min lat, max lon, max lat).

    Constructing one validates it: every edge must be finite and within range,
    and each minimum must be strictly less than its maximum (so the box has a
    positive area). Boxes crossing the antimeridian are not supported.
    """

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def __post_init__(self) -> None:
        _check_bbox_edges(self.min_lon, self.min_lat, self.max_lon, self.max_lat)

    @property
    def width_deg(self) -> float:
        """East–west extent in degrees of longitude."""
        return self.max_lon - self.min_lon

    @property
    def height_deg(self) -> float:
        """North–south extent in degrees of latitude."""
        return self.max_lat - self.min_lat

    @property
    def area_deg2(self) -> float:
        """Area in square degrees: a cheap size measure for capping queries."""
        return self.width_deg * self.height_deg

    def as_tuple(self) -> tuple[float, float, float, float]:
        """``(min_lon, min_lat, max_lon, max_lat)``, e.g. for ``ST_MakeEnvelope``."""
        return (self.min_lon, self.min_lat, self.max_lon, self.max_lat)


def _check_bbox_edges(min_lon: float, min_lat: float, max_lon: float, max_lat: float) -> None:
    """Validate four bbox edges; raise :class:`CoordinateError` on the first problem."""
    edges = (min_lon, min_lat, max_lon, max_lat)
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in edges
    ):
        raise CoordinateError("bbox.malformed", "bbox edges must be four finite numbers")
    for name, value in (("min longitude", min_lon), ("max longitude", max_lon)):
        _check_range(float(value), f"bbox {name}", LON_MIN, LON_MAX, "bbox.out_of_range")
    for name, value in (("min latitude", min_lat), ("max latitude", max_lat)):
        _check_range(float(value), f"bbox {name}", LAT_MIN, LAT_MAX, "bbox.out_of_range")
    if min_lon >= max_lon or min_lat >= max_lat:
        raise CoordinateError(
            "bbox.inverted",
            "bbox must have min < max on both axes (minLon,minLat,maxLon,maxLat), "
            f"got {','.join(_format_value(float(v)) for v in edges)}",
        )


def _parse_bbox_number(part: str) -> float:
    """Parse one comma-separated bbox field; raise ``bbox.malformed`` if it is not a number."""
    text = part.strip()
    if not _NUMBER_RE.fullmatch(text):
        raise CoordinateError("bbox.malformed", f"bbox field {part!r} is not a number")
    value = float(text)
    if not math.isfinite(value):  # e.g. "1e999"
        raise CoordinateError("bbox.malformed", f"bbox field {part!r} is not a finite number")
    return value


def parse_bbox(text: str) -> BBox:
    """Parse ``"minLon,minLat,maxLon,maxLat"`` into a validated :class:`BBox`.

    Whitespace around each field is tolerated. Errors: ``"bbox.malformed"``
    (not exactly four plain decimal numbers, including NaN/inf), then
    ``"bbox.out_of_range"``, then ``"bbox.inverted"`` (a minimum not strictly
    below its maximum, which also rules out zero-width or zero-height boxes).
    """
    if not isinstance(text, str):
        raise CoordinateError("bbox.malformed", f"bbox must be a string, got {type(text).__name__}")
    parts = text.split(",")
    if len(parts) != 4:
        raise CoordinateError(
            "bbox.malformed",
            f"bbox must be 4 comma-separated numbers minLon,minLat,maxLon,maxLat; got {len(parts)} fields",
        )
    min_lon, min_lat, max_lon, max_lat = (_parse_bbox_number(part) for part in parts)
    return BBox(min_lon, min_lat, max_lon, max_lat)
