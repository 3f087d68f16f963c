"""Every marshmallow schema of the HTTP API, in one module.

Input schemas refuse unknown fields, and name server-owned fields explicitly
so a client learns why ``status`` or ``version`` was refused. Coordinates are
checked with ``geo.coordinates`` at the edge: finite numbers, in range.
"""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, pre_load, validate, validates_schema

from geo.coordinates import CoordinateError, validate_lon_lat
from service.messages import translated
from service.models import DESCRIPTION_MAX, LANDMARK_MAX, REPORT_STATUSES

SERVER_OWNED_FIELDS = ("id", "status", "version", "received_at", "updated_at", "hidden", "reference",
                       "tracking_token", "source", "duplicate_of")


class StrictSchema(Schema):
    """Request bodies: unknown fields are an error."""

    class Meta:
        unknown = RAISE


class QuerySchema(Schema):
    """Query strings: unknown parameters are ignored."""

    class Meta:
        unknown = EXCLUDE


class PointSchema(StrictSchema):
    """A GeoJSON Point: ``{"type": "Point", "coordinates": [lon, lat]}`` (RFC 7946 order)."""

    type = fields.String(required=True, validate=validate.Equal("Point"))
    coordinates = fields.List(fields.Raw(), required=True, validate=validate.Length(equal=2))

    @validates_schema
    def _check_coordinates(self, data: dict[str, Any], **_: Any) -> None:
        coords = data.get("coordinates")
        if coords is None or len(coords) != 2:
            return
        try:
            data["coordinates"] = list(validate_lon_lat(coords[0], coords[1]))
        except CoordinateError as exc:
            raise ValidationError({"coordinates": [translated(exc.error, exc.message)]}) from exc


class ContactSchema(StrictSchema):
    name = fields.String(validate=validate.Length(max=200))
    phone = fields.String(validate=[validate.Length(max=40), validate.Regexp(r"^\+?[0-9][0-9 \-]{4,38}$",
                                                                              error="Not a phone number.")])
    email = fields.Email(validate=validate.Length(max=254))
    consent = fields.Boolean(required=True)

    @validates_schema
    def _consent_given(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("consent"):
            raise ValidationError({"consent": ["Contact details are kept only with consent: set consent to true, "
                                               "or leave contact out."]})


def _refuse_server_owned(data: Any) -> Any:
    if isinstance(data, dict):
        owned = sorted(k for k in data if k in SERVER_OWNED_FIELDS)
        if owned:
            raise ValidationError({k: ["Set by the server; clients cannot set it."] for k in owned})
    return data


class ReportCreateSchema(StrictSchema):
    client_id = fields.UUID(metadata={"description": "Client-generated UUID; resending the same report is safe."})
    category = fields.String(required=True, validate=validate.Length(min=1, max=64))
    description = fields.String(load_default="", validate=validate.Length(max=DESCRIPTION_MAX))
    landmark = fields.String(load_default="", validate=validate.Length(max=LANDMARK_MAX))
    location = fields.Nested(PointSchema, required=True)
    accuracy_m = fields.Float(allow_nan=False, validate=validate.Range(min=0, max=100_000))
    observed_at = fields.AwareDateTime(metadata={"description": "When the reporter saw it (device clock, with offset)."})
    contact = fields.Nested(ContactSchema)

    @pre_load
    def _server_owned(self, data: Any, **_: Any) -> Any:
        return _refuse_server_owned(data)


class DuplicateSuggestionSchema(Schema):
    reference = fields.String()
    status = fields.String()
    distance_m = fields.Integer(metadata={"description": "metres from the new report, rounded"})
    url = fields.String(metadata={"description": "the report's public tracking page"})


class ReportCreatedSchema(Schema):
    id = fields.UUID()
    reference = fields.String()
    status = fields.String()
    version = fields.Integer()
    received_at = fields.DateTime()
    observed_at_flag = fields.String(allow_none=True)
    tracking_token = fields.String(allow_none=True, metadata={
        "description": "Secret shown once: lets the reporter add photos. Null when the request was a resend."})
    replayed = fields.Boolean(metadata={"description": "True when this client_id was already stored with the same content."})
    suggestions = fields.List(fields.Nested(DuplicateSuggestionSchema), metadata={
        "description": "Reports this one may duplicate: same category, nearby, open or resolved in the last "
                       "30 days; nearest first, at most 5."})


class AreaNameSchema(Schema):
    code = fields.String()
    name_en = fields.String()
    name_km = fields.String()


class HistoryEntrySchema(Schema):
    at = fields.DateTime()
    old_status = fields.String(allow_none=True)
    new_status = fields.String(allow_none=True)
    note = fields.String()
    by = fields.String()


class PhotoRefSchema(Schema):
    sha256 = fields.String()
    url = fields.String()


class ReportPublicSchema(Schema):
    """What anyone may see of a report: never contact details, tokens or devices."""

    id = fields.UUID()
    reference = fields.String()
    category = fields.String()
    category_label_en = fields.String()
    category_label_km = fields.String()
    description = fields.String()
    landmark = fields.String()
    location = fields.Dict()
    accuracy_m = fields.Float(allow_none=True)
    status = fields.String()
    duplicate_of = fields.String(allow_none=True)
    source = fields.String()
    observed_at = fields.DateTime()
    observed_at_flag = fields.String(allow_none=True)
    received_at = fields.DateTime()
    updated_at = fields.DateTime()
    version = fields.Integer()
    city = fields.Nested(AreaNameSchema)
    district = fields.Nested(AreaNameSchema, allow_none=True)
    commune = fields.Nested(AreaNameSchema, allow_none=True)
    photos = fields.List(fields.Nested(PhotoRefSchema))
    confirmations = fields.Integer(metadata={"description": "How many other visible reports were marked as "
                                                            "duplicates of this one."})
    history = fields.List(fields.Nested(HistoryEntrySchema))


class ReportPageSchema(Schema):
    items = fields.List(fields.Nested(ReportPublicSchema))
    next_cursor = fields.String(allow_none=True, metadata={"description": "Pass as `cursor` for the next page; null at the end."})


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class CommaList(fields.Field):
    """``a,b`` or repeated parameters, as a list of strings."""

    is_multiple = True  # webargs then hands over every value of a repeated parameter, not only the first

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        values = value if isinstance(value, list) else [value]
        out: list[str] = []
        for item in values:
            if not isinstance(item, str):
                raise ValidationError("Not a string.")
            out.extend(_comma_list(item))
        return out


class ReportFilterQuerySchema(QuerySchema):
    """The filters every report listing shares: the list, the layers, the tiles and the exports."""

    bbox = fields.String(metadata={"description": "minLon,minLat,maxLon,maxLat (WGS 84)"})
    category = CommaList(metadata={"description": "category codes; a top-level code matches its subtypes"})
    status = CommaList(metadata={"description": "statuses, comma-separated"})
    area = fields.String(metadata={"description": "area code (city, khan or sangkat)"})
    since = fields.AwareDateTime(metadata={"description": "received at or after (ISO 8601 with offset)"})
    until = fields.AwareDateTime(metadata={"description": "received before (ISO 8601 with offset)"})


class ReportListQuerySchema(ReportFilterQuerySchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = fields.String()


LAYER_MAX_LIMIT = 10_000


class LayerQuerySchema(ReportFilterQuerySchema):
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=LAYER_MAX_LIMIT),
                           metadata={"description": f"features per page, at most {LAYER_MAX_LIMIT}"})
    cursor = fields.String(metadata={"description": "next_cursor of the previous page"})


