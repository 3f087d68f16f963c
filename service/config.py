"""Configuration, read from environment variables only.

Every variable is listed in ``SETTINGS`` (name, default, meaning); the README's
configuration table is this table. Development defaults let `make run` work
out of the box; in production (``CIVICMAP_ENV=production``) a missing secret
stops start-up at once instead of running with a default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEV_SECRET_KEY = "dev-only-not-secret"

# name, development default, meaning
SETTINGS: list[tuple[str, str, str]] = [
    ("CIVICMAP_ENV", "development", "`development` or `production`; production refuses default secrets"),
    ("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/civicmap", "PostgreSQL + PostGIS database"),
    ("SECRET_KEY", DEV_SECRET_KEY, "signs sessions and tracking tokens; required in production"),
    ("PORT", "5000", "port `make run` serves on"),
    ("MAX_BODY_BYTES", str(1 * 1024 * 1024), "largest JSON request body; larger gets 413 before parsing"),
    ("MAX_PHOTO_BYTES", str(8 * 1024 * 1024), "largest photo upload in bytes"),
    ("MAX_PHOTO_PIXELS", str(40_000_000), "largest photo in pixels (width × height); bigger is refused before decoding"),
    ("PHOTO_MAX_EDGE", "1600", "stored photos are resized so the long edge is at most this many pixels"),
    ("FUTURE_TOLERANCE_HOURS", "24", "an observed_at further in the future than this is kept but flagged"),
    ("DATA_LICENSE", "CC BY 4.0", "licence of the report data in exports"),
    ("PUBLIC_URL", "http://localhost:5000", "the address phones reach the server at (device provisioning links)"),
    ("SYNC_MAX_BODY_BYTES", str(2 * 1024 * 1024), "largest sync batch body as sent (gzip or not)"),
    ("SYNC_MAX_INFLATED_BYTES", str(8 * 1024 * 1024), "largest sync batch after gzip inflation; more is 413"),
    ("SYNC_MAX_ITEMS", "500", "most items in one sync batch"),
    ("SYNC_RATE_LIMIT", "120/minute", "requests each device may make to /api/v1/sync; more gets 429 with Retry-After"),
    ("RESIDENT_SYNC_RATE_LIMIT", "600/minute", "requests each client address may make to /api/v1/sync without a device token (residents' phones; many share one address behind carrier NAT)"),
    ("RATELIMIT_STORAGE_URI", "memory://", "where rate-limit counts live (memory:// is per gunicorn worker; redis://… shares them)"),
    ("ROLLUP_MAX_AGE_SECONDS", "300", "low-zoom tiles and the staff dashboard read rollups recounted in the background when older than this; 0: tiles count live and the dashboard is recounted only by `civicmap rollup refresh`"),
    ("MAP_TILES_URL", "https://tile.openstreetmap.org/{z}/{x}/{y}.png", "base map tiles of the planner map and the phone form's map (`{z}/{x}/{y}`, `{s}` for subdomains); empty: no base map"),
    ("MAP_TILES_ATTRIBUTION", '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors', "the base tiles' credit shown on the map (HTML)"),
    ("LOG_LEVEL", "INFO", "Python logging level"),
]


def _env(name: str) -> str:
    default = next(d for n, d, _ in SETTINGS if n == name)
    return os.environ.get(name, default)


def normalise_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs (as libpq tools use) and pick psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@dataclass(frozen=True)
class Config:
    """The settings one app instance runs with."""

    env: str
    database_url: str
    secret_key: str
    max_body_bytes: int
    max_photo_bytes: int
    max_photo_pixels: int
    photo_max_edge: int
    future_tolerance_hours: int
    data_license: str
    log_level: str
    public_url: str
    sync_max_body_bytes: int
    sync_max_inflated_bytes: int
    sync_max_items: int
    sync_rate_limit: str
    resident_sync_rate_limit: str
    ratelimit_storage_uri: str
    rollup_max_age_seconds: int
    map_tiles_url: str
    map_tiles_attribution: str

    @classmethod
    def from_env(cls) -> "Config":
        config = cls(
            env=_env("CIVICMAP_ENV"),
            database_url=normalise_database_url(_env("DATABASE_URL")),
            secret_key=_env("SECRET_KEY"),
            max_body_bytes=int(_env("MAX_BODY_BYTES")),
            max_photo_bytes=int(_env("MAX_PHOTO_BYTES")),
            max_photo_pixels=int(_env("MAX_PHOTO_PIXELS")),
            photo_max_edge=int(_env("PHOTO_MAX_EDGE")),
            future_tolerance_hours=int(_env("FUTURE_TOLERANCE_HOURS")),
            data_license=_env("DATA_LICENSE"),
            log_level=_env("LOG_LEVEL"),
            public_url=_env("PUBLIC_URL").rstrip("/"),
            sync_max_body_bytes=int(_env("SYNC_MAX_BODY_BYTES")),
            sync_max_inflated_bytes=int(_env("SYNC_MAX_INFLATED_BYTES")),
            sync_max_items=int(_env("SYNC_MAX_ITEMS")),
            sync_rate_limit=_env("SYNC_RATE_LIMIT"),
            resident_sync_rate_limit=_env("RESIDENT_SYNC_RATE_LIMIT"),
            ratelimit_storage_uri=_env("RATELIMIT_STORAGE_URI"),
            rollup_max_age_seconds=int(_env("ROLLUP_MAX_AGE_SECONDS")),
            map_tiles_url=_env("MAP_TILES_URL"),
            map_tiles_attribution=_env("MAP_TILES_ATTRIBUTION"),
        )
        config.check()
        return config

    def check(self) -> None:
        """Fail fast on settings that must not reach production."""
        if self.env == "production":
            if self.secret_key == DEV_SECRET_KEY or not os.environ.get("SECRET_KEY"):
                raise RuntimeError("SECRET_KEY must be set when CIVICMAP_ENV=production")
            if not os.environ.get("DATABASE_URL"):
                raise RuntimeError("DATABASE_URL must be set when CIVICMAP_ENV=production")

    def flask_settings(self) -> dict[str, object]:
        """The Flask and flask-smorest keys derived from this config."""
        return {
            "SECRET_KEY": self.secret_key,
            # Photos are the largest bodies; JSON routes check MAX_BODY_BYTES themselves.
            "MAX_CONTENT_LENGTH": max(self.max_body_bytes, self.sync_max_body_bytes, self.max_photo_bytes + 64 * 1024),
            "MAX_FORM_MEMORY_SIZE": self.max_photo_bytes + 64 * 1024,
            "JSON_AS_ASCII": False,
            "API_TITLE": "civicmap",
            "API_VERSION": "v1",
            "OPENAPI_VERSION": "3.0.3",
            "OPENAPI_URL_PREFIX": "/api/v1",
            "OPENAPI_JSON_PATH": "openapi.json",
            "OPENAPI_SWAGGER_UI_PATH": "docs",
            "OPENAPI_SWAGGER_UI_URL": "/api/v1/docs/assets/",
            "BABEL_DEFAULT_LOCALE": "en",
            "RATELIMIT_STORAGE_URI": self.ratelimit_storage_uri,
            "RATELIMIT_HEADERS_ENABLED": True,
        }
