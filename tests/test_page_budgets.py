"""The phone form's byte budgets, asserted in real Chromium through bench/page_weight.py's counting proxy.

The same measurement as ``make bench-page-weight`` without the slow Regular 2G
runs: first load ≤ 60 KB, repeat load 0 bytes of shell, one report ≤ 2 KB.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import page_weight  # noqa: E402

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def weights(live_server, live_database_url) -> dict:
    libpq = make_url(live_database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    return page_weight.measure(live_server, libpq, throttled=False)


def test_first_load_within_60_kb(weights):
    assert weights["first_load_down"] <= page_weight.FIRST_LOAD_BUDGET, weights["requests"]["first_load"]
    assert any(path.startswith("/static/js/") for _m, path, _d, _u in weights["requests"]["first_load"])


def test_repeat_load_sends_no_shell_bytes(weights):
    assert weights["repeat_shell_down"] + weights["repeat_shell_up"] == 0, weights["requests"]["repeat"]


def test_report_without_photo_within_2_kb(weights):
    assert 0 < weights["report_down"] + weights["report_up"] <= page_weight.REPORT_BUDGET, weights["requests"]["report"]
