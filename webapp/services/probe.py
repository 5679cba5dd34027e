"""One health probe: ``GET {endpoint}/v1/models`` and a verdict with a reason.

Only network work happens here; recording the verdict is ``health``'s job, so a
probe can run at registration (nothing stored yet) exactly as it runs in a cycle.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from webapp.services.netpolicy import AddressRefused, BackendURLError, Network, resolve_and_check
from webapp.upstream import (
    ConnectTimeout,
    ReadTimeout,
    Upstream,
    UpstreamError,
)

MAX_MODELS_BODY = 4 * 1024 * 1024
USER_AGENT = "multiverse-gateway-health/1"


@dataclass
class ProbeResult:
    """What one probe found. ``reason`` is safe to store and show: it never holds a secret."""

    ok: bool
    status_code: int | None = None
    response_ms: float | None = None
    reason: str | None = None
    models: list[str] = field(default_factory=list)


def describe_failure(
    exc: BaseException, timeout: float, connect_timeout: float | None = None
) -> str:
    """A short, secret-free reason for a failed upstream call (only policy errors name hosts)."""
    if isinstance(exc, AddressRefused | BackendURLError):
        return str(exc)
    if isinstance(exc, ConnectTimeout):
        return f"connect timed out after {connect_timeout or timeout:g} s"
    if isinstance(exc, ReadTimeout):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, UpstreamError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"request failed ({type(exc).__name__})"
    raise exc


def _listed_models(body: bytes) -> list[str] | str:
    """Model ids from an OpenAI model list, or the reason the body is not one."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "response is not JSON"
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return 'response is not an OpenAI model list (no "data" array)'
    return [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]


def _status_reason(status: int) -> str:
    if status in (401, 403):
        return f"HTTP {status}: the server refused the API key"
    if 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed; register the final URL"
    return f"HTTP {status}"


def probe_server(
    upstream: Upstream,
    endpoint_url: str,
    api_key: str | None,
    expected_model: str | None,
    timeout: float,
    allowed: Sequence[Network],
) -> ProbeResult:
    """Probe one server. ``expected_model=None`` only asks that a model list comes back.

    Healthy means HTTP 200 with JSON listing ``expected_model``; a server whose list is
    empty still counts, since some servers list nothing until a model is loaded.
    """
    started = time.perf_counter()
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        resolve_and_check(endpoint_url, allowed)
        response = upstream.request(
            "GET",
            endpoint_url,
            "/v1/models",
            headers=headers,
            read_timeout=timeout,
            connect_timeout=timeout,
        )
        try:
            body = response.read(MAX_MODELS_BODY)
        finally:
            response.release()
    except Exception as exc:  # noqa: BLE001 - describe_failure re-raises what it does not know
        elapsed = (time.perf_counter() - started) * 1000
        return ProbeResult(False, None, elapsed, describe_failure(exc, timeout))
    elapsed = (time.perf_counter() - started) * 1000
    status = response.status
    if status != 200:
        return ProbeResult(False, status, elapsed, _status_reason(status))
    if len(body) > MAX_MODELS_BODY:
        return ProbeResult(False, status, elapsed, "model list larger than 4 MiB")
    models = _listed_models(body)
    if isinstance(models, str):
        return ProbeResult(False, status, elapsed, models)
    if expected_model is not None and models and expected_model not in models:
        shown = ", ".join(models[:20]) + (" …" if len(models) > 20 else "")
        reason = f'model "{expected_model}" is not among the models the server lists: {shown}'
        return ProbeResult(False, status, elapsed, reason, models)
    return ProbeResult(True, status, elapsed, None, models)
