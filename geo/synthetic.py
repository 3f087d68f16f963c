"""Deterministic, realistic synthetic issue reports for seeding and load tests.

The seeder in ``service/`` streams the chunks produced by
:func:`generate_reports` into PostgreSQL with ``COPY``. Everything here is
pure numpy/shapely, vectorised per chunk, so a million reports take seconds.

How the synthetic city behaves:

* **Where.** Each report belongs to one commune (:class:`SeedArea`). Communes
  are chosen in proportion to ``weight`` (the caller's area-based weight)
  times a factor that falls with distance from the city centre, so central
  communes are denser. Inside a commune, points are a mix of a few gaussian
  hotspots (markets, busy junctions) and a uniform background, drawn by
  vectorised rejection sampling against the commune polygon
  (``shapely.contains_xy``), so every point lies strictly inside its commune.
* **When.** ``observed_at`` spans ``[start, end]`` with a mild upward adoption
  trend and a daytime bias (Cambodia is UTC+7). ``received_at`` follows
  within minutes (online) or hours to a few days (queued offline), never
  after ``end``.
* **What.** Category probabilities depend on the month and on the place:
  flooding peaks in the rainy season (May–October, highest in September and
  October) and is boosted within ~1.5 km of the rivers, wetlands and coast in
  :data:`WATERWAYS`; waste is a little higher in the dry season.
* **Lifecycle.** ``end`` is "now". Reports are acknowledged hours to days
  after receipt (median ~1.5 days) and resolved days to weeks later, with a
  per-category median (:data:`RESOLUTION_MEDIAN_DAYS`): streetlights are fixed
  faster than potholes. Some are rejected or marked duplicate at triage and a
  few are never picked up, so old reports are mostly closed and recent ones
  mostly open.

Output is deterministic for a given ``seed``, inputs and ``chunk_size``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

__all__ = [
    "CITY_CENTRES",
    "DESCRIPTIONS",
    "RESOLUTION_MEDIAN_DAYS",
    "STATUSES",
    "TOP_LEVELS",
    "WATERWAYS",
    "SeedArea",
    "SeedCategory",
    "SyntheticChunk",
    "distance_to_waterways_m",
    "generate_reports",
]

# ---------------------------------------------------------------------------
# Public reference data
# ---------------------------------------------------------------------------

STATUSES: tuple[str, ...] = (
    "new",
    "acknowledged",
    "in_progress",
    "resolved",
    "rejected",
    "duplicate",
)
"""Every status a synthetic report can have, in lifecycle order."""

TOP_LEVELS: tuple[str, ...] = ("waste", "flooding", "water", "street")
"""Top-level category codes (the part of a category code before the first dot)."""

DESCRIPTIONS: dict[str, list[str]] = {
    "waste": [
        "Overflowing bin next to the market entrance, not collected for three days",
        "ធុងសំរាមពេញហៀរ តាំងពីម្សិលមិញ",
        "Pile of rubbish dumped on the pavement, blocking the footpath",
        "មានគេចាក់សំរាមចោលនៅមាត់ផ្លូវ",
        "Garbage truck skipped our street again this week",
        "ឡានសំរាមមិនបានមកប្រមូលសំរាមបីថ្ងៃហើយ",
    ],
    "flooding": [
        "Street flooded knee-deep after the afternoon rain",
        "ផ្លូវលិចទឹកជ្រៅដល់ជង្គង់ ក្រោយភ្លៀងធ្លាក់",
        "Drain blocked with plastic, water is not going down",
        "លូស្ទះដោយសំរាមប្លាស្ទិក ទឹកមិនស្រក",
        "Water coming into the houses along the lane",
        "ទឹកជំនន់ចូលផ្ទះអ្នកភូមិ",
    ],
    "water": [
        "No tap water since this morning",
        "គ្មានទឹកម៉ាស៊ីនតាំងពីព្រឹកមិញ",
        "Burst pipe leaking onto the road",
        "បំពង់ទឹកបែក ទឹកហូរពេញផ្លូវ",
        "Tap water is brown and smells bad",
        "ទឹកម៉ាស៊ីនល្អក់ និងមានក្លិនស្អុយ",
    ],
    "street": [
        "Large pothole in the middle of the lane, motorbikes swerving",
        "រន្ធធំនៅកណ្តាលផ្លូវ គ្រោះថ្នាក់សម្រាប់ម៉ូតូ",
        "Streetlight out for a week, the street is very dark at night",
        "ភ្លើងបំភ្លឺផ្លូវរលត់មួយសប្តាហ៍ហើយ",
        "Broken pavement slab, dangerous for pedestrians",
        "ចិញ្ចើមផ្លូវបាក់បែក ពិបាកដើរ",
    ],
}
"""Plausible report texts per top-level category, half English, half Khmer.

