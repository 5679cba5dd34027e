"""Health: record probe verdicts, run the periodic cycle, derive uptime and rates.

One checker runs per deployment: every process runs the loop, but only the holder
of the ``health`` lease probes. Probes of a cycle run concurrently in a bounded
gevent pool, so 100 black-hole servers cost one timeout, not a hundred.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask import Flask, current_app
from gevent.pool import Pool

from webapp import metrics
from webapp.extensions import db
from webapp.models import HEALTHY, UNHEALTHY, HealthCheck, HealthLease, Server, utcnow
from webapp.services import lease
from webapp.services.probe import ProbeResult, probe_server

log = logging.getLogger("gateway.health")

LEASE_NAME = "health"


def routing_changed() -> None:
    """Tell this process's routing table that health changed (imported late: no cycle)."""
    from webapp.services.routing import table_changed

    table_changed()


HISTORY_KEPT = 100


def probe(server_url: str, api_key: str | None, expected_model: str | None) -> ProbeResult:
    """Probe with this app's settings, pools and network policy."""
    config = current_app.config
    result = probe_server(
        current_app.extensions["upstream"],
        server_url,
        api_key,
        expected_model,
        config["HEALTH_CHECK_TIMEOUT_SECONDS"],
        config["ALLOWED_BACKEND_NETWORKS"],
    )
    metrics.observe_probe(result.ok, result.response_ms / 1000 if result.response_ms else None)
    return result


def record_result(server: Server, result: ProbeResult, source: str, reactivate: bool) -> None:
    """Apply one verdict to a server and keep it in the history (caller commits).

    A failure counts towards deactivation; a success resets the count and, when
    ``reactivate`` (forced check, update), brings a deactivated server back.
    """
    now = utcnow()
    config = current_app.config
    previous = server.health_status
    server.last_checked_at = now
    server.last_response_ms = result.response_ms
    if result.ok:
        server.health_status = HEALTHY
        server.consecutive_failures = 0
        server.last_error = None
        if reactivate and not server.is_active:
            server.is_active = True
            server.deactivated_at = None
            log.info("server %s (%s) reactivated", server.id, server.model_name)
    else:
        server.health_status = UNHEALTHY
        server.consecutive_failures += 1
        server.last_error = result.reason
        limit = config["MAX_CONSECUTIVE_FAILURES"]
        if (
            server.is_active
            and config["AUTO_DEREGISTER_AFTER_FAILURES"]
            and server.consecutive_failures >= limit
        ):
            server.is_active = False
            server.deactivated_at = now
            log.warning(
                "server %s (%s) deactivated after %d consecutive failures: %s",
                server.id,
                server.model_name,
                server.consecutive_failures,
                result.reason,
            )
    if previous != server.health_status:
        server.last_transition_at = now
        log.info(
            "server %s (%s) %s -> %s%s",
            server.id,
            server.model_name,
            previous,
            server.health_status,
            f": {result.reason}" if result.reason else "",
        )
    db.session.add(
        HealthCheck(
            server_id=server.id,
            checked_at=now,
            ok=result.ok,
            status_code=result.status_code,
            response_ms=result.response_ms,
            reason=result.reason,
            source=source,
        )
    )


def record_passive_failure(server_id: str, reason: str) -> None:
    """Live traffic saw a server fail: mark it unhealthy until a probe says otherwise.

    Unlike a failed probe this does not count towards deactivation: a burst of client
    traffic must not be able to deregister a server, and only probes bring one back.
    """
    server = db.session.get(Server, server_id)
    if server is None or server.deleted_at is not None or not server.is_active:
        return
    now = utcnow()
    if server.health_status != UNHEALTHY:
        log.info(
            "server %s (%s) %s -> unhealthy (live traffic): %s",
            server.id,
            server.model_name,
            server.health_status,
            reason,
        )
        server.health_status = UNHEALTHY
        server.last_transition_at = now
    server.last_error = reason
    db.session.add(
        HealthCheck(server_id=server.id, checked_at=now, ok=False, reason=reason, source="passive")
    )


def prune_history(server_ids: list[str]) -> None:
    """Keep only the newest HISTORY_KEPT checks of each server (caller commits)."""
    table = HealthCheck.__table__
    for server_id in server_ids:
        cutoff = db.session.scalar(
            sa.select(table.c.id)
            .where(table.c.server_id == server_id)
            .order_by(table.c.id.desc())
            .offset(HISTORY_KEPT - 1)
            .limit(1)
        )
        if cutoff is not None:
            db.session.execute(
                sa.delete(table).where(table.c.server_id == server_id, table.c.id < cutoff)
            )


