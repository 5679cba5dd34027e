"""Checks on a registration payload: each failure names the field in ``param``."""

from __future__ import annotations

import re
from typing import Any

from webapp.errors import InvalidRequest
from webapp.services.netpolicy import BackendURLError, normalize_url

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,100}$")
PRINTABLE_RE = re.compile(r"^[^\x00-\x1f\x7f]*$")
TOP_FIELDS = {"model_name", "endpoint_url", "api_key", "upstream_model", "capabilities", "metadata"}
CAPABILITY_FIELDS = {"max_tokens", "context_length", "streaming"}
METADATA_FIELDS = {"student_id", "description"}


def _text(value: Any, param: str, limit: int, *, allow_empty: bool = True) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{param} must be a string", param=param)
    value = value.strip()
    if not value and not allow_empty:
        raise InvalidRequest(f"{param} must not be empty", param=param)
    if len(value) > limit:
        raise InvalidRequest(f"{param} is longer than {limit} characters", param=param)
    if not PRINTABLE_RE.match(value):
        raise InvalidRequest(f"{param} contains control characters", param=param)
    return value or None


def _positive_int(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000_000:
        raise InvalidRequest(f"{param} must be a whole number between 1 and 100000000", param=param)
    return value


def _object(value: Any, param: str, known: set[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{param} must be an object", param=param)
    for key in value:
        if key not in known:
            allowed = ", ".join(sorted(known))
            raise InvalidRequest(
                f'unknown field "{param}.{key}"; allowed: {allowed}', param=f"{param}.{key}"
            )
    return value


def model_name(value: Any, param: str = "model_name") -> str:
    """A public model name: letters, digits and ``._:/-``, at most 100 characters."""
    if not isinstance(value, str) or not MODEL_NAME_RE.match(value):
        raise InvalidRequest(
            f"{param} must be 1-100 characters of letters, digits and . _ : / -", param=param
        )
    return value


def registration_fields(payload: Any, *, partial: bool) -> dict[str, Any]:
    """Validate a register (or, with ``partial``, update) payload into flat column values.

    Only the keys present in the payload appear in the result, so an update changes
    exactly what was sent. ``api_key`` may be null or "" in an update to remove the key.
    """
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object")
    for key in payload:
        if key not in TOP_FIELDS:
            allowed = ", ".join(sorted(TOP_FIELDS))
            raise InvalidRequest(f'unknown field "{key}"; allowed: {allowed}', param=key)
    fields: dict[str, Any] = {}
    if "model_name" in payload and (payload["model_name"] is not None or partial):
        fields["model_name"] = model_name(payload["model_name"])
    if "endpoint_url" in payload or not partial:
        url = payload.get("endpoint_url")
        if not isinstance(url, str) or not url.strip():
            raise InvalidRequest(
                "endpoint_url is required (http:// or https://)", param="endpoint_url"
            )
        try:
            fields["endpoint_url"] = normalize_url(url)
        except BackendURLError as exc:
            raise InvalidRequest(str(exc), param="endpoint_url") from None
    if "api_key" in payload:
        fields["api_key"] = _text(payload["api_key"], "api_key", 1024)
        if fields["api_key"] and " " in fields["api_key"]:
            raise InvalidRequest("api_key must not contain spaces", param="api_key")
    if "upstream_model" in payload:
        # None means "the same as model_name"; the registry fills it in.
        fields["upstream_model"] = _text(payload["upstream_model"], "upstream_model", 200)
    capabilities = _object(payload.get("capabilities"), "capabilities", CAPABILITY_FIELDS)
    for key in ("max_tokens", "context_length"):
        if key in capabilities:
            fields[key] = _positive_int(capabilities[key], f"capabilities.{key}")
    if "streaming" in capabilities:
        if not isinstance(capabilities["streaming"], bool):
            raise InvalidRequest(
                "capabilities.streaming must be true or false", param="capabilities.streaming"
            )
        fields["streaming"] = capabilities["streaming"]
    metadata = _object(payload.get("metadata"), "metadata", METADATA_FIELDS)
    if "student_id" in metadata:
        fields["student_id"] = _text(metadata["student_id"], "metadata.student_id", 100)
    if "description" in metadata:
        fields["description"] = _text(metadata["description"], "metadata.description", 1000)
    return fields
