"""Tables. Only the services write them; blueprints read through the services."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from webapp.extensions import db

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
UNKNOWN = "unknown"
HEALTH_STATES = (HEALTHY, UNHEALTHY, UNKNOWN)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC: the only clock the tables use."""
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp that always comes back timezone-aware in UTC.

    SQLite has no time zones: values are stored as naive UTC there and given their
    zone back on the way out, so code never compares naive with aware datetimes.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Server(db.Model):
    """A registered model server: where it is, what it serves, and how healthy it is."""

    __tablename__ = "servers"
    __table_args__ = (
        # One live registration per (endpoint, model); soft-deleted rows do not count, so
        # the same server can be registered again after a delete.
        sa.Index(
            "uq_servers_live_endpoint_model",
            "endpoint_url",
            "model_name",
            unique=True,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        ),
    )

    id: so.Mapped[str] = so.mapped_column(
        sa.String(36), primary_key=True, default=lambda: str(uuid.uuid4())
    )
    model_name: so.Mapped[str] = so.mapped_column(sa.String(100), index=True)
    upstream_model: so.Mapped[str] = so.mapped_column(sa.String(200))
    endpoint_url: so.Mapped[str] = so.mapped_column(sa.String(2048))
    api_key: so.Mapped[str | None] = so.mapped_column(sa.String(1024))
    max_tokens: so.Mapped[int | None] = so.mapped_column(sa.Integer)
    context_length: so.Mapped[int | None] = so.mapped_column(sa.Integer)
    streaming: so.Mapped[bool] = so.mapped_column(sa.Boolean, default=True)
    student_id: so.Mapped[str | None] = so.mapped_column(sa.String(100), index=True)
    description: so.Mapped[str | None] = so.mapped_column(sa.String(1000))
    registered_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    updated_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    health_status: so.Mapped[str] = so.mapped_column(sa.String(16), default=UNKNOWN, index=True)
    consecutive_failures: so.Mapped[int] = so.mapped_column(sa.Integer, default=0)
    last_checked_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    last_transition_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    last_response_ms: so.Mapped[float | None] = so.mapped_column(sa.Float)
    last_error: so.Mapped[str | None] = so.mapped_column(sa.String(500))
    is_active: so.Mapped[bool] = so.mapped_column(sa.Boolean, default=True, index=True)
    deactivated_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    deleted_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime, index=True)


class HealthCheck(db.Model):
    """One probe result. The last 100 per server are kept; they carry no secret."""

    __tablename__ = "health_checks"
    __table_args__ = (sa.Index("ix_health_checks_server_time", "server_id", "checked_at"),)

    id: so.Mapped[int] = so.mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    server_id: so.Mapped[str] = so.mapped_column(
        sa.String(36), sa.ForeignKey("servers.id", ondelete="CASCADE")
    )
    checked_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    ok: so.Mapped[bool] = so.mapped_column(sa.Boolean)
    status_code: so.Mapped[int | None] = so.mapped_column(sa.Integer)
    response_ms: so.Mapped[float | None] = so.mapped_column(sa.Float)
    reason: so.Mapped[str | None] = so.mapped_column(sa.String(500))
    source: so.Mapped[str] = so.mapped_column(sa.String(16), default="probe")


class HealthLease(db.Model):
    """The single row that decides which process runs the health checker.

    A holder renews ``expires_at`` every cycle; any process may take the lease once it
    has expired. The row also carries the last cycle's figures so every process can
    report them on ``/health``.
    """

    __tablename__ = "health_lease"

    name: so.Mapped[str] = so.mapped_column(sa.String(32), primary_key=True)
    holder: so.Mapped[str] = so.mapped_column(sa.String(200))
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime)
    last_cycle_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    last_cycle_ms: so.Mapped[float | None] = so.mapped_column(sa.Float)
    last_cycle_servers: so.Mapped[int | None] = so.mapped_column(sa.Integer)


class UsageRecord(db.Model):
    """One proxied request: who asked which model, which server answered, tokens and timing.

    Written in batches by the usage recorder, never on the request path. ``client`` is a
    key id (``key:`` + a hash prefix) or an IP address, never a key.
    """

    __tablename__ = "usage_records"
    __table_args__ = (sa.Index("ix_usage_model_time", "model", "created_at"),)

    id: so.Mapped[int] = so.mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow, index=True)
    request_id: so.Mapped[str] = so.mapped_column(sa.String(128))
    endpoint: so.Mapped[str] = so.mapped_column(sa.String(32))
    model: so.Mapped[str] = so.mapped_column(sa.String(100))
    server_id: so.Mapped[str | None] = so.mapped_column(sa.String(36), index=True)
    client: so.Mapped[str] = so.mapped_column(sa.String(64))
    status: so.Mapped[int] = so.mapped_column(sa.Integer)
    streamed: so.Mapped[bool] = so.mapped_column(sa.Boolean, default=False)
    prompt_tokens: so.Mapped[int | None] = so.mapped_column(sa.Integer)
    completion_tokens: so.Mapped[int | None] = so.mapped_column(sa.Integer)
    total_tokens: so.Mapped[int | None] = so.mapped_column(sa.Integer)
    latency_ms: so.Mapped[float] = so.mapped_column(sa.Float)
    ttft_ms: so.Mapped[float | None] = so.mapped_column(sa.Float)
    attempts: so.Mapped[int] = so.mapped_column(sa.Integer, default=1)
    error: so.Mapped[str | None] = so.mapped_column(sa.String(300))


class User(db.Model):
    """A dashboard account. Only a password hash is kept (werkzeug's scrypt)."""

    __tablename__ = "users"

    id: so.Mapped[int] = so.mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    username: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True, index=True)
    password_hash: so.Mapped[str] = so.mapped_column(sa.String(256))
    role: so.Mapped[str] = so.mapped_column(sa.String(16), default="admin")
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    last_login_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)

    # What Flask-Login asks of a user object; written out so the tables need no Flask-Login.
    is_active = True
    is_authenticated = True
    is_anonymous = False

    def get_id(self) -> str:
        """The id Flask-Login keeps in the session."""
        return str(self.id)
