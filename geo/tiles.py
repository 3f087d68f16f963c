"""Web-map arithmetic: tile addresses, tile bounds and heatmap cell sizes.

Pure functions on numbers, no database. Tiles follow the XYZ ("slippy map")
scheme of OpenStreetMap and Leaflet in Web Mercator (EPSG:3857): at zoom
``z`` there are ``2**z`` columns ``x`` and rows ``y``, row 0 at the top.
Failures raise :class:`TileError`, with a stable ``error`` key as
:class:`geo.coordinates.CoordinateError` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from geo.coordinates import BBox, CoordinateError

__all__ = [
    "MAX_ZOOM",
    "TileError",
    "Tile",
    "parse_tile",
    "heatmap_cell_degrees",
]

MAX_ZOOM = 22
# Half the width of the Web Mercator square, in metres.
MERCATOR_HALF = 20037508.342789244
MERCATOR_MAX_LAT = 85.0511287798066


class TileError(CoordinateError):
    """A tile address that does not exist (``error`` is ``"tile.out_of_range"`` or ``"tile.malformed"``).

    It has CoordinateError's shape: a stable ``error`` key and an English ``message``.
    """


@dataclass(frozen=True)
class Tile:
    z: int
    x: int
    y: int

    def bounds_lonlat(self) -> BBox:
        """The tile's extent in WGS 84 degrees (west, south, east, north)."""
        n = 2 ** self.z
        west = self.x / n * 360.0 - 180.0
        east = (self.x + 1) / n * 360.0 - 180.0
        north = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * self.y / n))))
        south = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * (self.y + 1) / n))))
        return BBox(west, south, east, north)

    def width_m(self) -> float:
        """Width of the tile in Web Mercator metres (not ground metres)."""
        return 2 * MERCATOR_HALF / 2 ** self.z


def parse_tile(z: object, x: object, y: object) -> Tile:
    """Validate an XYZ address: integers, ``0 <= z <= MAX_ZOOM`` and ``0 <= x, y < 2**z``."""
    values = []
    for name, value in (("z", z), ("x", x), ("y", y)):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.isdigit() and value.isascii():
                value = int(value)
            else:
                raise TileError("tile.malformed", f"tile {name} must be a whole number, got {value!r}")
        values.append(value)
    zi, xi, yi = values
    if not 0 <= zi <= MAX_ZOOM:
        raise TileError("tile.out_of_range", f"zoom {zi} is outside 0…{MAX_ZOOM}")
    limit = 2 ** zi
    for name, value in (("x", xi), ("y", yi)):
        if not 0 <= value < limit:
            raise TileError("tile.out_of_range", f"tile {name} {value} is outside 0…{limit - 1} at zoom {zi}")
    return Tile(zi, xi, yi)


def heatmap_cell_degrees(bbox: BBox | None = None, *, zoom: int | None = None, cells: int = 64) -> float:
    """Heatmap cell size in degrees: a power-of-two fraction of 360°.

    With ``zoom``, a cell is 16 screen pixels at that zoom (a tile is 256 px).
    Otherwise the cell is the smallest such size that still fits at most
    ``cells`` cells across the wider side of ``bbox``. Sizes come from a fixed
    ladder so a panned map keeps the same cell edges, and the server can
    cache and compare them.
    """
    if zoom is not None:
        if not 0 <= zoom <= MAX_ZOOM:
            raise TileError("tile.out_of_range", f"zoom {zoom} is outside 0…{MAX_ZOOM}")
        return 360.0 / 2 ** (zoom + 4)
    if bbox is None:
        raise ValueError("give a bbox or a zoom")
    if cells < 1:
        raise ValueError("cells must be at least 1")
    span = max(bbox.width_deg, bbox.height_deg)
    exponent = math.floor(math.log2(360.0 * cells / span))
    size = 360.0 / 2 ** exponent
    while span / size > cells:  # guard against rounding at exact powers of two
        size *= 2
    return size
