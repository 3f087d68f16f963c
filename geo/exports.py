"""Open-data export writers: GeoJSON, CSV (with optional HXL tags), GeoPackage, FlatGeobuf, zipped Shapefile.

Pure: the writers take batches of rows (tuples in :data:`EXPORT_FIELDS`
order, as ``service.layer_queries.export_statement`` selects them) and a
:class:`Licence`, and know nothing of Flask or the database. GeoJSON and CSV
are generators of byte chunks, so a caller can stream them with flat memory.
The file formats go through pyogrio (GDAL) from Arrow record batches, one
batch at a time.

Only public fields exist here: there is no column for contact details,
device or worker ids or tracking tokens, so no export can carry them.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import orjson

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "EXPORT_FIELDS",
    "FILE_FORMATS",
    "FORMATS",
    "Licence",
    "csv_chunks",
    "geojson_chunks",
    "write_file",
]


@dataclass(frozen=True)
class ExportField:
    name: str
    shp_name: str  # dBase field names are at most 10 characters
    hxl: str
    kind: str  # "str", "int", "float" or "datetime"


# The public columns of an export, in the order the export query selects them.
EXPORT_FIELDS: tuple[ExportField, ...] = (
    ExportField("id", "id", "#meta+id", "str"),
    ExportField("reference", "reference", "#meta+ref", "str"),
    ExportField("category", "category", "#subsector+code", "str"),
    ExportField("category_group", "cat_group", "#sector+code", "str"),
    ExportField("status", "status", "#status", "str"),
    ExportField("observed_at", "observed", "#date+observed", "datetime"),
    ExportField("received_at", "received", "#date+reported", "datetime"),
    ExportField("acknowledged_at", "acknowledg", "#date+acknowledged", "datetime"),
    ExportField("closed_at", "closed", "#date+closed", "datetime"),
    ExportField("lon", "lon", "#geo+lon", "float"),
    ExportField("lat", "lat", "#geo+lat", "float"),
    ExportField("city", "city", "#adm1+code", "str"),
    ExportField("khan", "khan", "#adm2+name", "str"),
    ExportField("khan_km", "khan_km", "#adm2+name+i_km", "str"),
    ExportField("sangkat", "sangkat", "#adm3+name", "str"),
    ExportField("sangkat_km", "sangkat_km", "#adm3+name+i_km", "str"),
    ExportField("description", "descriptio", "#description", "str"),
    ExportField("landmark", "landmark", "#loc+name", "str"),
    ExportField("source", "source", "#meta+source", "str"),
    ExportField("photo_count", "photos", "#indicator+num+photos", "int"),
)
_NAMES = tuple(f.name for f in EXPORT_FIELDS)
_LON = _NAMES.index("lon")
_LAT = _NAMES.index("lat")
_ID = _NAMES.index("id")
# GeoJSON carries lon/lat in the geometry only.
_PROPERTY_INDEXES = tuple(i for i in range(len(EXPORT_FIELDS)) if i not in (_LON, _LAT))
_PROPERTY_NAMES = tuple(_NAMES[i] for i in _PROPERTY_INDEXES)

# format → (media type, file suffix)
FORMATS: dict[str, tuple[str, str]] = {
    "geojson": ("application/geo+json", "geojson"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "gpkg": ("application/geopackage+sqlite3", "gpkg"),
    "fgb": ("application/flatgeobuf", "fgb"),
    "shp.zip": ("application/zip", "shp.zip"),
}
FILE_FORMATS = ("gpkg", "fgb", "shp.zip")
LAYER_NAME = "civicmap_reports"
DBF_TEXT_BYTES = 254  # a dBase text field holds at most 254 bytes: about 84 Khmer characters
_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS


@dataclass(frozen=True)
class Licence:
    """Licence and attribution texts carried by every export."""

    data_licence: str  # e.g. "CC BY 4.0"
    attribution: str  # who to credit for the reports
    boundaries: str = "Boundaries: geoBoundaries (www.geoboundaries.org), CC BY 4.0"

    def text(self) -> str:
        return (f"Reports: {self.attribution}, licensed {self.data_licence}. {self.boundaries}. "
                "Contact details, device and worker ids and hidden reports are never exported.")


def _feature_batch(rows: Sequence[tuple[Any, ...]]) -> bytes:
    features = [
        {"type": "Feature", "id": row[_ID],
         "geometry": {"type": "Point", "coordinates": [round(row[_LON], 7), round(row[_LAT], 7)]},
         "properties": dict(zip(_PROPERTY_NAMES, [row[i] for i in _PROPERTY_INDEXES]))}
        for row in rows
    ]
    return orjson.dumps(features, option=_JSON_OPTIONS)[1:-1]


def geojson_chunks(batches: Iterable[Sequence[tuple[Any, ...]]], licence: Licence) -> Iterator[bytes]:
    """An RFC 7946 FeatureCollection, one chunk per batch; licence and attribution up front."""
    head = {"type": "FeatureCollection", "name": LAYER_NAME, "licence": licence.data_licence,
            "attribution": licence.text()}
    yield orjson.dumps(head)[:-1] + b',"features":['
    first = True
    for rows in batches:
        if not rows:
            continue
        chunk = _feature_batch(rows)
        yield chunk if first else b",\n" + chunk
        first = False
    yield b"]}\n"


def _csv_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def csv_chunks(batches: Iterable[Sequence[tuple[Any, ...]]], *, hxl: bool = False) -> Iterator[bytes]:
    """UTF-8 CSV (with a BOM-free header), lon/lat as columns, and an HXL hashtag row if asked."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_NAMES)
    if hxl:
        writer.writerow([f.hxl for f in EXPORT_FIELDS])
    yield buffer.getvalue().encode()
    for rows in batches:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([_csv_value(v) for v in row] for row in rows)
        yield buffer.getvalue().encode()


