"""One JSON error shape for every failure, handled in one place.

Every error body looks like::

    {"code": 422, "status": "Unprocessable Entity", "error": "report.outside_service_area",
     "message": "…", "errors": {...}}

Domain code raises ``ApiError(key, message, status=…, errors=…)``; werkzeug's
HTTP exceptions, flask-smorest/webargs validation failures and database
integrity errors are translated here too. Unexpected exceptions are logged
once with their traceback and answered with a bare 500 in the same shape.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, has_request_context, json, render_template, request
from flask_babel import gettext as _
from sqlalchemy.exc import IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# werkzeug's own exceptions, given a stable key instead of their class name.
HTTP_ERROR_KEYS: dict[int, str] = {
    400: "request.bad_request",
    401: "auth.required",
    403: "auth.forbidden",
    404: "not_found",
    405: "request.method_not_allowed",
    406: "request.not_acceptable",
    409: "conflict",
    412: "request.precondition_failed",
    413: "request.too_large",
    415: "request.unsupported_media_type",
    422: "request.invalid",
    428: "request.precondition_required",
    429: "request.rate_limited",
    500: "server.error",
    503: "server.unavailable",
}


class ApiError(Exception):
    """A failure the client can act on: a status, a stable key and a sentence."""

    def __init__(self, error: str, message: str, status: int = 422, errors: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.status = status
        self.errors = errors or {}
        self.headers = headers or {}
        self.extra = extra or {}


def error_body(status: int, error: str, message: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "code": status,
        "status": HTTPStatus(status).phrase,
        "error": error,
        "message": message,
        "errors": errors or {},
    }


def error_response(status: int, error: str, message: str, errors: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> Response:
    body = error_body(status, error, message, errors)
    body.update(extra or {})
    if has_request_context() and request.blueprint in ("pages", "maps"):
        # People, not programs, read the phone pages: the same error as a page in their language.
        response = current_app.response_class(render_template("error.html", error=body), status=status,
                                              mimetype="text/html")
    else:
        response = current_app.response_class(
            json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json"
        )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _handle_api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.error, exc.message, exc.errors, exc.headers, exc.extra)


def _validation_messages(exc: HTTPException) -> dict[str, Any]:
    """webargs puts field errors in ``exc.data["messages"]``, keyed by location (json, query…)."""
    data = getattr(exc, "data", None) or {}
    messages = data.get("messages") or {}
    if isinstance(messages, dict) and len(messages) == 1:
        # {"json": {...}} -> {...}: the location is implied by the request.
        (only,) = messages.values()
        if isinstance(only, dict):
            return only
    return messages if isinstance(messages, dict) else {"_schema": messages}


def _handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    errors = _validation_messages(exc)
    key = HTTP_ERROR_KEYS.get(status, "http.error")
    if status == 422:
        message = _("The request has invalid fields; see errors.")
    elif status == 400 and errors.get("json"):
        key, message = "request.malformed_json", _("The body is not valid JSON (UTF-8).")
    elif status == 413:
        message = _("The request body is larger than this server accepts.")
    elif status == 404:
        message = _("Nothing here: check the address.")
    elif status == 405:
        message = _("This method is not allowed on this address.")
    else:
        message = exc.description or HTTPStatus(status).phrase
    headers = {}
    if status == 405 and exc.get_response().headers.get("Allow"):
        headers["Allow"] = exc.get_response().headers["Allow"]
    return error_response(status, key, message, errors, headers)


def _handle_integrity_error(exc: IntegrityError) -> Response:
    pgcode = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if pgcode == "23505":
        return error_response(409, "conflict.duplicate", _("This already exists."))
    if pgcode in ("23503", "23514", "23502"):
        log.warning("constraint rejected a write: %s", exc.orig)
        return error_response(422, "request.constraint", _("The data breaks a rule of the database."))
    return _handle_unexpected(exc)


def _handle_operational_error(exc: OperationalError) -> Response:
    log.error("database unavailable: %s", exc)
    return error_response(503, "server.database_unavailable", _("The database is not reachable; try again shortly."),
                          headers={"Retry-After": "30"})


def _handle_unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return error_response(500, "server.error", _("Something went wrong on our side; it has been logged."))


def init_app(app: Flask) -> None:
    """Register the handlers; call after flask-smorest's Api so ours replace its."""
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(IntegrityError, _handle_integrity_error)
    app.register_error_handler(OperationalError, _handle_operational_error)
    app.register_error_handler(Exception, _handle_unexpected)
