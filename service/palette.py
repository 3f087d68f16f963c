"""The colours of category groups and statuses, in one place for every chart and map.

From the Okabe–Ito palette, which people with every common colour-vision
deficiency can tell apart, and each at least 3:1 against white (WCAG 1.4.11
for graphics). Colour is never the only cue: charts label their parts and
carry a data table, so these only help the eye.
"""

from __future__ import annotations

#: Top-level category code → fill colour (``#rrggbb``).
CATEGORY_COLOURS: dict[str, str] = {
    "waste": "#D55E00",     # vermillion
    "flooding": "#0072B2",  # blue
    "water": "#009E73",     # bluish green
    "street": "#CC79A7",    # reddish purple
}
#: A category group without a colour of its own (a city adds one later).
OTHER_CATEGORY_COLOUR = "#666666"

#: Report status → fill colour: warm while it waits for the city, green when fixed, greys when closed otherwise.
STATUS_COLOURS: dict[str, str] = {
    "new": "#D55E00",
    "acknowledged": "#9A6A00",
    "in_progress": "#0072B2",
    "resolved": "#009E73",
    "rejected": "#555555",
    "duplicate": "#888888",
}


def category_colour(group: str) -> str:
    return CATEGORY_COLOURS.get(group, OTHER_CATEGORY_COLOUR)
