"""The dashboard in a real browser (Debian's headless Chromium through Playwright).

One gateway process (``python wsgi.py``) for the module, with 1 s health checks and
1 s dashboard refreshes, the vendored htmx, and a user made with the real
``create-user`` command; demo backends on loopback per test. Every test watches the
browser console: any error or uncaught exception fails it. Screenshots of every page
at desktop and phone width land in ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.backends import free_port
from tests.browser import (
    CHROMIUM,
    DESKTOP,
    PASSWORD,
    ConsoleWatch,
    create_user,
    launch,
    screenshot,
    sign_in,
    wait_until,
)
from tests.gateway import ADMIN_KEY, GatewayProcess

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium (.ci/run)"
)
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
expect.set_options(timeout=15_000)

USER = "owner"
UNLABELLED_CONTROLS = """() => Array.from(
    document.querySelectorAll("input:not([type=hidden]), select, textarea")
).filter((el) => !el.labels || el.labels.length === 0).map((el) => el.id || el.name)"""


class Site:
    """The gateway under test and what the tests need to reach it."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self.url = gateway.url

    def register(self, backend, model: str, **fields) -> str:
        """Register through the admin API (for tests about other things than the form)."""
        return self.gateway.register(backend.url, model, **fields)["registration_id"]

    def server(self, server_id: str) -> dict:
        return self.gateway.admin("GET", f"/admin/servers/{server_id}").json()


@pytest.fixture(scope="session")
def browser():
    """One Chromium for the whole run."""
    with playwright_api.sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    """A gateway with fast checks and refreshes, the vendored htmx and one user."""
    instance = tmp_path_factory.mktemp("dashboard-gateway")
    gateway = GatewayProcess(
        instance,
        {
            "HTMX_URL": "/static/vendor/htmx.min.js",
            "HEALTH_CHECK_INTERVAL_SECONDS": "1",
            "HEALTH_CHECK_TIMEOUT_SECONDS": "1",
            "DASHBOARD_REFRESH_SECONDS": "1",
            "USAGE_FLUSH_SECONDS": "0.2",
            "LOG_LEVEL": "INFO",
        },
    )
    output = create_user(instance, gateway.env, USER, PASSWORD)
    assert f"created user {USER}" in output
    gateway.start()
    yield Site(gateway)
    gateway.stop()