# --- files through GDAL ------------------------------------------------------------------------------------------

# numpy, pyarrow, shapely and pyogrio (GDAL) are imported when a file is written, not with this module:
# they add about 100 MB to every web worker, which the streamed formats never need.

def _arrow_schema(shapefile: bool) -> pa.Schema:
    import pyarrow as pa

    types = {"str": pa.string(), "int": pa.int32(), "float": pa.float64(),
             "datetime": pa.string() if shapefile else pa.timestamp("ms", tz="UTC")}
    fields = [pa.field(f.shp_name if shapefile else f.name, types[f.kind]) for f in EXPORT_FIELDS]
    fields.append(pa.field("geometry", pa.binary(), metadata={"ARROW:extension:name": "geoarrow.wkb"}))
    return pa.schema(fields)


def _dbf_text(value: str | None) -> str | None:
    """Cut text to what a dBase field holds, on a character boundary (GDAL would cut it with a warning)."""
    if value is None or len(value) * 4 <= DBF_TEXT_BYTES:
        return value
    return value.encode()[:DBF_TEXT_BYTES].decode("utf-8", "ignore")


def _record_batch(rows: Sequence[tuple[Any, ...]], schema: pa.Schema, shapefile: bool) -> pa.RecordBatch:
    import numpy as np
    import pyarrow as pa
    import shapely

    columns = list(zip(*rows))
    arrays = []
    for field, values, arrow_field in zip(EXPORT_FIELDS, columns, schema):
        if field.kind == "datetime" and shapefile:
            values = [None if v is None else _csv_value(v) for v in values]
        elif field.kind == "str" and shapefile:
            values = [_dbf_text(v) for v in values]
        arrays.append(pa.array(values, type=arrow_field.type))
    points = shapely.points(np.asarray(columns[_LON], dtype=float), np.asarray(columns[_LAT], dtype=float))
    arrays.append(pa.array(shapely.to_wkb(points), type=pa.binary()))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def write_file(batches: Iterable[Sequence[tuple[Any, ...]]], path: str | os.PathLike[str], fmt: str,
               licence: Licence) -> None:
    """Write a GeoPackage, FlatGeobuf or zipped Shapefile at ``path``, one record batch at a time."""
    import pyarrow as pa
    import pyogrio

    if fmt not in FILE_FORMATS:
        raise ValueError(f"unknown file format {fmt!r}; one of {', '.join(FILE_FORMATS)}")
    shapefile = fmt == "shp.zip"
    schema = _arrow_schema(shapefile)
    reader = pa.RecordBatchReader.from_batches(
        schema, (_record_batch(rows, schema, shapefile) for rows in batches if rows))
    if not shapefile:
        driver = "GPKG" if fmt == "gpkg" else "FlatGeobuf"
        options: dict[str, Any] = {}
        if fmt == "gpkg":
            options["dataset_metadata"] = {"LICENSE": licence.data_licence, "ATTRIBUTION": licence.text()}
            options["layer_metadata"] = {"DESCRIPTION": licence.text()}
        else:
            options["layer_options"] = {"TITLE": "civicmap reports", "DESCRIPTION": licence.text()}
        pyogrio.write_arrow(reader, str(path), layer=LAYER_NAME, driver=driver, geometry_name="geometry",
                            geometry_type="Point", crs="EPSG:4326", **options)
        return
    with tempfile.TemporaryDirectory(prefix="civicmap-shp-") as tmp:
        shp = Path(tmp) / f"{LAYER_NAME}.shp"
        pyogrio.write_arrow(reader, str(shp), driver="ESRI Shapefile", geometry_name="geometry",
                            geometry_type="Point", crs="EPSG:4326", encoding="UTF-8")
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for part in sorted(Path(tmp).iterdir()):
                archive.write(part, part.name)
            archive.writestr("LICENSE.txt", licence.text() + "\n")
            archive.writestr("FIELDS.txt", "".join(f"{f.shp_name}\t{f.name}\t{f.hxl}\n" for f in EXPORT_FIELDS)
                             + f"# Text is cut to {DBF_TEXT_BYTES} bytes (the dBase limit); the other formats "
                               "carry it whole.\n")
