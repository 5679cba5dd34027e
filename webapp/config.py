"""Settings: read from the environment, checked once, refused loudly.

Every setting the gateway understands is declared once in ``SETTINGS``: its parser,
its default and its documentation. ``Config`` reads the environment through that
table, and ``apply_settings`` re-checks the merged configuration (environment,
``instance/config.py``, test overrides) so a bad value stops start-up with a message
that names the setting instead of failing later in some request.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from webapp.services.netpolicy import parse_networks


class ConfigError(ValueError):
    """A setting has a value the gateway cannot run with; the message names it."""


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _parse_size(value: str) -> int:
    """Accept plain bytes or a k/m/g suffix (binary units), e.g. ``1MiB``, ``512k``."""
    text = value.strip().lower().removesuffix("ib").removesuffix("b")
    factor = 1
    for suffix, multiple in (("k", 1024), ("m", 1024**2), ("g", 1024**3)):
        if text.endswith(suffix):
            text, factor = text[:-1], multiple
            break
    return int(float(text) * factor)


def _parse_log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _parse_str(value: str) -> str:
    return value.strip()


def _parse_rate_limit(value: str) -> str:
    """An empty string (off) or a limit such as ``600/minute`` or ``10/second;500/hour``."""
    text = value.strip()
    if text:
        from limits import parse_many

        parse_many(text)
    return text


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        chosen = value.strip().lower()
        if chosen not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return chosen

    return parse


@dataclass(frozen=True)
class Setting:
    """One setting: how to parse it, its default, its bounds and what it is for."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    secret: bool = False

    def coerce(self, value: Any) -> Any:
        """Turn a raw value (string from the environment or a Python value) into a checked one."""
        try:
            if isinstance(value, str) or self.parse is parse_networks:
                parsed = self.parse(value)
            elif isinstance(value, bool) and self.parse is not _parse_bool:
                raise ValueError("expected a number")
            elif self.parse is float:
                parsed = float(value)
            elif self.parse in (int, _parse_size):
                parsed = int(value)
            else:
                parsed = value
        except (TypeError, ValueError) as exc:
            shown = "(hidden)" if self.secret else repr(value)
            raise ConfigError(f"invalid {self.name}={shown}: {exc}") from None
        if self.minimum is not None and parsed < self.minimum:
            raise ConfigError(f"invalid {self.name}={parsed}: must be at least {self.minimum:g}")
        if self.maximum is not None and parsed > self.maximum:
            raise ConfigError(f"invalid {self.name}={parsed}: must be at most {self.maximum:g}")
        return parsed


def _seconds(name: str, default: float, doc: str, lo: float, hi: float) -> Setting:
    return Setting(name, float, default, doc, minimum=lo, maximum=hi)


