"""Staff sign-in for the server-rendered staff pages: Flask-Login sessions and Flask-WTF CSRF tokens.

The JSON API keeps its bearer tokens (``service.auth``); only the ``staff``
blueprint uses the session cookie. CSRF tokens are checked there alone
(``WTF_CSRF_CHECK_DEFAULT=False``): the API is not cookie-authenticated and the
resident's ``/report`` form is anonymous.

The session holds ``"<user id>:<fingerprint of the password hash>"``, so
changing a password ends every session signed in with the old one, and a
disabled account is signed out on its next request.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from datetime import timedelta
from typing import Callable, TypeVar

from flask import Flask, abort
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import select
from werkzeug.security import check_password_hash

from service.auth import hash_password
from service.db import get_session
from service.models import User

F = TypeVar("F", bound=Callable[..., object])

#: Who may open the staff pages, and who may change reports there.
READER_ROLES = ("moderator", "planner", "admin")
TRIAGE_ROLES = ("moderator", "admin")
#: The session cookie belongs to the staff pages only: public pages and the API never receive it.
STAFF_PATH = "/staff"
SESSION_HOURS = 12

login_manager = LoginManager()
csrf = CSRFProtect()


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the username is unknown, so a wrong name takes as long as a wrong password."""
    return hash_password("civicmap-no-such-user")


def _fingerprint(password_hash: str | None) -> str:
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]


class StaffUser(UserMixin):
    """The signed-in account, as Flask-Login sees it; ``account`` is the ORM row for ``intake``."""

    def __init__(self, account: User) -> None:
        self.account = account

    @property
    def role(self) -> str:
        return self.account.role

    @property
    def username(self) -> str:
        return self.account.username

    @property
    def display_name(self) -> str:
        return self.account.display_name or self.account.username

    @property
    def is_active(self) -> bool:
        return bool(self.account.active)

    @property
    def may_read(self) -> bool:
        return self.role in READER_ROLES

    @property
    def may_triage(self) -> bool:
        return self.role in TRIAGE_ROLES

    def get_id(self) -> str:
        return f"{self.account.id}:{_fingerprint(self.account.password_hash)}"


def _load_user(session_id: str) -> StaffUser | None:
    user_id, _sep, fingerprint = session_id.partition(":")
    if not user_id.isdigit():
        return None
    account = get_session().get(User, int(user_id))
    if account is None or not account.active or not account.password_hash:
        return None
    if not hmac.compare_digest(fingerprint, _fingerprint(account.password_hash)):
        return None  # the password changed since this session signed in
    return StaffUser(account)


def authenticate(username: str, password: str) -> tuple[StaffUser | None, bool]:
    """``(user, disabled)``: the account when the password is right, and whether it is disabled.

    A wrong username and a wrong password look the same to the caller (and take
    as long); "disabled" is only ever told to someone who knew the password.
    """
    account = get_session().scalar(select(User).where(User.username == username.strip()))
    stored = account.password_hash if account is not None and account.password_hash else None
    matches = check_password_hash(stored or _dummy_hash(), password)
    if account is None or stored is None or not matches:
        return None, False
    if not account.active:
        return None, True
    return StaffUser(account), False


def signed_in() -> StaffUser | None:
    user = current_user._get_current_object()  # type: ignore[attr-defined]
    return user if isinstance(user, StaffUser) else None


def require_staff_role(*roles: str) -> Callable[[F], F]:
    """Allow the view to signed-in users with one of ``roles`` (anonymous users are redirected earlier)."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: object, **kwargs: object) -> object:
            user = signed_in()
            if user is None:
                abort(401)
            if user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def init_staff_auth(app: Flask) -> None:
    """Bind Flask-Login and CSRFProtect, with cookie settings for the staff pages."""
    production = app.config["CIVICMAP"].env == "production"
    for prefix in ("SESSION_COOKIE", "REMEMBER_COOKIE"):
        app.config[f"{prefix}_HTTPONLY"] = True
        app.config[f"{prefix}_SAMESITE"] = "Lax"
        app.config[f"{prefix}_SECURE"] = production
        app.config[f"{prefix}_PATH"] = STAFF_PATH
    app.config["REMEMBER_COOKIE_DURATION"] = timedelta(hours=SESSION_HOURS)
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=SESSION_HOURS)
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # the staff blueprint calls csrf.protect() itself
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # valid as long as the (12-hour) session
    login_manager.user_loader(_load_user)
    login_manager.init_app(app, add_context_processor=False)  # staff templates get current_user themselves
    csrf.init_app(app)
