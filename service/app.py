"""The app factory: ``create_app()`` builds a configured civicmap Flask app.

Nothing happens at import time; gunicorn runs ``service.app:create_app()``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask, abort, has_request_context, request, send_from_directory
from flask_babel import Babel
from flask_compress import Compress
from flask_babel import gettext as _
from flask_smorest import Api
from sqlalchemy.engine import Engine
from werkzeug.exceptions import RequestEntityTooLarge

from service import db, errors
from service.config import Config
from service.ratelimit import limiter
from service.errors import ApiError
from service.resources.sync import GZIP_ENDPOINTS, STREAMING_ENDPOINTS
from service.schemas import ErrorSchema

ROOT = Path(__file__).resolve().parent.parent
SUPPORTED_LOCALES = ("en", "km")
log = logging.getLogger(__name__)


def select_locale() -> str:
    """``?lang=km`` wins, then the language switch's cookie, then the browser's Accept-Language; else English.

    Outside a request (the CLI) it is English.
    """
    if not has_request_context():
        return "en"
    for asked in (request.args.get("lang"), request.cookies.get("lang")):
        if asked in SUPPORTED_LOCALES:
            return asked
    return request.accept_languages.best_match(SUPPORTED_LOCALES) or "en"


class CivicmapApi(Api):
    """flask-smorest's Api, documenting our one error shape."""

    ERROR_SCHEMA = ErrorSchema


def _compress_pages(app: Flask) -> None:
    """Pages and static files go out brotli/zstd/gzip-compressed; static URLs carry a content hash, cached a year.

    Only these: the API's large bodies compress (or stream) themselves.
    """
    compress = Compress()
    app.config.setdefault("COMPRESS_REGISTER", False)
    app.config.setdefault("COMPRESS_STREAMS", False)
    app.config.setdefault("COMPRESS_ALGORITHM", ["br", "gzip"])
    app.config.setdefault("COMPRESS_BR_LEVEL", 9)
    compress.init_app(app)

    def static_max_age(filename: str | None) -> int:
        return 365 * 86400 if request.args.get("v") else 0

    app.get_send_file_max_age = static_max_age  # type: ignore[method-assign]

    @app.after_request
    def _compress(response: Any) -> Any:
        if request.blueprint not in ("pages", "maps") and request.endpoint not in ("static", "staff.planner_map"):
            return response
        if request.endpoint == "static" and response.direct_passthrough and response.status_code == 200:
            source = response.response
            response.direct_passthrough = False  # a small file: read it so it can be compressed
            data = response.get_data()
            if hasattr(source, "close"):
                source.close()
            response.set_data(data)
        if request.endpoint == "static" and request.args.get("v"):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return compress.after_request(response)


def create_app(config: Config | None = None, engine: Engine | None = None, **overrides: Any) -> Flask:
    config = config or Config.from_env()
    if not logging.getLogger().handlers:  # the entry point's own configuration wins
        logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = Flask(__name__, static_folder=str(ROOT / "static"), template_folder=str(ROOT / "templates"))
    app.config.update(config.flask_settings())
    app.config["CIVICMAP"] = config
    app.config.update(overrides)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # Khmer goes out as UTF-8, not \u escapes

    Babel(app, locale_selector=select_locale, default_translation_directories=str(ROOT / "service" / "translations"))
    db.init_app(app, engine or db.make_engine(config.database_url))

    api = CivicmapApi(app, spec_kwargs={"info": {"description": "Crowdsourced urban-issue reports for Cambodian cities."}})
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    from service.resources.catalog import areas_blp, categories_blp, photos_blp
    from service.resources.dashboard import dashboard_blp  # also adds the dashboard's routes to staff_blp
    from service.resources.layers import exports_blp, layers_blp, tiles_blp
    from service.resources.maps import maps_blp  # also adds the staff map's routes to staff_blp
    from service.resources.pages import pages_blp
    from service.resources.reports import blp as reports_blp
    from service.resources.staff import staff_blp
    from service.resources.sync import blp as sync_blp
    from service.staff_auth import init_staff_auth

    for blueprint in (reports_blp, categories_blp, areas_blp, photos_blp, sync_blp, layers_blp, tiles_blp,
                      exports_blp):
        api.register_blueprint(blueprint)
    app.register_blueprint(pages_blp)
    app.register_blueprint(maps_blp)
    app.register_blueprint(dashboard_blp)  # /dashboard → /staff/dashboard
    app.register_blueprint(staff_blp)
    init_staff_auth(app)  # Flask-Login sessions and CSRF tokens, for the staff pages only
    limiter.init_app(app)
    _compress_pages(app)
    errors.init_app(app)  # after the Api, so our one error shape replaces flask-smorest's

    @app.before_request
    def _limit_json_bodies() -> None:
        """JSON bodies get the small limit; only multipart photo uploads get the large one.

        Flask refuses a body over ``max_content_length`` with 413 as soon as it
        is read, before any parsing, including chunked bodies with no Content-Length.
        """
        if request.mimetype == "multipart/form-data":
            return
        if request.endpoint in STREAMING_ENDPOINTS:  # they read and limit the stream themselves
            request.max_content_length = config.max_photo_bytes + 1
            return
        limit = config.sync_max_body_bytes if request.endpoint in GZIP_ENDPOINTS else config.max_body_bytes
        if request.content_length is None and request.environ.get("wsgi.input_terminated"):
            # Chunked: werkzeug stops reading quietly at the limit, which would hand the
            # parser a truncated body. Read one byte more ourselves and say 413 plainly.
            request.max_content_length = limit + 1
            if len(request.get_data(cache=True)) > limit:
                raise RequestEntityTooLarge()
        request.max_content_length = limit

    @app.before_request
    def _refuse_encoded_bodies() -> None:
        """Compressed bodies are taken only where a route inflates them itself, with a limit."""
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity" and request.endpoint not in GZIP_ENDPOINTS:
            raise ApiError("request.unsupported_encoding",
                           _("This address takes uncompressed bodies only."), 415)

    @app.get("/api/v1/docs/assets/<path:filename>")
    def docs_assets(filename: str) -> Any:
        """Swagger UI from the swagger-ui-bundle package: no CDN needed."""
        import swagger_ui_bundle

        if not filename.endswith((".js", ".css", ".png")):
            abort(404)
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename, max_age=86400)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        with db.get_engine(app).connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return {"status": "ok"}

    @app.get("/")
    def index() -> Any:
        from flask import redirect

        return redirect("/report")

    return app
