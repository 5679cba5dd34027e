"""The gateway as it runs for real (``python wsgi.py`` under gevent): checker, lease, logs, limits."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from tests.gateway import ADMIN_KEY


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.1):
    """Poll until ``predicate()`` is truthy; return its value or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


FAST = {"HEALTH_CHECK_INTERVAL_SECONDS": "1", "HEALTH_CHECK_TIMEOUT_SECONDS": "1"}


def test_stopped_backend_turns_unhealthy_within_an_interval(gateway_factory, backend):
    gateway = gateway_factory(FAST)
    server_id = gateway.register(backend.url)["registration_id"]
    backend.stop()
    stopped_at = time.monotonic()

    def unhealthy():
        detail = gateway.admin("GET", f"/admin/servers/{server_id}").json()
        return detail if detail["health_status"] == "unhealthy" else None

    detail = wait_for(unhealthy, timeout=10, interval=0.05)
    # One interval (1 s) plus the probe itself; generous for a loaded machine.
    assert time.monotonic() - stopped_at < 5
    assert detail["last_error"] == "connection refused"
    assert detail["recent_checks"][0]["reason"] == "connection refused"
    assert detail["recent_checks"][0]["source"] == "probe"


def test_deactivation_after_failures_and_reactivation(gateway_factory, backend):
    gateway = gateway_factory({**FAST, "MAX_CONSECUTIVE_FAILURES": "2"})
    server_id = gateway.register(backend.url)["registration_id"]
    backend.control(models_status=500)

    def inactive():
        detail = gateway.admin("GET", f"/admin/servers/{server_id}").json()
        return detail if not detail["is_active"] else None

    detail = wait_for(inactive)
    assert detail["consecutive_failures"] == 2
    assert detail["deactivated_at"]
    listed = gateway.admin("GET", "/admin/servers?active=false").json()
    assert [s["id"] for s in listed["servers"]] == [server_id]
    # Deactivated servers are not probed any more.
    probes = backend.stats()["models_requests"]
    time.sleep(2.5)
    assert backend.stats()["models_requests"] == probes

    # A failing forced check keeps it inactive; a passing one brings it back.
    assert gateway.admin("POST", f"/admin/servers/{server_id}/check").json()["is_active"] is False
    backend.control()
    check = gateway.admin("POST", f"/admin/servers/{server_id}/check").json()
    assert check["ok"] is True and check["is_active"] is True
    assert "reactivated" in gateway.log_text()

    # Deactivate again, then an update reactivates it.
    backend.control(models_status=500)
    wait_for(inactive)
    backend.control()
    updated = gateway.admin(
        "PUT", f"/admin/register/{server_id}", json={"metadata": {"description": "back"}}
    )
    assert updated.status_code == 200
    assert updated.json()["server"]["is_active"] is True


def test_two_instances_share_one_checker(gateway_factory, backend, tmp_path):
    shared = tmp_path / "shared"
    first = gateway_factory(FAST, instance=shared)
    second = gateway_factory(FAST, instance=shared)
    first.register(backend.url)
    holders = wait_for(
        lambda: [
            g.port
            for g in (first, second)
            if g.session.get(g.url + "/health").json()["holds_health_lease"]
        ]
    )
    assert len(holders) == 1
    start = backend.stats()["models_requests"]
    time.sleep(4)
    probes = backend.stats()["models_requests"] - start
    # One checker at one probe per second gives about 4; two would give about 8.
    assert 2 <= probes <= 6, probes
    both = [g.session.get(g.url + "/health").json()["holds_health_lease"] for g in (first, second)]
    assert sorted(both) == [False, True]


def test_restart_keeps_registrations_and_checking(gateway_factory, backend, tmp_path):
    folder = tmp_path / "restart"
    gateway = gateway_factory(FAST, instance=folder)
    server_id = gateway.register(backend.url, metadata={"student_id": "s7"})["registration_id"]
    gateway.stop()
    again = gateway_factory(FAST, instance=folder)
    detail = again.admin("GET", f"/admin/servers/{server_id}").json()
    assert detail["metadata"]["student_id"] == "s7"
    probes = backend.stats()["models_requests"]
    wait_for(lambda: backend.stats()["models_requests"] >= probes + 2)
    last_cycle = wait_for(
        lambda: again.session.get(again.url + "/health").json()["last_cycle"]["at"]
    )
    assert last_cycle


