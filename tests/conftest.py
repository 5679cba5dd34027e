"""Shared fixtures: real demo backends and real gateways on loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.backends import DemoBackend
from tests.gateway import ADMIN_KEY, GatewayProcess
from webapp import create_app


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
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateway processes (each with its own or a shared instance folder)."""
    started: list[GatewayProcess] = []

    def start(env: dict[str, str] | None = None, instance: Path | None = None) -> GatewayProcess:
        folder = instance or tmp_path / f"instance{len(started)}"
        gateway = GatewayProcess(folder, env)
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
def app(tmp_path: Path):
    """An in-process app for fast checks through Flask's test client (no checker running)."""
    return create_app(
        {
            "INSTANCE_PATH": str(tmp_path / "app-instance"),
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
