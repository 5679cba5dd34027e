"""Dashboard pages for one server: register, detail (with "check now"), edit, delete.

Every change goes through the registry and health services, exactly as the admin
API's do; these views only turn form data into their payloads and their errors into
messages next to the fields. A form with mistakes is an answer, not a failure: 200
with the messages swapped out of band into their fields (see ``layout.html``), so
what the owner typed, the API key included, stays in the form and is never sent back.
"""

from __future__ import annotations

from flask import Response, flash, render_template, request, url_for

from webapp.blueprints import dashboard_forms as forms
from webapp.blueprints.dashboard import bp
from webapp.blueprints.dashboard_chart import history_chart
from webapp.errors import BackendUnavailable, Conflict, InvalidRequest
from webapp.services import health, registry


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(body, status=status)
    response.headers.update(headers or {})
    return response


def _form_errors(errors: dict[str, str], message: str, names: tuple[str, ...] = ()) -> Response:
    """A message for the form's status line, and every field's error slot updated."""
    body = render_template(
        "_form_errors.html",
        errors=errors,
        message=message,
        names=names or tuple(f.name for f in forms.FIELDS),
    )
    return _html(body)


# -- register ----------------------------------------------------------------------------


@bp.get("/servers/new")
def register() -> str:
    """The registration form."""
    return render_template("register.html", fields=forms.FIELDS)


@bp.post("/servers/check")
def register_check() -> str:
    """Inline validation while the owner types: every filled-in field checked alone."""
    _, errors = forms.check_form(request.form, [f.name for f in forms.FIELDS], skip_empty=True)
    # Once every field is fine, an earlier "please fix" message is out of date.
    return render_template(
        "_field_errors.html", errors=errors, fields=forms.FIELDS, clear_status=not errors
    )


@bp.post("/servers/test-connection")
def test_connection() -> str:
    """Run the gateway's own probe against the form's URL and key; list the models offered."""
    form = request.form
    try:
        url = forms.check_field("endpoint_url", form.get("endpoint_url", "").strip())
        key = forms.check_field("api_key", form.get("api_key", "").strip())
    except InvalidRequest as exc:
        return render_template(
            "_test_connection.html", error=forms.friendly(exc.message, exc.param)
        )
    if not url:
        return render_template("_test_connection.html", error="Enter the endpoint URL first.")
    result = health.probe(url, key, None)
    return render_template("_test_connection.html", result=result, url=url)


@bp.get("/servers/model-input")
def model_input() -> str:
    """The model name input holding ``value`` (a model picked from a test's list)."""
    field = forms.FIELDS_BY_NAME["model_name"]
    return render_template("_model_input.html", field=field, value=request.args.get("value", ""))


@bp.post("/servers/new")
def register_submit() -> Response:
    """Register through the registry (which probes first); success replaces the form."""
    payload, errors = forms.registration_payload(request.form)
    if errors:
        return _form_errors(errors, "Not registered yet: please fix the fields marked below.")
    try:
        server, result = registry.register(payload)
    except (InvalidRequest, Conflict) as exc:
        field = forms.field_for(exc.param)
        message = forms.friendly(exc.message, exc.param)
        if field is None:
            return _form_errors({}, f"Not registered: {message}")
        return _form_errors({field: message}, "Not registered yet: please fix the fields below.")
    except BackendUnavailable as exc:
        return _form_errors({}, f"Not registered: {exc.message}")
    body = render_template("_register_success.html", server=server, result=result)
    return _html(body, 200, {"HX-Retarget": "#register-panel", "HX-Reswap": "outerHTML"})


# -- detail ------------------------------------------------------------------------------


def _health_context(server_id: str) -> dict:
    server = registry.get_server(server_id)
    checks = registry.recent_checks(server.id, health.HISTORY_KEPT)
    return {
        "server": server,
        "figures": health.history_figures(checks),
        "chart": history_chart(checks),
        "checks": checks[:20],
    }


@bp.get("/servers/<server_id>")
def server_detail(server_id: str) -> str:
    """Every field but the key, the health figures and the history chart."""
    return render_template("server_detail.html", **_health_context(server_id))


@bp.get("/servers/<server_id>/health")
def server_health(server_id: str) -> str:
    """The health panel alone; it polls itself."""
    return render_template("_server_health.html", **_health_context(server_id))


@bp.post("/servers/<server_id>/check")
def check_now(server_id: str) -> str:
    """Probe now (a success reactivates the server) and swap in the new health panel."""
    result = health.check_now(registry.get_server(server_id))
    if result.ok:
        outcome = ("success", f"Check passed in {result.response_ms or 0:.0f} ms.")
    else:
        outcome = ("error", f"Check failed: {result.reason}")
    return render_template("_server_health.html", outcome=outcome, **_health_context(server_id))


# -- edit --------------------------------------------------------------------------------


@bp.get("/servers/<server_id>/edit")
def edit(server_id: str) -> str:
    """The form, filled in with the server's values (the key is never shown)."""
    server = registry.get_server(server_id)
    return render_template("server_edit.html", server=server, fields=forms.FIELDS)


@bp.post("/servers/<server_id>/edit/check")
def edit_check(server_id: str) -> str:
    """Inline validation, and a mark on every field that differs from the saved value."""
    server = registry.get_server(server_id)
    changes, errors = forms.edit_changes(request.form, server)
    return render_template(
        "_field_errors.html", errors=errors, fields=forms.FIELDS, changes=changes, marks=True
    )


@bp.post("/servers/<server_id>/edit")
def edit_submit(server_id: str) -> Response:
    """First a review of the changes; saving needs the confirmation of exactly those."""
    server = registry.get_server(server_id)
    changes, errors = forms.edit_changes(request.form, server)
    if errors:
        return _form_errors(errors, "Not saved: please fix the fields marked below.")
    if not changes:
        return _html(render_template("_edit_confirm.html", server=server, changes={}))
    digest = forms.changes_digest(changes)
    confirmed = request.form.get("confirm") == "yes" and request.form.get("reviewed") == digest
    if not confirmed:
        body = render_template(
            "_edit_confirm.html",
            server=server,
            changes=changes,
            digest=digest,
            fields=forms.FIELDS_BY_NAME,
            reprobe=bool(changes.keys() & set(forms.PROBED)) or not server.is_active,
        )
        return _html(body)
    try:
        server, result = registry.update(server.id, forms.update_payload(changes))
    except (InvalidRequest, Conflict) as exc:
        field = forms.field_for(exc.param)
        message = forms.friendly(exc.message, exc.param)
        return _form_errors({field: message} if field else {}, f"Not saved: {message}")
    except BackendUnavailable as exc:
        return _form_errors({}, f"Not saved: {exc.message}")
    probed = f" The server passed the probe in {result.response_ms:.0f} ms." if result else ""
    flash(f"Saved {len(changes)} change(s).{probed}", "success")
    return _html("", 200, {"HX-Redirect": url_for("dashboard.server_detail", server_id=server.id)})


# -- delete ------------------------------------------------------------------------------


@bp.get("/servers/<server_id>/delete")
def delete_confirm(server_id: str) -> str:
    """Ask before deleting."""
    return render_template("_delete_confirm.html", server=registry.get_server(server_id))


@bp.delete("/servers/<server_id>")
def delete(server_id: str) -> Response:
    """Soft delete through the registry, then back to the overview."""
    server = registry.remove(server_id)
    flash(f"Deleted {server.model_name} at {server.endpoint_url}.", "success")
    return _html("", 200, {"HX-Redirect": url_for("dashboard.index")})
