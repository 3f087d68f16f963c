"""Keeping the rollups fresh: the tile rollup (``report_tile_cells``, migration 0004) and the dashboard's
(``report_weekly_stats`` and ``report_sla_stats``, migration 0007).

They are refreshed ``CONCURRENTLY``, so tiles and the dashboard keep being
served from the old counts while the new ones are built, and all together,
so they agree. ``refresh`` does it now (the CLI and ``civicmap seed``);
``refresh_in_background_if_stale`` is what a tile or dashboard request calls:
when the oldest rollup is older than the configured age, one daemon thread
refreshes them, and a PostgreSQL advisory lock makes sure only one process of
all the gunicorn workers does.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.engine import Connection, Engine

from service import layer_queries, queries, stats_queries

log = logging.getLogger(__name__)
ROLLUP_LOCK_KEY = 7243002
TILE_ROLLUP = "report_tile_cells"
_running = threading.Lock()
_last_started = 0.0


def refresh(conn: Connection) -> dict[str, float]:
    """Refresh every rollup in ``conn``'s transaction; returns the seconds each took, by name."""
    started = time.perf_counter()
    layer_queries.refresh_tile_rollup(conn)
    took = {TILE_ROLLUP: time.perf_counter() - started}
    took.update(stats_queries.refresh_dashboard_rollups(conn))
    return took


def age_seconds(conn: Connection) -> float:
    """How long ago the least recently refreshed rollup was refreshed."""
    return stats_queries.oldest_rollup_age(conn)


def _refresh_once(engine: Engine) -> None:
    try:
        with engine.begin() as conn:
            if not queries.try_advisory_xact_lock(conn, ROLLUP_LOCK_KEY):
                return  # another worker is at it
            took = refresh(conn)
        log.info("rollups refreshed in %.2f s (%s)", sum(took.values()),
                 ", ".join(f"{name} {seconds:.2f} s" for name, seconds in took.items()))
    except Exception:  # a failed refresh must not take the worker down; the old counts stay
        log.exception("rollup refresh failed")
    finally:
        _running.release()


def refresh_in_background_if_stale(engine: Engine, age: float, max_age: float) -> bool:
    """Start a refresh thread when the rollups are older than ``max_age`` (and none is running here)."""
    global _last_started
    if age < max_age or time.monotonic() - _last_started < max_age:
        return False
    if not _running.acquire(blocking=False):
        return False
    _last_started = time.monotonic()
    threading.Thread(target=_refresh_once, args=(engine,), name="rollup-refresh", daemon=True).start()
    return True
