"""geo.tiles: tile addresses, tile bounds and heatmap cell sizes. Pure arithmetic, no database."""

from __future__ import annotations

import math

import pytest

from geo.coordinates import BBox
from geo.tiles import (
    MAX_ZOOM,
    MERCATOR_HALF,
    MERCATOR_MAX_LAT,
    Tile,
    TileError,
    heatmap_cell_degrees,
    parse_tile,
)


def slippy_tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The OpenStreetMap wiki's formula for the tile holding a point."""
    n = 2 ** z
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return x, y


# --- parse_tile --------------------------------------------------------------------------------------------------

def test_parse_tile_from_url_strings():
    assert parse_tile("14", "13009", "7671") == Tile(14, 13009, 7671)


def test_parse_tile_from_ints_and_leading_zeros():
    assert parse_tile(3, 7, 0) == Tile(3, 7, 0)
    assert parse_tile("03", "007", "0") == Tile(3, 7, 0)


def test_parse_tile_world_tile_and_max_zoom():
    assert parse_tile("0", "0", "0") == Tile(0, 0, 0)
    last = 2 ** MAX_ZOOM - 1
    assert MAX_ZOOM == 22
    assert parse_tile(str(MAX_ZOOM), str(last), str(last)) == Tile(22, last, last)


@pytest.mark.parametrize("z", [23, "23", 99, "100000000000000000000"])
def test_zoom_above_22_is_out_of_range(z):
    with pytest.raises(TileError) as caught:
        parse_tile(z, 0, 0)
    assert caught.value.error == "tile.out_of_range"
    assert "zoom" in caught.value.message


@pytest.mark.parametrize("z", [0, 1, 5, 14, 22])
def test_x_or_y_equal_to_two_to_the_zoom_is_out_of_range(z):
    edge = 2 ** z
    assert parse_tile(z, edge - 1, edge - 1) == Tile(z, edge - 1, edge - 1)
    for x, y, name in ((edge, 0, "x"), (0, edge, "y")):
        with pytest.raises(TileError) as caught:
            parse_tile(z, x, y)
        assert caught.value.error == "tile.out_of_range"
        assert f"tile {name} {edge}" in caught.value.message


@pytest.mark.parametrize("address", [(-1, 0, 0), (1, -1, 0), (1, 0, -1)])
def test_negative_integers_are_out_of_range(address):
    with pytest.raises(TileError) as caught:
        parse_tile(*address)
    assert caught.value.error == "tile.out_of_range"


@pytest.mark.parametrize("value", ["-1", "+1", "1.5", "1e3", "abc", "", " 1", "1 ", "0x1",
                                   "១", "٣", "²"])  # Khmer and Arabic-Indic digits and a superscript are not ASCII
def test_non_digit_strings_are_malformed(value):
    for address in ((value, "0", "0"), ("1", value, "0"), ("1", "0", value)):
        with pytest.raises(TileError) as caught:
            parse_tile(*address)
        assert caught.value.error == "tile.malformed"
        assert "whole number" in caught.value.message


@pytest.mark.parametrize("value", [True, False, 1.0, None, b"1", [1]])
def test_bools_floats_and_other_types_are_malformed(value):
    with pytest.raises(TileError) as caught:
        parse_tile(1, value, 0)
    assert caught.value.error == "tile.malformed"


def test_tile_error_is_a_value_error_with_message():
    with pytest.raises(ValueError) as caught:
        parse_tile("z", "0", "0")
    assert isinstance(caught.value, TileError)
    assert str(caught.value) == caught.value.message == "tile z must be a whole number, got 'z'"


# --- Tile.bounds_lonlat and width_m ------------------------------------------------------------------------------

def test_world_tile_covers_the_mercator_world():
    bounds = Tile(0, 0, 0).bounds_lonlat()
    assert isinstance(bounds, BBox)
    assert bounds.min_lon == -180.0 and bounds.max_lon == 180.0
    assert bounds.max_lat == pytest.approx(85.0511287798066, abs=1e-9)
    assert bounds.min_lat == pytest.approx(-85.0511287798066, abs=1e-9)
    assert bounds.max_lat == pytest.approx(MERCATOR_MAX_LAT, abs=1e-9)


@pytest.mark.parametrize("x, y, expected", [
    (0, 0, (-180.0, 0.0, 0.0, MERCATOR_MAX_LAT)),   # north-west; row 0 is at the top
    (1, 0, (0.0, 0.0, 180.0, MERCATOR_MAX_LAT)),    # north-east
    (0, 1, (-180.0, -MERCATOR_MAX_LAT, 0.0, 0.0)),  # south-west
    (1, 1, (0.0, -MERCATOR_MAX_LAT, 180.0, 0.0)),   # south-east
])
def test_zoom_one_quadrants(x, y, expected):
    bounds = Tile(1, x, y).bounds_lonlat()
    assert bounds.as_tuple() == pytest.approx(expected, abs=1e-9)


