"""Helpers shared by the benchmarks in ``bench/`` (not a benchmark itself).

Database URLs, the "is this really a bench database?" guard, database
preparation, machine/server facts, medians and percentiles, and a plain-text
table printer. Only the standard library, numpy, SQLAlchemy and psycopg 3.
"""

from __future__ import annotations

import random

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/x.py` puts bench/ first, not the repo
    sys.path.insert(0, str(REPO))

import numpy as np
import psycopg
from sqlalchemy.engine import make_url

from service.config import normalise_database_url


class BenchError(SystemExit):
    """Stop the bench with a message on stderr (exit status 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"bench: {message}")


def database_urls(force: bool = False) -> tuple[str, str]:
    """(SQLAlchemy URL with +psycopg, libpq URL for psycopg.connect) from DATABASE_URL.

    Benches truncate or drop what they write to, so the database name must
    contain "bench" unless ``force`` is given.
    """
    raw = os.environ.get("DATABASE_URL", "").strip()
    if not raw:
        raise BenchError("set DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/civicmap_bench); "
                         "`make bench-intake` / `make bench-seed` do this for you")
    url = make_url(normalise_database_url(raw))
    if not url.drivername.startswith("postgresql"):
        raise BenchError(f"DATABASE_URL must be a PostgreSQL URL, not {url.drivername}")
    if not url.database:
        raise BenchError("DATABASE_URL names no database")
    if "bench" not in url.database and not force:
        raise BenchError(f"refusing to use database {url.database!r}: benches TRUNCATE/DROP their database; "
                         "use one whose name contains 'bench' or pass --force")
    if url.host not in (None, "127.0.0.1", "localhost", "::1"):
        raise BenchError(f"benches only talk to the local server, not {url.host}")
    sa_url = url.render_as_string(hide_password=False)
    libpq_url = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return sa_url, libpq_url


def prepare_database(sa_url: str, *, fresh: bool) -> dict[str, int]:
    """Create (or drop and re-create) the database, migrate it, load areas and categories."""
    from sqlalchemy import create_engine

    from service.cli import upgrade_database
    from service.dbadmin import drop_database, ensure_database
    from service.seed import load_areas, load_categories

    if fresh:
        drop_database(sa_url)
    ensure_database(sa_url)
    engine = create_engine(sa_url)
    try:
        upgrade_database(engine)
        with engine.begin() as conn:
            areas = load_areas(conn)
            categories = load_categories(conn)
    finally:
        engine.dispose()
    return {"areas": areas, "categories": categories}


def server_facts(libpq_url: str) -> dict[str, str]:
    """PostgreSQL/PostGIS versions and the settings that bound write speed."""
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        facts = {"postgresql": str(conn.execute("SHOW server_version").fetchone()[0])}
        row = conn.execute("SELECT postgis_lib_version()").fetchone()
        facts["postgis"] = str(row[0]) if row else "?"
        for name in ("fsync", "synchronous_commit", "wal_level", "shared_buffers", "max_wal_size"):
            facts[name] = str(conn.execute(f"SHOW {name}").fetchone()[0])
    return facts


def machine_facts() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(terse=True)}


def describe(facts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in facts.items())


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn()`` took, and what it returned."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The q-th percentile (linear interpolation) of latencies given in seconds, in milliseconds."""
    return float(np.percentile(np.asarray(seconds, dtype=float), q)) * 1000.0


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Markdown-compatible table (right-aligned numbers), so docs can quote it as printed."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                for i, (c, w) in enumerate(zip(row, widths))) + " |")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 100:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"figures written to {path}")


def sample_points(count: int, rng: random.Random, libpq_url: str,
                  bbox: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """``count`` random points in ``bbox``, each checked in PostGIS to lie inside a served city."""
    import psycopg

    points: list[tuple[float, float]] = []
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        while len(points) < count:
            batch = [(round(rng.uniform(bbox[0], bbox[2]), 6), round(rng.uniform(bbox[1], bbox[3]), 6))
                     for _ in range(count - len(points))]
            inside = conn.execute(
                "SELECT p.i FROM unnest(%s::float8[], %s::float8[]) WITH ORDINALITY AS p(lon, lat, i) "
                "WHERE EXISTS (SELECT 1 FROM areas a WHERE a.level = 'city' "
                "AND ST_Covers(a.geom, ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326))) ORDER BY p.i",
                ([p[0] for p in batch], [p[1] for p in batch])).fetchall()
            if not inside:
                raise BenchError("no sampled point lies inside a city: are the areas loaded?")
            points.extend(batch[i - 1] for (i,) in inside)
    return points
