"""One error shape per audience: the OpenAI JSON shape for the APIs, HTML for people.

Every API error, deliberate or not, leaves as ``{"error": {"message", "type",
"code", "param"}}`` so OpenAI clients raise the matching exception and scripts can
read ``param`` to see which field was wrong. Dashboard requests get the same message
as a page, or as a fragment that the dashboard shows in a toast.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, g, jsonify
from werkzeug.exceptions import HTTPException

from webapp.errors import GatewayError
from webapp.htmx import dashboard_error, is_dashboard_request

bp = Blueprint("errors", __name__)
log = logging.getLogger("gateway.api")

HTTP_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "missing_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def error_response(error: GatewayError) -> Response:
    """Render a GatewayError in the OpenAI shape with its status and headers."""
    response = jsonify(error.to_dict())
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


@bp.app_errorhandler(GatewayError)
def handle_gateway_error(error: GatewayError) -> Response:
    """Deliberate errors raised by services and blueprints."""
    if is_dashboard_request():
        return dashboard_error(error.status, error.message, error.headers)
    return error_response(error)


@bp.app_errorhandler(HTTPException)
def handle_http_exception(error: HTTPException) -> Response:
    """Werkzeug's own errors (unknown route, wrong method, body too large) in the same shape."""
    status = error.code or 500
    if is_dashboard_request():
        return dashboard_error(status, error.description or error.name)
    kind, code = HTTP_TYPES.get(status, ("server_error", "http_error"))
    message = error.description or error.name
    if status == 413:
        limit = current_app.config["MAX_REQUEST_BODY_SIZE"]
        message = f"the request body is larger than MAX_REQUEST_BODY_SIZE ({limit} bytes)"
    elif status == 404:
        message = "no such endpoint; see /openapi.json for the API"
    gateway_error = GatewayError(message, code=code, status=status)
    gateway_error.type = kind
    response = error_response(gateway_error)
    if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response


@bp.app_errorhandler(Exception)
def handle_unexpected(error: Exception) -> Response:
    """A bug: log it with the request id, answer 500 without internals."""
    log.exception("unhandled error")
    request_id = getattr(g, "request_id", "-")
    if is_dashboard_request():
        return dashboard_error(
            500, f"Something went wrong; quote request id {request_id} when reporting it."
        )
    return error_response(
        GatewayError(f"internal error; quote request id {request_id} when reporting it")
    )
