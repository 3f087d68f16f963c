"""Tests for geo.coordinates: lon/lat validation and bbox parsing."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from geo.coordinates import BBox, CoordinateError, parse_bbox, validate_lon_lat


def _error_of(call: object, *args: object) -> CoordinateError:
    with pytest.raises(CoordinateError) as info:
        call(*args)  # type: ignore[operator]
    return info.value


# --- validate_lon_lat -------------------------------------------------------


@pytest.mark.parametrize(
    ("lon", "lat"),
    [
        (104.9282, 11.5564),
        (103, 10),
        (-180, -90),
        (180, 90),
        (0.0, -0.0),
        (np.float64(104.9), np.float64(11.5)),
    ],
)
def test_valid_lon_lat_returned_as_floats(lon: object, lat: object) -> None:
    result = validate_lon_lat(lon, lat)
    assert result == (float(lon), float(lat))  # type: ignore[arg-type]
    assert all(type(v) is float for v in result)


@pytest.mark.parametrize(
    ("lon", "lat"),
    [
        (math.nan, 11.5),
        (104.9, math.nan),
        (math.inf, 11.5),
        (104.9, -math.inf),
        (np.float64("nan"), 11.5),
    ],
)
def test_non_finite_rejected(lon: object, lat: object) -> None:
    assert _error_of(validate_lon_lat, lon, lat).error == "location.not_finite"


@pytest.mark.parametrize(
    ("lon", "lat"),
    [
        (True, 11.5),
        (104.9, False),
        ("104.9", 11.5),
        (104.9, "11.5"),
        (None, 11.5),
        ([104.9], 11.5),
    ],
)
def test_non_numbers_rejected(lon: object, lat: object) -> None:
    assert _error_of(validate_lon_lat, lon, lat).error == "location.not_a_number"


def test_latitude_91_out_of_range_with_readable_message() -> None:
    error = _error_of(validate_lon_lat, 104.9, 91)
    assert error.error == "location.out_of_range"
    assert error.message == "latitude 91 is outside −90…90"
    assert str(error) == error.message


def test_longitude_minus_181_out_of_range() -> None:
    error = _error_of(validate_lon_lat, -181, 11.5)
    assert error.error == "location.out_of_range"
    assert "longitude -181" in error.message
    assert "−180…180" in error.message


@pytest.mark.parametrize(("lon", "lat"), [(180.0000001, 0), (0, -90.5), (10**400, 0)])
def test_other_out_of_range(lon: object, lat: object) -> None:
    assert _error_of(validate_lon_lat, lon, lat).error == "location.out_of_range"


def test_coordinate_error_is_value_error_and_pickles() -> None:
    error = CoordinateError("location.not_finite", "longitude must be a finite number, got nan")
    assert isinstance(error, ValueError)
    restored = pickle.loads(pickle.dumps(error))
    assert (restored.error, restored.message) == (error.error, error.message)


# --- parse_bbox -------------------------------------------------------------


def test_valid_bbox() -> None:
    bbox = parse_bbox("104.85,11.50,104.95,11.60")
    assert bbox == BBox(104.85, 11.50, 104.95, 11.60)
    assert bbox.as_tuple() == (104.85, 11.50, 104.95, 11.60)
    assert bbox.area_deg2 == pytest.approx(0.01)


def test_bbox_tolerates_spaces_signs_and_exponents() -> None:
    assert parse_bbox(" -1e1 , -5 ,+10.5, 5.") == BBox(-10.0, -5.0, 10.5, 5.0)


def test_bbox_whole_world_allowed() -> None:
    assert parse_bbox("-180,-90,180,90").area_deg2 == 360 * 180


@pytest.mark.parametrize(
    "text",
    [
        "",
        "104.85,11.50,104.95",
        "104.85,11.50,104.95,11.60,1",
        "104.85;11.50;104.95;11.60",
        "a,b,c,d",
        "104.85,,104.95,11.60",
        "nan,11.50,104.95,11.60",
        "104.85,11.50,inf,11.60",
        "104.85,11.50,104.95,-Infinity",
        "1e999,11.50,104.95,11.60",
        "1_0,11.50,104.95,11.60",
        "0x10,11.50,104.95,11.60",
    ],
)
def test_malformed_bbox(text: str) -> None:
    assert _error_of(parse_bbox, text).error == "bbox.malformed"


def test_non_string_bbox_is_malformed() -> None:
    assert _error_of(parse_bbox, None).error == "bbox.malformed"


@pytest.mark.parametrize(
    "text",
    ["-181,11.5,104.95,11.6", "104.85,11.5,180.5,11.6", "104.85,-91,104.95,11.6", "104.85,11.5,104.95,91"],
)
def test_out_of_range_bbox(text: str) -> None:
    assert _error_of(parse_bbox, text).error == "bbox.out_of_range"


@pytest.mark.parametrize(
    "text",
    [
        "104.95,11.50,104.85,11.60",  # lon inverted
        "104.85,11.60,104.95,11.50",  # lat inverted
        "104.85,11.50,104.85,11.60",  # zero width
        "104.85,11.50,104.95,11.50",  # zero height
    ],
)
def test_inverted_or_empty_bbox(text: str) -> None:
    assert _error_of(parse_bbox, text).error == "bbox.inverted"


def test_bbox_constructor_validates_too() -> None:
    assert _error_of(BBox, 1.0, 1.0, 0.0, 2.0).error == "bbox.inverted"
    assert _error_of(BBox, math.nan, 1.0, 2.0, 2.0).error == "bbox.malformed"