@pytest.fixture
def page(browser, site) -> Iterator:
    """A fresh browser context (no cookies) and page; fails the test on any console error."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    watch = ConsoleWatch(page)
    page.watch = watch
    yield page
    context.close()
    assert watch.errors == [], "errors in the browser console"
    assert watch.dialogs == [], "a dialog opened (injected script?)"


def test_sign_in_refuses_a_wrong_password_then_lets_the_owner_in(site, page):
    page.goto(site.url + "/")
    page.wait_for_url(re.compile(r"/login"))
    screenshot(page, "login")
    page.fill("#username", USER)
    page.fill("#password", "not-the-password")
    page.click("button[type=submit]")
    expect(page.locator(".form-message-error")).to_contain_text("Wrong user name or password")
    assert "/login" in page.url
    expect(page.locator("#username")).to_have_value(USER)
    screenshot(page, "login-failed")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/dashboard/$"))
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator("nav.mainnav a[aria-current=page]")).to_have_text("Dashboard")


def test_register_through_the_form(site, page, backend_factory):
    backend = backend_factory(model=["form-model", "tiny-model"])
    sign_in(page, site.url, USER)
    page.click("nav.mainnav >> text=Register")
    expect(page.locator("h1")).to_have_text("Register a server")

    # Submitting an empty form names the missing field.
    page.click("#register-submit")
    expect(page.locator("#error-endpoint_url")).to_contain_text("required")
    expect(page.locator("#form-status")).to_contain_text("Not registered yet")

    # Inline validation from the server while typing.
    page.fill("#endpoint_url", "ftp://example.com")
    expect(page.locator("#error-endpoint_url")).to_contain_text("not supported")
    page.fill("#max_tokens", "0")
    expect(page.locator("#error-max_tokens")).to_contain_text("Max tokens must be a whole number")
    page.fill("#max_tokens", "4096")
    expect(page.locator("#error-max_tokens")).to_have_text("")

    # A failed "Test connection" says why.
    page.fill("#endpoint_url", f"http://127.0.0.1:{free_port()}")
    expect(page.locator("#error-endpoint_url")).to_have_text("")
    page.click("#test-connection")
    expect(page.locator("#test-result")).to_contain_text("Connection failed")
    expect(page.locator("#test-result")).to_contain_text("connection refused")

    # A good one lists the models to pick from.
    page.fill("#endpoint_url", backend.url)
    page.click("#test-connection")
    expect(page.locator("#test-result")).to_contain_text("Connected")
    expect(page.locator("#test-result")).to_contain_text("tiny-model")
    page.click("button[aria-label='Use tiny-model as the model name']")
    expect(page.locator("#model_name")).to_have_value("tiny-model")
    page.fill("#student_id", "s-042")
    page.fill("#description", "<script>alert(1)</script>")
    screenshot(page, "register")

    page.click("#register-submit")
    expect(page.locator("#registration-id")).to_be_visible()
    server_id = page.inner_text("#registration-id").strip()
    expect(page.locator("#toasts")).to_contain_text("Registered tiny-model")
    screenshot(page, "register-success")
    assert site.server(server_id)["metadata"]["student_id"] == "s-042"

    # The description is text, not markup, wherever it is shown.
    page.click("text=View this server")
    expect(page.locator("dd.description")).to_have_text("<script>alert(1)</script>")

    page.click("nav.mainnav >> text=Dashboard")
    row = page.locator(f"#row-{server_id}")
    expect(row).to_have_attribute("data-status", "healthy")
    expect(row).to_contain_text("s-042")


def test_a_stopped_backend_turns_its_row_unhealthy_without_a_reload(site, page, backend_factory):
    backend = backend_factory(model=["watch-model"])
    server_id = site.register(backend, "watch-model")
    sign_in(page, site.url, USER)
    page.evaluate("window.stillTheSamePage = true")
    row = page.locator(f"#row-{server_id}")
    expect(row).to_have_attribute("data-status", "healthy")
    expect(row.locator(".badge").first).to_have_text("healthy")
    # The full endpoint, opened on demand, stays open through the refreshes.
    row.locator("details.endpoint summary").click()
    expect(row.locator("details.endpoint code")).to_have_text(backend.url)
    backend.stop()
    expect(row).to_have_attribute("data-status", "unhealthy")
    expect(row.locator(".badge").first).to_have_text("unhealthy")
    expect(row.locator("details.endpoint")).to_have_attribute("open", "")
    assert page.evaluate("window.stillTheSamePage === true")
    # Filters survive the refreshes.
    page.select_option("#filter-model", "watch-model")
    page.wait_for_url(re.compile(r"model=watch-model"))
    page.wait_for_timeout(2500)  # two refresh periods: the filter must still hold
    expect(page.locator("#servers-table tbody tr")).to_have_count(1)
    expect(page.locator("#filter-model")).to_have_value("watch-model")


def test_detail_page_check_now_edit_and_delete(site, page, backend_factory):
    backend = backend_factory(model=["detail-model"])
    server_id = site.register(backend, "detail-model", metadata={"description": "first words"})
    wait_until(lambda: len(site.server(server_id)["recent_checks"]) >= 3)
    sign_in(page, site.url, USER)
    detail_url = f"{site.url}/dashboard/servers/{server_id}"
    page.goto(detail_url)
    expect(page.locator("h1")).to_contain_text("detail-model")
    expect(page.locator("#history-chart svg rect.bar-ok").first).to_be_attached()
    assert page.locator("#history-chart svg rect.bar-ok").count() >= 3
    expect(page.locator("#history-chart desc")).to_contain_text("passed")

    page.click("#check-now")
    expect(page.locator("#check-result")).to_contain_text("Check passed")
    screenshot(page, "server-detail")

    page.click("text=Edit")
    expect(page.locator("#description")).to_have_value("first words")
    page.fill("#description", "second words")
    expect(page.locator("#changed-description")).to_have_text("changed")
    expect(page.locator("#changed-model_name")).to_have_text("")
    page.click("#edit-review")
    expect(page.locator("#review-heading")).to_contain_text("Save 1 change")
    expect(page.locator("#form-status")).to_contain_text("second words")
    screenshot(page, "edit-review")
    page.click("#edit-confirm")
    page.wait_for_url(detail_url)
    expect(page.locator("dd.description")).to_have_text("second words")
    expect(page.locator("#toasts")).to_contain_text("Saved 1 change")

    backend.stop()
    page.click("#check-now")
    expect(page.locator("#check-result")).to_contain_text("Check failed: connection refused")

    page.click("#delete-open")
    expect(page.locator("#delete-question")).to_contain_text("Delete detail-model")
    page.click("#delete-confirm")
    page.wait_for_url(re.compile(r"/dashboard/$"))
    expect(page.locator("#toasts")).to_contain_text("Deleted detail-model")
    expect(page.locator(f"#row-{server_id}")).to_have_count(0)
    assert site.gateway.admin("GET", f"/admin/servers/{server_id}").status_code == 404


def test_playground_streams_the_reply_and_shows_server_and_usage(site, page, backend_factory):
    backend = backend_factory(
        model=["chat-model"], tokens=30, token_delay_ms=50, api_key="sk-backend-secret"
    )
    server_id = site.register(backend, "chat-model", api_key="sk-backend-secret")
    sign_in(page, site.url, USER)
    page.goto(site.url + "/dashboard/playground?model=chat-model")
    expect(page.locator("#play-model")).to_have_value("chat-model")
    page.click("#play-send")
    lengths: list[int] = []

    def finished() -> bool:
        lengths.append(len(page.inner_text("#play-reply")))
        return "Done" in page.inner_text("#play-status")

    wait_until(finished, timeout=20, interval=0.05)
    grown = [n for n in lengths if n > 0]
    assert grown == sorted(grown), lengths
    assert len(set(grown)) >= 3, f"the reply did not grow token by token: {lengths}"
    expect(page.locator("#play-server")).to_contain_text("chat-model")
    expect(page.locator("#play-server a")).to_have_attribute(
        "href", f"/dashboard/servers/{server_id}"
    )
    expect(page.locator("#play-tokens")).to_have_text(re.compile(r"^\d+ / 30 / \d+$"))
    expect(page.locator("#play-ttft")).to_have_text(re.compile(r"\d"))
    expect(page.locator("#play-total")).to_have_text(re.compile(r"\d"))
    # The gateway sent the key; the page never saw it.
    sent = backend.stats()["last_request"]["headers"]["authorization"]
    assert sent == "Bearer sk-backend-secret"
    assert "sk-backend-secret" not in page.content()
    screenshot(page, "playground")

    # The request is recorded like any /v1 request, under the dashboard user.
    page.click("nav.mainnav >> text=Requests")
    expect(page.locator("#recent-requests")).to_contain_text("dashboard:owner")
    expect(page.locator("#recent-requests")).to_contain_text("chat-model")
    screenshot(page, "requests")


def test_models_page_counts_servers_and_health(site, page, backend_factory):
    up = backend_factory(model=["count-model"])
    down = backend_factory(model=["count-model"])
    site.register(up, "count-model")
    down_id = site.register(down, "count-model")
    down.stop()
    wait_until(lambda: site.server(down_id)["health_status"] == "unhealthy")
    sign_in(page, site.url, USER)
    page.click("nav.mainnav >> text=Models")
    card = page.locator("li.model-card[data-model='count-model']")
    expect(card.locator(".count-servers")).to_have_text("2")
    expect(card.locator(".count-healthy")).to_have_text("1")
    expect(card.locator(".health-percent")).to_have_text("50 %")
    card.locator("summary").click()
    expect(card.locator(".model-servers li")).to_have_count(2)
    screenshot(page, "models")
    page.fill("#model-q", "count-mo")
    expect(page.locator("li.model-card")).to_have_count(1)
    page.fill("#model-q", "no-such-model-anywhere")
    expect(page.locator("#models-list")).to_contain_text("No model matches")


def test_logs_page_shows_the_registration(site, page, backend_factory):
    backend = backend_factory(model=["log-model"])
    server_id = site.register(backend, "log-model")
    sign_in(page, site.url, USER)
    page.click("nav.mainnav >> text=Logs")
    lines = page.locator("#log-lines .log-line")
    page.fill("#log-q", server_id)
    expect(lines.first).to_contain_text(server_id)
    expect(page.locator("#log-lines")).to_contain_text(f"registered server {server_id}")
    page.select_option("#log-component", "registry")
    expect(lines).to_have_count(1)
    expect(lines.first.locator(".log-component")).to_have_text("registry")
    page.check("#log-tail")
    expect(page.locator("#log-lines")).to_contain_text("following new lines")
    expect(lines).to_have_count(1)
    page.fill("#log-q", "")
    page.select_option("#log-component", "")
    screenshot(page, "logs")


def test_settings_page_masks_secrets(site, page):
    sign_in(page, site.url, USER)
    page.click("nav.mainnav >> text=Settings")
    table = page.locator("#settings-table")
    expect(table).to_contain_text("HTMX_URL")
    expect(table).to_contain_text("/static/vendor/htmx.min.js")
    expect(table.locator("tr", has_text="ADMIN_API_KEY")).to_contain_text("(set)")
    assert ADMIN_KEY not in page.content()
    expect(page.locator("main")).to_contain_text("sqlite")
    screenshot(page, "settings")


def test_every_page_renders_at_desktop_and_phone_width(site, page, backend_factory):
    backend = backend_factory(model=["tour-model"])
    server_id = site.register(backend, "tour-model", metadata={"student_id": "s-7"})
    sign_in(page, site.url, USER)
    pages = {
        "dashboard": "/dashboard/",
        "register-empty": "/dashboard/servers/new",
        "server-detail-fresh": f"/dashboard/servers/{server_id}",
        "edit": f"/dashboard/servers/{server_id}/edit",
        "models-all": "/dashboard/models",
        "playground-empty": "/dashboard/playground",
        "requests-all": "/dashboard/requests",
        "logs-all": "/dashboard/logs",
        "settings-all": "/dashboard/settings",
    }
    for name, path in pages.items():
        page.goto(site.url + path)
        expect(page.locator("h1")).to_be_visible()
        unlabelled = page.evaluate(UNLABELLED_CONTROLS)
        assert unlabelled == [], f"{path}: controls without a label: {unlabelled}"
        screenshot(page, name)
    # Keyboard: the first Tab reaches the skip link, and focus is drawn.
    page.goto(site.url + "/dashboard/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.goto(site.url + "/dashboard/servers/no-such-server")
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator(".error-message")).to_contain_text("no-such-server")
    screenshot(page, "not-found")
    # The browser reports the 404 itself; it is the one error this visit should cause.
    assert [e for e in page.watch.errors if "404" not in e] == []
    page.watch.errors.clear()


def test_a_failed_request_shows_its_message_and_a_retry(site, page, backend_factory):
    backend = backend_factory(model=["gone-model"])
    server_id = site.register(backend, "gone-model")
    sign_in(page, site.url, USER)
    page.goto(f"{site.url}/dashboard/servers/{server_id}")
    expect(page.locator("#server-health")).to_be_visible()
    site.gateway.admin("DELETE", f"/admin/register/{server_id}")
    page.click("#check-now")
    toast = page.locator("#toasts .toast-error")
    expect(toast).to_have_count(1)  # the failing refreshes say the same: one toast
    expect(toast).to_contain_text(f"No server is registered with id '{server_id}'")
    retry = toast.locator("button", has_text="Retry")
    expect(retry).to_be_visible()
    screenshot(page, "failed-request")
    retry.click()
    expect(page.locator("#toasts .toast-error")).to_have_count(1)
    # Each failed request is also reported by the browser and by htmx: expected here.
    page.goto(site.url + "/dashboard/")
    expect(page.locator("h1")).to_have_text("Dashboard")
    assert [e for e in page.watch.errors if "404" not in e] == []
    page.watch.errors.clear()


def test_an_expired_session_on_an_htmx_call_ends_on_the_login_page(site, page):
    sign_in(page, site.url, USER)
    expect(page.locator("#servers-table")).to_be_visible()
    page.context.clear_cookies()
    # The table's next refresh is an htmx call without a session: HX-Redirect to login.
    page.wait_for_url(re.compile(r"/login\?next="), timeout=15_000)
    expect(page.locator(".form-message-info")).to_contain_text("session has ended")
    page.fill("#username", USER)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/dashboard/$"))


def test_a_form_post_without_the_csrf_token_is_refused(site):
    session = requests.Session()
    login_page = session.get(site.url + "/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login_page.text).group(1)
    signed_in = session.post(
        site.url + "/login",
        data={"username": USER, "password": PASSWORD, "csrf_token": token},
        timeout=10,
    )
    assert signed_in.url.endswith("/dashboard/")
    form = {"endpoint_url": "http://127.0.0.1:1", "model_name": "csrf-model"}
    refused = session.post(site.url + "/dashboard/servers/new", data=form, timeout=10)
    assert refused.status_code == 400
    assert "CSRF" in refused.text
    wrong = session.post(
        site.url + "/dashboard/servers/new", data=form, headers={"X-CSRF-Token": "x"}, timeout=10
    )
    assert wrong.status_code == 400
    page_token = re.search(
        r'name="csrf_token" value="([^"]+)"', session.get(site.url + "/dashboard/").text
    ).group(1)
    accepted = session.post(
        site.url + "/dashboard/servers/new",
        data=form,
        headers={"X-CSRF-Token": page_token, "HX-Request": "true"},
        timeout=10,
    )
    assert accepted.status_code == 200
    assert "Not registered" in accepted.text
    assert session.post(site.url + "/logout", timeout=10).status_code == 400
