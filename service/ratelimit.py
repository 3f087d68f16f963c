"""Per-device rate limits (Flask-Limiter): a runaway phone gets 429 with Retry-After.

The limiter is created unbound here and bound in the app factory. The key is
a hash of the bearer token, so each device has its own budget and the limit
is checked before any database work; requests without a token fall back to
the client address. Storage is per process by default (``memory://``); set
``RATELIMIT_STORAGE_URI`` (e.g. ``redis://…``) to share counts between
gunicorn workers.
"""

from __future__ import annotations

import hashlib

from flask import current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

limiter = Limiter(key_func=get_remote_address, headers_enabled=True, default_limits=[])


def device_key() -> str:
    header = request.headers.get("Authorization", "")
    if header:
        return "token:" + hashlib.sha256(header.encode("utf-8")).hexdigest()[:32]
    return "addr:" + get_remote_address()


def sync_limit() -> str:
    """A device's budget; a phone without a token (a resident) is counted by address, with a larger budget.

    A resident's report with three photos is about 25 requests, and carriers put
    many phones behind one address.
    """
    config = current_app.config["CIVICMAP"]
    return config.sync_rate_limit if request.headers.get("Authorization") else config.resident_sync_rate_limit