def test_health_endpoint_reports_database_and_lease(gateway_factory, backend):
    gateway = gateway_factory(FAST)
    gateway.register(backend.url)
    body = wait_for(
        lambda: (b := gateway.session.get(gateway.url + "/health").json())["last_cycle"]["at"] and b
    )
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["holds_health_lease"] is True
    assert body["servers"]["healthy"] == 1
    assert body["last_cycle"]["duration_ms"] >= 0


def test_request_id_round_trip_and_logged(gateway, backend):
    response = gateway.admin(
        "POST",
        "/admin/register",
        json={"model_name": "demo-model", "endpoint_url": backend.url},
        headers={"X-Request-ID": "trace-abc.123"},
    )
    assert response.status_code == 201
    assert response.headers["X-Request-ID"] == "trace-abc.123"
    line = next(x for x in gateway.log_text().splitlines() if "registered server" in x)
    assert "[trace-abc.123]" in line
    assert " INFO registry " in line
    assert line[:4].isdigit() and line.split(" ", 1)[0].endswith("Z")
    insane = gateway.admin("GET", "/admin/stats", headers={"X-Request-ID": "bad id\twith spaces"})
    assert insane.headers["X-Request-ID"] != "bad id\twith spaces"
    assert len(insane.headers["X-Request-ID"]) == 32
    # Errors carry one too.
    assert gateway.admin("GET", "/admin/stats", key=None).headers["X-Request-ID"]


def _send_chunked(port: int, path: str, chunks: list[bytes], headers: dict[str, str]):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("POST", path)
    for name, value in {
        **headers,
        "Transfer-Encoding": "chunked",
        "Content-Type": "application/json",
    }.items():
        connection.putheader(name, value)
    connection.endheaders()
    try:
        for chunk in chunks:
            connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        connection.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer 413 and close before reading everything
    response = connection.getresponse()
    return response.status, json.loads(response.read() or b"null")


def test_oversized_bodies_are_413(gateway_factory):
    gateway = gateway_factory({"MAX_REQUEST_BODY_SIZE": "4096"})
    big = b'{"model_name": "' + b"x" * 8000 + b'"}'
    status, body = _send_chunked(
        gateway.port, "/admin/register", [big[:3000], big[3000:]], {"X-API-Key": ADMIN_KEY}
    )
    assert status == 413
    assert body["error"]["code"] == "request_too_large"
    assert "MAX_REQUEST_BODY_SIZE" in body["error"]["message"]
    with_length = gateway.admin(
        "POST", "/admin/register", data=big, headers={"Content-Type": "application/json"}
    )
    assert with_length.status_code == 413
    # A small chunked body still works (and reaches validation).
    status, body = _send_chunked(
        gateway.port, "/admin/register", [b'{"model_name": "bad name"}'], {"X-API-Key": ADMIN_KEY}
    )
    assert status == 400 and body["error"]["param"] == "model_name"


def test_no_secret_in_logs_or_responses(gateway_factory, backend_factory):
    secret = "sk-backend-secret-abcdefghijklmnop"
    gateway = gateway_factory(FAST)
    backend = backend_factory(api_key=secret)
    responses = [
        gateway.admin(
            "POST",
            "/admin/register",
            json={
                "model_name": "demo-model",
                "endpoint_url": backend.url,
                "api_key": "sk-wrong-key-zzzzzzzzzzzz",
            },
        ),
        gateway.admin(
            "POST",
            "/admin/register",
            json={"model_name": "demo-model", "endpoint_url": backend.url, "api_key": secret},
        ),
        gateway.admin("GET", "/admin/servers", key="sk-bad-admin-attempt-yyyy"),
    ]
    server_id = responses[1].json()["registration_id"]
    backend.stop()
    wait_for(
        lambda: (
            gateway.admin("GET", f"/admin/servers/{server_id}").json()["health_status"]
            == "unhealthy"
        )
    )
    responses.append(gateway.admin("GET", f"/admin/servers/{server_id}"))
    text = gateway.log_text() + "".join(r.text for r in responses)
    assert "registered server" in text
    for value in (secret, "sk-wrong-key-zzzzzzzzzzzz", "sk-bad-admin-attempt-yyyy", ADMIN_KEY):
        assert value not in text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HEALTH_CHECK_INTERVAL_SECONDS", "0"),
        ("PORT", "http"),
        ("ALLOWED_BACKEND_NETWORKS", "10.0.0.0/33"),
    ],
)
def test_invalid_setting_stops_startup(tmp_path, name, value):
    import subprocess
    import sys

    from tests.gateway import ROOT

    result = subprocess.run(
        [sys.executable, str(ROOT / "wsgi.py")],
        env={"PATH": "/usr/bin:/bin", "INSTANCE_PATH": str(tmp_path), name: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert name in result.stderr
