"""What the dashboard needs around htmx: the request test, CSRF tokens, htmx's own URL.

Views never read ``HX-*`` headers themselves: they ask ``is_htmx()`` and
``current_page()`` here, so the rules (a history restore is a full page load, the
page URL must be local) live in one place.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from functools import cache
from urllib.parse import urlsplit

from flask import Response, current_app, has_request_context, render_template, request, session

from webapp.errors import InvalidRequest

HTMX_VERSION = "2.0.11"
HTMX_CDN_URL = f"https://unpkg.com/htmx.org@{HTMX_VERSION}/dist/htmx.min.js"
# sha384 of dist/htmx.min.js from the npm package htmx.org@2.0.11 (identical to the
# vendored static/vendor/htmx.min.js; a test keeps the two in step).
HTMX_CDN_SRI = "sha384-2OatzQy1H+Zd/IIrjr1TcuDGqLXeHhbooAyJY1KdQMKnr4LZ22k31GBLdYKHmVjg"

CSRF_SESSION_KEY = "csrf_token"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CSRFRefused(InvalidRequest):
    """A state-changing request without the session's CSRF token (400)."""

    code = "csrf_failed"


def is_htmx() -> bool:
    """Whether htmx sent this request to swap a fragment (a history restore wants a page)."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )


def local_path(target: str | None) -> str | None:
    """``target`` if it is a path on this site (no scheme, no host, no ``//``), else None."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def current_page() -> str | None:
    """The local path (and query) of the page an htmx request came from, if any."""
    url = request.headers.get("HX-Current-URL")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.netloc and parts.netloc != request.host:
        return None
    return local_path(parts.path + (f"?{parts.query}" if parts.query else ""))


def csrf_token() -> str:
    """The session's CSRF token, created on first use; forms and htmx send it back."""
    token = session.get(CSRF_SESSION_KEY)
    if not token:
        token = session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
    return token


def rotate_csrf_token() -> str:
    """A new token (after login), so a token seen before login is worth nothing after it."""
    session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
    return session[CSRF_SESSION_KEY]


def csrf_valid() -> bool:
    """Whether a state-changing request carries the session's token (header or form field)."""
    if request.method in SAFE_METHODS:
        return True
    expected = session.get(CSRF_SESSION_KEY)
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def protect() -> None:
    """Refuse a state-changing request without the right CSRF token."""
    if not csrf_valid():
        raise CSRFRefused(
            "this form is out of date or was not sent by the dashboard (missing or wrong "
            "CSRF token); reload the page and try again",
            param=CSRF_FIELD,
        )


@cache
def _file_sri(path: str) -> str:
    with open(path, "rb") as handle:
        digest = hashlib.sha384(handle.read()).digest()
    return "sha384-" + base64.b64encode(digest).decode()


def htmx_script() -> dict[str, str | None]:
    """``src`` and ``integrity`` for the htmx script tag.

    The pinned CDN URL carries its published hash; a copy under ``/static`` gets the
    hash of the file served; any other URL is loaded as given (its hash is unknown).
    """
    url = current_app.config["HTMX_URL"]
    if url == HTMX_CDN_URL:
        return {"src": url, "integrity": HTMX_CDN_SRI, "crossorigin": "anonymous"}
    static_url = current_app.static_url_path + "/"
    if url.startswith(static_url) and current_app.static_folder:
        path = os.path.join(current_app.static_folder, url[len(static_url) :].split("?")[0])
        if os.path.isfile(path):
            return {"src": url, "integrity": _file_sri(path), "crossorigin": None}
    return {"src": url, "integrity": None, "crossorigin": None}


def script_origin() -> str | None:
    """The origin htmx is loaded from when it is not this site (for the CSP)."""
    parts = urlsplit(current_app.config["HTMX_URL"])
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    return None


def security_headers(response: Response) -> Response:
    """No framing, no sniffing, scripts only from here (and htmx's CDN), nothing cached."""
    scripts = " ".join(filter(None, ["'self'", script_origin()]))
    response.headers.setdefault(
        "Content-Security-Policy",
        f"default-src 'self'; script-src {scripts}; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'",
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def is_dashboard_request() -> bool:
    """Whether the request is for the dashboard (its pages, fragments or sign-in)."""
    if not has_request_context():
        return False
    path = request.path
    return request.blueprint in ("dashboard", "auth") or path.startswith("/dashboard/")


def dashboard_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error for people: a fragment for htmx (shown in a toast), else a page."""
    template = "_error.html" if is_htmx() else "error.html"
    response = Response(render_template(template, status=status, message=message), status=status)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    response.vary.add("HX-Request")
    return security_headers(response)
