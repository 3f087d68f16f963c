"""Shared fixtures: a real PostGIS database per test session, a rolled-back transaction per test.

The session database is created fresh (``civicmap_test_<pid>``), migrated with
Alembic and loaded with the sample areas and categories, then dropped at the
end. Each test runs inside an outer transaction that is rolled back, and the
app's request sessions join it through savepoints, so a view's ``commit()``
is real to the view but invisible to the next test.

Set ``CIVICMAP_TEST_DATABASE_URL`` (any database on the server to use; the
name is replaced) or ``DATABASE_URL``; the default is the local server.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import sessionmaker

from service import db
from service.app import create_app
from service.auth import hash_secret, new_secret
from service.cli import upgrade_database
from service.config import Config, normalise_database_url
from service.dbadmin import drop_database, ensure_database
from service.models import ApiToken, User
from service.seed import load_areas, load_categories

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def fresh_database(url: URL, *, prepared: bool = True) -> Iterator[str]:
    """Create a database with PostGIS (migrated and loaded with areas and categories
    unless ``prepared`` is False), yield its URL, and drop it afterwards."""
    drop_database(url)
    ensure_database(url)
    if prepared:
        engine = create_engine(url)
        upgrade_database(engine)
        with engine.begin() as conn:
            load_areas(conn)
            load_categories(conn)
        engine.dispose()
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        drop_database(url)


def server_url() -> URL:
    base = os.environ.get("CIVICMAP_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_SERVER
    return make_url(normalise_database_url(base))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with fresh_database(server_url().set(database=f"civicmap_test_{os.getpid()}")) as url:
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture()
def config(database_url: str) -> Config:
    base = Config.from_env()
    return dataclasses.replace(base, database_url=database_url, max_body_bytes=64 * 1024,
                               max_photo_bytes=2 * 1024 * 1024, max_photo_pixels=30_000_000,
                               rollup_max_age_seconds=0)  # tests count tiles live unless they ask


@pytest.fixture()
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection whose outer transaction is rolled back after the test."""
    conn = engine.connect()
    outer = conn.begin()
    yield conn
    if outer.is_active:
        outer.rollback()
    conn.close()


@pytest.fixture()
def app(config: Config, engine: Engine, connection: Connection) -> Flask:
    app = create_app(config, engine=engine, TESTING=True)
    db.bind_session_factory(app, sessionmaker(bind=connection, join_transaction_mode="create_savepoint",
                                              expire_on_commit=False))
    return app


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture()
def make_token(connection: Connection) -> Callable[..., str]:
    """Create a user with a role and return a working bearer token for them."""
    session = sessionmaker(bind=connection, join_transaction_mode="create_savepoint")()
    counter = iter(range(1_000_000))

    def factory(role: str, *, active: bool = True, revoked: bool = False) -> str:
        user = User(username=f"{role}-{next(counter)}", role=role, active=active)
        session.add(user)
        session.flush()
        token = new_secret()
        session.add(ApiToken(user_id=user.id, token_hash=hash_secret(token),
                             revoked_at=None if not revoked else db_now(connection)))
        session.commit()
        return token

    return factory


def db_now(connection: Connection) -> object:
    return connection.exec_driver_sql("SELECT now()").scalar()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def report_body() -> Callable[..., dict[str, object]]:
    """A valid report body inside Phnom Penh (Doun Penh, near the Royal Palace)."""

    def factory(**changes: object) -> dict[str, object]:
        body: dict[str, object] = {
            "category": "waste.overflowing_bin",
            "description": "Bin full since Monday",
            "location": {"type": "Point", "coordinates": [104.9282, 11.5625]},
            "accuracy_m": 8,
            "observed_at": "2026-11-20T08:30:00+07:00",
        }
        body.update(changes)
        return body

    return factory


@pytest.fixture(scope="session")
def live_database_url() -> Iterator[str]:
    """A database of the live server's own, since it commits what tests send it."""
    with fresh_database(server_url().set(database=f"civicmap_live_{os.getpid()}")) as url:
        yield url


@pytest.fixture(scope="session")
def live_server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gunicorn's error log (a file: a pipe nobody reads would fill up and stall the server)."""
    return tmp_path_factory.mktemp("live") / "gunicorn.log"


@pytest.fixture(scope="session")
def live_server(live_database_url: str, live_server_log: Path) -> Iterator[str]:
    """The real thing: gunicorn serving the app on a free port."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": live_database_url, "MAX_BODY_BYTES": "65536"}
    log = live_server_log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
         "service.app:create_app()"],
        env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start: {live_server_log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        log.close()


@pytest.fixture()
def make_device(connection: Connection) -> Callable[..., tuple[str, int]]:
    """Register a field device (and its worker) for an area; returns (token, device id)."""
    from sqlalchemy import text

    counter = iter(range(1_000_000))

    def factory(area: str = "PP", role: str = "field_worker", revoked: bool = False) -> tuple[str, int]:
        token = new_secret("dev_")
        user_id = connection.execute(text("INSERT INTO users (username, role) VALUES (:u, :r) RETURNING id"),
                                     {"u": f"worker-{next(counter)}", "r": role}).scalar_one()
        device_id = connection.execute(text(
            "INSERT INTO devices (name, user_id, area_id, token_hash, revoked_at) "
            "SELECT 'phone', :uid, id, :hash, CASE WHEN :revoked THEN now() END FROM areas WHERE code = :area "
            "RETURNING id"), {"uid": user_id, "hash": hash_secret(token), "revoked": revoked, "area": area}
        ).scalar_one()
        return token, device_id

    return factory


CHROMIUM = "/usr/bin/chromium"  # Debian's package, installed by `make test`; never a downloaded browser
# Chromium's own background traffic would be refused on this closed network: switch it off.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Real headless Chromium through Playwright, one per test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
