"""``GET /health``: is this process able to serve, and what is the checker doing."""

from __future__ import annotations

import logging
import os

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify
from sqlalchemy.exc import SQLAlchemyError

from webapp.extensions import db
from webapp.models import Server
from webapp.services import health, lease

bp = Blueprint("status", __name__)
log = logging.getLogger("gateway.api")


@bp.get("/health")
def health_status():
    """200 with figures when the database answers, 503 when it does not. No auth: no secrets."""
    checker = current_app.extensions.get("health_checker")
    body = {
        "status": "ok",
        "database": "ok",
        "holds_health_lease": bool(checker and checker.holds_lease),
        "health_checker_running": checker is not None,
        "worker_pid": os.getpid(),
    }
    try:
        counts = db.session.execute(
            sa.select(Server.health_status, sa.func.count())
            .where(Server.deleted_at.is_(None), Server.is_active.is_(True))
            .group_by(Server.health_status)
        ).all()
        row = lease.current(health.LEASE_NAME)
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.error("health endpoint: database unreachable (%s)", type(exc).__name__)
        body.update(status="error", database="unreachable")
        return jsonify(body), 503
    servers = {"healthy": 0, "unhealthy": 0, "unknown": 0}
    servers.update({status: count for status, count in counts})
    servers["active"] = sum(servers.values())
    body["servers"] = servers
    body["last_cycle"] = {
        "at": row.last_cycle_at.isoformat() if row and row.last_cycle_at else None,
        "duration_ms": row.last_cycle_ms if row else None,
        "servers": row.last_cycle_servers if row else None,
    }
    return jsonify(body)