``SyntheticChunk.description_index`` indexes the list of the row's top level.
"""

CITY_CENTRES: dict[str, tuple[float, float]] = {
    "PP": (104.9282, 11.5564),  # Independence Monument, Phnom Penh
    "SV": (103.5230, 10.6260),  # Psar Leu / Ekareach Street, Sihanoukville
}
"""(lon, lat) of each city's centre, for the density falloff.

The area-weighted centroid of a city's communes is a poor centre here (the
large rural communes drag Phnom Penh's ~6 km west; Koh Rong drags
Sihanoukville's out to sea), so known centres are used; any other city code
falls back to that centroid.
"""

WATERWAYS: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {
    "PP": {
        # Traced roughly from the district boundaries that follow the rivers.
        "Tonle Sap": (
            (104.855, 11.700),
            (104.861, 11.669),
            (104.879, 11.645),
            (104.917, 11.621),
            (104.921, 11.589),
            (104.937, 11.564),
        ),
        "Mekong": (
            (104.972, 11.736),
            (104.952, 11.660),
            (104.944, 11.600),
            (104.948, 11.560),
            (104.985, 11.545),
            (105.045, 11.530),
        ),
        "Bassac": (
            (104.950, 11.558),
            (104.932, 11.538),
            (104.947, 11.494),
            (104.962, 11.467),
            (104.975, 11.440),
        ),
        # Low ground: the Boeung Tompun / Cheung Ek wetlands south of the centre.
        "Boeung Tompun–Cheung Ek wetlands": (
            (104.905, 11.530),
            (104.915, 11.505),
            (104.925, 11.480),
        ),
    },
    "SV": {
        "Coast (Otres to the port)": (
            (103.562, 10.556),
            (103.531, 10.599),
            (103.512, 10.609),
            (103.500, 10.603),
            (103.490, 10.623),
            (103.500, 10.646),
            (103.514, 10.647),
            (103.545, 10.695),
        ),
    },
}
"""Approximate rivers, wetlands and coastline (lon, lat polylines) per city code."""

RESOLUTION_MEDIAN_DAYS: dict[str, float] = {
    "waste": 4.0,
    "flooding": 9.0,
    "water": 12.0,
    "street": 20.0,
    "streetlight": 5.0,
    "light": 5.0,
    "pothole": 28.0,
    "open_manhole": 3.0,
    "missed_collection": 2.0,
}
"""Median days from acknowledgement to resolution.

