"""The database schema: Alembic migrations applied at start-up, one process at a time.

Every process runs ``migrate_database`` when it starts (gunicorn workers, several
machines on one PostgreSQL): a lock makes the first one apply pending migrations and the
others find nothing left to do. A database made by an earlier version that created its
tables without Alembic is stamped as the first revision, then upgraded, so its data
is kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from flask import Flask

from webapp.extensions import db

MIGRATIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")
FIRST_REVISION = "0001"
LOCK_KEY = 7_270_001  # any constant shared by every gateway process


def alembic_config(connection: sa.Connection | None = None) -> AlembicConfig:
    """Alembic settings pointing at ``migrations/``, optionally bound to a connection."""
    config = AlembicConfig(os.path.join(MIGRATIONS, "alembic.ini"))
    config.set_main_option("script_location", MIGRATIONS)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate_database(app: Flask) -> None:
    """Bring the schema to the newest revision, safely against concurrent start-ups."""
    with app.app_context():
        engine = db.engine
        sqlite = engine.dialect.name == "sqlite"
        lock = _file_lock(os.path.join(app.instance_path, ".migrate.lock")) if sqlite else None
        with lock or contextlib.nullcontext(), engine.begin() as connection:
            if not sqlite:
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            current = MigrationContext.configure(connection).get_current_revision()
            config = alembic_config(connection)
            if current is None and sa.inspect(connection).has_table("servers"):
                command.stamp(config, FIRST_REVISION)
            command.upgrade(config, "head")
