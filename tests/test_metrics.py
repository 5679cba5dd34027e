"""/metrics and the client address behind a trusted proxy."""

from __future__ import annotations

import re

import requests

from tests.test_gateway_process import wait_for

MESSAGES = [{"role": "user", "content": "hello"}]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape(gateway, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(gateway.url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def check_counters_move(gateway, backend, token: str | None = None) -> None:
    server_id = gateway.register(backend.url)["registration_id"]
    gateway.wait_routable()
    url = gateway.url + "/v1/chat/completions"
    for _ in range(3):
        assert (
            requests.post(
                url, json={"model": "demo-model", "messages": MESSAGES}, timeout=10
            ).status_code
            == 200
        )
    with requests.post(
        url,
        json={"model": "demo-model", "messages": MESSAGES, "stream": True},
        stream=True,
        timeout=10,
    ) as r:
        list(r.iter_lines())

    def moved():
        text = scrape(gateway, token)
        count = metric(
            text, "gateway_requests_total", model="demo-model", server=server_id, status="200"
        )
        return text if count == 4 else None

    text = wait_for(moved)
    assert metric(text, "gateway_request_duration_seconds_count", model="demo-model") == 4
    assert metric(text, "gateway_time_to_first_token_seconds_count", model="demo-model") == 1
    assert metric(text, "gateway_tokens_total", model="demo-model", kind="completion") == 64
    assert metric(text, "gateway_server_healthy", server=server_id) == 1
    assert metric(text, "gateway_probe_duration_seconds_count") >= 1
    assert re.search(r"^gateway_inflight_requests", text, re.M)
    backend.control(status=500, count=-1)
    requests.post(url, json={"model": "demo-model", "messages": MESSAGES}, timeout=10)

    def failure_counted():
        text = scrape(gateway, token)
        failed = metric(text, "gateway_upstream_failures_total", reason="http_5xx") == 1
        answered = metric(text, "gateway_requests_total", model="demo-model", status="504") == 1
        return failed and answered

    assert wait_for(failure_counted)


def test_metrics_single_process(gateway, backend):
    check_counters_move(gateway, backend)


def test_metrics_across_gunicorn_workers_with_token(gateway_factory, backend):
    gateway = gateway_factory(
        {"WORKERS": "2", "METRICS_TOKEN": "metrics-secret-123"}, gunicorn=True
    )
    missing = requests.get(gateway.url + "/metrics", timeout=10)
    assert missing.status_code == 401
    assert "metrics-secret-123" not in missing.text
    check_counters_move(gateway, backend, token="metrics-secret-123")


def test_forwarded_for_only_from_trusted_proxies(gateway_factory, backend):
    trusting = gateway_factory({"TRUSTED_PROXIES": "127.0.0.1/32", "RATE_LIMIT": "2/minute"})
    trusting.register(backend.url)
    trusting.wait_routable()
    url = trusting.url + "/v1/chat/completions"
    body = {"model": "demo-model", "messages": MESSAGES}

    def status(forwarded: str) -> int:
        return requests.post(
            url, json=body, headers={"X-Forwarded-For": forwarded}, timeout=10
        ).status_code

    # Each forwarded client has its own budget behind the trusted proxy.
    assert [status("203.0.113.5"), status("203.0.113.5"), status("203.0.113.5")] == [200, 200, 429]
    assert status("198.51.100.7") == 200
    # A client cannot pick its identity by prepending an address: the proxy's entry counts.
    assert status("203.0.113.5, 198.51.100.8") == 200

    untrusting = gateway_factory({"RATE_LIMIT": "2/minute"})
    untrusting.register(backend.url)
    url = untrusting.url + "/v1/chat/completions"
    spoofed = [
        requests.post(
            url, json=body, headers={"X-Forwarded-For": f"203.0.113.{n}"}, timeout=10
        ).status_code
        for n in range(3)
    ]
    assert spoofed == [200, 200, 429]  # all counted against 127.0.0.1
