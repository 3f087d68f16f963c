"""Every bad input gets a clear 4xx in the one error shape, and nothing is half-written."""

from __future__ import annotations

import gzip
import uuid

import pytest
from sqlalchemy import text

from tests.conftest import auth

ERROR_KEYS = {"code", "status", "error", "message", "errors"}


def assert_error(response, status: int, error: str | None = None) -> dict:
    assert response.status_code == status, response.data[:500]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert ERROR_KEYS <= set(body), body
    assert body["code"] == status
    assert isinstance(body["message"], str) and body["message"]
    if error is not None:
        assert body["error"] == error, body
    assert b"Traceback" not in response.data and b"<html" not in response.data.lower()
    return body


def report_count(connection) -> int:
    return connection.execute(text("SELECT count(*) FROM reports")).scalar()


@pytest.fixture()
def post_raw(client):
    def post(data: bytes, content_type: str = "application/json", **headers):
        return client.post("/api/v1/reports", data=data, content_type=content_type, headers=headers)

    return post


def test_malformed_json(post_raw, connection):
    before = report_count(connection)
    assert_error(post_raw(b'{"category": "waste.burning",'), 400, "request.malformed_json")
    assert report_count(connection) == before


def test_broken_utf8(post_raw, connection):
    before = report_count(connection)
    body = b'{"category": "waste.burning", "description": "\xff\xfe bad", ' \
           b'"location": {"type": "Point", "coordinates": [104.92, 11.56]}}'
    assert_error(post_raw(body), 400, "request.malformed_json")
    assert report_count(connection) == before


def test_not_json_at_all(post_raw):
    assert_error(post_raw(b"category=waste", "application/x-www-form-urlencoded"), 415,
                 "request.unsupported_media_type")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_coordinates(post_raw, literal, connection):
    before = report_count(connection)
    body = b'{"category": "waste.burning", "location": {"type": "Point", "coordinates": [' + literal + b", 11.5]}}"
    err = assert_error(post_raw(body), 422, "request.invalid")
    assert "location" in err["errors"]
    assert report_count(connection) == before


def test_nan_accuracy(post_raw):
    body = b'{"category": "waste.burning", "accuracy_m": NaN, ' \
           b'"location": {"type": "Point", "coordinates": [104.92, 11.56]}}'
    assert "accuracy_m" in assert_error(post_raw(body), 422)["errors"]


@pytest.mark.parametrize("coords", [[104.92, 91], [104.92, -90.5], [181, 11.5], [-180.01, 11.5]])
def test_coordinates_out_of_range(client, report_body, coords):
    response = client.post("/api/v1/reports", json=report_body(location={"type": "Point", "coordinates": coords}))
    err = assert_error(response, 422, "request.invalid")
    assert "coordinates" in err["errors"]["location"]


@pytest.mark.parametrize("location", [
    {"type": "Point", "coordinates": ["104.9", "11.5"]},
    {"type": "Point", "coordinates": [True, False]},
    {"type": "Point", "coordinates": [104.9]},
    {"type": "Point", "coordinates": [104.9, 11.5, 3, 4]},
    {"type": "LineString", "coordinates": [104.9, 11.5]},
    {"coordinates": [104.9, 11.5]},
    [104.9, 11.5],
    "104.9,11.5",
])
def test_wrong_location_shapes(client, report_body, location):
    assert "location" in assert_error(client.post("/api/v1/reports", json=report_body(location=location)),
                                      422)["errors"]


def test_wrong_types(client, report_body):
    response = client.post("/api/v1/reports", json=report_body(category=12, description=["x"], accuracy_m="far"))
    errors = assert_error(response, 422)["errors"]
    assert {"category", "description", "accuracy_m"} <= set(errors)


def test_point_outside_every_area_names_the_service_areas(client, report_body, connection):
    before = report_count(connection)
    bangkok = {"type": "Point", "coordinates": [100.5018, 13.7563]}
    err = assert_error(client.post("/api/v1/reports", json=report_body(location=bangkok)), 422,
                       "report.outside_service_area")
    assert "Phnom Penh" in err["message"] and "Preah Sihanouk" in err["message"]
    assert report_count(connection) == before


def test_unknown_category(client, report_body):
    err = assert_error(client.post("/api/v1/reports", json=report_body(category="waste.dragons")), 422,
                       "report.unknown_category")
    assert "category" in err["errors"]


def test_inactive_category(client, report_body, connection):
    connection.execute(text("UPDATE categories SET active = false WHERE code = 'waste.burning'"))
    assert_error(client.post("/api/v1/reports", json=report_body(category="waste.burning")), 422,
                 "report.inactive_category")
    assert "waste.burning" not in {c["code"] for c in client.get("/api/v1/categories").get_json()}


def test_description_too_long(client, report_body):
    assert client.post("/api/v1/reports", json=report_body(description="ក" * 2000)).status_code == 201
    err = assert_error(client.post("/api/v1/reports", json=report_body(description="ក" * 2001)), 422)
    assert "description" in err["errors"]


def test_oversized_body_is_413_before_parsing(post_raw, connection):
    before = report_count(connection)
    # Not even valid JSON: the size limit must answer before any parser looks at it.
    assert_error(post_raw(b"{" * (70 * 1024)), 413, "request.too_large")
    assert report_count(connection) == before


