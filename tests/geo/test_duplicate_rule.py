"""Tests for geo.duplicates: the duplicate-suggestion rule, without a database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from geo.duplicates import (
    DEFAULT_RADIUS_M,
    DEFAULT_RULE,
    MAX_RADIUS_M,
    MAX_SUGGESTIONS,
    MIN_RADIUS_M,
    OPEN_STATUSES,
    RESOLVED_WINDOW,
    DuplicateRule,
    check_radius,
    is_duplicate_candidate,
)

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=timezone.utc)


def qualifies(**changes: object) -> bool:
    args: dict[str, object] = {"report_category": "waste.burning", "candidate_category": "waste.burning",
                               "distance_m": 100.0, "status": "new", "resolved_at": None, "now": NOW}
    args.update(changes)
    return is_duplicate_candidate(**args)  # type: ignore[arg-type]


def test_the_rule_is_fixmystreets() -> None:
    assert DEFAULT_RADIUS_M == 250
    assert RESOLVED_WINDOW == timedelta(days=30)
    assert OPEN_STATUSES == ("new", "acknowledged", "in_progress")
    assert MAX_SUGGESTIONS == 5
    assert (MIN_RADIUS_M, MAX_RADIUS_M) == (1, 5000)
    assert DEFAULT_RULE == DuplicateRule(radius_m=250)


@pytest.mark.parametrize(("distance_m", "expected"), [(0.0, True), (249.0, True), (250.0, True),
                                                      (250.001, False), (251.0, False)])
def test_radius_is_inclusive(distance_m: float, expected: bool) -> None:
    assert qualifies(distance_m=distance_m) is expected


def test_a_category_radius_replaces_the_default() -> None:
    flooding = DuplicateRule(radius_m=500)
    assert qualifies(distance_m=450.0, rule=flooding)
    assert not qualifies(distance_m=450.0)
    assert not qualifies(distance_m=150.0, rule=DuplicateRule(radius_m=100))


@pytest.mark.parametrize("candidate", ["waste.illegal_dumping", "waste", "flooding.blocked_drain", "WASTE.BURNING"])
def test_only_the_same_category(candidate: str) -> None:
    assert not qualifies(candidate_category=candidate, distance_m=1.0)


@pytest.mark.parametrize("status", OPEN_STATUSES)
def test_open_reports_count_however_old(status: str) -> None:
    assert qualifies(status=status)
    assert qualifies(status=status, resolved_at=NOW - timedelta(days=900))  # an old resolution, since reopened


@pytest.mark.parametrize(("age", "expected"), [
    (timedelta(0), True),
    (timedelta(days=29), True),
    (timedelta(days=30), True),
    (timedelta(days=30, microseconds=1), False),
    (timedelta(days=31), False),
    (-timedelta(minutes=5), True),  # a clock slightly ahead is still recent
])
def test_resolved_counts_for_30_days(age: timedelta, expected: bool) -> None:
    assert qualifies(status="resolved", resolved_at=NOW - age) is expected


def test_resolved_without_a_known_time_does_not_count() -> None:
    assert not qualifies(status="resolved", resolved_at=None)


@pytest.mark.parametrize("status", ["rejected", "duplicate", "archived", ""])
def test_closed_or_unknown_statuses_never_count(status: str) -> None:
    assert not qualifies(status=status, resolved_at=NOW)


def test_hidden_reports_never_count() -> None:
    assert not qualifies(hidden=True)
    assert not qualifies(hidden=True, status="resolved", resolved_at=NOW)


def test_a_longer_window_can_be_chosen() -> None:
    rule = DuplicateRule(resolved_window=timedelta(days=60))
    assert qualifies(status="resolved", resolved_at=NOW - timedelta(days=45), rule=rule)
    assert not qualifies(status="resolved", resolved_at=NOW - timedelta(days=45))


@pytest.mark.parametrize("value", [1, 250, 500, 5000])
def test_check_radius_accepts_whole_metres_in_range(value: int) -> None:
    assert check_radius(value) == value


@pytest.mark.parametrize("value", [0, -1, 5001, 250.0, "250", True, None])
def test_check_radius_refuses_the_rest(value: object) -> None:
    with pytest.raises(ValueError, match="duplicate_radius_m"):
        check_radius(value)


def test_a_rule_checks_its_own_parameters() -> None:
    with pytest.raises(ValueError):
        DuplicateRule(radius_m=0)
    with pytest.raises(ValueError):
        DuplicateRule(max_suggestions=-1)
    with pytest.raises(AttributeError):
        DEFAULT_RULE.radius_m = 10  # type: ignore[misc]