def check_now(server: Server) -> ProbeResult:
    """Probe one server immediately (admin "check now") and record the verdict."""
    result = probe(server.endpoint_url, server.api_key, server.upstream_model)
    record_result(server, result, "forced", reactivate=True)
    prune_history([server.id])
    db.session.commit()
    routing_changed()
    return result


def run_cycle() -> int:
    """Probe every active server once, concurrently, and record the verdicts in one commit."""
    rows = db.session.execute(
        sa.select(Server.id, Server.endpoint_url, Server.api_key, Server.upstream_model).where(
            Server.is_active.is_(True), Server.deleted_at.is_(None)
        )
    ).all()
    # No transaction may stay open across the network calls below.
    db.session.rollback()
    if not rows:
        return 0
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def probe_row(row: sa.Row) -> tuple[str, ProbeResult]:
        with app.app_context():
            return row.id, probe(row.endpoint_url, row.api_key, row.upstream_model)

    pool = Pool(current_app.config["HEALTH_CHECK_CONCURRENCY"])
    results = dict(pool.imap_unordered(probe_row, rows))
    servers = db.session.scalars(sa.select(Server).where(Server.id.in_(list(results)))).all()
    for server in servers:
        if server.is_active and server.deleted_at is None:
            record_result(server, results[server.id], "probe", reactivate=False)
    prune_history([s.id for s in servers])
    db.session.commit()
    routing_changed()
    return len(rows)


@dataclass
class HistoryFigures:
    """Figures derived from a server's kept history."""

    checks: int
    uptime_percent: float | None
    success_rate: float | None
    mean_response_ms: float | None


def history_figures(checks: list[HealthCheck], now: datetime | None = None) -> HistoryFigures:
    """Uptime (time-weighted: each verdict holds until the next), success rate, mean latency."""
    if not checks:
        return HistoryFigures(0, None, None, None)
    ordered = sorted(checks, key=lambda c: (c.checked_at, c.id))
    end = now or utcnow()
    up = total = 0.0
    for current, following in zip(ordered, ordered[1:] + [None], strict=True):
        span = ((following.checked_at if following else end) - current.checked_at).total_seconds()
        span = max(span, 0.0)
        total += span
        up += span if current.ok else 0.0
    ok_checks = [c for c in ordered if c.ok]
    latencies = [c.response_ms for c in ok_checks if c.response_ms is not None]
    uptime = 100.0 * up / total if total > 0 else (100.0 if ordered[-1].ok else 0.0)
    return HistoryFigures(
        checks=len(ordered),
        uptime_percent=round(uptime, 2),
        success_rate=round(100.0 * len(ok_checks) / len(ordered), 2),
        mean_response_ms=round(sum(latencies) / len(latencies), 2) if latencies else None,
    )


class HealthChecker:
    """The background loop. Runs in every process; probes only while holding the lease."""

    def __init__(self, app: Flask, holder: str) -> None:
        self.app = app
        self.holder = holder
        self.holds_lease = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def lease_seconds(self) -> float:
        """How long a lease lasts: explicit, or long enough to cover a slow cycle."""
        config = self.app.config
        explicit = config["HEALTH_LEASE_SECONDS"]
        interval = config["HEALTH_CHECK_INTERVAL_SECONDS"]
        return explicit or interval + 2 * config["HEALTH_CHECK_TIMEOUT_SECONDS"] + 15

    def start(self) -> None:
        """Start the loop (a greenlet once gevent has patched threading)."""
        self._thread = threading.Thread(target=self._run, name="health-checker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and hand the lease back so another process can take over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.holds_lease:
            with self.app.app_context():
                lease.release(LEASE_NAME, self.holder)
            self.holds_lease = False

    def _run(self) -> None:
        interval = self.app.config["HEALTH_CHECK_INTERVAL_SECONDS"]
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the loop must survive a bad cycle
                log.exception("health cycle failed")
            wait = interval if self.holds_lease else min(interval, 5.0)
            self._stop.wait(max(0.05, wait - (time.monotonic() - started)))

    def _tick(self) -> None:
        with self.app.app_context():
            held = lease.acquire(LEASE_NAME, self.holder, self.lease_seconds())
            if held != self.holds_lease:
                log.info("health lease %s by %s", "taken" if held else "lost", self.holder)
            self.holds_lease = held
            if not held:
                return
            started = time.perf_counter()
            count = run_cycle()
            elapsed_ms = (time.perf_counter() - started) * 1000
            lease.acquire(LEASE_NAME, self.holder, self.lease_seconds())
            row = db.session.get(HealthLease, LEASE_NAME)
            if row is not None and row.holder == self.holder:
                row.last_cycle_at = utcnow()
                row.last_cycle_ms = round(elapsed_ms, 1)
                row.last_cycle_servers = count
                db.session.commit()
            log.debug("health cycle: %d servers in %.0f ms", count, elapsed_ms)
