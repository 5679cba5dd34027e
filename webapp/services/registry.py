"""The registry: register, update, remove and look up model servers.

A server is stored only after a successful probe, so the registry never holds a
server nobody has seen answer. Every change is logged without secrets.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from webapp.errors import BackendUnavailable, Conflict, InvalidRequest, NotFound
from webapp.extensions import db
from webapp.models import HEALTH_STATES, HealthCheck, Server, utcnow
from webapp.services import health, routing, validation
from webapp.services.netpolicy import AddressRefused, BackendURLError, resolve_and_check
from webapp.services.probe import ProbeResult

log = logging.getLogger("gateway.registry")

SORTABLE = {
    "registered_at": Server.registered_at,
    "model_name": Server.model_name,
    "health_status": Server.health_status,
    "last_checked_at": Server.last_checked_at,
    "updated_at": Server.updated_at,
}


def _check_network(url: str) -> None:
    try:
        resolve_and_check(url, current_app.config["ALLOWED_BACKEND_NETWORKS"])
    except (AddressRefused, BackendURLError) as exc:
        code = "address_not_allowed" if isinstance(exc, AddressRefused) else "invalid_value"
        raise InvalidRequest(str(exc), param="endpoint_url", code=code) from None


def _ensure_unique(endpoint_url: str, model_name: str, except_id: str | None = None) -> None:
    query = sa.select(Server.id).where(
        Server.endpoint_url == endpoint_url,
        Server.model_name == model_name,
        Server.deleted_at.is_(None),
    )
    if except_id is not None:
        query = query.where(Server.id != except_id)
    existing = db.session.scalar(query)
    if existing is not None:
        raise Conflict(
            f'model "{model_name}" at this endpoint is already registered as {existing}',
            param="endpoint_url",
        )


def _probe_or_fail(url: str, api_key: str | None, expected: str | None) -> ProbeResult:
    result = health.probe(url, api_key, expected)
    if not result.ok:
        raise BackendUnavailable(f"the server did not pass the health probe: {result.reason}")
    return result


def _discover_model(result: ProbeResult) -> str:
    """The model to register when the owner named none: the server's only model."""
    if len(result.models) == 1:
        return validation.model_name(result.models[0], "model_name")
    if not result.models:
        raise InvalidRequest("the server lists no models; give model_name", param="model_name")
    shown = ", ".join(result.models[:20])
    raise InvalidRequest(
        f"the server lists several models ({shown}); give model_name to choose one",
        param="model_name",
    )


def register(payload: Any) -> tuple[Server, ProbeResult]:
    """Validate, check the network policy, probe, and store a new registration."""
    fields = validation.registration_fields(payload, partial=False)
    url = fields["endpoint_url"]
    _check_network(url)
    name = fields.get("model_name")
    if name is not None:
        _ensure_unique(url, name)
    expected = fields.get("upstream_model") or name
    result = _probe_or_fail(url, fields.get("api_key"), expected)
    if name is None:
        name = _discover_model(result)
        fields["model_name"] = name
        _ensure_unique(url, name)
    fields["upstream_model"] = fields.get("upstream_model") or name
    server = Server(**fields)
    db.session.add(server)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(f'model "{name}" at this endpoint is already registered') from None
    health.record_result(server, result, "registration", reactivate=True)
    db.session.commit()
    log.info("registered server %s model=%s endpoint=%s", server.id, name, url)
    routing.table_changed()
    return server, result


def get_server(server_id: str) -> Server:
    """A live (not deleted) server, or 404."""
    server = db.session.get(Server, server_id)
    if server is None or server.deleted_at is not None:
        raise NotFound(f"no server is registered with id {server_id!r}", param="id")
    return server