def test_gzip_body_is_not_inflated_on_the_json_api(post_raw, report_body):
    """Report intake takes plain JSON; a gzip body is refused, never inflated (no gzip bomb here)."""
    bomb = gzip.compress(b" " * (10 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    response = post_raw(bomb, "application/json", **{"Content-Encoding": "gzip"})
    assert_error(response, 415, "request.unsupported_encoding")


@pytest.mark.parametrize("field,value", [
    ("status", "resolved"), ("version", 7), ("received_at", "2020-01-01T00:00:00Z"), ("hidden", False),
    ("reference", "PP-00000"), ("id", str(uuid.uuid4())), ("tracking_token", "x"),
])
def test_server_owned_fields_are_refused(client, report_body, field, value, connection):
    before = report_count(connection)
    err = assert_error(client.post("/api/v1/reports", json=report_body(**{field: value})), 422)
    assert field in err["errors"] and "server" in err["errors"][field][0]
    assert report_count(connection) == before


def test_unknown_fields_are_refused(client, report_body):
    err = assert_error(client.post("/api/v1/reports", json=report_body(colour="red")), 422)
    assert "colour" in err["errors"]


def test_contact_without_consent_is_refused(client, report_body):
    err = assert_error(client.post("/api/v1/reports", json=report_body(contact={"phone": "012345678"})), 422)
    assert "contact" in err["errors"]


def test_bad_client_id(client, report_body):
    assert "client_id" in assert_error(client.post("/api/v1/reports", json=report_body(client_id="abc")),
                                       422)["errors"]


def test_naive_observed_at_is_refused(client, report_body):
    err = assert_error(client.post("/api/v1/reports", json=report_body(observed_at="2026-11-20T08:30:00")), 422)
    assert "observed_at" in err["errors"]


def test_json_array_body(post_raw):
    assert_error(post_raw(b"[1, 2]"), 422)


# --- list filters ------------------------------------------------------------

@pytest.mark.parametrize("query,error", [
    ("bbox=1,2,3", "bbox.malformed"),
    ("bbox=a,b,c,d", "bbox.malformed"),
    ("bbox=105,11,104,12", "bbox.inverted"),
    ("bbox=104,-95,105,12", "bbox.out_of_range"),
    ("bbox=NaN,11,105,12", "bbox.malformed"),
    ("status=lost", "request.unknown_status"),
    ("area=XX-nowhere", "request.unknown_area"),
    ("cursor=not-a-cursor", "request.bad_cursor"),
    ("since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "request.bad_time_range"),
])
def test_bad_list_filters(client, query, error):
    assert_error(client.get(f"/api/v1/reports?{query}"), 400, error)


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=many", "since=yesterday"])
def test_bad_list_parameters(client, query):
    assert_error(client.get(f"/api/v1/reports?{query}"), 422, "request.invalid")


def test_unknown_report_and_route(client):
    assert_error(client.get(f"/api/v1/reports/{uuid.uuid4()}"), 404, "report.not_found")
    assert_error(client.get("/api/v1/reports/PP-ZZZZZ"), 404, "report.not_found")
    assert_error(client.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(client.delete("/api/v1/reports"), 405, "request.method_not_allowed")


# --- auth -------------------------------------------------------------------

def _status_url(client, report_body) -> str:
    created = client.post("/api/v1/reports", json=report_body()).get_json()
    return f"/api/v1/reports/{created['id']}/status"


def test_status_change_without_token(client, report_body):
    response = client.patch(_status_url(client, report_body), json={"status": "resolved", "version": 1})
    assert_error(response, 401, "auth.required")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_status_change_with_wrong_token(client, report_body):
    response = client.patch(_status_url(client, report_body), headers=auth("cm_not-a-real-token"),
                            json={"status": "resolved", "version": 1})
    assert_error(response, 401, "auth.invalid_token")


def test_status_change_with_malformed_authorization(client, report_body):
    response = client.patch(_status_url(client, report_body), headers={"Authorization": "Token abc"},
                            json={"status": "resolved", "version": 1})
    assert_error(response, 401, "auth.malformed")


def test_status_change_with_revoked_token(client, report_body, make_token):
    response = client.patch(_status_url(client, report_body), headers=auth(make_token("moderator", revoked=True)),
                            json={"status": "resolved", "version": 1})
    assert_error(response, 401, "auth.token_revoked")


def test_status_change_by_disabled_user(client, report_body, make_token):
    response = client.patch(_status_url(client, report_body), headers=auth(make_token("moderator", active=False)),
                            json={"status": "resolved", "version": 1})
    assert_error(response, 403, "auth.user_inactive")


@pytest.mark.parametrize("role", ["field_worker", "planner"])
def test_status_change_by_wrong_role(client, report_body, make_token, role):
    response = client.patch(_status_url(client, report_body), headers=auth(make_token(role)),
                            json={"status": "resolved", "version": 1})
    assert_error(response, 403, "auth.forbidden")


def test_status_change_bad_body(client, report_body, make_token):
    url = _status_url(client, report_body)
    headers = auth(make_token("moderator"))
    assert "status" in assert_error(client.patch(url, headers=headers, json={"status": "done", "version": 1}),
                                    422)["errors"]
    assert_error(client.patch(url, headers={**headers, "If-Match": "abc"}, json={"status": "resolved"}), 400,
                 "request.bad_if_match")
    assert_error(client.patch(url, headers=headers, json={"status": "duplicate", "version": 1}), 422,
                 "report.duplicate_of_required")
    assert_error(client.patch(url, headers=headers, json={"status": "resolved", "version": 1,
                                                           "duplicate_of": "PP-00000"}), 422,
                 "report.duplicate_of_unexpected")
