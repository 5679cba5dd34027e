"""The register and edit forms: their fields, and form data turned into registry payloads.

Checks are the registry's own (``validation.registration_fields`` and the network
policy), run one field at a time so the form can show every problem next to its
field while the owner types, not only the first one on submit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from flask import current_app
from werkzeug.datastructures import MultiDict

from webapp.errors import InvalidRequest
from webapp.models import Server
from webapp.services import validation
from webapp.services.netpolicy import AddressRefused, BackendURLError, resolve_and_check


@dataclass(frozen=True)
class Field:
    """One form field: its name (also the column), label, input type and help text."""

    name: str
    label: str
    kind: str = "text"
    help: str = ""
    number: bool = False


FIELDS = (
    Field(
        "model_name",
        "Model name",
        help="The name users ask for. Leave empty to take the server's only model.",
    ),
    Field(
        "endpoint_url",
        "Endpoint URL",
        "url",
        "The server's base URL, e.g. http://192.168.1.20:8080 (with or without /v1).",
    ),
    Field("api_key", "API key", "password", "Sent to the server as a Bearer token; never shown."),
    Field(
        "upstream_model",
        "Upstream model",
        help="The name the server knows, when it differs from the model name.",
    ),
    Field("max_tokens", "Max tokens", "number", "Largest reply the server allows.", number=True),
    Field("context_length", "Context length", "number", "Tokens of context.", number=True),
    Field("streaming", "Streams replies", "checkbox", "The server supports stream: true."),
    Field("student_id", "Student id", help="Who runs this server."),
    Field("description", "Description", help="Hardware, location, anything useful (one line)."),
)
FIELDS_BY_NAME = {f.name: f for f in FIELDS}
CAPABILITIES = ("max_tokens", "context_length", "streaming")
METADATA = ("student_id", "description")
PROBED = ("endpoint_url", "api_key", "upstream_model")


def field_for(param: str | None) -> str | None:
    """The form field a service error's ``param`` names (``capabilities.max_tokens`` →
    ``max_tokens``), or None for errors about the whole form."""
    if not param:
        return None
    name = param.rsplit(".", 1)[-1]
    return name if name in FIELDS_BY_NAME else None


def friendly(message: str, param: str | None) -> str:
    """A service message with the field's label for its parameter name."""
    field = FIELDS_BY_NAME.get(field_for(param) or "")
    if field is not None and param and message.startswith(param):
        return field.label + message[len(param) :]
    return message


def _raw(form: MultiDict, name: str) -> Any:
    if name == "streaming":
        return form.get("streaming") in ("on", "true", "1", "yes")
    return form.get(name, "").strip()


def _payload(values: dict[str, Any]) -> dict[str, Any]:
    """Nest flat field values the way the registry's payloads are shaped."""
    payload: dict[str, Any] = {}
    for name, value in values.items():
        if name in CAPABILITIES:
            payload.setdefault("capabilities", {})[name] = value
        elif name in METADATA:
            payload.setdefault("metadata", {})[name] = value
        else:
            payload[name] = value
    return payload


def check_field(name: str, raw: Any, *, check_network: bool = True) -> Any:
    """The field's stored value, or InvalidRequest naming it. Empty text means None."""
    field = FIELDS_BY_NAME[name]
    value: Any = raw
    if field.number:
        if raw == "":
            value = None
        else:
            try:
                value = int(raw)
            except ValueError:
                raise InvalidRequest(f"{field.label} must be a whole number", param=name) from None
    elif raw == "" and name != "model_name":
        value = None
    flat = validation.registration_fields(_payload({name: value}), partial=True)
    result = flat.get(name, value)
    if name == "endpoint_url" and result and check_network:
        try:
            resolve_and_check(result, current_app.config["ALLOWED_BACKEND_NETWORKS"])
        except (AddressRefused, BackendURLError) as exc:
            raise InvalidRequest(str(exc), param=name) from None
    return result


def check_form(
    form: MultiDict, names: list[str] | tuple[str, ...], *, skip_empty: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """Check each named field alone: (values, errors by field). Empty fields are skipped
    with ``skip_empty`` (while typing nothing is missing yet)."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in names:
        raw = _raw(form, name)
        if skip_empty and raw in ("", False):
            continue
        try:
            values[name] = check_field(name, raw)
        except InvalidRequest as exc:
            errors[field_for(exc.param) or name] = friendly(exc.message, exc.param)
    return values, errors


def registration_payload(form: MultiDict) -> tuple[dict[str, Any], dict[str, str]]:
    """The register form as a registry payload, and the errors found on the way."""
    values, errors = check_form(form, [f.name for f in FIELDS], skip_empty=False)
    if "endpoint_url" not in errors and not values.get("endpoint_url"):
        errors["endpoint_url"] = "Endpoint URL is required (http:// or https://)"
    if not values.get("model_name"):
        values.pop("model_name", None)
        errors.pop("model_name", None)
    values = {k: v for k, v in values.items() if v is not None}
    return _payload(values), errors


def edit_changes(form: MultiDict, server: Server) -> tuple[dict[str, Any], dict[str, str]]:
    """The fields the edit form changes (new values), and the errors found.

    An empty key field keeps the key; "remove the key" removes it. An empty upstream
    model means "the same as the model name", as at registration.
    """
    names = [f.name for f in FIELDS if f.name != "api_key"]
    values, errors = check_form(form, names, skip_empty=False)
    key = form.get("api_key", "").strip()
    if form.get("remove_api_key") and server.api_key:
        values["api_key"] = None
    elif key:
        try:
            values["api_key"] = check_field("api_key", key)
        except InvalidRequest as exc:
            errors["api_key"] = friendly(exc.message, exc.param)
    if "upstream_model" in values and values["upstream_model"] is None:
        values["upstream_model"] = values.get("model_name") or server.model_name
    changes = {
        name: value
        for name, value in values.items()
        if name not in errors and getattr(server, name) != value
    }
    return changes, errors


def update_payload(changes: dict[str, Any]) -> dict[str, Any]:
    """A registry update payload carrying exactly the changed fields."""
    return _payload(changes)


def changes_digest(changes: dict[str, Any]) -> str:
    """A keyed fingerprint of a set of changes: the save must match what was reviewed."""
    text = json.dumps(changes, sort_keys=True, default=str)
    secret = current_app.config["SECRET_KEY"].encode()
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()[:32]
