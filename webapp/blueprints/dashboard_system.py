"""Dashboard pages about the gateway itself: recent logs and the effective settings."""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any
from urllib.parse import urlencode

from flask import current_app, render_template, request

from webapp.blueprints.dashboard import bp
from webapp.config import SETTINGS, effective_settings
from webapp.extensions import db
from webapp.htmx import HTMX_VERSION
from webapp.models import utcnow
from webapp.services import health, lease, registry, usage, users

LINE_RE = re.compile(
    r"^(?P<time>\S+) (?P<level>[A-Z]+) (?P<component>\S+) \[(?P<request_id>[^\]]*)\] "
    r"(?P<message>.*)$",
    re.DOTALL,
)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
COMPONENTS = ("api", "auth", "health", "proxy", "registry")
RANGES = {"5m": ("last 5 minutes", 300), "1h": ("last hour", 3600), "24h": ("last 24 hours", 86400)}
MAX_LINES = 500


@dataclass
class LogLine:
    """One recent log line, split into its parts."""

    time: str
    level: str
    component: str
    request_id: str
    message: str

    @property
    def at(self) -> datetime | None:
        """When it was logged (None if the stamp cannot be read)."""
        try:
            return datetime.strptime(self.time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            return None


def recent_lines() -> list[LogLine]:
    """This process's recent log lines, oldest first."""
    handler = current_app.extensions.get("recent_log_lines")
    lines = []
    for text in list(handler.lines) if handler is not None else []:
        match = LINE_RE.match(text)
        if match:
            lines.append(LogLine(**match.groupdict()))
        else:
            lines.append(LogLine("", "INFO", "-", "-", text))
    return lines


def log_filters() -> dict[str, str]:
    """The logs page's filters, unknown values dropped."""
    args = request.args
    return {
        "level": args.get("level", "") if args.get("level") in LEVELS else "",
        "component": args.get("component", "").strip()[:40],
        "range": args.get("range", "") if args.get("range") in RANGES else "",
        "q": args.get("q", "").strip()[:200],
        "tail": "on" if args.get("tail") == "on" else "",
    }


def logs_context(filters: dict[str, str]) -> dict[str, Any]:
    """The matching lines, newest first, at most MAX_LINES."""
    lines = recent_lines()
    components = sorted({line.component for line in lines} | set(COMPONENTS))
    if filters["level"]:
        floor = LEVELS.index(filters["level"])
        lines = [ln for ln in lines if ln.level in LEVELS and LEVELS.index(ln.level) >= floor]
    if filters["component"]:
        lines = [ln for ln in lines if ln.component == filters["component"]]
    if filters["range"]:
        since = utcnow() - timedelta(seconds=RANGES[filters["range"]][1])
        lines = [ln for ln in lines if (at := ln.at) is not None and at >= since]
    if filters["q"]:
        needle = filters["q"].lower()
        lines = [ln for ln in lines if needle in ln.message.lower() or needle in ln.request_id]
    matched = len(lines)
    return {
        "lines": list(reversed(lines))[:MAX_LINES],
        "matched": matched,
        "filters": filters,
        "levels": LEVELS,
        "components": components,
        "ranges": RANGES,
        "query": urlencode({k: v for k, v in filters.items() if v}),
        "tail_seconds": min(2.0, current_app.config["DASHBOARD_REFRESH_SECONDS"]),
    }


@bp.get("/logs")
def logs() -> str:
    """Recent log lines with filters (level, component, time range, text) and a tail mode."""
    return render_template("logs.html", **logs_context(log_filters()))


@bp.get("/logs/lines")
def log_lines() -> str:
    """The lines alone (filters and tail mode)."""
    return render_template("_log_lines.html", **logs_context(log_filters()))


# -- settings ----------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@bp.get("/settings")
def settings() -> str:
    """The effective configuration (secrets masked), versions, database, uptime and counts."""
    from webapp import __version__

    config = current_app.config
    effective = effective_settings(config)
    rows = []
    for setting in SETTINGS:
        shown = _shown(effective[setting.name])
        default = "(empty)" if setting.secret else _shown(setting.default)
        changed = config.get(setting.name) != setting.default
        rows.append({"setting": setting, "value": shown, "default": default, "changed": changed})
    url = db.engine.url
    stats = registry.stats()
    row = lease.current(health.LEASE_NAME)
    checker = current_app.extensions.get("health_checker")
    started = current_app.extensions.get("started_at") or utcnow()
    return render_template(
        "settings.html",
        rows=rows,
        versions={
            "Gateway": __version__,
            "Python": platform.python_version(),
            "Flask": _version("flask"),
            "SQLAlchemy": _version("sqlalchemy"),
            "gevent": _version("gevent"),
            "htmx": HTMX_VERSION,
        },
        database={
            "engine": url.get_backend_name(),
            "url": url.render_as_string(hide_password=True),
            "path": url.database if url.get_backend_name() == "sqlite" else None,
        },
        started=started,
        uptime=utcnow() - started,
        stats=stats,
        users=users.count(),
        requests_7d=usage.summary(7)["totals"]["requests"],
        lease=row,
        lease_valid=lease.is_valid(row),
        holds_lease=bool(checker and checker.holds_lease),
        instance_path=current_app.instance_path,
        log_file=config.get("LOG_FILE_PATH"),
    )
