"""``/admin``: the REST API owners and scripts use to manage model servers.

Every route needs ``X-API-Key`` equal to ``ADMIN_API_KEY``. The views only
translate HTTP to registry calls and back; the rules live in the services.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from webapp.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from webapp.models import HealthCheck, Server
from webapp.requestio import read_json_body
from webapp.services import health, lease, registry, usage
from webapp.services.probe import ProbeResult

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def require_admin_key() -> None:
    """401 without a key, 403 with a wrong one; compared in constant time."""
    given = request.headers.get("X-API-Key")
    if not given:
        raise AuthenticationFailed("send the admin key in the X-API-Key header")
    expected = current_app.config["ADMIN_API_KEY"]
    if not expected:
        raise PermissionDenied("the admin API is disabled: ADMIN_API_KEY is not set")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise PermissionDenied("the admin key is not valid")


def iso(value: datetime | None) -> str | None:
    """Timestamps leave as ISO-8601 UTC."""
    return value.isoformat() if value is not None else None


def server_to_dict(server: Server) -> dict[str, Any]:
    """Everything about a server except its key (only whether it has one)."""
    return {
        "id": server.id,
        "model_name": server.model_name,
        "upstream_model": server.upstream_model,
        "endpoint_url": server.endpoint_url,
        "has_api_key": bool(server.api_key),
        "capabilities": {
            "max_tokens": server.max_tokens,
            "context_length": server.context_length,
            "streaming": server.streaming,
        },
        "metadata": {"student_id": server.student_id, "description": server.description},
        "registered_at": iso(server.registered_at),
        "updated_at": iso(server.updated_at),
        "health_status": server.health_status,
        "is_active": server.is_active,
        "deactivated_at": iso(server.deactivated_at),
        "consecutive_failures": server.consecutive_failures,
        "last_checked_at": iso(server.last_checked_at),
        "last_transition_at": iso(server.last_transition_at),
        "last_response_ms": server.last_response_ms,
        "last_error": server.last_error,
    }


def check_to_dict(check: HealthCheck) -> dict[str, Any]:
    """One kept probe result."""
    return {
        "checked_at": iso(check.checked_at),
        "ok": check.ok,
        "status_code": check.status_code,
        "response_time_ms": check.response_ms,
        "reason": check.reason,
        "source": check.source,
    }


def probe_to_dict(result: ProbeResult) -> dict[str, Any]:
    """A probe verdict as the API shows it."""
    return {
        "ok": result.ok,
        "status_code": result.status_code,
        "response_time_ms": round(result.response_ms, 2) if result.response_ms else None,
        "reason": result.reason,
        "models_offered": result.models,
    }


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}", param=name)
    return value


def _bool_arg(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in {"true", "1", "yes"}:
        return True
    if raw.lower() in {"false", "0", "no"}:
        return False
    raise InvalidRequest(f"{name} must be true or false", param=name)


@bp.post("/register")
def register():
    """Register a server: validate, probe at once, store only what answered."""
    server, result = registry.register(read_json_body())
    body = {
        "registration_id": server.id,
        "status": "registered",
        "health_status": server.health_status,
        "model_name": server.model_name,
        "upstream_model": server.upstream_model,
        "endpoint_url": server.endpoint_url,
        "probe": probe_to_dict(result),
        "server": server_to_dict(server),
    }
    return jsonify(body), 201


@bp.put("/register/<server_id>")
def update(server_id: str):
    """Partial update; the server is re-probed when its address, key or model changes."""
    server, result = registry.update(server_id, read_json_body())
    body: dict[str, Any] = {"registration_id": server.id, "status": "updated"}
    body["probe"] = probe_to_dict(result) if result is not None else None
    body["server"] = server_to_dict(server)
    return jsonify(body)


@bp.delete("/register/<server_id>")
def remove(server_id: str):
    """Soft delete: no more routing or probing; the same server can register again."""
    server = registry.remove(server_id)
    return jsonify({"registration_id": server.id, "status": "deleted"})


@bp.get("/servers")
def list_servers():
    """Servers with filters (model_name, health_status, student_id, active), sort and paging."""
    page = _int_arg("page", 1, 1, 1_000_000)
    per_page = _int_arg("per_page", 50, 1, 500)
    servers, total = registry.list_servers(
        model_name=request.args.get("model_name") or None,
        health_status=request.args.get("health_status") or None,
        student_id=request.args.get("student_id") or None,
        active=_bool_arg("active"),
        sort=request.args.get("sort") or "-registered_at",
        page=page,
        per_page=per_page,
    )
    return jsonify(
        {
            "servers": [server_to_dict(s) for s in servers],
            "total": total,
            "page": page,
            "per_page": per_page,
            "pages": (total + per_page - 1) // per_page,
        }
    )


@bp.get("/servers/<server_id>")
def server_detail(server_id: str):
    """One server with its last 20 checks and figures over the kept history."""
    server = registry.get_server(server_id)
    history = registry.recent_checks(server.id, health.HISTORY_KEPT)
    figures = health.history_figures(history)
    body = server_to_dict(server)
    body["recent_checks"] = [check_to_dict(c) for c in history[:20]]
    body["metrics"] = {
        "checks_kept": figures.checks,
        "uptime_percent": figures.uptime_percent,
        "success_rate": figures.success_rate,
        "mean_response_time_ms": figures.mean_response_ms,
        "consecutive_failures": server.consecutive_failures,
        "last_transition_at": iso(server.last_transition_at),
    }
    return jsonify(body)


@bp.post("/servers/<server_id>/check")
def check_server(server_id: str):
    """Probe one server now; a success reactivates a deactivated server."""
    server = registry.get_server(server_id)
    result = health.check_now(server)
    body = {"registration_id": server.id, "checked_at": iso(server.last_checked_at)}
    body.update(probe_to_dict(result))
    body.update({"health_status": server.health_status, "is_active": server.is_active})
    return jsonify(body)


@bp.get("/stats")
def stats():
    """Counts by health and model, and the health checker's last cycle."""
    body = registry.stats()
    row = lease.current(health.LEASE_NAME)
    body["health_checker"] = {
        "lease_held": lease.is_valid(row),
        "last_cycle_at": iso(row.last_cycle_at) if row else None,
        "last_cycle_ms": row.last_cycle_ms if row else None,
        "last_cycle_servers": row.last_cycle_servers if row else None,
    }
    return jsonify(body)


@bp.get("/usage")
def usage_summary():
    """Requests and tokens over the last ``days`` (default 7): totals, by model, server, day."""
    days = _int_arg("days", 7, 1, 365)
    return jsonify(usage.summary(days, request.args.get("model") or None))
