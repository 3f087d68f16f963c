"""The sentences the browser scripts show, translated with the server's own catalogs.

The phone form's JavaScript has no catalog of its own: the page hands it
``browser_strings()`` as JSON, already in the reader's language, so the
Khmer of the pages and of the scripts comes from one ``messages.po``.
``%(name)s`` placeholders are filled in by the script.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

BROWSER_STRINGS = {
    # the queue and "my reports"
    "state.waiting": _l("Waiting for a connection"),
    "state.sending": _l("Sending…"),
    "state.sent": _l("Sent"),
    "state.attention": _l("Needs your attention"),
    "state.photos": _l("Sending photos (%(done)s of %(total)s)"),
    "queue.empty": _l("Nothing waiting to be sent."),
    "queue.saved_offline": _l("Saved on this phone. It will be sent by itself when you are back online."),
    "queue.sent_reference": _l("Sent. Your reference is %(reference)s."),
    "queue.track": _l("Follow this report"),
    "queue.remove": _l("Remove"),
    "queue.retry": _l("Try again"),
    "queue.edit": _l("Fix and send again"),
    "queue.offline": _l("You are offline. Reports are kept on this phone."),
    "queue.online": _l("You are online."),
    "queue.count": _l("%(count)s report(s) waiting to be sent"),
    "queue.sending_progress": _l("Sending %(done)s of %(total)s"),
    "queue.send_now": _l("Send now"),
    # location
    "gps.locating": _l("Finding your location…"),
    "gps.found": _l("Location found, accurate to about %(metres)s m."),
    "gps.poor": _l("Location found, but only to about %(metres)s m. Add a landmark to help."),
    "gps.denied": _l("Location is switched off. Choose the area and type a landmark instead."),
    "gps.unavailable": _l("No GPS signal. Choose the area and type a landmark instead."),
    "gps.unsupported": _l("This phone cannot share its location. Choose the area and type a landmark."),
    "map.offline": _l("The map needs a connection. Use GPS or a landmark instead."),
    "map.loading": _l("Loading the map…"),
    "map.hint": _l("Drag the map so the pin is on the problem."),
    "map.done": _l("Use this place"),
    # photos
    "photo.compressing": _l("Making the photo smaller…"),
    "photo.too_many": _l("You can add up to %(max)s photos."),
    "photo.unreadable": _l("This photo could not be read. Try another one."),
    "photo.remove": _l("Remove photo"),
    # form checks made on the phone
    "form.need_category": _l("Choose what kind of problem it is."),
    "form.need_location": _l("Share your location, or choose the area and type a landmark."),
    "form.need_consent": _l("Tick the box to let the city contact you, or leave the contact empty."),
    "form.too_long": _l("This is too long."),
    "form.fix_errors": _l("Please check the marked fields."),
    "form.need_landmark": _l("Without GPS, tell us a landmark or address so the city can find the place."),
    "form.bad_phone": _l("This is not a phone number."),
    "form.bad_email": _l("This is not an email address."),
    # answers from the server, in plain words
    "error.outside_area": _l("This place is outside the cities civicmap serves."),
    "error.rejected": _l("The city could not accept this report: %(reason)s"),
    "error.conflict": _l("This report was already sent with other content."),
    "error.server": _l("The server had a problem. We will try again."),
    "error.storage": _l("This phone has no room left to keep the report."),
    # field-worker mode
    "field.signed_in": _l("Signed in as device %(device)s."),
    "field.sign_in_failed": _l("This device token is not valid."),
    "field.sign_out": _l("Sign out"),
    "field.syncing": _l("Syncing %(done)s of %(total)s"),
    "field.sync_done": _l("Sync finished: %(sent)s sent, %(failed)s need attention."),
    "field.pulled": _l("%(count)s update(s) from the city."),
    "field.no_updates": _l("No new updates."),
    "field.sign_in_offline": _l("Connect to the internet to sign in."),
    # the city's status of a sent report (the same words as the tracking page)
    "status.new": _l("Received"),
    "status.acknowledged": _l("Seen by the city"),
    "status.in_progress": _l("Being fixed"),
    "status.resolved": _l("Fixed"),
    "status.rejected": _l("Not accepted"),
    "status.duplicate": _l("Already reported"),
}


def browser_strings() -> dict[str, str]:
    """The catalog for the page's scripts, in the request's language."""
    return {key: str(message) for key, message in BROWSER_STRINGS.items()}


def status_labels() -> dict[str, object]:
    """The residents' words for each status (as ``templates/_status.html`` says them), for the map's popups."""
    return {
        "new": _l("Received"),
        "acknowledged": _l("Seen by the city"),
        "in_progress": _l("Being fixed"),
        "resolved": _l("Fixed"),
        "rejected": _l("Not accepted"),
        "duplicate": _l("Already reported"),
    }
