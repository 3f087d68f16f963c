"""Translated sentences for failures raised by the pure packages (geo/, photos).

``geo`` and ``service.photos`` know nothing of Flask or locales, so they raise
a stable key with an English sentence; the HTTP layer swaps in the sentence
for the reader's language here, keeping the pure message as the fallback.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

MESSAGES = {
    "photo.empty": _l("The photo is empty."),
    "photo.too_large": _l("The photo is too large; send a smaller one."),
    "photo.too_many_pixels": _l("The picture has too many pixels; send a smaller one."),
    "photo.not_an_image": _l("This is not a photo we can read (JPEG, PNG or WebP)."),
    "photo.corrupt": _l("The photo is damaged or incomplete; send it again."),
    "bbox.malformed": _l("bbox must be four numbers: minLon,minLat,maxLon,maxLat."),
    "bbox.out_of_range": _l("bbox is outside the world: longitude −180…180, latitude −90…90."),
    "bbox.inverted": _l("bbox minimums must be smaller than its maximums."),
    "location.not_finite": _l("Coordinates must be finite numbers."),
    "location.out_of_range": _l("Coordinates are out of range: longitude −180…180, latitude −90…90."),
    "location.not_a_number": _l("Coordinates must be numbers."),
}


def translated(key: str, fallback: str) -> str:
    message = MESSAGES.get(key)
    return str(message) if message is not None else fallback