Looked up by full category code first, then by any key contained in the
code's leaf (``"street.dark_streetlight"`` matches ``"streetlight"``), then
by top-level code.
"""

# ---------------------------------------------------------------------------
# Tuning constants
# ---------------------------------------------------------------------------

_SECONDS_PER_DAY = 86_400
_LOCAL_UTC_OFFSET_S = 7 * 3_600  # Asia/Phnom_Penh, no DST
_M_PER_DEG_LAT = 111_320.0
_NAT_INT = np.iinfo(np.int64).min  # the integer behind numpy's NaT

CENTRE_SCALE_KM = 3.0  # density factor 1 / (1 + (d / scale)^2)
HOTSPOT_SHARE = 0.4  # share of a commune's points drawn from its hotspots
HOTSPOTS_PER_AREA = (2, 4)  # inclusive range
HOTSPOT_SIGMA_M = (60.0, 300.0)
_MAX_HOTSPOT_TRIES = 30
_MAX_UNIFORM_BATCH = 2_000_000

FLOOD_PROXIMITY_M = 1_500.0
FLOOD_NEAR_WATER_BOOST = 3.0  # flooding weight x (1 + boost * exp(-(d / proximity)^2))

TOP_LEVEL_SHARES: dict[str, float] = {"waste": 0.38, "flooding": 0.14, "water": 0.16, "street": 0.32}

# Relative weight of each top level per local calendar month (Jan..Dec).
SEASONAL_FACTORS: dict[str, tuple[float, ...]] = {
    "waste": (1.2, 1.2, 1.2, 1.2, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 1.1, 1.2),
    "flooding": (0.2, 0.15, 0.2, 0.4, 0.9, 1.3, 1.6, 2.0, 3.0, 3.0, 1.0, 0.35),
    "water": (1.0, 1.0, 1.15, 1.2, 1.15, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    "street": (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.05, 1.1, 1.1, 1.1, 1.0, 1.0),
}

ADOPTION_GROWTH = 1.0  # the report rate at `end` is (1 + growth) times the rate at `start`

REJECTED_SHARE = 0.05
DUPLICATE_SHARES: dict[str, float] = {"flooding": 0.14, "waste": 0.08, "water": 0.07, "street": 0.05}
ABANDONED_SHARE = 0.03  # never acknowledged at all

# ---------------------------------------------------------------------------
# Inputs and output
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedArea:
    """A commune reports can be placed in."""

    area_id: int
    district_id: int
    city_id: int
    city_code: str
    geometry: BaseGeometry  # commune (Multi)Polygon, lon/lat WGS84
    weight: float  # relative report density, before the city-centre boost


@dataclass(frozen=True)
class SeedCategory:
    """A report category, e.g. ``"flooding.blocked_drain"``."""

    code: str

    @property
    def top_level(self) -> str:
        """The code before the first dot, one of :data:`TOP_LEVELS`."""
        return self.code.split(".", 1)[0]


@dataclass
class SyntheticChunk:
    """Up to ``chunk_size`` reports as parallel arrays (row i across all fields)."""

    lon: np.ndarray  # float64
    lat: np.ndarray  # float64
    area_index: np.ndarray  # int32, index into `areas`
    category_index: np.ndarray  # int32, index into `categories`
    observed_at: np.ndarray  # datetime64[s], UTC
    received_at: np.ndarray  # datetime64[s], UTC, >= observed_at, <= end
    accuracy_m: np.ndarray  # float32
    status: np.ndarray  # str (<U12), one of STATUSES
    acknowledged_at: np.ndarray  # datetime64[s] or NaT
    resolved_at: np.ndarray  # datetime64[s] or NaT; set iff status is resolved/rejected/duplicate
    description_index: np.ndarray  # int32, index into DESCRIPTIONS[top level of the row's category]

    def __len__(self) -> int:
        return int(self.lon.shape[0])


# ---------------------------------------------------------------------------
# Precomputed model
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _AreaModel:
    """One commune, prepared for fast point sampling."""

    geometry: BaseGeometry  # a prepared copy of the caller's geometry
    bounds: tuple[float, float, float, float]
    acceptance: float  # polygon area / bbox area: expected rejection-sampling yield
    hotspot_lon: np.ndarray
    hotspot_lat: np.ndarray
    hotspot_sigma_lon: np.ndarray  # degrees
    hotspot_sigma_lat: np.ndarray  # degrees
    hotspot_p: np.ndarray  # probabilities summing to 1


@dataclass(frozen=True)
class _Model:
    """Everything per-input that does not change between chunks."""

    areas: tuple[_AreaModel, ...]
    area_p: np.ndarray  # probability of each area
    area_city: np.ndarray  # index into city_codes, per area
    city_codes: tuple[str, ...]
    category_top: np.ndarray  # index into TOP_LEVELS, per category
    category_month_weight: np.ndarray  # (12, n_categories) base x seasonal weights
    flooding_columns: np.ndarray  # bool per category
    resolution_median_s: np.ndarray  # per category
    duplicate_share: np.ndarray  # per category
    description_counts: np.ndarray  # len(DESCRIPTIONS[top]) per category


def _validate_inputs(
    areas: Sequence[SeedArea],
    categories: Sequence[SeedCategory],
    count: int,
    start_s: int,
    end_s: int,
    chunk_size: int,
) -> None:
    """Raise ValueError for arguments :func:`generate_reports` cannot work with."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if end_s <= start_s:
        raise ValueError("end must be after start")
    if not areas:
        raise ValueError("at least one area is needed")
    if not categories:
        raise ValueError("at least one category is needed")
    for category in categories:
        if category.top_level not in DESCRIPTIONS:
            raise ValueError(
                f"category {category.code!r}: top level must be one of {', '.join(TOP_LEVELS)}"
            )
    weights = [area.weight for area in areas]
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("area weights must be finite, non-negative and not all zero")
    for area in areas:
        geometry = area.geometry
        if geometry.geom_type not in ("Polygon", "MultiPolygon") or geometry.is_empty:
            raise ValueError(f"area {area.area_id}: geometry must be a non-empty (Multi)Polygon")
        if geometry.area <= 0:
            raise ValueError(f"area {area.area_id}: geometry has no area")


