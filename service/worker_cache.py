"""Small values each worker process keeps for a few seconds: categories, area names, the area picker.

They change rarely (a new category, a boundary update), and reading them on
every request would add a database round trip to every tile and page.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from flask import current_app

CACHE_SECONDS = 10.0


def cached(name: str, compute: Callable[[], Any], seconds: float = CACHE_SECONDS) -> Any:
    """The value of ``compute()``, recomputed by this worker at most every ``seconds``."""
    cache = current_app.extensions.setdefault("civicmap.worker_cache", {})
    now = time.monotonic()
    hit = cache.get(name)
    if hit is None or now - hit[0] > seconds:
        hit = cache[name] = (now, compute())
    return hit[1]
