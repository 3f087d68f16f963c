"""The duplicate-suggestion rule (FixMyStreet's), as plain data and one pure decision.

When someone reports a problem, civicmap shows the reports it may duplicate:
reports of the **same category**, within the category's radius (**250 m**
unless the category sets its own, 1 to 5,000 m), that are **open** (new,
acknowledged, in progress) or were **resolved within the last 30 days**. Hidden
reports, rejected ones, duplicates and the new report itself never count. The
nearest come first, at most five.

"Resolved at" is the time of the report's latest history event that moved it
*into* ``resolved`` (a note added to a resolved report does not count), not
``updated_at``, which any note bumps.

``service.queries.duplicate_candidates`` carries out the same rule in SQL; this
module names its constants and states it for one candidate, for tests and for
anyone reading the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "DEFAULT_RADIUS_M",
    "DEFAULT_RULE",
    "MAX_RADIUS_M",
    "MAX_SUGGESTIONS",
    "MIN_RADIUS_M",
    "OPEN_STATUSES",
    "RESOLVED_STATUS",
    "RESOLVED_WINDOW",
    "DuplicateRule",
    "check_radius",
    "is_duplicate_candidate",
]

DEFAULT_RADIUS_M = 250
MIN_RADIUS_M = 1
MAX_RADIUS_M = 5000
RESOLVED_WINDOW = timedelta(days=30)
OPEN_STATUSES: tuple[str, ...] = ("new", "acknowledged", "in_progress")
RESOLVED_STATUS = "resolved"
MAX_SUGGESTIONS = 5


@dataclass(frozen=True)
class DuplicateRule:
    """The rule's parameters; the defaults are civicmap's."""

    radius_m: int = DEFAULT_RADIUS_M
    resolved_window: timedelta = RESOLVED_WINDOW
    open_statuses: tuple[str, ...] = OPEN_STATUSES
    max_suggestions: int = MAX_SUGGESTIONS

    def __post_init__(self) -> None:
        check_radius(self.radius_m)
        if self.max_suggestions < 0:
            raise ValueError("max_suggestions must not be negative")


def check_radius(value: object) -> int:
    """A category's duplicate radius: a whole number of metres from 1 to 5,000, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"duplicate_radius_m must be a whole number of metres, not {value!r}")
    if not MIN_RADIUS_M <= value <= MAX_RADIUS_M:
        raise ValueError(f"duplicate_radius_m must be from {MIN_RADIUS_M} to {MAX_RADIUS_M} m, not {value}")
    return value


DEFAULT_RULE = DuplicateRule()


def is_duplicate_candidate(*, report_category: str, candidate_category: str, distance_m: float, status: str,
                           resolved_at: datetime | None, now: datetime, hidden: bool = False,
                           rule: DuplicateRule = DEFAULT_RULE) -> bool:
    """Whether another report may be suggested as a duplicate of a new one.

    ``distance_m`` is the geodesic distance between the two points;
    ``resolved_at`` is when the candidate last became ``resolved`` (None if it
    never did). A report exactly on the radius or exactly 30 days after its
    resolution still counts (PostGIS ``ST_DWithin`` is inclusive, and so is
    the SQL's ``>=``).
    """
    if hidden or candidate_category != report_category or distance_m > rule.radius_m:
        return False
    if status in rule.open_statuses:
        return True
    if status == RESOLVED_STATUS:
        return resolved_at is not None and resolved_at >= now - rule.resolved_window
    return False  # rejected, duplicate, or a status this rule does not know
