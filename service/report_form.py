"""The phone form's fields, read into the report API's payload, with errors in plain words.

The ``/report`` page posts these fields as multipart when the browser has no
JavaScript; with JavaScript the page builds the same payload itself and sends
it through the sync protocol. Either way the report passes through
``ReportCreateSchema`` afterwards: this module only turns a form into a
payload and says, next to each field and in the reader's language, what is
missing or wrong.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

from flask_babel import gettext as _

from service.models import DESCRIPTION_MAX, LANDMARK_MAX

MAX_FORM_PHOTOS = 3
PHONE = re.compile(r"^\+?[0-9][0-9 \-]{4,38}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class PickedArea:
    """A sangkat the resident chose instead of a GPS fix: a point inside it and its rough radius."""

    code: str
    lon: float
    lat: float
    radius_m: int


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def read_report_form(form: Mapping[str, str], areas: Mapping[str, PickedArea]) -> tuple[dict[str, Any], dict[str, str]]:
    """The payload for ``create_report`` and the errors by field name (empty when the form is complete)."""
    errors: dict[str, str] = {}
    payload: dict[str, Any] = {}
    try:
        payload["client_id"] = str(uuid.UUID(form.get("client_id", "")))
    except ValueError:
        pass  # no id: the server makes one (a resend then makes a second report; the JS path never does)

    category = form.get("category", "").strip()
    if not category:
        errors["category"] = _("Choose what kind of problem it is.")
    payload["category"] = category

    lon, lat = _number(form.get("lon")), _number(form.get("lat"))
    area = areas.get(form.get("area", ""))
    if lon is not None and lat is not None and -180 <= lon <= 180 and -90 <= lat <= 90:
        payload["location"] = {"type": "Point", "coordinates": [lon, lat]}
        accuracy = _number(form.get("accuracy_m"))
        if accuracy is not None and 0 <= accuracy <= 100_000:
            payload["accuracy_m"] = accuracy
    elif area is not None:
        payload["location"] = {"type": "Point", "coordinates": [area.lon, area.lat]}
        payload["accuracy_m"] = float(area.radius_m)
    else:
        errors["location"] = _("Share your location, or choose the area and type a landmark.")

    description = form.get("description", "").strip()
    landmark = form.get("landmark", "").strip()
    if len(description) > DESCRIPTION_MAX:
        errors["description"] = _("Keep it under %(n)s characters.", n=DESCRIPTION_MAX)
    if len(landmark) > LANDMARK_MAX:
        errors["landmark"] = _("Keep it under %(n)s characters.", n=LANDMARK_MAX)
    if area is not None and "location" in payload and not landmark and lon is None:
        errors["landmark"] = _("Without GPS, tell us a landmark or address so the city can find the place.")
    payload["description"] = description
    payload["landmark"] = landmark

    contact = {k: form.get(k, "").strip() for k in ("name", "phone", "email")}
    consent = form.get("consent") in ("1", "on", "yes", "true")
    if any(contact.values()):
        if contact["phone"] and not PHONE.match(contact["phone"]):
            errors["phone"] = _("This is not a phone number.")
        if contact["email"] and not EMAIL.match(contact["email"]):
            errors["email"] = _("This is not an email address.")
        if len(contact["name"]) > 200:
            errors["name"] = _("Keep it under %(n)s characters.", n=200)
        if not consent:
            errors["consent"] = _("Tick the box to let the city contact you, or leave the contact empty.")
        payload["contact"] = {**{k: v for k, v in contact.items() if v}, "consent": consent}
    return payload, errors
