"""A moderator resolves a report through the staff pages in real headless Chromium, against real gunicorn,
and the resident's tracking page shows it; a second tab still on the old version gets the 409 page.

The moderator is made with the real command (``civicmap user add --password-stdin``) in the live
server's database; the resident reports through the API, with contact details that must never
reach the public page.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.support import Translations
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from tests.test_report_browser import ARTIFACTS, WAIT, Net

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
NOTE = "បានសម្អាតរួចហើយ"  # "cleaned up already": with a coeng (្), which must survive as typed
DESCRIPTION = "ធុងសំរាមពេញហៀរ នៅមុខផ្សារ"
CONTACT = {"name": "Sok Dara", "phone": "+855 12 345 678", "email": "dara@example.org", "consent": True}
PASSWORD = "tonle-sap-2026"
KM = Translations.load(str(ROOT / "service" / "translations"), ["km"])


@pytest.fixture(scope="module")
def live_db(live_database_url: str) -> Iterator[Engine]:
    engine = create_engine(live_database_url)
    yield engine
    engine.dispose()


@pytest.fixture()
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    """Browser contexts the test opens, closed afterwards whatever happened."""
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        context.close()


def add_moderator(live_database_url: str) -> tuple[str, subprocess.Popen[str]]:
    """The real path: ``civicmap user add NAME --role moderator --password-stdin`` against the live database.

    Started, not waited for: the test goes on meanwhile and waits before it signs in (``moderator_added``).
    """
    username = f"sokha-{uuid.uuid4().hex[:6]}"
    command = subprocess.Popen([str(Path(sys.executable).with_name("civicmap")), "user", "add", username,
                                "--role", "moderator", "--password-stdin"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "DATABASE_URL": live_database_url})
    assert command.stdin is not None
    command.stdin.write(PASSWORD + "\n")
    command.stdin.close()
    return username, command


def moderator_added(command: subprocess.Popen[str]) -> None:
    assert command.stdout is not None
    output = command.stdout.read()
    command.stdout.close()
    assert command.wait(timeout=60) == 0, output
    assert "token: cm_" in output  # and the password for the sign-in


def resident_reports(live_server: str) -> dict:
    body = {"category": "waste.overflowing_bin", "description": DESCRIPTION, "contact": CONTACT,
            "location": {"type": "Point", "coordinates": [104.9282, 11.5625]}, "accuracy_m": 8}
    request = urllib.request.Request(f"{live_server}/api/v1/reports", method="POST",
                                     data=json.dumps(body, ensure_ascii=False).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        return json.loads(response.read())


def after_photo(path: Path) -> Path:
    """A phone photo of the cleaned place, with the GPS position cameras write into EXIF."""
    image = Image.effect_noise((640, 480), 60).convert("RGB")
    exif = Image.Exif()
    exif.get_ifd(0x8825).update({1: "N", 2: (11.0, 33.0, 45.0), 3: "E", 4: (104.0, 55.0, 41.0)})
    image.save(path, "JPEG", quality=85, exif=exif)
    with Image.open(path) as saved:
        assert saved.getexif().get_ifd(0x8825)
    return path


def state(live_db: Engine, reference: str) -> tuple:
    with live_db.connect() as conn:
        return tuple(conn.execute(text(
            "SELECT r.status, r.version, (SELECT count(*) FROM report_photos p WHERE p.report_id = r.id) "
            "FROM reports r WHERE r.reference = :r"), {"r": reference}).one())


def submit(page: Page, action: str) -> int:
    """Press the action's button; the status of the POST's answer (before any redirect)."""
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(f"/{action}"),
                              timeout=WAIT) as answer:
        page.locator(f"#action-{action} button[type=submit]").click()
    page.wait_for_load_state()
    return answer.value.status


def test_moderator_resolves_in_the_browser_and_the_resident_sees_it(browser: Browser, contexts, live_server,
                                                                     live_database_url, live_db, tmp_path):
    username, command = add_moderator(live_database_url)
    report = resident_reports(live_server)
    reference = report["reference"]

    # The moderator signs in: asking for the queue leads to the sign-in page and back.
    staff = browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
    contexts.append(staff)
    net = Net(staff, live_server)
    page = staff.new_page()
    page.goto(f"{live_server}/staff/reports")
    assert page.url == f"{live_server}/staff/login?next=/staff/reports"
    moderator_added(command)
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server}/staff/reports", timeout=WAIT)

    # Find it by its reference (other tests' reports share this database), typed as people type it.
    page.fill("#q", reference.lower())
    page.locator("form.filters button[type=submit]").click()
    page.wait_for_url(re.compile(r"/staff/reports\?"), timeout=WAIT)
    found = page.locator("table.queue-table tbody a.reference")
    assert found.all_inner_texts() == [reference]
    found.click()
    page.wait_for_url(f"{live_server}/staff/reports/{reference}", timeout=WAIT)
    contact = page.locator("section.contact").inner_text()
    assert CONTACT["phone"] in contact and CONTACT["email"] in contact  # staff see how to reach the resident

    # A second tab opens the same report now, at version 1, and is left there.
    stale = staff.new_page()
    stale.goto(f"{live_server}/staff/reports/{reference}")
    assert stale.locator("#action-reject input[name=version]").get_attribute("value") == "1"

    assert submit(page, "acknowledge") == 303
    assert page.url == f"{live_server}/staff/reports/{reference}?done=acknowledge"
    assert page.locator(".status").first.inner_text() == "Seen by the city"
    page.fill("#note-resolve", NOTE)
    page.set_input_files("#photo-resolve", str(after_photo(tmp_path / "after.jpg")))
    assert submit(page, "resolve") == 303
    assert page.url == f"{live_server}/staff/reports/{reference}?done=resolve"
    assert "Saved. The report is now at version 3." in page.locator(".banner.ok").inner_text()
    assert page.locator(".status").first.inner_text() == "Fixed"
    assert page.locator(".timeline .note").last.inner_text() == NOTE
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "staff-resolve.png"), full_page=True)

    # Stored as typed, byte for byte, by this moderator; the after photo without its GPS position.
    with live_db.connect() as conn:
        event = conn.execute(text(
            "SELECT e.note, e.new_status, e.actor_role, u.username FROM report_events e JOIN users u "
            "ON u.id = e.actor_id JOIN reports r ON r.id = e.report_id WHERE r.reference = :r "
            "ORDER BY e.id DESC LIMIT 1"), {"r": reference}).one()
        stored = conn.execute(text(
            "SELECT p.content FROM photos p JOIN report_photos rp ON rp.photo_sha256 = p.sha256 "
            "JOIN reports r ON r.id = rp.report_id WHERE r.reference = :r"), {"r": reference}).scalar_one()
    assert event.note.encode("utf-8") == NOTE.encode("utf-8")
    assert (event.new_status, event.actor_role, event.username) == ("resolved", "moderator", username)
    assert not Image.open(io.BytesIO(bytes(stored))).getexif().get_ifd(0x8825)  # no GPS position
    assert state(live_db, reference) == ("resolved", 3, 1)

    # The stale tab acts on version 1: a 409 page that says what happened, and nothing is saved.
    stale.fill("#note-reject", "Private land")
    assert submit(stale, "reject") == 409
    assert stale.locator("h1").inner_text() == "Not saved: the report changed"
    assert "Someone else changed this report first, so your change was not saved." in \
        stale.locator("[role=alert]").inner_text()
    assert state(live_db, reference) == ("resolved", 3, 1)
    stale.get_by_role("link", name="Reload the report").click()
    stale.wait_for_url(f"{live_server}/staff/reports/{reference}", timeout=WAIT)
    assert stale.locator(".status").first.inner_text() == "Fixed"
    assert stale.locator("#action-reject").count() == 0  # closed: no resolve or reject any more
    assert net.outside == []

    # A resident (another browser, not signed in, in Khmer) follows the report.
    resident = browser.new_context(locale="km-KH")
    contexts.append(resident)
    resident_net = Net(resident, live_server)
    public = resident.new_page()
    answer = public.goto(f"{live_server}/r/{reference}")
    assert answer is not None and answer.status == 200
    assert public.get_attribute("html", "lang") == "km"
    status = public.locator("p.status").inner_text()
    assert status == KM.gettext("Fixed") and status != "Fixed"
    notes = public.locator(".timeline .note").all_inner_texts()
    assert notes[-1].encode("utf-8") == NOTE.encode("utf-8")
    last = public.locator(".timeline li").last.inner_text()
    assert KM.gettext("Fixed") in last and KM.gettext("City staff") in last  # who: the city, not a person
    assert public.locator(".photos img").count() == 1  # the after photo
    html = public.content()
    for private in (CONTACT["name"], CONTACT["phone"], CONTACT["email"], username, "Private land"):
        assert private not in html, private
    assert not re.search(r"/staff/", html)  # no link into the staff pages
    assert [c["name"] for c in resident.cookies()] == []  # no session: nothing was signed in
    with urllib.request.urlopen(f"{live_server}/api/v1/reports/{reference}", timeout=10) as response:
        raw = response.read()
    assert NOTE.encode("utf-8") in raw  # UTF-8 as typed, not \u escapes
    last_event = json.loads(raw)["history"][-1]
    assert (last_event["new_status"], last_event["note"], last_event["by"]) == ("resolved", NOTE, "city")
    assert resident_net.outside == []
