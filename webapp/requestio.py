"""Request plumbing shared by every blueprint: request ids and bounded JSON bodies."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from flask import Flask, Response, g, request

from webapp.errors import InvalidRequest

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def assign_request_id() -> None:
    """Take the caller's X-Request-ID when it is sane, so traces join up; else make one."""
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex


def send_request_id(response: Response) -> Response:
    """Return the request id on every response, errors included."""
    response.headers["X-Request-ID"] = getattr(g, "request_id", "-")
    return response


def read_json_body() -> Any:
    """The request body as JSON. Oversized bodies (also chunked ones) raise 413 on read."""
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # Werkzeug stops a chunked body at the limit without saying whether more was
        # sent; one more read raises 413 when it was.
        request.stream.read(1)
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None


def init_app(app: Flask) -> None:
    """Install the request-id hooks on the app."""
    app.before_request(assign_request_id)
    app.after_request(send_request_id)
