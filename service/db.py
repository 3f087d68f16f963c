"""Engine and per-request session: one unit of work per request.

Views and helpers use ``get_session()``; helpers may ``flush()`` but only the
view that owns the request calls ``commit()``, once, before the response is
built. Teardown rolls back and closes whatever is left, so a failed request
never leaves anything half-written.

Tests swap the session factory (``bind_session_factory``) for one joined to an
outer transaction that is rolled back after each test.
"""

from __future__ import annotations

from typing import Callable

from flask import Flask, current_app, g
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

SessionFactory = Callable[[], Session]


def make_engine(database_url: str) -> Engine:
    """An engine with pre-ping (the database may restart under us) and UTC sessions."""
    return create_engine(
        database_url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        connect_args={"options": "-c timezone=UTC"},
    )


def init_app(app: Flask, engine: Engine) -> None:
    app.extensions["civicmap.engine"] = engine
    bind_session_factory(app, sessionmaker(bind=engine, expire_on_commit=False))
    app.teardown_appcontext(_close_session)


def bind_session_factory(app: Flask, factory: SessionFactory) -> None:
    app.extensions["civicmap.session_factory"] = factory


def get_engine(app: Flask | None = None) -> Engine:
    return (app or current_app).extensions["civicmap.engine"]


def get_session() -> Session:
    """The session of the current request (created on first use)."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["civicmap.session_factory"]()
    return g.db_session


def _close_session(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.rollback()
        session.close()