def _to_epoch_seconds(moment: datetime) -> int:
    """Seconds since the Unix epoch; naive datetimes are taken to be UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return math.floor(moment.timestamp())


def _metres_per_degree_lon(lat: float) -> float:
    return _M_PER_DEG_LAT * math.cos(math.radians(lat))


def _area_centroids(areas: Sequence[SeedArea]) -> np.ndarray:
    """(n, 2) lon/lat centroids of the area geometries."""
    return shapely.get_coordinates(shapely.centroid([a.geometry for a in areas]))


def _city_centres(areas: Sequence[SeedArea], centroids: np.ndarray) -> dict[str, tuple[float, float]]:
    """Centre per city code: :data:`CITY_CENTRES`, else the area-weighted centroid."""
    centres: dict[str, tuple[float, float]] = {}
    sizes = shapely.area([a.geometry for a in areas])
    for code in sorted({a.city_code for a in areas}):
        if code in CITY_CENTRES:
            centres[code] = CITY_CENTRES[code]
            continue
        mask = np.array([a.city_code == code for a in areas])
        lon, lat = np.average(centroids[mask], axis=0, weights=sizes[mask])
        centres[code] = (float(lon), float(lat))
    return centres


def _area_probabilities(areas: Sequence[SeedArea]) -> np.ndarray:
    """Caller weight x city-centre falloff, normalised to probabilities."""
    centroids = _area_centroids(areas)
    centres = _city_centres(areas, centroids)
    factors = np.empty(len(areas))
    for i, area in enumerate(areas):
        centre_lon, centre_lat = centres[area.city_code]
        dx_km = (centroids[i, 0] - centre_lon) * _metres_per_degree_lon(centre_lat) / 1000
        dy_km = (centroids[i, 1] - centre_lat) * _M_PER_DEG_LAT / 1000
        distance_km = math.hypot(dx_km, dy_km)
        factors[i] = 1.0 / (1.0 + (distance_km / CENTRE_SCALE_KM) ** 2)
    raw = np.array([a.weight for a in areas], dtype=np.float64) * factors
    return raw / raw.sum()


def _uniform_in_area(
    rng: np.random.Generator,
    geometry: BaseGeometry,
    bounds: tuple[float, float, float, float],
    acceptance: float,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniformly inside ``geometry`` by batched rejection sampling."""
    min_lon, min_lat, max_lon, max_lat = bounds
    lon = np.empty(n)
    lat = np.empty(n)
    filled = 0
    while filled < n:
        need = n - filled
        batch = min(int(need / acceptance * 1.2) + 16, _MAX_UNIFORM_BATCH)
        x = rng.uniform(min_lon, max_lon, batch)
        y = rng.uniform(min_lat, max_lat, batch)
        keep = np.flatnonzero(shapely.contains_xy(geometry, x, y))[:need]
        lon[filled : filled + keep.size] = x[keep]
        lat[filled : filled + keep.size] = y[keep]
        filled += keep.size
    return lon, lat


