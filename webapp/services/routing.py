"""Routing: which server answers a request for a model.

Each process keeps an in-memory table of the healthy servers of every model, reloaded
from the database every ``ROUTING_REFRESH_SECONDS`` and at once after a change made by
this process. The request path only reads this table: no database query per request.

Live traffic feeds back into it: a server that fails before the first byte leaves the
table at once (and is marked unhealthy in the database off the request path, so the
other processes drop it too); the health checker brings it back. A 429 puts a server
in a cooldown that honours ``Retry-After``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from itertools import count

import sqlalchemy as sa
from flask import Flask, current_app

from webapp import metrics
from webapp.extensions import db
from webapp.models import HEALTHY, Server, utcnow
from webapp.services import health
from webapp.services.batch import BatchWriter

log = logging.getLogger("gateway.proxy")

DEFAULT_COOLDOWN_SECONDS = 5.0
MAX_COOLDOWN_SECONDS = 300.0


@dataclass(slots=True)
class Candidate:
    """What the proxy needs to send a request to one server."""

    id: str
    model_name: str
    upstream_model: str
    base_url: str
    api_key: str | None
    last_checked_at: datetime | None


@dataclass(slots=True)
class ModelEntry:
    """One public model: its healthy servers in a stable order, and how many exist."""

    name: str
    healthy: list[Candidate]
    total: int
    created: int


def retry_after_seconds(value: str | None) -> float:
    """Seconds from a Retry-After header (delta or HTTP date), bounded; a default if absent."""
    if not value:
        return DEFAULT_COOLDOWN_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - utcnow()).total_seconds()
        except (TypeError, ValueError):
            return DEFAULT_COOLDOWN_SECONDS
    return min(max(seconds, 0.0), MAX_COOLDOWN_SECONDS)


def table_changed() -> None:
    """Reload this process's routing table now: the registry or a probe just changed it."""
    table = current_app.extensions.get("routing")
    if table is not None:
        table.refresh()


class RoutingTable:
    """The per-process table of healthy servers, and the strategy that orders them."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.strategy = app.config["ROUTING_STRATEGY"]
        self.refresh_seconds = app.config["ROUTING_REFRESH_SECONDS"]
        self.models: dict[str, ModelEntry] = {}
        self.inflight: dict[str, int] = {}
        self._turns: dict[str, count] = {}
        self._failed_at: dict[str, datetime] = {}
        self._cooldown_until: dict[str, float] = {}
        self._seen_servers: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passive = BatchWriter(app, "passive-health", self._write_failures, 0.2)

    # -- table ----------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the table from the database (call inside an app context)."""
        rows = db.session.execute(
            sa.select(
                Server.id,
                Server.model_name,
                Server.upstream_model,
                Server.endpoint_url,
                Server.api_key,
                Server.last_checked_at,
                Server.health_status,
                Server.is_active,
                Server.registered_at,
            )
            .where(Server.deleted_at.is_(None))
            .order_by(Server.registered_at, Server.id)
        ).all()
        db.session.rollback()
        models: dict[str, ModelEntry] = {}
        for row in rows:
            created = int(row.registered_at.timestamp())
            entry = models.setdefault(row.model_name, ModelEntry(row.model_name, [], 0, created))
            entry.total += 1
            if row.is_active and row.health_status == HEALTHY:
                entry.healthy.append(
                    Candidate(
                        row.id,
                        row.model_name,
                        row.upstream_model,
                        row.endpoint_url,
                        row.api_key,
                        row.last_checked_at,
                    )
                )
        # A passive failure stays in force until a probe newer than it says otherwise.
        checked = {c.id: c.last_checked_at for e in models.values() for c in e.healthy}
        for server_id, failed_at in list(self._failed_at.items()):
            last_probe = checked.get(server_id)
            if server_id not in checked or (last_probe and last_probe > failed_at):
                del self._failed_at[server_id]
        self.models = models
        states = [(r.id, r.model_name, r.is_active and r.health_status == HEALTHY) for r in rows]
        seen = {(server_id, model) for server_id, model, _ in states}
        metrics.observe_servers(states, self._seen_servers - seen)
        self._seen_servers = seen

    def refresh_now(self) -> None:
        """Reload at once after a change made by this process (admin API)."""
        with self.app.app_context():
            self.refresh()

    def start(self) -> None:
        """Load the table and keep it fresh in the background."""
        self.refresh_now()
        self.passive.start()
        self._thread = threading.Thread(target=self._run, name="routing-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing and write any pending passive failures."""
        self._stop.set()
        self.passive.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh_now()
            except Exception:  # noqa: BLE001 - keep serving the last good table
                log.exception("routing table refresh failed; keeping the previous table")

    # -- choosing ---------------------------------------------------------------

    def candidates(self, model: str) -> list[Candidate] | None:
        """Healthy servers for ``model`` in the order to try them; None if the model is unknown."""
        entry = self.models.get(model)
        if entry is None:
            return None
        now = time.monotonic()
        usable = [
            c
            for c in entry.healthy
            if c.id not in self._failed_at and self._cooldown_until.get(c.id, 0.0) <= now
        ]
        if len(usable) < 2:
            return usable
        turns = self._turns.get(model)
        if turns is None:
            turns = self._turns[model] = count()
        start = next(turns) % len(usable)
        ordered = usable[start:] + usable[:start]
        if self.strategy == "least_inflight":
            inflight = self.inflight
            ordered.sort(key=lambda c: inflight.get(c.id, 0))  # stable: ties keep the turn order
        return ordered

    def cooling_down(self, model: str) -> bool:
        """Whether healthy servers exist for ``model`` but all are in a 429 cooldown."""
        entry = self.models.get(model)
        now = time.monotonic()
        return bool(entry and entry.healthy) and all(
            self._cooldown_until.get(c.id, 0.0) > now for c in entry.healthy
        )

    # -- feedback from live traffic ------------------------------------------------

    def record_failure(self, candidate: Candidate, reason: str) -> None:
        """Take a server out of rotation now; mark it unhealthy in the database soon."""
        self._failed_at[candidate.id] = utcnow()
        self.passive.add((candidate.id, reason))
        metrics.observe_failure(reason)
        log.warning(
            "server %s (%s) failed a request: %s", candidate.id, candidate.model_name, reason
        )

    def cooldown(self, candidate: Candidate, retry_after: str | None) -> float:
        """Rest a server that answered 429 for as long as it asked."""
        seconds = retry_after_seconds(retry_after)
        self._cooldown_until[candidate.id] = time.monotonic() + seconds
        log.info(
            "server %s (%s) answered 429; cooling down %.1f s",
            candidate.id,
            candidate.model_name,
            seconds,
        )
        return seconds

    def _write_failures(self, items: list[tuple[str, str]]) -> None:
        for server_id, reason in items:
            health.record_passive_failure(server_id, reason)
        db.session.commit()
        self.refresh()
