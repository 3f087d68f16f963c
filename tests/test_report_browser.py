"""The phone form's offline-first client (static/js) in real headless Chromium against real gunicorn.

Each test gets its own browser context (its own IndexedDB, caches and service
worker). Every request to another host is refused and recorded; only map
tiles may be attempted, and only after "Adjust on map". Network cuts are made
with Playwright routes at the context level, so they also catch what the
service worker sends: a batch the server stored but whose answer was lost,
and a photo piece of which only the first bytes arrived.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, Route
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from tests.test_live_server import _live_device

pytestmark = pytest.mark.browser

KHMER = "ធុងសំរាមពេញ នៅមុខផ្សារ"
PHNOM_PENH = {"latitude": 11.5639, "longitude": 104.9310}
TILES = re.compile(r"^https://tile\.openstreetmap\.org/\d+/\d+/\d+\.png$")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
WAIT = 20_000  # ms: generous for a loaded CI machine; every wait ends as soon as its condition holds


@pytest.fixture(scope="module")
def live_db(live_database_url: str) -> Iterator[Engine]:
    engine = create_engine(live_database_url)
    yield engine
    engine.dispose()


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


class Net:
    """A context whose requests to other hosts are refused; what went where is recorded."""

    def __init__(self, context: BrowserContext, base: str) -> None:
        self.context, self.base = context, base
        self.outside: list[str] = []
        self.local: list[str] = []  # same-origin requests that reached the network (not the service worker's cache)
        self.finished: list[Any] = []
        context.route("**/*", self._guard)
        context.on("requestfinished", lambda request: self.finished.append(request))

    def bytes_received(self) -> int:
        """Headers and (compressed) bodies that came over the network, service worker's own fetches included."""
        total = 0
        for request in self.finished:
            response = request.response()
            if response is not None and not response.from_service_worker:
                sizes = request.sizes()
                total += sizes["responseHeadersSize"] + sizes["responseBodySize"]
        return total

    def _guard(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(self.base + "/"):
            self.local.append(f"{route.request.method} {url[len(self.base):]}")
            route.fallback()
        else:
            self.outside.append(url)
            route.abort()


@pytest.fixture()
def open_context(browser: Browser, live_server: str) -> Iterator[Callable[..., tuple[BrowserContext, Net]]]:
    made: list[BrowserContext] = []

    def factory(*, gps: bool = True, **options: Any) -> tuple[BrowserContext, Net]:
        # As on a phone, Background Sync is allowed (Playwright denies it unless granted).
        options.setdefault("permissions", ["background-sync"])
        if gps:
            options.setdefault("geolocation", PHNOM_PENH)
            options["permissions"] = [*options["permissions"], "geolocation"]
        context = browser.new_context(**options)
        made.append(context)
        return context, Net(context, live_server)

    yield factory
    for context in made:
        context.close()


def offline_ready(page: Page) -> None:
    """The service worker holds this page's shell (in this language): the next opening needs no network."""
    page.wait_for_function("document.documentElement.dataset.offlineReady === '1'", timeout=WAIT)


def located(page: Page) -> None:
    page.wait_for_function("document.getElementById('lon').value !== ''", timeout=WAIT)


def queue_states(page: Page) -> list[str]:
    return page.eval_on_selector_all("#queue-list li", "lis => lis.map(li => li.dataset.state)")


def wait_states(page: Page, state: str, count: int) -> None:
    page.wait_for_function(
        "([state, n]) => [...document.querySelectorAll('#queue-list li')].filter(li => li.dataset.state === state)"
        ".length === n", arg=[state, count], timeout=WAIT)


def stored_ids(page: Page) -> list[str]:
    return sorted(page.evaluate("CM.all('reports').then(all => all.map(r => r.client_id))"))


def make_report(page: Page, category: str, description: str, photo: Path | None = None) -> None:
    radio = page.locator(f"input[name=category][value='{category}']")
    if not radio.is_visible():  # its group is folded: open it, as a person would
        page.locator("details.group", has=radio).locator("summary").click()
    radio.check()
    page.fill("#description", description)
    if photo is not None:
        page.set_input_files("#photo", str(photo))
        page.wait_for_selector("#photo-previews img", timeout=WAIT)
    before = page.locator("#queue-list li").count()
    page.click("#submit")
    page.wait_for_function("n => document.querySelectorAll('#queue-list li').length === n", arg=before + 1,
                           timeout=WAIT)


def camera_photo(path: Path) -> Path:
    """A 1600×1200 noisy JPEG (big, like a phone's) turned by EXIF (orientation 6), with a GPS position."""
    image = Image.effect_noise((1600, 1200), 90).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8825).update({1: "N", 2: (11.0, 33.0, 50.0), 3: "E", 4: (104.0, 55.0, 51.0)})
    image.save(path, "JPEG", quality=92, exif=exif)
    return path