SETTINGS: tuple[Setting, ...] = (
    Setting("HOST", _parse_str, "0.0.0.0", "Address the gateway listens on."),
    Setting("PORT", int, 8000, "Port the gateway listens on.", 0, 65535),
    Setting("LOG_LEVEL", _parse_log_level, "INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL."),
    Setting(
        "LOG_FILE",
        _parse_str,
        "",
        "Rotating log file; empty means `instance/logs/gateway.log`, `-` turns the file off.",
    ),
    Setting(
        "DATABASE_URL",
        _parse_str,
        "",
        "SQLAlchemy URL; empty means SQLite at `instance/gateway.db` (WAL). "
        "`postgresql+psycopg://user@host/db` when several instances share state.",
        secret=True,
    ),
    Setting(
        "ADMIN_API_KEY",
        _parse_str,
        "",
        "Key for the `/admin` API (`X-API-Key`). `start.sh` generates one into "
        "`instance/admin_api_key` on first start. Empty: the admin API refuses everything.",
        secret=True,
    ),
    Setting(
        "SECRET_KEY",
        _parse_str,
        "",
        "Signs dashboard sessions; empty means a random key kept in `instance/secret_key`.",
        secret=True,
    ),
    _seconds(
        "HEALTH_CHECK_INTERVAL_SECONDS", 60, "Seconds between two health-check cycles.", 1, 300
    ),
    _seconds("HEALTH_CHECK_TIMEOUT_SECONDS", 10, "Timeout of one probe.", 0.1, 120),
    Setting("HEALTH_CHECK_CONCURRENCY", int, 200, "Probes running at once in a cycle.", 1, 5000),
    Setting(
        "HEALTH_CHECKER_ENABLED",
        _parse_bool,
        True,
        "Run the background health checker in this process (one per deployment holds the lease).",
    ),
    _seconds(
        "HEALTH_LEASE_SECONDS",
        0,
        "How long the checker's lease lasts unrenewed; 0 means interval + 2 x timeout + 15 s.",
        0,
        3600,
    ),
    Setting(
        "MAX_CONSECUTIVE_FAILURES",
        int,
        3,
        "Failed probes in a row before a server is deactivated.",
        1,
        1000,
    ),
    Setting(
        "AUTO_DEREGISTER_AFTER_FAILURES",
        _parse_bool,
        True,
        "Deactivate a server after MAX_CONSECUTIVE_FAILURES failed probes (never deleted).",
    ),
    Setting(
        "MAX_REQUEST_BODY_SIZE",
        _parse_size,
        1024 * 1024,
        "Largest request body accepted (bytes; `k`/`m` suffixes allowed), chunked bodies included.",
        1024,
        1024**3,
    ),
    Setting(
        "ROUTING_STRATEGY",
        _parse_choice("round_robin", "least_inflight"),
        "round_robin",
        "How a server is picked among the healthy ones: `round_robin` or `least_inflight`.",
    ),
    _seconds(
        "ROUTING_REFRESH_SECONDS",
        2,
        "How often each process reloads its routing table from the database.",
        0.2,
        60,
    ),
    Setting(
        "MAX_RETRY_ATTEMPTS",
        int,
        2,
        "Other servers tried after a failure before the first byte (0 = no failover).",
        0,
        10,
    ),
    _seconds("CONNECT_TIMEOUT_SECONDS", 5, "Timeout to connect to a backend.", 0.1, 120),
    _seconds(
        "REQUEST_TIMEOUT_SECONDS",
        300,
        "Longest wait for the next byte from a backend (first token included).",
        1,
        3600,
    ),
    Setting(
        "WORKER_CONNECTIONS",
        int,
        2000,
        "Concurrent connections per worker; also the size of each backend connection pool.",
        1,
        100000,
    ),
    Setting(
        "REQUIRE_CLIENT_AUTH",
        _parse_bool,
        False,
        "Require `Authorization: Bearer <key>` with one of CLIENT_API_KEYS on `/v1`.",
    ),
    Setting(
        "CLIENT_API_KEYS",
        _parse_str,
        "",
        "Comma-separated client keys accepted on `/v1` (used when REQUIRE_CLIENT_AUTH is on).",
        secret=True,
    ),
    Setting(
        "RATE_LIMIT",
        _parse_rate_limit,
        "",
        "Per client key (or per IP without a key) on `/v1`, e.g. `600/minute`; empty turns it off.",
    ),
    Setting(
        "RATE_LIMIT_STORAGE_URL",
        _parse_str,
        "memory://",
        "Where rate-limit counters live: `memory://` (per process) or `redis://host:6379`.",
    ),
    _seconds(
        "USAGE_FLUSH_SECONDS", 0.1, "How often recorded usage is written to the database.", 0.05, 60
    ),
    Setting(
        "TRUSTED_PROXIES",
        parse_networks,
        (),
        "Comma-separated CIDRs of reverse proxies (nginx) whose `X-Forwarded-For` is believed "
        "for the client IP; empty: the socket's address is the client.",
    ),
    Setting(
        "METRICS_TOKEN",
        _parse_str,
        "",
        "When set, `/metrics` needs `Authorization: Bearer <token>`.",
        secret=True,
    ),
    _seconds(
        "DASHBOARD_REFRESH_SECONDS",
        10,
        "How often the dashboard's tables and figures refresh themselves (htmx polling).",
        1,
        3600,
    ),
    Setting(
        "SESSION_COOKIE_SECURE",
        _parse_bool,
        False,
        "Send the dashboard's session cookie over HTTPS only; turn on when users reach the "
        "gateway through TLS.",
    ),
    _seconds(
        "SESSION_LIFETIME_HOURS",
        12,
        "A dashboard login ends after this many hours without a request.",
        0.01,
        24 * 90,
    ),
    Setting(
        "HTMX_URL",
        _parse_str,
        "https://unpkg.com/htmx.org@2.0.11/dist/htmx.min.js",
        "Where dashboard pages load htmx from: the pinned CDN URL (loaded with SRI) or "
        "`/static/vendor/htmx.min.js`, the vendored copy, for networks without internet.",
    ),
    Setting(
        "ALLOWED_BACKEND_NETWORKS",
        parse_networks,
        (),
        "Comma-separated CIDRs that backends may use although they are private, loopback or "
        "link-local, e.g. `127.0.0.0/8,192.168.1.0/24`.",
    ),
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


class Config:
    """Defaults overlaid with the environment; ``apply_settings`` validates the result."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        for setting in SETTINGS:
            raw = env.get(setting.name)
            setattr(self, setting.name, setting.default if raw is None else raw)


def apply_settings(config: MutableMapping[str, Any]) -> None:
    """Check and normalise every setting in place; raise ConfigError on the first bad one."""
    for setting in SETTINGS:
        config[setting.name] = setting.coerce(config.get(setting.name, setting.default))


def effective_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as they will be used, with secrets masked: safe to log or show."""
    shown: dict[str, Any] = {}
    for setting in SETTINGS:
        value = config.get(setting.name)
        if setting.secret:
            value = "(set)" if value else "(empty)"
        elif isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        shown[setting.name] = value
    return shown


def load_or_create_secret(path: str) -> str:
    """Read a secret kept in the instance folder, creating it (mode 600) the first time."""
    try:
        with open(path, encoding="utf-8") as handle:
            existing = handle.read().strip()
        if existing:
            return existing
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value
