"""Dashboard views through Flask's test client, against real demo backends on loopback.

The browser suite (``test_dashboard_browser.py``) walks the same features in Chromium;
these tests pin the HTTP side: fragments, status codes, headers, escaping, payloads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.backends import free_port
from tests.gateway import ADMIN_KEY
from webapp import create_app
from webapp.htmx import HTMX_CDN_SRI, HTMX_CDN_URL, HTMX_VERSION
from webapp.services import usage, users

PASSWORD = "correct-horse-battery"
STATIC = Path(__file__).resolve().parent.parent / "static"
HX = {"HX-Request": "true"}


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


class Browser:
    """A signed-in test client that sends the CSRF header the way htmx does."""

    def __init__(self, client) -> None:
        self.client = client
        token = csrf_from(client.get("/login").text)
        client.post("/login", data={"username": "owner", "password": PASSWORD, "csrf_token": token})
        self.token = csrf_from(client.get("/dashboard/").text)

    def get(self, path: str, **kwargs):
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict | None = None, htmx: bool = True):
        headers = {"X-CSRF-Token": self.token, **(HX if htmx else {})}
        return self.client.post(path, data=data or {}, headers=headers)

    def delete(self, path: str):
        return self.client.delete(path, headers={"X-CSRF-Token": self.token, **HX})


@pytest.fixture
def browser(app, client) -> Browser:
    with app.app_context():
        users.create_user("owner", PASSWORD)
    return Browser(client)


def register(browser: Browser, backend_url: str, **fields) -> str:
    form = {"endpoint_url": backend_url, "model_name": "demo-model", "streaming": "on", **fields}
    answer = browser.post("/dashboard/servers/new", form)
    assert answer.status_code == 200
    found = re.search(r'id="registration-id">([0-9a-f-]{36})<', answer.text)
    assert found, answer.text
    return found.group(1)


def field_error(html: str, name: str) -> str:
    found = re.search(
        rf'<p class="field-error" id="error-{name}" hx-swap-oob="true">([^<]*)</p>', html
    )
    assert found, html
    return found.group(1)


def test_every_page_renders_for_a_signed_in_user(browser, backend):
    server_id = register(browser, backend.url)
    pages = [
        "/dashboard/",
        "/dashboard/servers/new",
        f"/dashboard/servers/{server_id}",
        f"/dashboard/servers/{server_id}/edit",
        "/dashboard/models",
        "/dashboard/playground",
        "/dashboard/requests",
        "/dashboard/logs",
        "/dashboard/settings",
    ]
    for path in pages:
        answer = browser.get(path)
        assert answer.status_code == 200, path
        assert 'aria-current="page"' in answer.text, path
        assert "Content-Security-Policy" in answer.headers
        assert answer.headers["Cache-Control"] == "no-store"


def test_register_form_checks_fields_one_by_one_as_they_change(browser):
    answer = browser.post(
        "/dashboard/servers/check",
        {"endpoint_url": "ftp://example.com", "max_tokens": "0", "model_name": "bad name!"},
    )
    assert "not supported" in field_error(answer.text, "endpoint_url")
    assert field_error(answer.text, "max_tokens").startswith("Max tokens must be a whole number")
    assert field_error(answer.text, "model_name").startswith("Model name must be")
    assert field_error(answer.text, "student_id") == ""
    refused = browser.post("/dashboard/servers/check", {"endpoint_url": "http://169.254.169.254"})
    assert "ALLOWED_BACKEND_NETWORKS" in field_error(refused.text, "endpoint_url")
    clean = browser.post("/dashboard/servers/check", {"endpoint_url": "http://127.0.0.1:9"})
    assert '<div id="form-status"' in clean.text  # the stale "please fix" message goes


def test_register_submit_names_the_missing_field_and_keeps_the_form(browser):
    answer = browser.post("/dashboard/servers/new", {"model_name": "demo-model"})
    assert answer.status_code == 200
    assert "HX-Retarget" not in answer.headers
    assert "required" in field_error(answer.text, "endpoint_url")
    assert "Not registered yet" in answer.text


def test_register_submit_explains_a_failed_probe(browser):
    answer = browser.post(
        "/dashboard/servers/new", {"endpoint_url": f"http://127.0.0.1:{free_port()}"}
    )
    assert "Not registered: the server did not pass the health probe: connection refused" in (
        answer.text
    )


def test_test_connection_uses_the_gateway_probe_and_lists_models(browser, backend_factory):
    backend = backend_factory(model=["alpha", "beta"], api_key="backend-secret")
    refused = browser.post(
        "/dashboard/servers/test-connection", {"endpoint_url": backend.url, "api_key": "wrong"}
    )
    assert "Connection failed" in refused.text
    assert "refused the API key" in refused.text
    answer = browser.post(
        "/dashboard/servers/test-connection",
        {"endpoint_url": backend.url, "api_key": "backend-secret"},
    )
    assert "Connected" in answer.text
    assert "Use alpha as the model name" in answer.text
    assert '<datalist id="offered-models" hx-swap-oob="true">' in answer.text
    assert "backend-secret" not in answer.text
    dead = browser.post(
        "/dashboard/servers/test-connection", {"endpoint_url": f"http://127.0.0.1:{free_port()}"}
    )
    assert "connection refused" in dead.text
    picked = browser.get("/dashboard/servers/model-input?value=beta")
    assert 'id="model_name"' in picked.text and 'value="beta"' in picked.text


def test_register_success_replaces_the_form_and_lists_the_server(browser, backend):
    answer = browser.post(
        "/dashboard/servers/new",
        {"endpoint_url": backend.url, "model_name": "demo-model", "student_id": "s1"},
    )
    assert answer.headers["HX-Retarget"] == "#register-panel"
    assert answer.headers["HX-Reswap"] == "outerHTML"
    server_id = re.search(r'id="registration-id">([0-9a-f-]{36})<', answer.text).group(1)
    assert "Register another" in answer.text
    assert f'data-copy="{server_id}"' in answer.text
    table = browser.get("/dashboard/servers/table?student=s1", headers=HX)
    assert f'id="row-{server_id}" data-status="healthy"' in table.text
    assert table.headers["HX-Replace-Url"] == "/dashboard/?student=s1"
    assert 'hx-swap-oob="true"' in table.text  # the cards come along
    assert 'hx-get="/dashboard/servers/table?student=s1"' in table.text  # polling keeps filters


def test_a_duplicate_registration_is_shown_at_the_url_field(browser, backend):
    register(browser, backend.url)
    again = browser.post(
        "/dashboard/servers/new", {"endpoint_url": backend.url, "model_name": "demo-model"}
    )
    assert "already registered" in field_error(again.text, "endpoint_url")


def test_table_filters_sort_and_search(browser, backend_factory):
    first = register(browser, backend_factory(model="m-one").url, model_name="m-one")
    second = register(
        browser,
        backend_factory(model="m-two").url,
        model_name="m-two",
        description="big GPU box",
    )
    by_model = browser.get("/dashboard/servers/table?model=m-one").text
    assert first in by_model and second not in by_model
    searched = browser.get("/dashboard/servers/table?q=gpu").text
    assert second in searched and first not in searched
    ordered = browser.get("/dashboard/servers/table?sort=model").text
    assert ordered.index(first) < ordered.index(second)
    newest = browser.get("/dashboard/servers/table?sort=newest").text
    assert newest.index(second) < newest.index(first)
    nothing = browser.get("/dashboard/servers/table?status=unhealthy").text
    assert "No servers match" in nothing
    junk = browser.get("/dashboard/servers/table?status=bogus&sort=bogus&page=x")
    assert junk.status_code == 200


def test_user_text_is_escaped_everywhere(browser, backend):
    script = "<script>alert(1)</script>"
    server_id = register(browser, backend.url, description=script, student_id="<b>x</b>")
    for path in (f"/dashboard/servers/{server_id}", "/dashboard/", "/dashboard/models"):
        page = browser.get(path).text
        assert "<script>alert" not in page and "<b>x</b>" not in page, path
    detail = browser.get(f"/dashboard/servers/{server_id}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail


def test_detail_page_draws_the_history_and_check_now_swaps_it(browser, backend):
    server_id = register(browser, backend.url)
    detail = browser.get(f"/dashboard/servers/{server_id}").text
    assert '<svg class="history"' in detail
    assert detail.count('class="bar-ok"') == 1
    checked = browser.post(f"/dashboard/servers/{server_id}/check")
    assert 'id="server-health"' in checked.text
    assert "Check passed" in checked.text
    assert checked.text.count('class="bar-ok"') == 2
    assert 'hx-swap-oob="beforeend"' in checked.text  # and a toast
    backend.stop()
    failed = browser.post(f"/dashboard/servers/{server_id}/check")
    assert "Check failed: connection refused" in failed.text
    assert 'class="bar-fail"' in failed.text


def test_edit_marks_changes_reviews_then_saves_exactly_what_was_reviewed(browser, backend):
    server_id = register(browser, backend.url, description="old words")
    form = {
        "model_name": "demo-model",
        "endpoint_url": backend.url,
        "upstream_model": "demo-model",
        "streaming": "on",
        "description": "new words",
    }
    marks = browser.post(f"/dashboard/servers/{server_id}/edit/check", form).text
    assert re.search(r'id="changed-description" [^>]*>changed<', marks)
    assert re.search(r'id="changed-model_name" [^>]*><', marks)
    review = browser.post(f"/dashboard/servers/{server_id}/edit", form)
    assert "Save 1 change?" in review.text
    digest = re.search(r'name="reviewed" value="([0-9a-f]+)"', review.text).group(1)
    # The form changed after the review: it is reviewed again, not saved.
    changed = {**form, "student_id": "s9", "confirm": "yes", "reviewed": digest}
    again = browser.post(f"/dashboard/servers/{server_id}/edit", changed)
    assert "Save 2 changes?" in again.text
    saved = browser.post(
        f"/dashboard/servers/{server_id}/edit", {**form, "confirm": "yes", "reviewed": digest}
    )
    assert saved.headers["HX-Redirect"] == f"/dashboard/servers/{server_id}"
    detail = browser.get(f"/dashboard/servers/{server_id}").text
    assert "new words" in detail and "Saved 1 change" in detail


def test_edit_reprobes_a_new_url_and_refuses_one_that_does_not_answer(browser, backend):
    server_id = register(browser, backend.url)
    form = {
        "model_name": "demo-model",
        "endpoint_url": f"http://127.0.0.1:{free_port()}",
        "upstream_model": "demo-model",
        "streaming": "on",
    }
    review = browser.post(f"/dashboard/servers/{server_id}/edit", form).text
    assert "probes the server with the new settings first" in review
    digest = re.search(r'name="reviewed" value="([0-9a-f]+)"', review).group(1)
    answer = browser.post(
        f"/dashboard/servers/{server_id}/edit", {**form, "confirm": "yes", "reviewed": digest}
    )
    assert "Not saved: the server did not pass the health probe: connection refused" in (
        answer.text
    )
    assert "HX-Redirect" not in answer.headers


def test_delete_asks_first_then_removes_through_the_registry(browser, backend, admin_headers):
    server_id = register(browser, backend.url)
    question = browser.get(f"/dashboard/servers/{server_id}/delete").text
    assert "Delete demo-model" in question and "hx-delete" in question
    answer = browser.delete(f"/dashboard/servers/{server_id}")
    assert answer.headers["HX-Redirect"] == "/dashboard/"
    gone = browser.client.get(f"/admin/servers/{server_id}", headers=admin_headers)
    assert gone.status_code == 404
    assert browser.get(f"/dashboard/servers/{server_id}").status_code == 404


def test_models_page_counts_servers(browser, backend_factory):
    up = backend_factory(model="shared")
    down = backend_factory(model="shared")
    register(browser, up.url, model_name="shared")
    down_id = register(browser, down.url, model_name="shared")
    down.stop()
    browser.post(f"/dashboard/servers/{down_id}/check")
    page = browser.get("/dashboard/models?q=shar").text
    assert '<dd class="count-servers">2</dd>' in page
    assert '<dd class="count-healthy">1</dd>' in page
    assert '<dd class="health-percent">50 %</dd>' in page
    assert "No model matches" in browser.get("/dashboard/models/list?q=zzz").text


def read_events(answer) -> list[dict]:
    return [json.loads(line) for line in answer.get_data(as_text=True).splitlines() if line]


def test_playground_streams_events_through_the_routing_and_records_usage(
    app, browser, backend_factory
):
    backend = backend_factory(model="chat", tokens=5, api_key="sk-hidden")
    server_id = register(browser, backend.url, model_name="chat", api_key="sk-hidden")
    page = browser.get("/dashboard/playground?model=chat").text
    assert '<option value="chat" selected>' in page
    answer = browser.post(
        "/dashboard/playground/chat",
        {"model": "chat", "message": "hi", "system": "be brief", "max_tokens": "5", "stream": "on"},
        htmx=False,
    )
    assert answer.mimetype == "application/x-ndjson"
    events = read_events(answer)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "server" and events[0]["server_id"] == server_id
    assert kinds.count("delta") == 5
    assert kinds[-2:] == ["usage", "done"]
    assert events[-2]["completion_tokens"] == 5
    assert "sk-hidden" not in answer.get_data(as_text=True)
    sent = backend.stats()["last_request"]
    assert sent["headers"]["authorization"] == "Bearer sk-hidden"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    app.extensions["usage"].flush()
    with app.app_context():
        record = usage.recent(1)[0]
        assert (record.client, record.model, record.server_id) == (
            "dashboard:owner",
            "chat",
            server_id,
        )
        assert (record.status, record.streamed, record.completion_tokens) == (200, True, 5)


def test_playground_without_streaming_and_its_errors(browser, backend):
    register(browser, backend.url)
    whole = read_events(
        browser.post(
            "/dashboard/playground/chat", {"model": "demo-model", "message": "hi"}, htmx=False
        )
    )
    assert [e["event"] for e in whole] == ["server", "delta", "usage", "done"]
    unknown = read_events(
        browser.post("/dashboard/playground/chat", {"model": "nope", "message": "hi"}, htmx=False)
    )
    assert unknown == [
        {"event": "error", "status": 404, "message": 'model "nope" is not served here'}
    ]
    invalid = read_events(
        browser.post(
            "/dashboard/playground/chat",
            {"model": "demo-model", "message": "hi", "temperature": "9"},
            htmx=False,
        )
    )
    assert invalid[0]["event"] == "error" and "Temperature" in invalid[0]["message"]
    backend.stop()
    dead = read_events(
        browser.post(
            "/dashboard/playground/chat", {"model": "demo-model", "message": "hi"}, htmx=False
        )
    )
    assert dead[-1]["event"] == "error" and dead[-1]["status"] == 504
    assert "connection refused" in dead[-1]["message"]


def test_requests_page_lists_recent_requests_and_totals(app, browser, backend):
    register(browser, backend.url)
    chat = browser.post(
        "/dashboard/playground/chat", {"model": "demo-model", "message": "hi"}, htmx=False
    )
    assert read_events(chat)[-1]["event"] == "done"
    app.extensions["usage"].flush()
    page = browser.get("/dashboard/requests").text
    assert "dashboard:owner" in page and "Per model" in page and "Per server" in page
    errors_only = browser.get("/dashboard/requests/table?status=errors").text
    assert "dashboard:owner" not in errors_only


def test_logs_page_filters_recent_lines(browser, backend):
    server_id = register(browser, backend.url)
    page = browser.get(f"/dashboard/logs?q={server_id}&component=registry").text
    assert f"registered server {server_id}" in page
    none = browser.get("/dashboard/logs/lines?level=ERROR&q=registered").text
    assert "No lines match" in none
    tail = browser.get("/dashboard/logs/lines?tail=on").text
    assert 'hx-trigger="every' in tail


def test_settings_page_masks_secrets(browser):
    page = browser.get("/dashboard/settings").text
    assert ADMIN_KEY not in page
    assert "<code>ADMIN_API_KEY</code>" in page and "(set)" in page
    assert HTMX_VERSION in page


def test_errors_are_pages_for_people_and_json_for_apis(browser, admin_headers):
    page = browser.get("/dashboard/servers/missing")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "No server is registered" in page.text
    fragment = browser.get("/dashboard/servers/missing", headers=HX)
    assert fragment.status_code == 404
    assert fragment.text.strip().startswith('<p class="error-message">')
    api = browser.client.get("/admin/servers/missing", headers=admin_headers)
    assert api.status_code == 404 and api.json["error"]["code"] == "not_found"
    unknown = browser.client.get("/no-such-route")
    assert unknown.json["error"]["type"] == "not_found_error"


def test_htmx_comes_from_the_pinned_cdn_with_sri_by_default(tmp_path):
    app = create_app({"INSTANCE_PATH": str(tmp_path), "LOG_FILE": "-"})
    page = app.test_client().get("/login").text
    assert f'src="{HTMX_CDN_URL}" integrity="{HTMX_CDN_SRI}" crossorigin="anonymous"' in page
    assert f"htmx.org@{HTMX_VERSION}/" in HTMX_CDN_URL
    csp = app.test_client().get("/login").headers["Content-Security-Policy"]
    assert "script-src 'self' https://unpkg.com;" in csp


def test_the_vendored_htmx_is_the_pinned_version_and_served_with_its_hash(tmp_path):
    vendored = (STATIC / "vendor" / "htmx.min.js").read_bytes()
    digest = "sha384-" + base64.b64encode(hashlib.sha384(vendored).digest()).decode()
    assert digest == HTMX_CDN_SRI
    assert f'version:"{HTMX_VERSION}"' in vendored.decode()
    app = create_app(
        {"INSTANCE_PATH": str(tmp_path), "LOG_FILE": "-", "HTMX_URL": "/static/vendor/htmx.min.js"}
    )
    client = app.test_client()
    page = client.get("/login").text
    assert f'src="/static/vendor/htmx.min.js" integrity="{digest}"' in page
    assert client.get("/static/vendor/htmx.min.js").status_code == 200
    assert "script-src 'self';" in client.get("/login").headers["Content-Security-Policy"]