def test_neighbouring_tiles_share_edges_and_contain_their_point():
    lon, lat, z = 104.9282, 11.5625, 16  # Doun Penh
    x, y = slippy_tile(lon, lat, z)
    here = Tile(z, x, y).bounds_lonlat()
    assert here.min_lon <= lon < here.max_lon and here.min_lat < lat <= here.max_lat
    east = Tile(z, x + 1, y).bounds_lonlat()
    south = Tile(z, x, y + 1).bounds_lonlat()
    assert east.min_lon == pytest.approx(here.max_lon, abs=1e-12)
    assert south.max_lat == pytest.approx(here.min_lat, abs=1e-12)
    assert here.width_deg == pytest.approx(360.0 / 2 ** z)


def test_width_in_mercator_metres_halves_with_each_zoom():
    assert Tile(0, 0, 0).width_m() == pytest.approx(2 * MERCATOR_HALF)
    assert Tile(1, 1, 1).width_m() == pytest.approx(MERCATOR_HALF)
    assert Tile(14, 0, 0).width_m() == pytest.approx(2 * MERCATOR_HALF / 16384)
    assert Tile(14, 0, 0).width_m() == pytest.approx(2445.98, abs=0.01)


# --- heatmap_cell_degrees ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("zoom", range(MAX_ZOOM + 1))
def test_cell_from_zoom_is_16_pixels(zoom):
    assert heatmap_cell_degrees(zoom=zoom) == 360.0 / 2 ** (zoom + 4)


def test_cell_from_zoom_examples():
    assert heatmap_cell_degrees(zoom=0) == 22.5
    assert heatmap_cell_degrees(zoom=12) == 360.0 / 65536
    # zoom wins over the bbox
    assert heatmap_cell_degrees(BBox(0, 0, 100, 50), zoom=3) == 360.0 / 128


@pytest.mark.parametrize("zoom", [-1, 23, 40])
def test_cell_from_zoom_out_of_range(zoom):
    with pytest.raises(TileError) as caught:
        heatmap_cell_degrees(zoom=zoom)
    assert caught.value.error == "tile.out_of_range"


def on_ladder(size: float) -> bool:
    exponent = math.log2(360.0 / size)
    return exponent == round(exponent)


@pytest.mark.parametrize("bbox, cells", [
    (BBox(104.71266, 11.42249, 105.05038, 11.73632), 64),   # Phnom Penh
    (BBox(103.18184, 10.54261, 105.05038, 11.73632), 64),   # the whole service area
    (BBox(104.92, 11.55, 104.94, 11.57), 4),
    (BBox(104.92, 11.55, 104.94, 11.57), 256),
    (BBox(-180, -90, 180, 90), 4),
    (BBox(10, 10, 10.001, 10.0001), 64),
    (BBox(0, 0, 0.3, 7.7), 37),  # taller than wide: the height counts
])
def test_cell_from_bbox_is_smallest_ladder_step_that_fits(bbox, cells):
    size = heatmap_cell_degrees(bbox, cells=cells)
    span = max(bbox.width_deg, bbox.height_deg)
    assert on_ladder(size)
    assert span / size <= cells            # fits
    assert span / (size / 2) > cells       # the next finer step would not


def test_cell_from_bbox_examples():
    pp = BBox(104.71266, 11.42249, 105.05038, 11.73632)  # 0.3377° wide: 0.3377/64 = 0.00528 → 360/2**16
    assert heatmap_cell_degrees(pp) == 360.0 / 2 ** 16
    assert heatmap_cell_degrees(pp, cells=4) == 360.0 / 2 ** 12


def test_cell_from_bbox_at_an_exact_power_of_two():
    bbox = BBox(0, 0, 360.0 / 2 ** 5, 1)  # exactly 64 cells of 360/2**11 across
    assert heatmap_cell_degrees(bbox, cells=64) == 360.0 / 2 ** 11
    assert heatmap_cell_degrees(BBox(0, 0, 360.0 / 2 ** 5 * 1.0001, 1), cells=64) == 360.0 / 2 ** 10


def test_cell_sizes_repeat_when_panning():
    a = heatmap_cell_degrees(BBox(104.80, 11.50, 104.90, 11.60))
    b = heatmap_cell_degrees(BBox(104.83, 11.52, 104.93, 11.62))
    assert a == b


def test_cell_needs_a_bbox_or_a_zoom():
    with pytest.raises(ValueError, match="give a bbox or a zoom"):
        heatmap_cell_degrees()


@pytest.mark.parametrize("cells", [0, -5])
def test_cell_count_must_be_positive(cells):
    with pytest.raises(ValueError, match="cells must be at least 1"):
        heatmap_cell_degrees(BBox(0, 0, 1, 1), cells=cells)
