"""Create and drop whole databases (with PostGIS) on a server we are allowed to manage.

Used by ``civicmap db create`` for `make run` and by the test suite, which
makes a fresh database per test session and drops it afterwards.
"""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url


def maintenance_url(url: str | URL) -> URL:
    return make_url(url).set(database="postgres")


def ensure_database(url: str | URL, *, template: str | None = None) -> bool:
    """Create the database named in ``url`` if missing, with PostGIS. Returns True if it was created."""
    target = make_url(url)
    name = target.database
    assert name, "the database URL names no database"
    admin = create_engine(maintenance_url(target), isolation_level="AUTOCOMMIT")
    created = False
    try:
        with admin.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            if not exists:
                quoted = conn.dialect.identifier_preparer.quote(name)
                suffix = f" TEMPLATE {conn.dialect.identifier_preparer.quote(template)}" if template else ""
                conn.exec_driver_sql(f"CREATE DATABASE {quoted}{suffix} ENCODING 'UTF8'")
                created = True
    finally:
        admin.dispose()
    engine = create_engine(target, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis")
    finally:
        engine.dispose()
    return created


def drop_database(url: str | URL) -> None:
    target = make_url(url)
    admin = create_engine(maintenance_url(target), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote(target.database or "")
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        admin.dispose()