def batch_body(route: Route) -> dict[str, Any]:
    body = route.request.post_data_buffer or b""
    if route.request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return json.loads(body)


# --- 1. online, with GPS ---------------------------------------------------------------------------------------


def test_report_online_with_gps_is_sent_once_and_khmer_round_trips(open_context, live_server, live_db):
    context, net = open_context()
    page = context.new_page()
    page.goto(f"{live_server}/report")
    offline_ready(page)
    # The first visit, service worker and its precache included, fits in 60 KB (an upper bound here:
    # routing turns the HTTP cache off, so the precache fetches again what the page just loaded).
    assert net.bytes_received() <= 60_000
    assert not any("leaflet" in r for r in net.local)
    located(page)
    assert re.search(r"\d+ m", page.locator("#gps-status").inner_text())

    # Checked on the phone, next to the fields; focus goes to the first one to fix.
    page.fill("#phone", "012 345 678")
    page.click("#submit")
    assert page.locator("#category-error").is_visible()
    assert page.locator("#category-field").get_attribute("aria-invalid") == "true"
    assert page.evaluate("document.activeElement.name") == "category"
    assert page.locator("#consent-error").inner_text() == (
        "Tick the box to let the city contact you, or leave the contact empty.")
    assert page.locator("#consent").get_attribute("aria-invalid") == "true"
    assert page.locator("#queue-list li").count() == 0
    page.fill("#phone", "")

    # The map: Leaflet (vendored) only now, tiles from OpenStreetMap (refused here); a tap moves the pin.
    assert not any("leaflet" in url for url in net.local)
    lon_before = page.input_value("#lon")
    page.click("#map-button")
    page.wait_for_selector(".leaflet-marker-icon", timeout=WAIT)
    assert any("/static/vendor/leaflet/leaflet.js?v=" in url for url in net.local)
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.5)
    page.wait_for_function("v => document.getElementById('lon').value !== v", arg=lon_before, timeout=WAIT)
    assert float(page.input_value("#lon")) > float(lon_before)

    make_report(page, "waste.overflowing_bin", KHMER)
    wait_states(page, "sent", 1)
    item = page.locator("#queue-list li").first
    reference = item.locator(".reference").inner_text()
    assert re.fullmatch(r"PP-[0-9A-Z]{5}", reference)
    assert item.locator("a").get_attribute("href") == f"/r/{reference}"
    item.locator(".status", has_text="Received").wait_for(timeout=WAIT)  # the city's status, fetched when online

    found = rows(live_db, "SELECT id::text, description, device_id, accuracy_m FROM reports WHERE reference = :r",
                 r=reference)
    assert len(found) == 1
    assert found[0].description.encode("utf-8") == KHMER.encode("utf-8")
    assert found[0].device_id is None  # a resident's phone: no device token
    assert stored_ids(page) == [found[0].id]
    assert page.locator("#description").input_value() == ""  # the form is ready for the next one

    # The next opening takes the shell from the service worker: no page, script or style from the network.
    net.local.clear()
    page.reload()
    page.wait_for_selector("#queue-list li[data-state=sent]", timeout=WAIT)
    shell = [r for r in net.local if r.startswith(("GET /report", "GET /static/"))]
    assert shell == []
    assert all(TILES.match(url) for url in net.outside), net.outside


# --- 2. offline: three reports, a reload, then back online ------------------------------------------------------


