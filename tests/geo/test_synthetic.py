"""Tests for geo.synthetic: determinism, geometry, timing and lifecycle realism."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import box, shape

from geo.synthetic import (
    DESCRIPTIONS,
    STATUSES,
    TOP_LEVELS,
    SeedArea,
    SeedCategory,
    SyntheticChunk,
    distance_to_waterways_m,
    generate_reports,
)

END = datetime(2025, 11, 20, 12, 0, tzinfo=timezone.utc)
START = END - timedelta(days=730)
SAMPLE_DATA = Path(__file__).resolve().parents[2] / "sample_data"

# Two hand-made square "communes" of ~1.6 km: one at the Chaktomuk river
# confluence next to the city centre, one ~19 km west, far from any river.
RIVER_SQUARE = box(104.930, 11.555, 104.945, 11.570)
FAR_SQUARE = box(104.750, 11.500, 104.765, 11.515)

CATEGORIES = [
    SeedCategory(code)
    for code in (
        "waste.overflowing_bin",
        "waste.illegal_dumping",
        "flooding.blocked_drain",
        "flooding.street_flooding",
        "water.no_supply",
        "street.pothole",
        "street.streetlight",
    )
]
FIELDS = (
    "lon",
    "lat",
    "area_index",
    "category_index",
    "observed_at",
    "received_at",
    "accuracy_m",
    "status",
    "acknowledged_at",
    "resolved_at",
    "description_index",
)


def _areas(river_weight: float = 1.0, far_weight: float = 1.0) -> list[SeedArea]:
    return [
        SeedArea(1, 10, 100, "PP", RIVER_SQUARE, river_weight),
        SeedArea(2, 11, 100, "PP", FAR_SQUARE, far_weight),
    ]


def _concat(chunks: list[SyntheticChunk]) -> SyntheticChunk:
    """All chunks as one chunk (the tests reason about the whole data set)."""
    return SyntheticChunk(**{f: np.concatenate([getattr(c, f) for c in chunks]) for f in FIELDS})


def _generate(count: int, areas: list[SeedArea] | None = None, **kwargs: object) -> SyntheticChunk:
    chunks = list(
        generate_reports(areas or _areas(), CATEGORIES, count, start=START, end=END, **kwargs)  # type: ignore[arg-type]
    )
    return _concat(chunks)


def _int_view(values: np.ndarray) -> np.ndarray:
    """Compare datetime arrays exactly, NaT included."""
    return values.view(np.int64) if values.dtype.kind == "M" else values


def _is_flooding(data: SyntheticChunk) -> np.ndarray:
    flooding = np.array([c.top_level == "flooding" for c in CATEGORIES])
    return flooding[data.category_index]


@pytest.fixture(scope="module")
def reports() -> SyntheticChunk:
    """A mid-sized data set over the two squares, flooding-test friendly weights."""
    return _generate(60_000, _areas(river_weight=1.0, far_weight=40.0), seed=7)


# --- determinism and chunking -------------------------------------------------


def test_same_seed_gives_identical_arrays() -> None:
    first = _generate(5_000, seed=3, chunk_size=1_000)
    second = _generate(5_000, seed=3, chunk_size=1_000)
    for field in FIELDS:
        np.testing.assert_array_equal(_int_view(getattr(first, field)), _int_view(getattr(second, field)))


def test_different_seed_gives_different_data() -> None:
    first = _generate(2_000, seed=1)
    second = _generate(2_000, seed=2)
    assert not np.array_equal(first.lon, second.lon)
    assert not np.array_equal(first.category_index, second.category_index)
    assert not np.array_equal(_int_view(first.observed_at), _int_view(second.observed_at))


def test_chunks_add_up_exactly_to_count() -> None:
    chunks = list(generate_reports(_areas(), CATEGORIES, 12_345, start=START, end=END, chunk_size=1_000))
    assert [len(c) for c in chunks] == [1_000] * 12 + [345]
    for chunk in chunks:
        assert {len(getattr(chunk, f)) for f in FIELDS} == {len(chunk)}


def test_zero_count_yields_nothing() -> None:
    assert list(generate_reports(_areas(), CATEGORIES, 0, start=START, end=END)) == []


def test_dtypes() -> None:
    data = _generate(500)
    assert data.lon.dtype == np.float64 and data.lat.dtype == np.float64
    assert data.area_index.dtype == np.int32 and data.category_index.dtype == np.int32
    assert data.description_index.dtype == np.int32
    assert data.accuracy_m.dtype == np.float32
    for field in ("observed_at", "received_at", "acknowledged_at", "resolved_at"):
        assert getattr(data, field).dtype == np.dtype("datetime64[s]")


def test_naive_datetimes_are_utc() -> None:
    naive = list(
        generate_reports(
            _areas(), CATEGORIES, 300, start=START.replace(tzinfo=None), end=END.replace(tzinfo=None)
        )
    )[0]
    aware = _generate(300)
    np.testing.assert_array_equal(naive.observed_at.view(np.int64), aware.observed_at.view(np.int64))


# --- where ------------------------------------------------------------------


def test_points_inside_their_square_commune(reports: SyntheticChunk) -> None:
    geometries = np.array([RIVER_SQUARE, FAR_SQUARE])
    assert shapely.contains_xy(geometries[reports.area_index], reports.lon, reports.lat).all()
    assert set(np.unique(reports.area_index)) == {0, 1}


def _phnom_penh_communes() -> list[SeedArea]:
    collection = json.loads((SAMPLE_DATA / "phnom_penh_admin_areas.geojson").read_text(encoding="utf-8"))
    communes = [f for f in collection["features"] if f["properties"]["level"] == "commune"]
    areas = []
    for i, feature in enumerate(communes):
        geometry = shape(feature["geometry"])
        areas.append(SeedArea(i + 1, 0, 1, "PP", geometry, float(geometry.area)))
    return areas


def test_points_inside_real_phnom_penh_communes() -> None:
    areas = _phnom_penh_communes()
    data = _generate(20_000, areas, chunk_size=7_000)
    geometries = np.array([a.geometry for a in areas])
    assert shapely.contains_xy(geometries[data.area_index], data.lon, data.lat).all()
    assert len(np.unique(data.area_index)) > len(areas) // 2


def test_central_commune_gets_more_reports_than_equal_far_one() -> None:
    data = _generate(10_000, _areas(river_weight=1.0, far_weight=1.0))
    central, far = np.bincount(data.area_index, minlength=2)
    assert central > 5 * far


def test_points_cluster_around_hotspots() -> None:
    data = _generate(20_000, [SeedArea(1, 1, 1, "PP", FAR_SQUARE, 1.0)])
    counts, _, _ = np.histogram2d(data.lon, data.lat, bins=20, range=[[104.750, 104.765], [11.500, 11.515]])
    uniform_expectation = data.lon.size / 400
    assert counts.max() > 2.5 * uniform_expectation  # a uniform sample stays below ~1.6x
    assert counts.min() > 0  # the uniform background still covers the commune


# --- when ---------------------------------------------------------------------


def test_time_ordering_and_window(reports: SyntheticChunk) -> None:
    start, end = np.datetime64(START.replace(tzinfo=None), "s"), np.datetime64(END.replace(tzinfo=None), "s")
    assert (reports.observed_at >= start).all() and (reports.observed_at <= end).all()
    assert (reports.received_at >= reports.observed_at).all()
    assert (reports.received_at <= end).all()
    delay = (reports.received_at - reports.observed_at).astype(np.int64)
    assert np.median(delay) < 3600  # most arrive within minutes
    assert delay.max() > 86_400  # some were queued offline for over a day


def test_observed_at_spans_the_window(reports: SyntheticChunk) -> None:
    months = reports.observed_at.astype("datetime64[M]")
    assert len(np.unique(months)) >= 24


# --- what ---------------------------------------------------------------------


def test_flooding_share_higher_in_september_than_february(reports: SyntheticChunk) -> None:
    month = reports.observed_at.astype("datetime64[M]").astype(np.int64) % 12 + 1
    flooding = _is_flooding(reports)
    assert flooding[month == 9].mean() > 2 * flooding[month == 2].mean()


def test_flooding_share_higher_near_rivers(reports: SyntheticChunk) -> None:
    flooding = _is_flooding(reports)
    near, far = flooding[reports.area_index == 0], flooding[reports.area_index == 1]
    assert near.size > 1_000 and far.size > 1_000
    assert near.mean() > 1.5 * far.mean()


def test_distance_to_waterways() -> None:
    line = [(104.90, 11.50), (104.95, 11.50)]
    lon = np.array([104.92, 104.92, 104.90, 105.00])
    lat = np.array([11.50, 11.51, 11.50, 11.50])
    distance = distance_to_waterways_m(lon, lat, [line])
    assert distance[0] == pytest.approx(0.0, abs=1e-6)
    assert distance[1] == pytest.approx(1_113, rel=0.01)
    assert distance[2] == pytest.approx(0.0, abs=1e-6)
    assert distance[3] == pytest.approx(0.05 * 111_320 * np.cos(np.radians(11.5)), rel=0.01)
    assert np.isinf(distance_to_waterways_m(lon, lat, [])).all()


def test_descriptions_are_bilingual_and_indexed_per_top_level(reports: SyntheticChunk) -> None:
    assert set(DESCRIPTIONS) == set(TOP_LEVELS)
    for texts in DESCRIPTIONS.values():
        khmer = [t for t in texts if any("\u1780" <= ch <= "\u17ff" for ch in t)]
        assert 0 < len(khmer) < len(texts)
    tops = [c.top_level for c in CATEGORIES]
    limits = np.array([len(DESCRIPTIONS[t]) for t in tops])[reports.category_index]
    assert (reports.description_index >= 0).all()
    assert (reports.description_index < limits).all()


def test_accuracy_mostly_typical_gps_with_some_coarse_fixes(reports: SyntheticChunk) -> None:
    accuracy = reports.accuracy_m
    assert accuracy.min() >= 3
    assert np.mean((accuracy >= 3) & (accuracy <= 50)) > 0.85
    assert np.mean(accuracy >= 100) > 0.02


# --- lifecycle ------------------------------------------------------------------


def test_statuses_and_timestamps_are_consistent(reports: SyntheticChunk) -> None:
    status = reports.status
    assert set(np.unique(status)) <= set(STATUSES)
    acknowledged = ~np.isnat(reports.acknowledged_at)
    resolved = ~np.isnat(reports.resolved_at)
    closed = np.isin(status, ["resolved", "rejected", "duplicate"])
    np.testing.assert_array_equal(resolved, closed)
    np.testing.assert_array_equal(acknowledged, np.isin(status, ["acknowledged", "in_progress", "resolved"]))
    assert not acknowledged[status == "new"].any()
    assert (reports.acknowledged_at[acknowledged] > reports.received_at[acknowledged]).all()
    both = acknowledged & resolved
    assert (reports.resolved_at[both] > reports.acknowledged_at[both]).all()
    assert (reports.resolved_at[resolved] >= reports.received_at[resolved]).all()
    end = np.datetime64(END.replace(tzinfo=None), "s")
    assert (reports.acknowledged_at[acknowledged] <= end).all()
    assert (reports.resolved_at[resolved] <= end).all()


def test_acknowledgement_median_is_one_to_two_days(reports: SyntheticChunk) -> None:
    acknowledged = ~np.isnat(reports.acknowledged_at)
    delay = (reports.acknowledged_at - reports.received_at)[acknowledged].astype(np.int64)
    assert 1 * 86_400 <= np.median(delay) <= 2 * 86_400


def test_old_reports_mostly_closed_recent_mostly_open(reports: SyntheticChunk) -> None:
    end = np.datetime64(END.replace(tzinfo=None), "s")
    age_days = (end - reports.received_at).astype("timedelta64[D]").astype(np.int64)
    closed = np.isin(reports.status, ["resolved", "rejected", "duplicate"])
    old, recent = age_days > 180, age_days < 3
    assert old.sum() > 1_000 and recent.sum() > 50
    assert closed[old].mean() > 0.9
    assert (~closed[recent]).mean() > 0.7
    assert np.isin(reports.status[old], ["rejected", "duplicate"]).any()


def test_streetlights_fixed_faster_than_potholes(reports: SyntheticChunk) -> None:
    codes = [c.code for c in CATEGORIES]
    fixed = reports.status == "resolved"

    def median_days(code: str) -> float:
        rows = fixed & (reports.category_index == codes.index(code))
        return float(np.median((reports.resolved_at - reports.acknowledged_at)[rows].astype(np.int64))) / 86_400

    assert median_days("street.streetlight") * 2 < median_days("street.pothole")


# --- argument validation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("areas", "categories", "count", "kwargs"),
    [
        (_areas(), CATEGORIES, -1, {}),
        (_areas(), CATEGORIES, 10, {"chunk_size": 0}),
        (_areas(), CATEGORIES, 10, {"start": END, "end": START}),
        ([], CATEGORIES, 10, {}),
        (_areas(), [], 10, {}),
        (_areas(), [SeedCategory("noise.karaoke")], 10, {}),
        (_areas(0.0, 0.0), CATEGORIES, 10, {}),
        ([SeedArea(1, 1, 1, "PP", shapely.Point(104.9, 11.5), 1.0)], CATEGORIES, 10, {}),
    ],
)
def test_bad_arguments_raise_at_call_time(
    areas: list[SeedArea], categories: list[SeedCategory], count: int, kwargs: dict[str, object]
) -> None:
    options: dict[str, object] = {"start": START, "end": END, **kwargs}
    with pytest.raises(ValueError):
        generate_reports(areas, categories, count, **options)  # type: ignore[arg-type]
