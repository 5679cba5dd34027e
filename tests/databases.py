"""Databases for tests: SQLite in the instance folder, or a fresh PostgreSQL database.

Every database-touching test runs twice, once per engine. A PostgreSQL database is
created for each gateway instance folder (so two gateways sharing a folder share a
database, as two instances sharing one PostgreSQL would) and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")


class Databases:
    """Hands out a DATABASE_URL per instance folder for one engine."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.created: dict[Path, str] = {}

    def url_for(self, instance: Path) -> str:
        """The DATABASE_URL a gateway using ``instance`` should get ("" = SQLite default)."""
        if self.engine == "sqlite":
            return ""
        key = Path(instance).resolve()
        if key not in self.created:
            name = "gw_test_" + uuid.uuid4().hex[:12]
            with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
                connection.execute(f'CREATE DATABASE "{name}"')
            base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
            self.created[key] = f"{base}/{name}"
        return self.created[key]

    def drop_all(self) -> None:
        """Drop every database this object created."""
        if not self.created:
            return
        with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
            for url in self.created.values():
                name = url.rsplit("/", 1)[1]
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {ADMIN_URL} is not reachable ({exc.__class__.__name__}: {exc})"
    return None
