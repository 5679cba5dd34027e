"""Sign in and out of the dashboard, and the ``create-user`` command.

Sessions are Flask's signed cookies (HttpOnly, SameSite=Lax, Secure when
``SESSION_COOKIE_SECURE``), ending ``SESSION_LIFETIME_HOURS`` after the last request.
Failed sign-ins are slowed down and then locked out by ``users.LoginThrottle``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import sys
import time
from datetime import timedelta

import click
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from flask.cli import with_appcontext
from flask_login import LoginManager, current_user, login_user, logout_user

from webapp.errors import GatewayError
from webapp.htmx import (
    csrf_valid,
    current_page,
    is_htmx,
    local_path,
    protect,
    rotate_csrf_token,
    security_headers,
)
from webapp.services import users

bp = Blueprint("auth", __name__)
bp.after_request(security_headers)
login_manager = LoginManager()
log = logging.getLogger("gateway.auth")


def init_app(app: Flask) -> None:
    """Sessions, Flask-Login, the login throttle and the ``create-user`` command."""
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=app.config["SESSION_LIFETIME_HOURS"])
    login_manager.init_app(app)
    app.extensions["login_throttle"] = users.LoginThrottle()
    app.cli.add_command(create_user_command)
    app.register_blueprint(bp)


@login_manager.user_loader
def load_user(user_id: str):
    """The signed-in account named by the session, if it still exists."""
    return users.get(user_id)


@login_manager.unauthorized_handler
def unauthorized() -> Response:
    """To the login page: a redirect for pages, ``HX-Redirect`` for htmx calls.

    An htmx call must not get the login form swapped into a panel, so it is told to
    load the login page instead, remembering the page it came from.
    """
    if is_htmx():
        # 200, not 401: htmx follows HX-Redirect either way, and the browser would log a
        # failed request to the console for a 4xx.
        # The note rides in the URL, not in the session: several refreshes may be told at
        # once, and a flashed message would go to whichever page load came first.
        response = Response("Your session has ended; sign in again.")
        response.headers["HX-Redirect"] = url_for("auth.login", next=current_page(), ended=1)
    else:
        response = redirect(url_for("auth.login", next=local_path(request.full_path.rstrip("?"))))
    response.vary.add("HX-Request")
    return response


def client_address() -> str:
    """The client's address; behind a trusted proxy, the first X-Forwarded-For hop not ours."""
    peer = request.remote_addr or "-"
    trusted = current_app.config.get("TRUSTED_PROXIES") or ()

    def ours(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in trusted)

    if not trusted or not ours(peer):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if not ours(hop):
            return hop[:64]
    return peer


def _login_page(error: str | None = None, status: int = 200, username: str = "") -> Response:
    target = local_path(request.values.get("next"))
    ended = request.args.get("ended") == "1" and error is None
    page = render_template("login.html", error=error, username=username, next=target, ended=ended)
    return Response(page, status=status)


@bp.get("/")
def root() -> Response:
    """The dashboard for the signed-in, the login page for everyone else."""
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    return redirect(url_for("auth.login"))


@bp.get("/favicon.ico")
def favicon() -> Response:
    """The gateway's icon; browsers ask for this path on pages that name none."""
    folder = current_app.static_folder or "static"
    return send_from_directory(folder, "favicon.svg", mimetype="image/svg+xml", max_age=86400)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    """Show the form; check the password, slowing down and locking out repeated failures."""
    target = local_path(request.values.get("next")) or url_for("dashboard.index")
    if current_user.is_authenticated:
        return redirect(target)
    if request.method == "GET":
        return _login_page()
    username = request.form.get("username", "")[:200]
    password = request.form.get("password", "")[:2048]
    if not csrf_valid():
        return _login_page("The sign-in form had expired; please try again.", 400, username)
    throttle = current_app.extensions["login_throttle"]
    address = client_address()
    wait = throttle.retry_after(username, address)
    if wait > 0:
        log.warning("sign-in refused for %s: locked for %.0f s", address, wait)
        response = _login_page(
            f"Too many failed sign-ins. Try again in {math.ceil(wait)} seconds.", 429, username
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    user = users.authenticate(username, password)
    if user is None:
        delay = throttle.failed(username, address)
        known = users.find(username) is not None if users.USERNAME_RE.match(username) else False
        shown = username if known else "an unknown user name"
        log.warning("failed sign-in for %s from %s", shown, address)
        time.sleep(delay)  # gevent's sleep once wsgi.py has patched: only this request waits
        return _login_page("Wrong user name or password.", 200, username)
    throttle.succeeded(username)
    session.clear()
    login_user(user)
    session.permanent = True
    rotate_csrf_token()
    log.info("user %s signed in from %s", user.username, address)
    return redirect(target)


@bp.post("/logout")
def logout() -> Response:
    """Sign out (a POST with the CSRF token, so another site cannot sign people out)."""
    protect()
    if current_user.is_authenticated:
        log.info("user %s signed out", current_user.username)
        logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


def _read_password() -> str:
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise click.ClickException("no password given on stdin")
    return line


@click.command("create-user")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Give the account the admin role (the only role).")
@click.option("--reset-password", is_flag=True, help="Set a new password for an existing user.")
@click.option("--if-no-users", is_flag=True, help="Do nothing, silently, when any account exists.")
@with_appcontext
def create_user_command(username: str, admin: bool, reset_password: bool, if_no_users: bool):
    """Create a dashboard account. The password is prompted for, or read from stdin."""
    if not admin and not reset_password:
        raise click.UsageError("pass --admin: admin is the only role for now")
    if if_no_users and users.count() > 0:
        return
    password = _read_password()
    try:
        if reset_password:
            users.set_password(username, password)
            click.echo(f"password changed for {username.strip()}")
        else:
            users.create_user(username, password, "admin")
            click.echo(f"created user {username.strip()} (admin)")
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
