"""Usage accounting: every proxied request, recorded in batches off the request path."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask

from webapp.extensions import db
from webapp.models import Server, UsageRecord, utcnow
from webapp.services.batch import BatchWriter

USAGE_KEYS = (b'"usage":{', b'"usage": {')


def extract_usage(body: bytes) -> dict[str, Any] | None:
    """The ``usage`` object of an OpenAI response or chunk, without parsing the whole body.

    Embedding responses can be megabytes of floats; the usage object is small and flat,
    so it is cut out and parsed alone.
    """
    for key in USAGE_KEYS:
        at = body.rfind(key)
        if at == -1:
            continue
        start = at + len(key) - 1
        end = body.find(b"}", start)
        if end == -1:
            return None
        try:
            usage = json.loads(body[start : end + 1])
        except ValueError:
            return None
        return usage if isinstance(usage, dict) else None
    return None


def token_counts(usage: dict[str, Any] | None) -> tuple[int | None, int | None, int | None]:
    """(prompt, completion, total) tokens from a usage object, None where absent."""
    if not usage:
        return None, None, None

    def number(key: str) -> int | None:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return number("prompt_tokens"), number("completion_tokens"), number("total_tokens")


COLUMNS = (
    "created_at",
    "request_id",
    "endpoint",
    "model",
    "server_id",
    "client",
    "status",
    "streamed",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "latency_ms",
    "ttft_ms",
    "attempts",
    "error",
)


def _write(items: list[dict[str, Any]]) -> None:
    """One executemany straight to the driver.

    The writer runs on the gevent hub's thread, so every millisecond here delays
    requests; the ORM's per-row work cost ~10 ms per thousand rows, the driver's own
    loop a fraction of that.
    """
    connection = db.session.connection()
    dialect = connection.dialect
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = "INSERT INTO usage_records ({}) VALUES ({})".format(
        ", ".join(COLUMNS), ", ".join([marker] * len(COLUMNS))
    )
    # The UTC column type's own conversion, as the ORM would apply it.
    stamp = UsageRecord.__table__.c.created_at.type.bind_processor(dialect)
    rows = [(stamp(item["created_at"]), *(item[name] for name in COLUMNS[1:])) for item in items]
    connection.exec_driver_sql(sql, rows)


def make_recorder(app: Flask) -> BatchWriter:
    """The per-process usage writer, flushing every ``USAGE_FLUSH_SECONDS``."""
    return BatchWriter(app, "usage-writer", _write, app.config["USAGE_FLUSH_SECONDS"])


def _totals(columns: list, since, model: str | None) -> list[dict[str, Any]]:
    query = sa.select(
        *columns,
        sa.func.count().label("requests"),
        sa.func.sum(sa.case((UsageRecord.status >= 400, 1), else_=0)).label("errors"),
        sa.func.coalesce(sa.func.sum(UsageRecord.prompt_tokens), 0).label("prompt_tokens"),
        sa.func.coalesce(sa.func.sum(UsageRecord.completion_tokens), 0).label("completion_tokens"),
        sa.func.coalesce(sa.func.sum(UsageRecord.total_tokens), 0).label("total_tokens"),
        sa.func.avg(UsageRecord.latency_ms).label("mean_latency_ms"),
        sa.func.avg(UsageRecord.ttft_ms).label("mean_ttft_ms"),
    ).where(UsageRecord.created_at >= since)
    if model:
        query = query.where(UsageRecord.model == model)
    if columns:
        query = query.group_by(*columns).order_by(*columns)
    rows = []
    for row in db.session.execute(query).mappings():
        entry = dict(row)
        for key in ("mean_latency_ms", "mean_ttft_ms"):
            entry[key] = round(entry[key], 2) if entry[key] is not None else None
        entry["errors"] = entry["errors"] or 0
        rows.append(entry)
    return rows


def summary(days: int, model: str | None = None) -> dict[str, Any]:
    """Totals over the last ``days`` days: overall, by model, by server, by day (UTC)."""
    since = utcnow() - timedelta(days=days)
    day = sa.func.substr(sa.cast(UsageRecord.created_at, sa.String), 1, 10).label("day")
    by_server = _totals([UsageRecord.server_id, UsageRecord.model], since, model)
    names = dict(db.session.execute(sa.select(Server.id, Server.endpoint_url)).all())
    for entry in by_server:
        entry["endpoint_url"] = names.get(entry["server_id"])
    return {
        "since": since.isoformat(),
        "days": days,
        "totals": _totals([], since, model)[0],
        "by_model": _totals([UsageRecord.model], since, model),
        "by_server": by_server,
        "by_day": _totals([day], since, model),
    }


def recent(limit: int, model: str | None = None) -> list[UsageRecord]:
    """The newest usage records, newest first."""
    query = sa.select(UsageRecord).order_by(UsageRecord.id.desc()).limit(limit)
    if model:
        query = query.where(UsageRecord.model == model)
    return list(db.session.scalars(query))