def update(server_id: str, payload: Any) -> tuple[Server, ProbeResult | None]:
    """Apply a partial update; re-probe when the address, key or model changes."""
    server = get_server(server_id)
    fields = validation.registration_fields(payload, partial=True)
    if "upstream_model" in fields and fields["upstream_model"] is None:
        fields["upstream_model"] = fields.get("model_name", server.model_name)
    changed = {k: v for k, v in fields.items() if getattr(server, k) != v}
    url = changed.get("endpoint_url", server.endpoint_url)
    name = changed.get("model_name", server.model_name)
    if "endpoint_url" in changed:
        _check_network(url)
    if "endpoint_url" in changed or "model_name" in changed:
        _ensure_unique(url, name, except_id=server.id)
    result = None
    if changed.keys() & {"endpoint_url", "api_key", "upstream_model"} or not server.is_active:
        upstream_model = changed.get("upstream_model", server.upstream_model)
        api_key = changed.get("api_key", server.api_key)
        result = _probe_or_fail(url, api_key, upstream_model)
    for key, value in changed.items():
        setattr(server, key, value)
    server.updated_at = utcnow()
    if result is not None:
        health.record_result(server, result, "update", reactivate=True)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(f'model "{name}" at this endpoint is already registered') from None
    changes = ", ".join(sorted(changed)) or "no change"
    log.info("updated server %s (%s): %s", server.id, server.model_name, changes)
    routing.table_changed()
    return server, result


def remove(server_id: str) -> Server:
    """Soft delete: the row stays for history, the server stops being routed or probed."""
    server = get_server(server_id)
    server.deleted_at = utcnow()
    server.is_active = False
    db.session.commit()
    log.info("removed server %s (%s)", server.id, server.model_name)
    routing.table_changed()
    return server


def list_servers(
    *,
    model_name: str | None = None,
    health_status: str | None = None,
    student_id: str | None = None,
    active: bool | None = None,
    sort: str = "-registered_at",
    page: int = 1,
    per_page: int = 50,
) -> tuple[list[Server], int]:
    """Live servers matching the filters, sorted and paged; also the total count."""
    if health_status is not None and health_status not in HEALTH_STATES:
        raise InvalidRequest(
            f"health_status must be one of {', '.join(HEALTH_STATES)}", param="health_status"
        )
    descending = sort.startswith("-")
    column = SORTABLE.get(sort.lstrip("-"))
    if column is None:
        allowed = ", ".join(sorted(SORTABLE))
        raise InvalidRequest(
            f"sort must be one of {allowed} (prefix - for descending)", param="sort"
        )
    query = sa.select(Server).where(Server.deleted_at.is_(None))
    if model_name:
        query = query.where(Server.model_name == model_name)
    if health_status:
        query = query.where(Server.health_status == health_status)
    if student_id:
        query = query.where(Server.student_id == student_id)
    if active is not None:
        query = query.where(Server.is_active.is_(active))
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    order = column.desc() if descending else column.asc()
    query = (
        query.order_by(order.nulls_last(), Server.id).offset((page - 1) * per_page).limit(per_page)
    )
    return list(db.session.scalars(query)), total


def recent_checks(server_id: str, limit: int) -> list[HealthCheck]:
    """The newest ``limit`` checks of a server, newest first."""
    query = (
        sa.select(HealthCheck)
        .where(HealthCheck.server_id == server_id)
        .order_by(HealthCheck.id.desc())
        .limit(limit)
    )
    return list(db.session.scalars(query))


def stats() -> dict[str, Any]:
    """Counts by health and activity, and per model, over live registrations."""
    rows = db.session.execute(
        sa.select(Server.model_name, Server.health_status, Server.is_active, sa.func.count())
        .where(Server.deleted_at.is_(None))
        .group_by(Server.model_name, Server.health_status, Server.is_active)
    ).all()
    servers = {"total": 0, "active": 0, "inactive": 0, "healthy": 0, "unhealthy": 0, "unknown": 0}
    models: dict[str, dict[str, int]] = {}
    for model, status, active, count in rows:
        servers["total"] += count
        servers["active" if active else "inactive"] += count
        entry = models.setdefault(model, {"servers": 0, "active": 0, "healthy": 0})
        entry["servers"] += count
        if active:
            servers[status] += count
            entry["active"] += count
            entry["healthy"] += count if status == "healthy" else 0
    return {"servers": servers, "models": len(models), "by_model": models}