def test_offline_reports_survive_a_reload_and_are_sent_once_back_online(open_context, live_server, live_db,
                                                                        tmp_path):
    photo = camera_photo(tmp_path / "camera.jpg")
    context, net = open_context()
    page = context.new_page()
    page.goto(f"{live_server}/report")
    offline_ready(page)
    located(page)

    context.set_offline(True)
    page.locator("#network-status").wait_for(state="visible")
    assert "offline" in page.locator("#network-status").inner_text()
    make_report(page, "waste.overflowing_bin", "ធុងសំរាម ១")
    page.click("#gps-button")
    located(page)
    make_report(page, "waste.missed_collection", "ធុងសំរាម ២", photo=photo)
    page.click("#gps-button")
    located(page)
    make_report(page, "waste.illegal_dumping", "ធុងសំរាម ៣")
    assert queue_states(page) == ["waiting"] * 3
    assert "Saved on this phone" in page.locator("#form-status").inner_text()
    assert page.locator("#queue-summary").inner_text() == "3 report(s) waiting to be sent"

    page.reload()  # still offline: the service worker answers
    page.wait_for_function("document.querySelectorAll('#queue-list li').length === 3", timeout=WAIT)
    assert page.locator("#report-form").is_visible()
    assert queue_states(page) == ["waiting"] * 3
    ids = stored_ids(page)
    assert rows(live_db, "SELECT count(*) FROM reports WHERE id::text = ANY(:ids)", ids=ids)[0][0] == 0

    context.set_offline(False)
    wait_states(page, "sent", 3)
    found = rows(live_db, "SELECT id::text, description FROM reports WHERE id::text = ANY(:ids) ORDER BY description",
                 ids=ids)
    assert sorted(r.id for r in found) == ids
    assert [r.description for r in found] == ["ធុងសំរាម ១", "ធុងសំរាម ២", "ធុងសំរាម ៣"]
    photos = rows(live_db, "SELECT r.description, p.width, p.height, p.byte_size FROM report_photos rp "
                           "JOIN reports r ON r.id = rp.report_id JOIN photos p ON p.sha256 = rp.photo_sha256 "
                           "WHERE r.id::text = ANY(:ids)", ids=ids)
    assert len(photos) == 1 and photos[0].description == "ធុងសំរាម ២"
    # Shrunk on the phone, and turned upright as its EXIF said (1600×1200 landscape pixels, orientation 6).
    assert (photos[0].width, photos[0].height) == (960, 1280)

    page.reload()
    page.wait_for_function("document.querySelectorAll('#queue-list li').length === 3", timeout=WAIT)
    page.evaluate("CM.flush({force: true})")
    assert queue_states(page) == ["sent"] * 3
    assert rows(live_db, "SELECT count(*) FROM reports WHERE id::text = ANY(:ids)", ids=ids)[0][0] == 3
    assert net.outside == []


# --- 3. the link drops mid-send ---------------------------------------------------------------------------------


def test_lost_batch_answer_and_cut_photo_piece_are_resumed_without_doubles(open_context, live_server, live_db,
                                                                           tmp_path):
    photo = camera_photo(tmp_path / "camera.jpg")
    context, net = open_context()
    batches: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    puts: list[str] = []

    def cut_first_answer(route: Route) -> None:
        assert route.request.headers.get("content-encoding") == "gzip"
        batches.append(batch_body(route))
        response = route.fetch()  # the server gets it and stores it ...
        if len(batches) == 1:
            route.abort("connectionreset")  # ... but the phone never hears back
        else:
            answers.append(response.json())
            route.fulfill(response=response)

    def cut_first_piece(route: Route) -> None:
        if route.request.method != "PUT":
            route.fallback()
            return
        puts.append(route.request.headers["content-range"])
        if len(puts) == 1:
            route.fetch(post_data=route.request.post_data_buffer[:20_000])  # 20,000 bytes arrive, then the link drops
            route.abort("connectionreset")
        else:
            route.fallback()

    context.route("**/api/v1/sync/batches", cut_first_answer)
    context.route("**/api/v1/sync/photos/*", cut_first_piece)
    page = context.new_page()
    page.goto(f"{live_server}/report")
    located(page)
    make_report(page, "street.pothole", "រណ្ដៅធំ", photo=photo)
    wait_states(page, "sent", 1)

    [client_id] = stored_ids(page)
    assert len(batches) >= 2
    assert {b["batch_id"] for b in batches} == {batches[0]["batch_id"]}  # the same batch, resent
    assert all(b["items"] == batches[0]["items"] for b in batches)
    assert batches[0]["device_id"] == "resident"
    assert answers[0]["replayed"] is True and answers[0]["results"][0]["result"] == "created"
    sha = batches[0]["items"][0]["photos"][0]
    assert re.fullmatch(r"[0-9a-f]{64}", sha)

    # The photo: 64 KiB pieces; after the cut, HEAD said 20,000 and the next piece started there.
    total = int(puts[0].rsplit("/", 1)[1])
    assert total <= 400 * 1024
    assert puts[0] == f"bytes 0-65535/{total}"
    assert puts[1] == f"bytes 20000-85535/{total}"
    assert puts[-1].endswith(f"-{total - 1}/{total}")

    assert rows(live_db, "SELECT count(*) FROM reports WHERE id = :id", id=client_id)[0][0] == 1
    linked = rows(live_db, "SELECT u.upload_sha256 FROM report_photos rp JOIN sync_uploads u "
                           "ON u.stored_sha256 = rp.photo_sha256 WHERE rp.report_id = :id", id=client_id)
    assert [r.upload_sha256 for r in linked] == [sha]
    assert net.outside == []


