"""Usage accounting: every proxied request, recorded in batches off the request path."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from typing import Any

import gevent
import sqlalchemy as sa
from flask import Flask, current_app
from gevent import monkey

from webapp import metrics
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


SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
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


def _rows(items: list[dict[str, Any]], sqlite: bool) -> list[tuple]:
    """Parameter tuples in COLUMNS order; SQLite keeps naive UTC text in SQLAlchemy's format."""
    rest = COLUMNS[1:]
    if sqlite:
        return [(i["created_at"].strftime(SQLITE_TIME), *(i[n] for n in rest)) for i in items]
    return [(i["created_at"], *(i[n] for n in rest)) for i in items]


def _insert_sqlite(path: str, sql: str, items: list[dict[str, Any]]) -> None:
    """Insert with a connection of this thread's own (runs in gevent's thread pool)."""
    rows = _rows(items, sqlite=True)
    connection = sqlite3.connect(path, timeout=10)
    try:
        # As the app's own connections: WAL without an fsync per commit.
        connection.execute("PRAGMA synchronous=NORMAL")
        with connection:
            connection.executemany(sql, rows)
    finally:
        connection.close()


def _off_the_hub(function, *args) -> None:
    """Run blocking C work (SQLite) in a native thread when gevent serves requests.

    A second's worth of usage rows costs SQLite tens of milliseconds; on the hub's
    thread that would stall every request in flight for as long.
    """
    if monkey.is_module_patched("socket"):
        gevent.get_hub().threadpool.apply(function, args)
    else:
        function(*args)


def _write(items: list[dict[str, Any]]) -> None:
    """One executemany straight to the driver, then the metrics for the batch."""
    engine = db.engine
    sqlite = engine.dialect.name == "sqlite"
    marker = "?" if sqlite else "%s"
    sql = "INSERT INTO usage_records ({}) VALUES ({})".format(
        ", ".join(COLUMNS), ", ".join([marker] * len(COLUMNS))
    )
    if sqlite:
        _off_the_hub(_insert_sqlite, engine.url.database, sql, items)
    else:
        db.session.connection().exec_driver_sql(sql, _rows(items, sqlite=False))
    routing = current_app.extensions.get("routing")
    metrics.observe_requests(items, sum(routing.inflight.values()) if routing else 0)


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
