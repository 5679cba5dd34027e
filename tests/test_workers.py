"""Several gunicorn workers (and SIGTERM) behave as one gateway."""

from __future__ import annotations

import re
import secrets
import signal
import socket
import threading
import time

import requests

from tests.test_gateway_process import wait_for

MESSAGES = [{"role": "user", "content": "hello"}]


def fresh_post(url: str, body: dict, headers: dict | None = None) -> requests.Response:
    """A request on a new connection, so the kernel may hand it to any worker."""
    return requests.post(
        url, json=body, headers={"Connection": "close", **(headers or {})}, timeout=30
    )


def worker_pids(gateway, attempts: int = 60) -> set[int]:
    pids = set()
    for _ in range(attempts):
        pids.add(
            requests.get(
                gateway.url + "/health", headers={"Connection": "close"}, timeout=10
            ).json()["worker_pid"]
        )
    return pids


def test_three_workers_one_checker_shared_changes_and_usage(gateway_factory, backend_factory):
    gateway = gateway_factory(
        {"WORKERS": "3", "HEALTH_CHECK_INTERVAL_SECONDS": "1", "ROUTING_REFRESH_SECONDS": "1"},
        gunicorn=True,
    )
    assert wait_for(lambda: len(worker_pids(gateway)) == 3, timeout=30)
    backend = backend_factory()
    gateway.register(backend.url)

    # One probe per server per interval, however many workers there are.
    start = backend.stats()["models_requests"]
    time.sleep(4)
    probes = backend.stats()["models_requests"] - start
    assert 2 <= probes <= 6, probes

    # The registration made through one worker is routed by every worker.
    gateway.wait_routable()
    url = gateway.url + "/v1/chat/completions"
    statuses = [
        fresh_post(url, {"model": "demo-model", "messages": MESSAGES}).status_code
        for _ in range(45)
    ]
    assert statuses == [200] * 45

    # Usage from every worker reaches the database.
    def all_recorded():
        body = gateway.admin("GET", "/admin/usage").json()
        return body if body["totals"]["requests"] == 45 else None

    assert wait_for(all_recorded)["totals"]["completion_tokens"] == 45 * 16


def test_passive_failure_seen_by_every_worker(gateway_factory, backend_factory):
    gateway = gateway_factory(
        {"WORKERS": "3", "HEALTH_CHECK_INTERVAL_SECONDS": "300", "ROUTING_REFRESH_SECONDS": "1"},
        gunicorn=True,
    )
    failing, good = backend_factory(), backend_factory()
    failing_id = gateway.register(failing.url)["registration_id"]
    gateway.register(good.url)
    gateway.wait_routable()
    failing.control(status=500, count=-1)
    url = gateway.url + "/v1/chat/completions"
    assert fresh_post(url, {"model": "demo-model", "messages": MESSAGES}).status_code == 200
    wait_for(
        lambda: (
            gateway.admin("GET", f"/admin/servers/{failing_id}").json()["health_status"]
            == "unhealthy"
        )
    )
    time.sleep(2)  # every worker's refresh has run since
    before = failing.stats()["by_path"].get("/v1/chat/completions", 0)
    for _ in range(45):
        assert fresh_post(url, {"model": "demo-model", "messages": MESSAGES}).status_code == 200
    assert failing.stats()["by_path"].get("/v1/chat/completions", 0) == before


def test_rate_limit_shared_through_redis(gateway_factory, backend):
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
    except OSError as exc:  # pragma: no cover - the project's machines run Redis
        raise AssertionError(f"Redis is expected on 127.0.0.1:6379 for this test: {exc}") from None
    key = "rl-" + secrets.token_hex(8)  # a fresh client: counters from earlier runs do not apply
    gateway = gateway_factory(
        {
            "WORKERS": "3",
            "RATE_LIMIT": "5/minute",
            "RATE_LIMIT_STORAGE_URL": "redis://127.0.0.1:6379",
            "CLIENT_API_KEYS": key,
        },
        gunicorn=True,
    )
    gateway.register(backend.url)
    gateway.wait_routable()
    url = gateway.url + "/v1/chat/completions"
    statuses = [
        fresh_post(
            url, {"model": "demo-model", "messages": MESSAGES}, {"Authorization": f"Bearer {key}"}
        ).status_code
        for _ in range(12)
    ]
    assert statuses.count(200) == 5 and statuses.count(429) == 7


def _stream(url: str, results: list, errors: list) -> None:
    try:
        with requests.post(
            url,
            json={"model": "demo-model", "messages": MESSAGES, "stream": True},
            stream=True,
            timeout=60,
        ) as response:
            lines = [line for line in response.iter_lines() if line]
        results.append(lines)
    except requests.RequestException as exc:
        errors.append(repr(exc))


def test_sigterm_lets_open_streams_finish(gateway_factory, backend_factory):
    backend = backend_factory(tokens=20, token_delay_ms=100)
    gateway = gateway_factory({"WORKERS": "2", "GRACEFUL_TIMEOUT_SECONDS": "30"}, gunicorn=True)
    gateway.register(backend.url)
    gateway.wait_routable()
    results: list = []
    errors: list = []
    threads = [
        threading.Thread(
            target=_stream, args=(gateway.url + "/v1/chat/completions", results, errors)
        )
        for _ in range(50)
    ]
    for thread in threads:
        thread.start()
    backend.wait_stats(lambda s: s["streams_started"] >= 50, timeout=20)
    gateway.proc.send_signal(signal.SIGTERM)
    # New connections are refused while the open streams finish.
    refused = wait_for(lambda: _refused(gateway.port), timeout=10)
    assert refused
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == 50
    for lines in results:
        assert lines[-1] == b"data: [DONE]"
        assert sum(1 for line in lines if re.search(rb'"content":\s*"[^"]', line)) == 20
    assert gateway.proc.wait(timeout=30) == 0


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_two_instances_route_across_and_take_over_the_lease(gateway_factory, backend, tmp_path):
    """Two gateways on one database: register on one, route on the other; a crash hands over."""
    shared = tmp_path / "shared"
    env = {
        "HEALTH_CHECK_INTERVAL_SECONDS": "1",
        "HEALTH_LEASE_SECONDS": "4",
        "ROUTING_REFRESH_SECONDS": "1",
    }
    first = gateway_factory(env, instance=shared)
    second = gateway_factory(env, instance=shared)
    server_id = first.register(backend.url)["registration_id"]
    second.wait_routable()
    answer = requests.post(
        second.url + "/v1/chat/completions",
        json={"model": "demo-model", "messages": MESSAGES},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.headers["X-Gateway-Server-ID"] == server_id

    def holder():
        held = [
            g
            for g in (first, second)
            if requests.get(g.url + "/health", timeout=5).json()["holds_health_lease"]
        ]
        return held[0] if len(held) == 1 else None

    leader = wait_for(holder)
    follower = second if leader is first else first
    leader.proc.kill()  # a crash: the lease is not handed back, it has to expire
    leader.proc.wait(timeout=10)
    wait_for(
        lambda: requests.get(follower.url + "/health", timeout=5).json()["holds_health_lease"],
        timeout=20,
    )
    probes = backend.stats()["models_requests"]
    wait_for(lambda: backend.stats()["models_requests"] >= probes + 2)
