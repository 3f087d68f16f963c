"""Report intake, public view, list and status changes, over HTTP against real PostGIS."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import text

from tests.conftest import auth

KHMER = "ធុងសំរាមពេញហៀរ នៅមុខផ្សារ — ម្សិលមិញ 🗑️"


def test_create_report_returns_reference_and_token(client, report_body):
    response = client.post("/api/v1/reports", json=report_body())
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["status"] == "new"
    assert body["reference"].startswith("PP-") and len(body["reference"]) == 8
    assert body["tracking_token"].startswith("trk_")
    assert body["replayed"] is False
    assert response.headers["Location"].endswith(body["reference"])


def test_khmer_description_round_trips_byte_for_byte(client, report_body):
    raw = json.dumps(report_body(description=KHMER, landmark="ផ្សារថ្មី"), ensure_ascii=False).encode("utf-8")
    created = client.post("/api/v1/reports", data=raw, content_type="application/json; charset=utf-8")
    assert created.status_code == 201
    fetched = client.get(f"/api/v1/reports/{created.get_json()['reference']}")
    assert fetched.status_code == 200
    # Not only equal after decoding: the UTF-8 bytes of the Khmer text are in the response as sent.
    assert KHMER.encode("utf-8") in fetched.data
    assert fetched.get_json()["description"] == KHMER
    assert fetched.get_json()["landmark"] == "ផ្សារថ្មី"


def test_report_is_placed_in_khan_and_sangkat(client, report_body):
    created = client.post("/api/v1/reports", json=report_body()).get_json()
    view = client.get(f"/api/v1/reports/{created['id']}").get_json()
    assert view["city"]["code"] == "PP"
    assert view["district"]["name_en"] == "Doun Penh"
    assert view["district"]["name_km"] == "ដូនពេញ"
    assert view["commune"] is not None and view["commune"]["code"].startswith("PP-doun-penh-")
    assert view["location"] == {"type": "Point", "coordinates": [104.9282, 11.5625]}
    assert [h["new_status"] for h in view["history"]] == ["new"]


def test_sihanoukville_report_gets_its_own_prefix(client, report_body):
    body = report_body(location={"type": "Point", "coordinates": [103.5177, 10.6277]})
    response = client.post("/api/v1/reports", json=body)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["reference"].startswith("SV-")


def test_public_view_never_shows_contact_or_token(client, report_body):
    contact = {"name": "Sokha Chan", "phone": "+855 12 345 678", "email": "sokha@example.org", "consent": True}
    created = client.post("/api/v1/reports", json=report_body(contact=contact)).get_json()
    for path in (f"/api/v1/reports/{created['id']}", "/api/v1/reports?limit=500"):
        data = client.get(path).data
        for secret in (b"Sokha Chan", b"345 678", b"sokha@example.org", created["tracking_token"].encode(),
                       b"tracking_token", b"contact"):
            assert secret not in data, (path, secret)


def test_contact_is_stored_privately_with_consent(client, report_body, connection):
    contact = {"name": "Dara", "phone": "012345678", "consent": True}
    created = client.post("/api/v1/reports", json=report_body(contact=contact)).get_json()
    row = connection.execute(text("SELECT contact_name, contact_phone, contact_consent, tracking_token_hash "
                                  "FROM reports WHERE id = :id"), {"id": created["id"]}).one()
    assert row.contact_name == "Dara" and row.contact_phone == "012345678" and row.contact_consent
    assert created["tracking_token"] not in row.tracking_token_hash  # only a hash is stored


def test_resend_with_same_client_id_is_harmless(client, report_body, connection):
    client_id = str(uuid.uuid4())
    first = client.post("/api/v1/reports", json=report_body(client_id=client_id))
    again = client.post("/api/v1/reports", json=report_body(client_id=client_id))
    assert first.status_code == 201 and again.status_code == 200
    assert again.get_json()["replayed"] is True
    assert again.get_json()["reference"] == first.get_json()["reference"]
    assert again.get_json()["tracking_token"] is None
    assert connection.execute(text("SELECT count(*) FROM reports WHERE id = :id"), {"id": client_id}).scalar() == 1


def test_same_client_id_with_other_content_is_conflict(client, report_body):
    client_id = str(uuid.uuid4())
    assert client.post("/api/v1/reports", json=report_body(client_id=client_id)).status_code == 201
    response = client.post("/api/v1/reports", json=report_body(client_id=client_id, description="changed"))
    assert response.status_code == 409
    assert response.get_json()["error"] == "report.client_id_conflict"
    view = client.get(f"/api/v1/reports/{client_id}").get_json()
    assert view["description"] == "Bin full since Monday"  # nothing overwritten


def test_future_observed_at_is_kept_but_flagged(client, report_body):
    response = client.post("/api/v1/reports", json=report_body(observed_at="2099-01-01T00:00:00+00:00"))
    assert response.status_code == 201
    assert response.get_json()["observed_at_flag"] == "future"
    view = client.get(f"/api/v1/reports/{response.get_json()['id']}").get_json()
    assert view["observed_at"].startswith("2099-01-01")


def test_reference_lookup_forgives_case_and_lookalikes(client, report_body):
    ref = client.post("/api/v1/reports", json=report_body()).get_json()["reference"]
    typed = ref.lower().replace("0", "o").replace("1", "l")
    assert client.get(f"/api/v1/reports/{typed}").get_json()["reference"] == ref


def test_list_filters_and_keyset_pagination(client, report_body):
    ids = set()
    for i in range(5):
        category = "flooding.blocked_drain" if i % 2 else "waste.burning"
        ids.add(client.post("/api/v1/reports", json=report_body(category=category)).get_json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        url = "/api/v1/reports?limit=2&bbox=104.92,11.55,104.94,11.57" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url).get_json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert set(seen) == ids and len(seen) == 5
    flooding = client.get("/api/v1/reports?category=flooding&limit=500").get_json()["items"]
    assert {r["category"] for r in flooding} == {"flooding.blocked_drain"} and len(flooding) == 2
    by_area = client.get("/api/v1/reports?area=SV").get_json()["items"]
    assert by_area == []


def test_status_change_by_moderator_records_event(client, report_body, make_token):
    created = client.post("/api/v1/reports", json=report_body()).get_json()
    token = make_token("moderator")
    response = client.patch(f"/api/v1/reports/{created['id']}/status", headers={**auth(token), "If-Match": '"1"'},
                            json={"status": "acknowledged", "note": "ក្រុមការងារនឹងមកថ្ងៃស្អែក"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "acknowledged" and body["version"] == 2
    assert response.headers["ETag"] == '"2"'
    assert body["history"][-1]["note"] == "ក្រុមការងារនឹងមកថ្ងៃស្អែក"
    assert body["history"][-1]["by"] == "city"


def test_stale_version_is_409_and_changes_nothing(client, report_body, make_token):
    created = client.post("/api/v1/reports", json=report_body()).get_json()
    headers = auth(make_token("moderator"))
    url = f"/api/v1/reports/{created['id']}/status"
    assert client.patch(url, headers=headers, json={"status": "in_progress", "version": 1}).status_code == 200
    stale = client.patch(url, headers=headers, json={"status": "resolved", "version": 1})
    assert stale.status_code == 409
    assert stale.get_json()["error"] == "report.version_conflict"
    assert stale.get_json()["current_version"] == 2
    assert client.get(url.removesuffix("/status")).get_json()["status"] == "in_progress"


def test_status_change_needs_a_version(client, report_body, make_token):
    created = client.post("/api/v1/reports", json=report_body()).get_json()
    response = client.patch(f"/api/v1/reports/{created['id']}/status", headers=auth(make_token("moderator")),
                            json={"status": "resolved"})
    assert response.status_code == 428
    assert response.get_json()["error"] == "report.version_required"


def test_mark_duplicate_points_at_original(client, report_body, make_token):
    original = client.post("/api/v1/reports", json=report_body()).get_json()
    copy = client.post("/api/v1/reports", json=report_body()).get_json()
    headers = auth(make_token("moderator"))
    response = client.patch(f"/api/v1/reports/{copy['id']}/status", headers=headers,
                            json={"status": "duplicate", "duplicate_of": original["reference"], "version": 1})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["duplicate_of"] == original["reference"]
    self_dup = client.patch(f"/api/v1/reports/{original['id']}/status", headers=headers,
                            json={"status": "duplicate", "duplicate_of": original["id"], "version": 1})
    assert self_dup.status_code == 422 and self_dup.get_json()["error"] == "report.duplicate_of_self"


def test_categories_and_areas(client):
    categories = client.get("/api/v1/categories").get_json()
    codes = {c["code"] for c in categories}
    assert {"waste", "flooding", "water", "street", "street.pothole", "water.no_supply"} <= codes
    pothole = next(c for c in categories if c["code"] == "street.pothole")
    assert pothole["label_km"] == "រណ្ដៅលើផ្លូវ" and pothole["parent"] == "street"
    areas = client.get("/api/v1/areas?level=district")
    assert areas.status_code == 200 and areas.mimetype == "application/geo+json"
    collection = areas.get_json()
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 13
    assert "geoBoundaries" in collection["attribution"]
    sangkats = client.get("/api/v1/areas?parent=PP-doun-penh").get_json()["features"]
    assert sangkats and all(f["properties"]["parent"] == "PP-doun-penh" for f in sangkats)


def test_openapi_document(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["info"]["title"] == "civicmap"
    assert "/api/v1/reports" in spec["paths"] and "/api/v1/reports/{report_id}/status" in spec["paths"]
    assert client.get("/api/v1/docs").status_code == 200


def test_hidden_reports_are_gone_from_public_but_visible_to_moderators(client, report_body, make_token, connection):
    created = client.post("/api/v1/reports", json=report_body(description="hide me")).get_json()
    connection.execute(text("UPDATE reports SET hidden = true WHERE id = :id"), {"id": created["id"]})
    assert client.get(f"/api/v1/reports/{created['reference']}").status_code == 404
    listed = client.get("/api/v1/reports?limit=500").get_json()["items"]
    assert created["id"] not in {r["id"] for r in listed}
    staff = client.get(f"/api/v1/reports/{created['reference']}", headers=auth(make_token("moderator")))
    assert staff.status_code == 200 and staff.get_json()["description"] == "hide me"
    planner = client.get(f"/api/v1/reports/{created['reference']}", headers=auth(make_token("planner")))
    assert planner.status_code == 404


def test_openapi_documents_the_one_error_shape(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    error = spec["components"]["schemas"]["Error"]["properties"]
    assert set(error) == {"code", "status", "error", "message", "errors"}
