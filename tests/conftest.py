"""Shared fixtures: real demo backends and real gateways on loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.backends import DemoBackend
from tests.databases import Databases, postgres_unavailable
from tests.gateway import ADMIN_KEY, GatewayProcess
from webapp import create_app


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request) -> Iterator[Databases]:
    """Run each database-touching test on SQLite and on the PostgreSQL at 127.0.0.1:5432."""
    if request.param == "postgresql":
        reason = postgres_unavailable()
        if reason:
            pytest.skip(reason)
    handed_out = Databases(request.param)
    yield handed_out
    handed_out.drop_all()


@pytest.fixture
def backend_factory() -> Iterator[Callable[..., DemoBackend]]:
    """Start demo backends on ephemeral ports; all are stopped after the test."""
    started: list[DemoBackend] = []

    def start(**kwargs) -> DemoBackend:
        backend = DemoBackend(**kwargs)
        backend.start()
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.stop()


@pytest.fixture
def backend(backend_factory) -> DemoBackend:
    """One demo backend serving ``demo-model``."""
    return backend_factory()


@pytest.fixture
def gateway_factory(
    tmp_path: Path, databases: Databases
) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateway processes (each with its own or a shared instance folder)."""
    started: list[GatewayProcess] = []

    def start(
        env: dict[str, str] | None = None, instance: Path | None = None, gunicorn: bool = False
    ) -> GatewayProcess:
        folder = instance or tmp_path / f"instance{len(started)}"
        env = {"DATABASE_URL": databases.url_for(folder), **(env or {})}
        gateway = GatewayProcess(folder, env, gunicorn=gunicorn)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(gateway_factory) -> GatewayProcess:
    """One gateway with default test settings."""
    return gateway_factory()


@pytest.fixture
def app(tmp_path: Path, databases: Databases):
    """An in-process app for fast checks through Flask's test client (no checker running)."""
    instance = tmp_path / "app-instance"
    return create_app(
        {
            "INSTANCE_PATH": str(instance),
            "DATABASE_URL": databases.url_for(instance),
            "ADMIN_API_KEY": ADMIN_KEY,
            "ALLOWED_BACKEND_NETWORKS": "127.0.0.0/8,::1/128",
            "HEALTH_CHECK_TIMEOUT_SECONDS": 2,
            "LOG_FILE": "-",
        }
    )


@pytest.fixture
def client(app):
    """Flask test client for ``app``."""
    return app.test_client()


@pytest.fixture
def admin_headers() -> dict[str, str]:
    """Headers carrying the test admin key."""
    return {"X-API-Key": ADMIN_KEY}