class HeatmapQuerySchema(ReportFilterQuerySchema):
    zoom = fields.Integer(validate=validate.Range(min=0, max=22),
                          metadata={"description": "map zoom; a cell is then 16 screen pixels"})
    cells = fields.Integer(load_default=64, validate=validate.Range(min=4, max=256),
                           metadata={"description": "without zoom: at most this many cells across the bbox"})
    shape = fields.String(load_default="square", validate=validate.OneOf(("square", "hex")))
    format = fields.String(load_default="grid", validate=validate.OneOf(("grid", "points")),
                           metadata={"description": "grid: cells with counts; points: [[lat, lon, weight], …] "
                                                    "for Leaflet.heat or Folium HeatMap"})


class AreaStatsQuerySchema(ReportFilterQuerySchema):
    level = fields.String(load_default="commune", validate=validate.OneOf(("district", "commune")),
                          metadata={"description": "district (khan) or commune (sangkat)"})
    geometry = fields.Boolean(load_default=True, metadata={"description": "include the area outlines"})


class TileQuerySchema(ReportFilterQuerySchema):
    class Meta:
        exclude = ("bbox",)  # the tile is the bbox


class ExportQuerySchema(ReportFilterQuerySchema):
    hxl = fields.Boolean(load_default=False, metadata={"description": "CSV only: add the HXL hashtag row"})


class StatusChangeSchema(StrictSchema):
    status = fields.String(required=True, validate=validate.OneOf(REPORT_STATUSES))
    note = fields.String(load_default="", validate=validate.Length(max=2000),
                         metadata={"description": "Public answer to the reporter, shown in the history."})
    duplicate_of = fields.String(metadata={"description": "id or reference of the original, with status duplicate"})
    version = fields.Integer(validate=validate.Range(min=1),
                             metadata={"description": "The version you saw; or send If-Match."})


class CategorySchema(Schema):
    code = fields.String()
    parent = fields.String(allow_none=True)
    label_en = fields.String()
    label_km = fields.String()
    icon = fields.String()


class AreasQuerySchema(QuerySchema):
    level = fields.String(validate=validate.OneOf(("city", "district", "commune")))
    parent = fields.String(metadata={"description": "only the children of this area code"})


class PhotoStoredSchema(Schema):
    sha256 = fields.String()
    url = fields.String()
    width = fields.Integer()
    height = fields.Integer()
    bytes = fields.Integer()


class ErrorSchema(Schema):
    """The one error shape of every route (documentation only; ``service.errors`` builds it)."""

    code = fields.Integer(metadata={"description": "HTTP status code"})
    status = fields.String(metadata={"description": "HTTP status phrase"})
    error = fields.String(metadata={"description": "stable machine-readable key, e.g. report.outside_service_area"})
    message = fields.String(metadata={"description": "a sentence for people, in English or Khmer"})
    errors = fields.Dict(metadata={"description": "field errors, by field name"})
