"""Bearer-token authentication and role checks for staff and field workers.

Residents need no account. Staff and field workers send
``Authorization: Bearer <token>``; only the sha256 of a token is stored, so a
leaked database does not leak working tokens.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from datetime import datetime, timezone
from typing import Callable, TypeVar

from flask import g, request
from flask_babel import gettext as _
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from service.db import get_session
from service.errors import ApiError
from service.models import ApiToken, Device, User

F = TypeVar("F", bound=Callable[..., object])
STAFF_ROLES = ("moderator", "admin")
TOKEN_PREFIX = "cm_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _sep, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        if header:
            raise ApiError("auth.malformed", _("Send the token as 'Authorization: Bearer <token>'."), 401,
                           headers={"WWW-Authenticate": "Bearer"})
        return None
    return value.strip()


def _refuse_unusable(credential: ApiToken | Device | None) -> None:
    """An unknown or revoked token, or one of a disabled account, is refused (never anonymous)."""
    if credential is None:
        raise ApiError("auth.invalid_token", _("This token is not valid."), 401,
                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if credential.revoked_at is not None:
        raise ApiError("auth.token_revoked", _("This token has been revoked."), 401,
                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if not credential.user.active:
        raise ApiError("auth.user_inactive", _("This account is disabled."), 403)


def current_user() -> User | None:
    """The user behind the request's bearer token, or None when it carries none.

    A token that is present but unknown or revoked is an error, never silently
    anonymous: a field worker must learn at once that their token stopped working.
    """
    if "current_user" in g:
        return g.current_user
    token = bearer_token()
    user = None
    if token is not None:
        session = get_session()
        row = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_secret(token))).first()
        _refuse_unusable(row)
        assert row is not None
        row.last_used_at = datetime.now(timezone.utc)
        user = row.user
    g.current_user = user
    return user


def require_roles(*roles: str) -> Callable[[F], F]:
    """Allow the view only to users with one of ``roles`` (admins always pass)."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: object, **kwargs: object) -> object:
            user = current_user()
            if user is None:
                raise ApiError("auth.required", _("Sign in: this needs a staff token."), 401,
                               headers={"WWW-Authenticate": "Bearer"})
            if user.role not in roles and user.role != "admin":
                raise ApiError("auth.forbidden", _("Your role may not do this."), 403)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def current_device_or_resident() -> Device | None:
    """The device behind the bearer token, or None for a resident's phone, which sends none.

    A token that is present but unknown or revoked is still refused.
    """
    if bearer_token() is None:
        return None
    return current_device()


def current_device() -> Device:
    """The device behind a ``dev_`` bearer token; sync routes accept nothing else."""
    if "current_device" in g:
        return g.current_device
    token = bearer_token()
    if token is None:
        raise ApiError("auth.required", _("Sync needs the device token given when the phone was registered."), 401,
                       headers={"WWW-Authenticate": "Bearer"})
    device = get_session().scalars(select(Device).where(Device.token_hash == hash_secret(token))).first()
    _refuse_unusable(device)
    assert device is not None
    device.last_seen_at = datetime.now(timezone.utc)
    g.current_device = device
    return device
