"""Keeping the tile rollup (``report_tile_cells``, migration 0004) fresh.

The rollup is refreshed ``CONCURRENTLY`` so tiles keep being served from the
old counts while the new ones are built. ``refresh`` does it now (the CLI and
``civicmap seed``); ``refresh_in_background_if_stale`` is what a tile request
calls: when the rollup is older than the configured age, one daemon thread
refreshes it, and a PostgreSQL advisory lock makes sure only one process of
all the gunicorn workers does.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)
ROLLUP_LOCK_KEY = 7243002
_running = threading.Lock()
_last_started = 0.0


def refresh(conn: Connection) -> float:
    """Refresh the tile rollup in ``conn``'s transaction; returns the seconds it took."""
    started = time.perf_counter()
    conn.execute(text("REFRESH MATERIALIZED VIEW CONCURRENTLY report_tile_cells"))
    conn.execute(text("UPDATE rollup_state SET refreshed_at = now() WHERE name = 'report_tile_cells'"))
    return time.perf_counter() - started


def age_seconds(conn: Connection) -> float:
    """How long ago the rollup was last refreshed."""
    return float(conn.execute(text(
        "SELECT extract(epoch FROM now() - refreshed_at) FROM rollup_state WHERE name = 'report_tile_cells'"
    )).scalar_one())


def _refresh_once(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ROLLUP_LOCK_KEY}).scalar_one():
                return  # another worker is at it
            try:
                with conn.begin():
                    took = refresh(conn)
                log.info("tile rollup refreshed in %.2f s", took)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ROLLUP_LOCK_KEY})
                conn.commit()
    except Exception:  # a failed refresh must not take the worker down; the old counts stay
        log.exception("tile rollup refresh failed")
    finally:
        _running.release()


def refresh_in_background_if_stale(engine: Engine, age: float, max_age: float) -> bool:
    """Start a refresh thread when the rollup is older than ``max_age`` (and none is running here)."""
    global _last_started
    if age < max_age or time.monotonic() - _last_started < max_age:
        return False
    if not _running.acquire(blocking=False):
        return False
    _last_started = time.monotonic()
    threading.Thread(target=_refresh_once, args=(engine,), name="rollup-refresh", daemon=True).start()
    return True
