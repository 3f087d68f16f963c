"""The phone pages over HTTP: the form in both languages, the no-JavaScript post, tracking, the service worker."""

from __future__ import annotations

import io
import re
import uuid
from html.parser import HTMLParser

import brotli
import pytest
from PIL import Image
from sqlalchemy import text

from tests.conftest import auth
from tests.test_photos_api import jpeg_with_gps, png_bomb

DOUN_PENH = (104.9282, 11.5625)
KHMER = "ធុងសំរាមពេញ នៅមុខផ្សារ — សូមជួយ"


class FormAudit(HTMLParser):
    """Collects the visible form controls, the labels' targets and the labels that wrap a control."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str]] = []
        self.label_for: set[str] = set()
        self.open_labels = 0
        self.wrapped = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "label":
            self.open_labels += 1
            if a.get("for"):
                self.label_for.add(a["for"])
        elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            a["_wrapped"] = "1" if self.open_labels else ""
            self.controls.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.open_labels -= 1


def commune_at(connection, lon: float, lat: float) -> str:
    return connection.execute(text(
        "SELECT code FROM areas WHERE level = 'commune' AND ST_Contains(geom, ST_SetSRID(ST_Point(:lon, :lat), 4326))"),
        {"lon": lon, "lat": lat}).scalar_one()


def form_fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {"client_id": str(uuid.uuid4()), "category": "waste.overflowing_bin",
                                 "lon": str(DOUN_PENH[0]), "lat": str(DOUN_PENH[1]), "accuracy_m": "12",
                                 "area": "", "landmark": "", "description": KHMER}
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


def post_form(client, fields: dict[str, object], photos: list[bytes] = (), headers: dict[str, str] | None = None):
    data = dict(fields)
    if photos:
        data["photo"] = [(io.BytesIO(p), f"p{i}.jpg", "image/jpeg") for i, p in enumerate(photos)]
    return client.post("/report", data=data, content_type="multipart/form-data", headers=headers or {})


def count_reports(connection) -> int:
    return connection.execute(text("SELECT count(*) FROM reports")).scalar_one()


# --- the form -----------------------------------------------------------------------------------------------------

def test_form_in_khmer_with_labels_from_the_categories_table(client, connection):
    response = client.get("/report", headers={"Accept-Language": "km-KH,km;q=0.9"})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert '<html lang="km">' in html
    label = connection.execute(text("SELECT label_km FROM categories WHERE code = 'waste.overflowing_bin'")).scalar()
    assert label and label in html
    assert "តើមានបញ្ហាអ្វី?" in html  # "What is the problem?" from the catalog
    assert response.headers["Content-Language"] == "km"
    config = re.search(r'<script type="application/json" id="civicmap-config">(.*?)</script>', html).group(1)
    assert "កំពុងរង់ចាំអ៊ីនធឺណិត" in config  # the scripts' strings come from the same catalog, in Khmer


def test_english_by_default_and_the_switch_sticks(client):
    html = client.get("/report").get_data(as_text=True)
    assert '<html lang="en">' in html and "What is the problem?" in html
    assert 'href="?lang=km"' in html
    switched = client.get("/report?lang=km")
    assert "lang=km" in switched.headers["Set-Cookie"]
    assert '<html lang="km">' in client.get("/report").get_data(as_text=True)  # the cookie now decides


def test_every_visible_control_has_a_label(client):
    for path in ("/report", "/field", "/r"):
        audit = FormAudit()
        audit.feed(client.get(path).get_data(as_text=True))
        assert audit.controls, path
        unlabelled = [c for c in audit.controls if c.get("id") not in audit.label_for and not c["_wrapped"]]
        assert not unlabelled, (path, unlabelled)


def test_form_is_compressed_and_assets_cached_forever(client):
    response = client.get("/report", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert response.headers["Content-Encoding"] == "br"
    html = brotli.decompress(response.data).decode()
    assert len(response.data) < len(html) / 2
    css = re.search(r'href="(/static/css/app\.css\?v=[0-9a-f]{10})"', html).group(1)
    asset = client.get(css, headers={"Accept-Encoding": "br"})
    assert asset.status_code == 200 and asset.headers["Content-Encoding"] == "br"
    assert "immutable" in asset.headers["Cache-Control"]
    assert b"Noto Sans Khmer" in brotli.decompress(asset.data)


def test_service_worker_lists_hashed_shell_assets(client):
    response = client.get("/sw.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert response.headers["Service-Worker-Allowed"] == "/"
    body = response.get_data(as_text=True)
    assets = re.findall(r"/static/[\w/.]+\?v=[0-9a-f]{10}", body.split("\n", 2)[1])
    assert any("js/store.js" in a for a in assets) and any("css/app.css" in a for a in assets)
    for asset in assets:
        assert client.get(asset).status_code == 200


# --- posting without JavaScript -----------------------------------------------------------------------------------

def test_post_without_javascript_stores_report_and_photo(client, connection):
    fields = form_fields(name="Sokha", phone="+855 12 345 678", consent="1")
    response = post_form(client, fields, [jpeg_with_gps()])
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    reference = re.search(r"/r/([A-Z]{2}-[0-9A-Z]+)\?sent=1$", response.headers["Location"]).group(1)
    row = connection.execute(text("SELECT id, source, description, contact_phone, contact_consent, accuracy_m "
                                  "FROM reports WHERE reference = :r"), {"r": reference}).one()
    assert str(row.id) == fields["client_id"]
    assert row.source == "web" and row.description == KHMER  # Khmer byte for byte
    assert row.contact_phone == "+855 12 345 678" and row.contact_consent and row.accuracy_m == 12
    content = connection.execute(text("SELECT p.content FROM report_photos rp JOIN photos p ON p.sha256 = "
                                      "rp.photo_sha256 WHERE rp.report_id = :id"), {"id": row.id}).scalar_one()
    assert not Image.open(io.BytesIO(bytes(content))).getexif()  # EXIF (GPS above all) is gone

    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert reference in page and KHMER in page
    assert "+855" not in page and "Sokha" not in page  # contact never on the public page


def test_resend_of_the_same_form_is_one_report(client, connection):
    fields = form_fields()
    first = post_form(client, fields)
    before = count_reports(connection)
    second = post_form(client, fields)
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    assert count_reports(connection) == before


def test_without_gps_the_chosen_sangkat_places_the_report(client, connection):
    area = commune_at(connection, *DOUN_PENH)
    fields = form_fields(lon="", lat="", accuracy_m="", area=area, landmark="ផ្លូវ ១៨២ ជិតផ្សារ")
    response = post_form(client, fields)
    assert response.status_code == 303
    row = connection.execute(text("SELECT c.code AS commune, r.accuracy_m, r.landmark FROM reports r "
                                  "JOIN areas c ON c.id = r.commune_id WHERE r.id = :id"),
                             {"id": fields["client_id"]}).one()
    assert row.commune == area and row.accuracy_m > 50 and row.landmark == "ផ្លូវ ១៨២ ជិតផ្សារ"


@pytest.mark.parametrize("changes, field", [
    ({"category": ""}, "category"),
    ({"lon": "nan", "lat": "nan"}, "location"),
    ({"lat": "91"}, "location"),
    ({"lon": "", "lat": ""}, "location"),
    ({"lon": "100.5018", "lat": "13.7563"}, "location"),  # Bangkok: outside the service area
    ({"category": "waste.no_such_thing"}, "category"),
    ({"phone": "+855 12 345 678"}, "consent"),  # contact without consent
    ({"phone": "call me", "consent": "1"}, "phone"),
    ({"description": "x" * 2001}, "description"),
])
def test_bad_form_is_refused_next_to_its_field_and_nothing_is_stored(client, connection, changes, field):
    before = count_reports(connection)
    response = post_form(client, form_fields(**changes), headers={"Accept-Language": "km"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    message = re.search(rf'<p class="error" id="{field}-error" role="alert">([^<]+)</p>', html)
    assert message and message.group(1).strip(), html[:2000]
    assert re.search("[\u1780-\u17ff]", message.group(1))  # in Khmer
    assert count_reports(connection) == before
    if "description" in changes and len(str(changes["description"])) < 2001:
        assert str(changes["description"]) in html  # what they typed is kept


@pytest.mark.parametrize("photos", [
    [png_bomb()],
    [b"not a picture at all"],
    [jpeg_with_gps()] * 4,
])
def test_bad_photos_refuse_the_whole_report(client, connection, photos):
    before = count_reports(connection)
    response = post_form(client, form_fields(), photos)
    assert response.status_code == 422
    assert 'id="photo-error" role="alert">' in response.get_data(as_text=True)
    assert count_reports(connection) == before


def test_broken_utf8_is_refused(client, connection):
    before = count_reports(connection)
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"category\"\r\n\r\nwaste.burning\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n").encode() + \
        b"\xff\xfe\xe1\x9e broken\r\n" + f"--{boundary}--\r\n".encode()
    response = client.post("/report", data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert count_reports(connection) == before


def test_oversized_form_gets_a_page_not_json(client, config):
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"big.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + b"x" * (3 * config.max_photo_bytes + 128 * 1024) + \
        f"\r\n--{boundary}--\r\n".encode()
    response = client.post("/report", data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 413 and response.mimetype == "text/html"


# --- tracking -----------------------------------------------------------------------------------------------------

def test_tracking_page_shows_timeline_and_staff_notes(client, make_token, report_body):
    created = client.post("/api/v1/reports", json=report_body(contact={"phone": "+85512000111", "consent": True}))
    body = created.get_json()
    moderator = make_token("moderator")
    client.patch(f"/api/v1/reports/{body['id']}/status", json={"status": "resolved", "note": "បានប្រមូលសំរាមហើយ",
                                                                "version": 1}, headers=auth(moderator))
    page = client.get(f"/r/{body['reference']}?lang=km").get_data(as_text=True)
    assert "បានប្រមូលសំរាមហើយ" in page  # the staff note, in Khmer
    assert "បានជួសជុលរួច" in page  # "Fixed", the status in Khmer
    assert "មន្ត្រីទីក្រុង" in page  # said by city staff
    assert "+85512000111" not in page


def test_tracking_lookup_and_unknown_reference(client, report_body):
    reference = client.post("/api/v1/reports", json=report_body()).get_json()["reference"]
    lookup = client.get(f"/r?ref={reference.lower()}")
    assert lookup.status_code == 302
    follow = client.get(lookup.headers["Location"])
    assert follow.status_code == 301 and follow.headers["Location"].endswith(f"/r/{reference}")
    missing = client.get("/r/PP-ZZZZZ")
    assert missing.status_code == 404 and "PP-ZZZZZ" in missing.get_data(as_text=True)


def test_hidden_report_is_not_tracked_publicly(client, connection, report_body):
    created = client.post("/api/v1/reports", json=report_body()).get_json()
    connection.execute(text("UPDATE reports SET hidden = true WHERE id = :id"), {"id": created["id"]})
    assert client.get(f"/r/{created['reference']}").status_code == 404