def _build_area(rng: np.random.Generator, area: SeedArea) -> _AreaModel:
    """Prepare one commune: prepared geometry, sampling yield and hotspots."""
    geometry = shapely.from_wkb(shapely.to_wkb(area.geometry))  # private copy to prepare
    shapely.prepare(geometry)
    min_lon, min_lat, max_lon, max_lat = (float(b) for b in geometry.bounds)
    bounds = (min_lon, min_lat, max_lon, max_lat)
    bbox_area = (max_lon - min_lon) * (max_lat - min_lat)
    acceptance = max(geometry.area / bbox_area, 1e-4)
    count = int(rng.integers(HOTSPOTS_PER_AREA[0], HOTSPOTS_PER_AREA[1] + 1))
    hot_lon, hot_lat = _uniform_in_area(rng, geometry, bounds, acceptance, count)
    mid_lat = (min_lat + max_lat) / 2
    area_m2 = geometry.area * _M_PER_DEG_LAT * _metres_per_degree_lon(mid_lat)
    sigma_m = np.minimum(rng.uniform(*HOTSPOT_SIGMA_M, count), 0.25 * math.sqrt(area_m2))
    return _AreaModel(
        geometry=geometry,
        bounds=bounds,
        acceptance=acceptance,
        hotspot_lon=hot_lon,
        hotspot_lat=hot_lat,
        hotspot_sigma_lon=sigma_m / _metres_per_degree_lon(mid_lat),
        hotspot_sigma_lat=sigma_m / _M_PER_DEG_LAT,
        hotspot_p=rng.dirichlet(np.ones(count)),
    )


def _resolution_median_days(code: str) -> float:
    """Look up :data:`RESOLUTION_MEDIAN_DAYS` by full code, leaf keyword, then top level."""
    if code in RESOLUTION_MEDIAN_DAYS:
        return RESOLUTION_MEDIAN_DAYS[code]
    top, _, leaf = code.partition(".")
    for key in sorted(RESOLUTION_MEDIAN_DAYS, key=len, reverse=True):
        if key not in TOP_LEVELS and leaf and key in leaf:
            return RESOLUTION_MEDIAN_DAYS[key]
    return RESOLUTION_MEDIAN_DAYS.get(top, 10.0)


def _category_month_weights(tops: Sequence[str]) -> np.ndarray:
    """(12, n_categories): top-level share split evenly within a top level, x season."""
    per_top = {top: sum(1 for t in tops if t == top) for top in set(tops)}
    base = np.array([TOP_LEVEL_SHARES[t] / per_top[t] for t in tops])
    seasonal = np.array([SEASONAL_FACTORS[t] for t in tops]).T  # (12, n)
    return seasonal * base


def _build_model(
    rng: np.random.Generator, areas: Sequence[SeedArea], categories: Sequence[SeedCategory]
) -> _Model:
    """Precompute everything that is constant across chunks."""
    city_codes = tuple(sorted({a.city_code for a in areas}))
    tops = [c.top_level for c in categories]
    return _Model(
        areas=tuple(_build_area(rng, area) for area in areas),
        area_p=_area_probabilities(areas),
        area_city=np.array([city_codes.index(a.city_code) for a in areas], dtype=np.int32),
        city_codes=city_codes,
        category_top=np.array([TOP_LEVELS.index(t) for t in tops], dtype=np.int32),
        category_month_weight=_category_month_weights(tops),
        flooding_columns=np.array([t == "flooding" for t in tops]),
        resolution_median_s=np.array(
            [_resolution_median_days(c.code) * _SECONDS_PER_DAY for c in categories]
        ),
        duplicate_share=np.array([DUPLICATE_SHARES[t] for t in tops]),
        description_counts=np.array([len(DESCRIPTIONS[t]) for t in tops], dtype=np.int64),
    )


# ---------------------------------------------------------------------------
# Per-chunk sampling steps
# ---------------------------------------------------------------------------


