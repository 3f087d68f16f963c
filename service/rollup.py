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

from sqlalchemy.engine import Connection, Engine

from service import layer_queries, queries

log = logging.getLogger(__name__)
ROLLUP_LOCK_KEY = 7243002
_running = threading.Lock()
_last_started = 0.0


def refresh(conn: Connection) -> float:
    """Refresh the tile rollup in ``conn``'s transaction; returns the seconds it took."""
    started = time.perf_counter()
    layer_queries.refresh_tile_rollup(conn)
    return time.perf_counter() - started


def age_seconds(conn: Connection) -> float:
    """How long ago the rollup was last refreshed."""
    return layer_queries.tile_rollup_age(conn)


def _refresh_once(engine: Engine) -> None:
    try:
        with engine.begin() as conn:
            if not queries.try_advisory_xact_lock(conn, ROLLUP_LOCK_KEY):
                return  # another worker is at it
            took = refresh(conn)
        log.info("tile rollup refreshed in %.2f s", took)
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
