"""A lease row in the shared database: at most one holder at a time, per name.

Taking or renewing the lease is one conditional UPDATE (or an INSERT for the very
first holder), which is atomic on SQLite and PostgreSQL alike, so any number of
processes on any number of machines can race for it safely.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from webapp.extensions import db
from webapp.models import HealthLease, utcnow


def acquire(name: str, holder: str, ttl_seconds: float) -> bool:
    """Take or renew the lease ``name`` for ``ttl_seconds``; True when ``holder`` has it."""
    now = utcnow()
    expires = now + timedelta(seconds=ttl_seconds)
    table = HealthLease.__table__
    result = db.session.execute(
        sa.update(table)
        .where(table.c.name == name)
        .where(sa.or_(table.c.holder == holder, table.c.expires_at < now))
        .values(holder=holder, expires_at=expires)
    )
    if result.rowcount == 1:
        db.session.commit()
        return True
    db.session.rollback()
    if db.session.get(HealthLease, name) is not None:
        return False
    try:
        db.session.add(HealthLease(name=name, holder=holder, expires_at=expires))
        db.session.commit()
        return True
    except IntegrityError:
        db.session.rollback()
        return False


def release(name: str, holder: str) -> None:
    """Give the lease up at once (clean shutdown) so another process need not wait it out."""
    table = HealthLease.__table__
    db.session.execute(
        sa.update(table)
        .where(table.c.name == name, table.c.holder == holder)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()


def current(name: str) -> HealthLease | None:
    """The lease row as stored, or None before anyone took it."""
    return db.session.get(HealthLease, name)


def is_valid(lease: HealthLease | None, now: datetime | None = None) -> bool:
    """Whether the lease is held by someone right now."""
    return lease is not None and lease.expires_at > (now or utcnow())