def _hotspot_points(
    rng: np.random.Generator, area: _AreaModel, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``n`` points around the area's hotspots, kept inside the polygon.

    Returns lon, lat and a mask of which of the ``n`` slots were filled; points
    that keep falling outside after many tries are left for the caller to fill
    uniformly.
    """
    component = rng.choice(area.hotspot_p.size, size=n, p=area.hotspot_p)
    lon = np.empty(n)
    lat = np.empty(n)
    pending = np.arange(n)
    for _ in range(_MAX_HOTSPOT_TRIES):
        if pending.size == 0:
            break
        c = component[pending]
        x = area.hotspot_lon[c] + rng.standard_normal(pending.size) * area.hotspot_sigma_lon[c]
        y = area.hotspot_lat[c] + rng.standard_normal(pending.size) * area.hotspot_sigma_lat[c]
        inside = shapely.contains_xy(area.geometry, x, y)
        lon[pending[inside]] = x[inside]
        lat[pending[inside]] = y[inside]
        pending = pending[~inside]
    filled = np.ones(n, dtype=bool)
    filled[pending] = False
    return lon, lat, filled


def _points_in_area(
    rng: np.random.Generator, area: _AreaModel, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points inside one commune: hotspot clusters plus uniform background."""
    n_hot = int(rng.binomial(n, HOTSPOT_SHARE))
    hot_lon, hot_lat, filled = _hotspot_points(rng, area, n_hot)
    n_uniform = n - int(filled.sum())
    uni_lon, uni_lat = _uniform_in_area(rng, area.geometry, area.bounds, area.acceptance, n_uniform)
    return (
        np.concatenate([hot_lon[filled], uni_lon]),
        np.concatenate([hot_lat[filled], uni_lat]),
    )


def _sample_locations(
    rng: np.random.Generator, model: _Model, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area index, lon and lat for ``n`` reports (rows in random area order)."""
    area_index = rng.choice(model.area_p.size, size=n, p=model.area_p).astype(np.int32)
    order = np.argsort(area_index, kind="stable")
    counts = np.bincount(area_index, minlength=model.area_p.size)
    lon = np.empty(n)
    lat = np.empty(n)
    offset = 0
    for i in np.flatnonzero(counts):
        rows = order[offset : offset + counts[i]]
        lon[rows], lat[rows] = _points_in_area(rng, model.areas[i], int(counts[i]))
        offset += counts[i]
    return area_index, lon, lat


def distance_to_waterways_m(
    lon: np.ndarray, lat: np.ndarray, polylines: Sequence[Sequence[tuple[float, float]]]
) -> np.ndarray:
    """Distance in metres from each point to the nearest of ``polylines``.

    Uses a local equirectangular projection around the points' mean latitude:
    accurate to well under 1% over a city, and much cheaper than shapely.
    Returns ``inf`` everywhere when there are no polylines.
    """
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    best = np.full(lon.shape, np.inf)
    if lon.size == 0:
        return best
    kx = _metres_per_degree_lon(float(lat.mean()))
    px, py = lon * kx, lat * _M_PER_DEG_LAT
    for line in polylines:
        vertices = np.asarray(line, dtype=np.float64)
        for (ax, ay), (bx, by) in zip(vertices[:-1], vertices[1:]):
            ax, bx, ay, by = ax * kx, bx * kx, ay * _M_PER_DEG_LAT, by * _M_PER_DEG_LAT
            dx, dy = bx - ax, by - ay
            length2 = dx * dx + dy * dy
            t = np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
            best = np.minimum(best, np.hypot(px - (ax + t * dx), py - (ay + t * dy)))
    return best


def _flood_boost(
    model: _Model, area_index: np.ndarray, lon: np.ndarray, lat: np.ndarray
) -> np.ndarray:
    """Multiplier on flooding categories, highest right next to water."""
    boost = np.ones(lon.size)
    row_city = model.area_city[area_index]
    for city_i, code in enumerate(model.city_codes):
        lines = WATERWAYS.get(code)
        rows = np.flatnonzero(row_city == city_i)
        if not lines or rows.size == 0:
            continue
        distance = distance_to_waterways_m(lon[rows], lat[rows], list(lines.values()))
        boost[rows] = 1.0 + FLOOD_NEAR_WATER_BOOST * np.exp(-((distance / FLOOD_PROXIMITY_M) ** 2))
    return boost


def _sample_observed_at(rng: np.random.Generator, n: int, start_s: int, end_s: int) -> np.ndarray:
    """Epoch seconds in [start, end]: rising adoption, mostly local daytime."""
    u = rng.random(n)
    g = ADOPTION_GROWTH
    fraction = (np.sqrt(1.0 + g * (2.0 + g) * u) - 1.0) / g if g > 0 else u  # density ∝ 1 + g·x
    raw = start_s + np.floor(fraction * (end_s - start_s)).astype(np.int64)
    # Move each report to a daytime hour of the same local day (two peaks, some at night).
    local_day = (raw + _LOCAL_UTC_OFFSET_S) // _SECONDS_PER_DAY * _SECONDS_PER_DAY
    peak = np.where(rng.random(n) < 0.5, 9.5 * 3600, 17.0 * 3600)
    time_of_day = np.where(
        rng.random(n) < 0.9,
        peak + rng.standard_normal(n) * 2.5 * 3600,
        rng.uniform(0, _SECONDS_PER_DAY, n),
    )
    time_of_day = np.clip(time_of_day, 0, _SECONDS_PER_DAY - 1).astype(np.int64)
    moved = local_day + time_of_day - _LOCAL_UTC_OFFSET_S
    return np.where((moved >= start_s) & (moved <= end_s), moved, raw)


def _local_month_index(epoch_s: np.ndarray) -> np.ndarray:
    """0 = January … 11 = December, in Cambodian local time."""
    months = (epoch_s + _LOCAL_UTC_OFFSET_S).astype("datetime64[s]").astype("datetime64[M]")
    return months.astype(np.int64) % 12


def _sample_categories(
    rng: np.random.Generator, model: _Model, month: np.ndarray, flood_boost: np.ndarray
) -> np.ndarray:
    """Category index per row from month- and place-dependent weights."""
    weights = model.category_month_weight[month]  # (n, n_categories)
    weights[:, model.flooding_columns] *= flood_boost[:, None]
    cumulative = np.cumsum(weights, axis=1)
    u = rng.random(month.size) * cumulative[:, -1]
    index = (cumulative < u[:, None]).sum(axis=1)
    return np.minimum(index, weights.shape[1] - 1).astype(np.int32)


def _lognormal_seconds(
    rng: np.random.Generator,
    median_s: np.ndarray | float,
    sigma: float,
    n: int,
    low: float,
    high: float,
) -> np.ndarray:
    """Integer delays with the given median, clipped to [low, high] seconds."""
    values = np.exp(np.log(median_s) + sigma * rng.standard_normal(n))
    return np.clip(values, low, high).astype(np.int64)


def _sample_received_at(rng: np.random.Generator, observed: np.ndarray, end_s: int) -> np.ndarray:
    """Online reports arrive within minutes, offline-queued ones hours to days later."""
    n = observed.size
    online = rng.random(n) < 0.75
    delay = np.where(
        online,
        _lognormal_seconds(rng, 240.0, 1.0, n, 5, 6 * 3600),
        _lognormal_seconds(rng, 5 * 3600.0, 1.1, n, 600, 4 * _SECONDS_PER_DAY),
    )
    return np.minimum(observed + delay, end_s)


def _sample_accuracy(rng: np.random.Generator, n: int) -> np.ndarray:
    """GPS accuracy: mostly 3–50 m, a few network fixes of 100 m and more."""
    gps = np.clip(np.exp(np.log(10.0) + 0.55 * rng.standard_normal(n)), 3.0, 60.0)
    coarse = np.clip(np.exp(np.log(200.0) + 0.7 * rng.standard_normal(n)), 100.0, 2000.0)
    return np.round(np.where(rng.random(n) < 0.93, gps, coarse), 1).astype(np.float32)


def _sample_lifecycle(
    rng: np.random.Generator, model: _Model, category: np.ndarray, received: np.ndarray, end_s: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Status, acknowledged_at and resolved_at (epoch seconds, NaT as int) as of ``end``."""
    n = received.size
    day = _SECONDS_PER_DAY
    triage = received + _lognormal_seconds(rng, 1.5 * day, 0.9, n, 900, 30 * day)
    work = _lognormal_seconds(rng, model.resolution_median_s[category], 0.8, n, 3600, 240 * day)
    started = triage + work // 4
    closed = triage + work

    u = rng.random(n)
    rejected = u < REJECTED_SHARE
    duplicate = ~rejected & (u < REJECTED_SHARE + model.duplicate_share[category])
    abandoned = ~rejected & ~duplicate & (rng.random(n) < ABANDONED_SHARE)
    dismissed = rejected | duplicate  # closed at triage, never acknowledged
    worked = ~dismissed & ~abandoned

    status = np.full(n, STATUSES.index("new"), dtype=np.int8)
    status[worked & (triage <= end_s)] = STATUSES.index("acknowledged")
    status[worked & (started <= end_s)] = STATUSES.index("in_progress")
    status[worked & (closed <= end_s)] = STATUSES.index("resolved")
    status[rejected & (triage <= end_s)] = STATUSES.index("rejected")
    status[duplicate & (triage <= end_s)] = STATUSES.index("duplicate")

    acknowledged_at = np.where(worked & (triage <= end_s), triage, _NAT_INT)
    resolved_at = np.where(
        worked & (closed <= end_s), closed, np.where(dismissed & (triage <= end_s), triage, _NAT_INT)
    )
    return status, acknowledged_at, resolved_at


def _as_datetime(epoch_s: np.ndarray) -> np.ndarray:
    """int64 epoch seconds (NaT sentinel allowed) to datetime64[s]."""
    return epoch_s.astype(np.int64).view("datetime64[s]")


def _generate_chunk(
    rng: np.random.Generator, model: _Model, n: int, start_s: int, end_s: int
) -> SyntheticChunk:
    """One chunk of ``n`` complete reports."""
    area_index, lon, lat = _sample_locations(rng, model, n)
    observed = _sample_observed_at(rng, n, start_s, end_s)
    boost = _flood_boost(model, area_index, lon, lat)
    category = _sample_categories(rng, model, _local_month_index(observed), boost)
    received = _sample_received_at(rng, observed, end_s)
    accuracy = _sample_accuracy(rng, n)
    status, acknowledged, resolved = _sample_lifecycle(rng, model, category, received, end_s)
    description = np.floor(rng.random(n) * model.description_counts[category]).astype(np.int32)
    return SyntheticChunk(
        lon=lon,
        lat=lat,
        area_index=area_index,
        category_index=category,
        observed_at=_as_datetime(observed),
        received_at=_as_datetime(received),
        accuracy_m=accuracy,
        status=np.array(STATUSES)[status],
        acknowledged_at=_as_datetime(acknowledged),
        resolved_at=_as_datetime(resolved),
        description_index=description,
    )


def _iter_chunks(
    rng: np.random.Generator, model: _Model, count: int, chunk_size: int, start_s: int, end_s: int
) -> Iterator[SyntheticChunk]:
    remaining = count
    while remaining > 0:
        n = min(chunk_size, remaining)
        yield _generate_chunk(rng, model, n, start_s, end_s)
        remaining -= n


def generate_reports(
    areas: Sequence[SeedArea],
    categories: Sequence[SeedCategory],
    count: int,
    *,
    seed: int = 42,
    start: datetime,
    end: datetime,
    chunk_size: int = 50_000,
) -> Iterator[SyntheticChunk]:
    """Yield ``count`` synthetic reports in chunks of at most ``chunk_size`` rows.

    ``start``/``end`` bound ``observed_at``; ``end`` is also "now" for statuses
    and no timestamp is ever after it. Naive datetimes are taken as UTC.
    Arguments are validated (``ValueError``) and communes prepared when this
    is called, before the first chunk is requested. The same arguments give
    identical chunks.
    """
    start_s, end_s = _to_epoch_seconds(start), _to_epoch_seconds(end)
    _validate_inputs(areas, categories, count, start_s, end_s, chunk_size)
    rng = np.random.default_rng(seed)
    model = _build_model(rng, areas, categories)
    return _iter_chunks(rng, model, count, chunk_size, start_s, end_s)
