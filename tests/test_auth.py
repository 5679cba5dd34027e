"""Dashboard accounts: sign-in, sessions, CSRF, the login throttle, the create-user command."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import sqlalchemy as sa

from tests.gateway import ROOT
from webapp import create_app
from webapp.blueprints.auth import create_user_command
from webapp.extensions import db
from webapp.models import HealthLease, User
from webapp.services import users
from webapp.services.users import LoginThrottle

PASSWORD = "correct-horse-battery"


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture
def owner(app) -> str:
    with app.app_context():
        users.create_user("owner", PASSWORD)
    return "owner"


def sign_in(client, username: str, password: str = PASSWORD, **extra):
    token = csrf_from(client.get("/login").text)
    data = {"username": username, "password": password, "csrf_token": token, **extra}
    return client.post("/login", data=data)


def test_root_leads_to_login_then_to_the_dashboard(client, owner):
    assert client.get("/").headers["Location"] == "/login"
    assert sign_in(client, owner).headers["Location"] == "/dashboard/"
    assert client.get("/").headers["Location"] == "/dashboard/"


def test_a_wrong_password_is_refused_without_a_session(client, owner):
    answer = sign_in(client, owner, "wrong-password")
    assert answer.status_code == 200
    assert "Wrong user name or password." in answer.text
    assert client.get("/dashboard/").status_code == 302
    unknown = sign_in(client, "nobody", "whatever-password")
    assert "Wrong user name or password." in unknown.text


def test_every_dashboard_page_needs_a_session(client):
    for path in ("/dashboard/", "/dashboard/servers/new", "/dashboard/models", "/dashboard/logs"):
        answer = client.get(path)
        assert answer.status_code == 302
        assert answer.headers["Location"] == f"/login?next={path}"


def test_an_htmx_call_without_a_session_is_told_to_load_the_login_page(client):
    answer = client.get(
        "/dashboard/servers/table",
        headers={"HX-Request": "true", "HX-Current-URL": "http://localhost/dashboard/?model=x"},
    )
    assert answer.status_code == 200
    assert answer.headers["HX-Redirect"] == "/login?next=/dashboard/?model%3Dx&ended=1"
    assert "<form" not in answer.text
    assert "Your session has ended" in client.get(answer.headers["HX-Redirect"]).text


def test_sign_in_goes_back_to_a_local_page_only(client, owner):
    token = csrf_from(client.get("/login?next=/dashboard/logs").text)
    data = {"username": owner, "password": PASSWORD, "csrf_token": token}
    assert client.post("/login?next=/dashboard/logs", data=data).headers["Location"] == (
        "/dashboard/logs"
    )
    client.post("/logout", data={"csrf_token": csrf_from(client.get("/dashboard/").text)})
    for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        answer = sign_in(client, owner, next=evil)
        assert answer.headers["Location"] == "/dashboard/", evil
        client.post("/logout", data={"csrf_token": csrf_from(client.get("/dashboard/").text)})


def test_session_cookie_is_httponly_and_samesite_lax(client, owner):
    answer = sign_in(client, owner)
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie
    assert "Expires=" in cookie  # a permanent session that ends after SESSION_LIFETIME_HOURS


def test_session_cookie_is_secure_when_asked(tmp_path):
    app = create_app(
        {"INSTANCE_PATH": str(tmp_path), "LOG_FILE": "-", "SESSION_COOKIE_SECURE": "true"}
    )
    with app.app_context():
        users.create_user("owner", PASSWORD)
    answer = sign_in(app.test_client(), "owner")
    assert "Secure" in answer.headers["Set-Cookie"]


def test_posts_without_the_csrf_token_are_refused(client, owner):
    sign_in(client, owner)
    page_token = csrf_from(client.get("/dashboard/").text)
    refused = client.post("/dashboard/servers/check", data={"model_name": "x"})
    assert refused.status_code == 400
    assert "CSRF" in refused.text
    wrong = client.post("/dashboard/servers/check", headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 400
    by_header = client.post("/dashboard/servers/check", headers={"X-CSRF-Token": page_token})
    assert by_header.status_code == 200
    by_field = client.post("/dashboard/servers/check", data={"csrf_token": page_token})
    assert by_field.status_code == 200
    assert client.post("/logout").status_code == 400
    assert client.get("/dashboard/").status_code == 200  # still signed in


def test_the_login_form_without_its_token_asks_to_try_again(client, owner):
    answer = client.post("/login", data={"username": owner, "password": PASSWORD})
    assert answer.status_code == 400
    assert "expired" in answer.text
    assert client.get("/dashboard/").status_code == 302


def test_a_token_from_before_sign_in_is_worthless_after_it(client, owner):
    before = csrf_from(client.get("/login").text)
    sign_in(client, owner)
    stale = client.post("/dashboard/servers/check", headers={"X-CSRF-Token": before})
    assert stale.status_code == 400


def test_sign_out_ends_the_session(client, owner):
    sign_in(client, owner)
    token = csrf_from(client.get("/dashboard/").text)
    answer = client.post("/logout", data={"csrf_token": token})
    assert answer.headers["Location"] == "/login"
    assert client.get("/dashboard/").status_code == 302


def test_repeated_failures_lock_the_account_even_for_the_right_password(client, owner):
    for _ in range(4):  # three are only slowed down, the fourth locks
        assert "Wrong user name" in sign_in(client, owner, "wrong-password").text
    locked = sign_in(client, owner)
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.text
    assert int(locked.headers["Retry-After"]) > 0
    assert client.get("/dashboard/").status_code == 302


class Clock:
    """A hand-driven clock for the throttle (the only thing faked: time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_slows_then_locks_with_growing_lockouts():
    clock = Clock()
    throttle = LoginThrottle(free_per_user=2, lock_base=10, lock_max=25, clock=clock)
    delays = [throttle.failed("ann", "10.0.0.1") for _ in range(2)]
    assert delays == sorted(delays) and delays[0] > 0
    assert throttle.retry_after("ann", "10.0.0.1") == 0
    throttle.failed("ann", "10.0.0.1")
    assert throttle.retry_after("ann", "10.0.0.9") == 10  # the account, from anywhere
    assert throttle.retry_after("bob", "10.0.0.9") == 0
    clock.now += 10
    assert throttle.retry_after("ann", "10.0.0.1") == 0
    throttle.failed("ANN ", "10.0.0.1")  # names compare case-insensitively
    assert throttle.retry_after("ann", "10.0.0.1") == 20
    clock.now += 20
    throttle.failed("ann", "10.0.0.1")
    assert throttle.retry_after("ann", "10.0.0.1") == 25  # capped
    throttle.succeeded("ann")
    assert throttle.retry_after("ann", "10.0.0.2") == 0


def test_throttle_locks_an_address_that_tries_many_accounts_and_forgets_later():
    clock = Clock()
    throttle = LoginThrottle(free_per_address=3, forget_after=60, clock=clock)
    for name in ("a", "b", "c", "d"):
        throttle.failed(name, "10.0.0.7")
    assert throttle.retry_after("e", "10.0.0.7") > 0
    assert throttle.retry_after("e", "10.0.0.8") == 0
    clock.now += 61 + throttle.lock_base
    assert throttle.retry_after("e", "10.0.0.7") == 0


def test_create_user_command_reads_the_password_from_stdin(app):
    runner = app.test_cli_runner()
    result = runner.invoke(create_user_command, ["ann", "--admin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "created user ann (admin)" in result.output
    with app.app_context():
        user = users.find("ann")
        assert user.role == "admin"
        assert user.password_hash != PASSWORD and PASSWORD not in user.password_hash
    again = runner.invoke(create_user_command, ["ann", "--admin"], input=PASSWORD + "\n")
    assert again.exit_code != 0 and "exists already" in again.output
    short = runner.invoke(create_user_command, ["bob", "--admin"], input="short\n")
    assert short.exit_code != 0 and "8 to 1024 characters" in short.output
    no_role = runner.invoke(create_user_command, ["bob"], input=PASSWORD + "\n")
    assert no_role.exit_code != 0 and "--admin" in no_role.output
    reset = runner.invoke(
        create_user_command, ["ann", "--reset-password"], input="another-password\n"
    )
    assert reset.exit_code == 0
    with app.app_context():
        assert users.authenticate("ann", "another-password") is not None


def test_create_user_if_no_users_does_nothing_once_someone_exists(app):
    runner = app.test_cli_runner()
    first = runner.invoke(
        create_user_command, ["admin", "--admin", "--if-no-users"], input=PASSWORD + "\n"
    )
    assert "created user admin" in first.output
    second = runner.invoke(
        create_user_command, ["other", "--admin", "--if-no-users"], input=PASSWORD + "\n"
    )
    assert second.exit_code == 0 and second.output == ""
    with app.app_context():
        assert users.count() == 1


def test_the_real_command_through_wsgi_starts_no_background_work(tmp_path):
    """``flask --app wsgi create-user`` imports wsgi.py, which must not take the health lease."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "HEALTH_"))}
    env.update({"INSTANCE_PATH": str(tmp_path), "HEALTH_CHECK_INTERVAL_SECONDS": "1"})
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "create-user", "ann", "--admin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "created user ann" in result.stdout
    app = create_app({"INSTANCE_PATH": str(tmp_path), "LOG_FILE": "-"})
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 1
        assert db.session.get(HealthLease, "health") is None