# --- 4. no JavaScript at all ------------------------------------------------------------------------------------


def test_form_works_without_javascript(open_context, live_server, live_db, tmp_path):
    photo = camera_photo(tmp_path / "camera.jpg")
    context, net = open_context(gps=False, java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{live_server}/report")
    assert page.locator("#gps-button").is_hidden()
    page.locator("input[name=category][value='waste.burning']").check()
    page.select_option("#area", "PP-chamkar-mon-olympic")
    page.fill("#landmark", "ផ្លូវ ២៨៦ ជិតផ្សារអូឡាំពិក")
    page.fill("#description", KHMER)
    page.set_input_files("#photo", str(photo))
    page.click("#submit")
    page.wait_for_url(re.compile(r"/r/PP-[0-9A-Z]{5}\?sent=1$"), timeout=WAIT)
    reference = page.url.rsplit("/", 1)[1].split("?")[0]
    assert reference in page.locator("main").inner_text()
    found = rows(live_db, "SELECT r.description, r.landmark, count(rp.*) AS photos FROM reports r "
                          "LEFT JOIN report_photos rp ON rp.report_id = r.id WHERE r.reference = :r "
                          "GROUP BY r.id", r=reference)
    assert [(f.description, f.landmark, f.photos) for f in found] == [(KHMER, "ផ្លូវ ២៨៦ ជិតផ្សារអូឡាំពិក", 1)]
    assert net.outside == []


# --- 5. Khmer on a small phone screen ---------------------------------------------------------------------------


def test_khmer_page_renders_real_glyphs(open_context, live_server):
    context, net = open_context(viewport={"width": 360, "height": 800}, device_scale_factor=1)
    page = context.new_page()
    page.goto(f"{live_server}/report?lang=km")
    page.wait_for_selector("#gps-button", state="visible", timeout=WAIT)
    assert page.get_attribute("html", "lang") == "km"
    heading = page.locator("h1").inner_text()
    assert re.search("[\u1780-\u17ff]", heading), heading
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-km.png"), full_page=True)

    # The fonts the page really used for Khmer text (not just asked for): a font that has Khmer glyphs.
    cdp = context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    for selector in ("h1", "#location-field legend", "#submit"):
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        assert any("Khmer" in f["familyName"] and f["glyphCount"] > 0 for f in fonts), (selector, fonts)

    # Tofu boxes all look alike: two different Khmer letters must not.
    differ = page.evaluate("""() => {
        const font = getComputedStyle(document.body).font;
        const draw = ch => { const c = document.createElement('canvas'); c.width = c.height = 64;
            const g = c.getContext('2d'); g.font = font.replace(/\\d+(\\.\\d+)?px/, '40px'); g.fillText(ch, 8, 48);
            return Array.from(g.getImageData(0, 0, 64, 64).data).join(','); };
        return draw('\u1780') !== draw('\u1781') && draw('\u1780') !== draw('\\ue000');
    }""")
    assert differ
    assert net.outside == []


# --- 6. field mode ----------------------------------------------------------------------------------------------


def test_field_mode_provisioning_offline_sync_with_progress_and_pull(open_context, live_server, live_database_url,
                                                                    live_db):
    token, device_id = _live_device(live_database_url)
    context, net = open_context()
    held: list[Route] = []
    context.route("**/api/v1/sync/batches", lambda route: held.append(route))
    page = context.new_page()
    page.goto(f"{live_server}/field#device-token={token}")
    page.locator("#device-panel").wait_for(state="visible", timeout=WAIT)
    assert page.evaluate("location.hash") == ""  # the token left the address bar
    assert f"#{device_id}" in page.locator("#device-status").inner_text()
    assert page.locator("#device-signin").is_hidden()
    assert page.locator("#contact-field").is_hidden()  # the ambassador's own report: no contact
    page.check("#for-resident")
    assert page.locator("#contact-field").is_visible()
    offline_ready(page)
    located(page)

    context.set_offline(True)
    make_report(page, "flooding.blocked_drain", "លូស្ទះ")
    assert queue_states(page) == ["waiting"]
    page.click("#sync-button")
    page.wait_for_function("document.getElementById('queue-summary').textContent.includes('offline')",
                           timeout=WAIT)

    context.set_offline(False)  # the phone sends by itself; its batch is held on the way
    page.wait_for_function("document.querySelector('#queue-list li').dataset.state === 'sending'", timeout=WAIT)
    page.click("#sync-button")
    page.wait_for_function("document.getElementById('queue-summary').textContent === 'Syncing 0 of 1'",
                           timeout=WAIT)
    assert page.locator("#sync-progress").is_visible()
    assert page.evaluate("[document.getElementById('sync-progress').value, document.getElementById('sync-progress').max]"
                         ) == [0, 1]
    assert len(held) >= 1
    batch = batch_body(held[0])
    assert batch["device_id"] == str(device_id)
    assert held[0].request.headers["authorization"] == f"Bearer {token}"
    for route in held:
        route.fallback()
    context.unroute("**/api/v1/sync/batches")
    page.wait_for_function("document.getElementById('queue-summary').textContent === "
                           "'Sync finished: 1 sent, 0 need attention.'", timeout=WAIT)
    assert page.evaluate("document.getElementById('sync-progress').value") == 1
    item = page.locator("#queue-list li").first
    assert item.get_attribute("data-state") == "sent"
    reference = item.locator(".reference").inner_text()
    found = rows(live_db, "SELECT device_id FROM reports WHERE reference = :r", r=reference)
    assert [f.device_id for f in found] == [device_id]

    page.click("#pull-button")
    page.locator(f"#updates-list li[data-reference='{reference}']").wait_for(timeout=WAIT)
    assert re.fullmatch(r"\d+ update\(s\) from the city\.", page.locator("#pull-status").inner_text())
    item.locator(".status", has_text="Received").wait_for(timeout=WAIT)  # the pull also updates the queue
    cursor = page.evaluate("CM.getPref('cursor')")
    assert cursor
    page.click("#pull-button")
    page.wait_for_function("document.getElementById('pull-status').textContent === 'No new updates.'",
                           timeout=WAIT)

    # Signing out forgets the token, never the reports.
    context.set_offline(True)
    page.click("#gps-button")
    located(page)
    make_report(page, "flooding.blocked_canal", "ប្រឡាយស្ទះ")
    page.click("#device-signout")
    page.locator("#device-signin").wait_for(state="visible")
    assert page.evaluate("CM.getPref('token')") is None
    assert len(stored_ids(page)) == 2
    assert net.outside == []



# --- 7. no GPS, and a report the city cannot take ---------------------------------------------------------------


def test_area_instead_of_gps_and_refused_report_needs_attention(open_context, live_server, live_db):
    context, net = open_context(gps=False)
    page = context.new_page()
    page.goto(f"{live_server}/report")
    page.locator("#gps-button").click()
    page.wait_for_function("document.getElementById('gps-status').textContent.includes('Choose the area')",
                           timeout=WAIT)

    page.locator("input[name=category][value='waste.burning']").check()
    page.select_option("#area", "PP-chamkar-mon-olympic")
    page.click("#submit")  # the area alone is not enough: a landmark too
    assert page.locator("#landmark-error").inner_text() == (
        "Without GPS, tell us a landmark or address so the city can find the place.")
    assert page.evaluate("document.activeElement.id") == "landmark"
    page.fill("#landmark", "ផ្សារអូឡាំពិក")
    page.click("#submit")
    wait_states(page, "sent", 1)
    reference = page.locator("#queue-list li .reference").first.inner_text()
    [row] = rows(live_db, "SELECT ST_X(location) AS lon, ST_Y(location) AS lat, accuracy_m, landmark FROM reports "
                          "WHERE reference = :r", r=reference)
    point = page.get_attribute("#area option[value='PP-chamkar-mon-olympic']", "data-p").split(",")
    assert (row.lon, row.lat, row.accuracy_m, row.landmark) == (
        pytest.approx(float(point[0])), pytest.approx(float(point[1])), float(point[2]), "ផ្សារអូឡាំពិក")

    # Bangkok is outside every city served: refused, said in plain words, and the phone may drop it.
    bangkok, far_net = open_context(geolocation={"latitude": 13.75, "longitude": 100.5})
    far = bangkok.new_page()
    far.goto(f"{live_server}/report")
    located(far)
    make_report(far, "waste.burning", "far away")
    wait_states(far, "attention", 1)
    refused = far.locator("#queue-list li").first
    assert refused.locator(".error").inner_text() == "This place is outside the cities civicmap serves."
    assert far.locator("#queue-summary").inner_text() == "Nothing waiting to be sent."
    [client_id] = stored_ids(far)
    assert rows(live_db, "SELECT count(*) FROM reports WHERE id = :id", id=client_id)[0][0] == 0
    refused.get_by_role("button", name="Remove").click()
    far.wait_for_function("document.querySelectorAll('#queue-list li').length === 0", timeout=WAIT)
    assert stored_ids(far) == []
    assert far_net.outside == []
    assert net.outside == []


# --- 8. the tab is closed before the phone is back online -------------------------------------------------------


def test_report_from_a_closed_tab_is_sent_by_background_sync(open_context, live_server, live_db):
    """Chrome fires "sync" by its own view of the network, which Playwright's offline switch does not reach: the
    event is fired here through DevTools once the phone is back online, as Chrome would."""
    context, net = open_context()
    page = context.new_page()
    page.goto(f"{live_server}/report")
    offline_ready(page)
    located(page)
    context.set_offline(True)
    make_report(page, "water.leak", "បំពង់ទឹកលេច")
    [client_id] = stored_ids(page)
    assert page.evaluate("navigator.serviceWorker.ready.then(r => r.sync.getTags())") == ["civicmap-send"]

    blank = context.new_page()  # about:blank: no page of the site is left once the form's tab closes
    devtools = context.new_cdp_session(blank)
    registrations: list[dict[str, Any]] = []
    devtools.on("ServiceWorker.workerRegistrationUpdated", lambda e: registrations.extend(e["registrations"]))
    devtools.send("ServiceWorker.enable")
    page.close()
    context.set_offline(False)
    blank.wait_for_function("true")  # let the registration event arrive
    [registration] = [r for r in registrations if r["scopeURL"] == f"{live_server}/" and not r["isDeleted"]]
    devtools.send("ServiceWorker.dispatchSyncEvent", {"origin": live_server, "tag": "civicmap-send",
                                                      "registrationId": registration["registrationId"],
                                                      "lastChance": False})
    [worker] = context.service_workers
    state = worker.evaluate("""() => new Promise(done => {
        const end = Date.now() + 15000;
        const check = () => CM.all('reports').then(([r]) =>
            r.state === 'sent' || Date.now() > end ? done(r.state) : setTimeout(check, 100));
        check();
    })""")
    assert state == "sent"
    assert rows(live_db, "SELECT count(*) FROM reports WHERE id = :id", id=client_id)[0][0] == 1
    assert "POST /api/v1/sync/batches" in net.local

    page = context.new_page()
    page.goto(f"{live_server}/report")
    wait_states(page, "sent", 1)
    assert stored_ids(page) == [client_id]
    assert net.outside == []
