"""Reference data: categories (English and Khmer labels), areas as GeoJSON, photos by hash."""

from __future__ import annotations

import re
from typing import Any

from flask import Response, current_app, request
from flask.views import MethodView
from flask_babel import gettext as _
from flask_smorest import Blueprint
from sqlalchemy import exists, select

from service import queries
from service.db import get_session
from service.errors import ApiError
from service.models import Category, Photo, Report, ReportPhoto
from service.photos import thumbnail
from service.schemas import AreasQuerySchema, CategorySchema

categories_blp = Blueprint("categories", __name__, url_prefix="/api/v1", description="Report categories")
areas_blp = Blueprint("areas", __name__, url_prefix="/api/v1", description="Service areas: cities, khans, sangkats")
photos_blp = Blueprint("photos", __name__, url_prefix="/api/v1", description="Sanitised report photos")

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@categories_blp.route("/categories")
class Categories(MethodView):
    @categories_blp.response(200, CategorySchema(many=True))
    def get(self) -> list[dict[str, Any]]:
        """Active categories, top-level codes first, with English and Khmer labels"""
        rows = get_session().scalars(
            select(Category).where(Category.active).order_by(Category.sort_order, Category.code)).all()
        return [{"code": c.code, "parent": c.parent_code, "label_en": c.label_en, "label_km": c.label_km,
                 "icon": c.icon} for c in rows]


@areas_blp.route("/areas")
class Areas(MethodView):
    @areas_blp.arguments(AreasQuerySchema, location="query")
    @areas_blp.response(200, description="GeoJSON FeatureCollection of areas")
    def get(self, args: dict[str, Any]) -> Response:
        """Service areas as GeoJSON (filter by level or parent code)"""
        session = get_session()
        if "parent" in args and queries.find_area(session, args["parent"]) is None:
            raise ApiError("request.unknown_area", _("There is no area %(code)s.", code=args["parent"]), 400,
                           errors={"parent": [_("Unknown area code.")]})
        body = queries.areas_geojson(session, level=args.get("level"), parent_code=args.get("parent"))
        response = current_app.response_class(body, mimetype="application/geo+json")
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response


@photos_blp.route("/photos/<sha256>", endpoint="photo")
class PhotoBySha(MethodView):
    @photos_blp.response(200, description="The sanitised JPEG")
    def get(self, sha256: str) -> Response:
        """A stored photo by the sha256 of its bytes (only photos of visible reports)

        ``?size=thumb`` gives a 240-pixel JPEG for map popups.
        """
        if not SHA256_RE.match(sha256):
            raise ApiError("photo.bad_hash", _("A photo address is 64 lowercase hex characters."), 404)
        session = get_session()
        visible = exists().where(ReportPhoto.photo_sha256 == Photo.sha256, ReportPhoto.report_id == Report.id,
                                 ~Report.hidden)
        photo = session.execute(select(Photo.content, Photo.mime).where(Photo.sha256 == sha256, visible)).first()
        if photo is None:
            raise ApiError("photo.not_found", _("There is no photo with this hash."), 404)
        small = request.args.get("size") == "thumb"
        etag = f'"{sha256}-thumb"' if small else f'"{sha256}"'
        if request.headers.get("If-None-Match") == etag:
            return current_app.response_class(status=304, headers={"ETag": etag})
        content = thumbnail(photo.content) if small else photo.content
        response = current_app.response_class(content, mimetype=photo.mime)
        response.headers["ETag"] = etag
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response
