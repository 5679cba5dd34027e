"""The /v1 proxy through the real openai client, in front of real demo backends."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading

import openai
import pytest
import requests

from tests.test_gateway_process import wait_for

MESSAGES = [{"role": "user", "content": "Say hello to the class"}]


def client_for(gateway, api_key: str = "unused", **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0, **kwargs)


@pytest.fixture
def one(gateway, backend):
    """A gateway with one demo backend registered as demo-model."""
    gateway.register(backend.url)
    return gateway


def test_chat_completions_embeddings_models(one, backend):
    client = client_for(one)
    models = client.models.list().data
    assert [m.id for m in models] == ["demo-model"]
    assert models[0].model_extra["available_servers"] == 1
    assert models[0].model_extra["total_servers"] == 1
    assert client.models.retrieve("demo-model").id == "demo-model"

    raw = client.chat.completions.with_raw_response.create(model="demo-model", messages=MESSAGES)
    chat = raw.parse()
    assert chat.choices[0].message.content.startswith("Hello from the demo backend")
    assert chat.usage.completion_tokens == 16 and chat.usage.prompt_tokens == 5
    assert raw.headers["x-gateway-server-id"]
    assert raw.headers["x-request-id"]
    assert float(raw.headers["x-gateway-overhead-ms"]) >= 0

    completion = client.completions.create(model="demo-model", prompt="Once upon a time")
    assert completion.choices[0].text.startswith("Hello from the demo backend")
    embedding = client.embeddings.create(model="demo-model", input=["a", "b"])
    assert len(embedding.data) == 2 and len(embedding.data[0].embedding) == 8


def test_async_and_streaming_clients(one):
    async def run() -> tuple[str, list[str]]:
        client = openai.AsyncOpenAI(base_url=one.url + "/v1", api_key="x", max_retries=0)
        chat = await client.chat.completions.create(model="demo-model", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="demo-model", messages=MESSAGES, stream=True
        )
        tokens = [
            chunk.choices[0].delta.content
            async for chunk in stream
            if chunk.choices and chunk.choices[0].delta.content
        ]
        await client.close()
        return chat.choices[0].message.content, tokens

    # A thread of its own: the browser tests' sync Playwright keeps a loop on this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        text, tokens = pool.submit(asyncio.run, run()).result(timeout=60)
    assert "".join(tokens) == text
    assert len(tokens) == 16


def test_stream_usage_only_when_asked(one):
    client = client_for(one)
    plain = list(client.chat.completions.create(model="demo-model", messages=MESSAGES, stream=True))
    assert all(chunk.usage is None for chunk in plain)
    assert all(chunk.choices for chunk in plain)  # the usage-only chunk was removed
    asked = list(
        client.chat.completions.create(
            model="demo-model",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert asked[-1].choices == [] and asked[-1].usage.completion_tokens == 16


def test_unknown_parameters_pass_through_and_model_is_rewritten(gateway, backend):
    gateway.register(backend.url, model="class-model", upstream_model="demo-model")
    body = {
        "model": "class-model",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "seed": 7,
        "logprobs": True,
        "max_completion_tokens": 5,
        "vendor_extension": {"nested": [1, 2, 3]},
    }
    response = requests.post(
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": "Bearer client-secret"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    seen = backend.stats()["last_request"]
    assert seen["body"] == {**body, "model": "demo-model"}
    assert "client-secret" not in json.dumps(seen["headers"])
    assert response.json()["usage"]["completion_tokens"] == 5


def test_strict_round_robin_over_three_servers(gateway, backend_factory):
    ids = [gateway.register(backend_factory().url)["registration_id"] for _ in range(3)]
    client = client_for(gateway)
    seen = [
        client.chat.completions.with_raw_response.create(
            model="demo-model", messages=MESSAGES
        ).headers["x-gateway-server-id"]
        for _ in range(9)
    ]
    assert sorted(set(seen)) == sorted(ids)
    assert seen[0:3] == seen[3:6] == seen[6:9]
    assert len(set(seen[0:3])) == 3


def test_no_client_errors_when_a_backend_dies_mid_burst(gateway, backend_factory):
    first, second = backend_factory(), backend_factory()
    gateway.register(first.url)
    kept = gateway.register(second.url)["registration_id"]
    session = requests.Session()
    statuses: list[int] = []
    servers: list[str] = []
    for number in range(200):
        if number == 60:
            first.kill()
        response = session.post(
            gateway.url + "/v1/chat/completions",
            json={"model": "demo-model", "messages": MESSAGES},
            timeout=30,
        )
        statuses.append(response.status_code)
        servers.append(response.headers.get("X-Gateway-Server-ID"))
    assert statuses == [200] * 200
    assert set(servers[70:]) == {kept}  # the dead server left the rotation at once
    detail = wait_for(
        lambda: (
            (
                d := gateway.admin(
                    "GET", f"/admin/servers/{servers[0] if servers[0] != kept else servers[1]}"
                ).json()
            )["health_status"]
            == "unhealthy"
            and d
        )
    )
    assert any(c["source"] == "passive" for c in detail["recent_checks"])


def test_backend_400_passes_through_and_server_stays_healthy(one, backend):
    backend.control(status=400, count=1)
    client = client_for(one)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="demo-model", messages=MESSAGES)
    assert caught.value.status_code == 400
    assert client.chat.completions.create(model="demo-model", messages=MESSAGES).choices
    servers = one.admin("GET", "/admin/servers").json()["servers"]
    assert servers[0]["health_status"] == "healthy"


def test_429_cooldown_moves_to_another_server(gateway, backend_factory):
    limited, other = backend_factory(), backend_factory()
    limited_id = gateway.register(limited.url)["registration_id"]
    other_id = gateway.register(other.url)["registration_id"]
    limited.control(status=429, count=-1, retry_after=30)
    client = client_for(gateway)
    served = [
        client.chat.completions.with_raw_response.create(
            model="demo-model", messages=MESSAGES
        ).headers["x-gateway-server-id"]
        for _ in range(6)
    ]
    assert served == [other_id] * 6
    # The limited server was asked at most once, then rested for its Retry-After.
    assert limited.stats()["by_path"].get("/v1/chat/completions", 0) == 1
    detail = gateway.admin("GET", f"/admin/servers/{limited_id}").json()
    assert detail["health_status"] == "healthy"  # a 429 is not a failure


def test_429_with_a_single_server_reaches_the_client(one, backend):
    backend.control(status=429, count=1, retry_after=2)
    with pytest.raises(openai.RateLimitError) as caught:
        client_for(one).chat.completions.create(model="demo-model", messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "2"


def test_unknown_model_404_lists_models(one):
    with pytest.raises(openai.NotFoundError) as caught:
        client_for(one).chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert "demo-model" in caught.value.message
    assert caught.value.code == "model_not_found"


def test_no_healthy_server_503(one, backend):
    backend.stop()
    server_id = one.admin("GET", "/admin/servers").json()["servers"][0]["id"]
    assert one.admin("POST", f"/admin/servers/{server_id}/check").json()["ok"] is False
    with pytest.raises(openai.InternalServerError) as caught:
        client_for(one).chat.completions.create(model="demo-model", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert caught.value.code == "no_healthy_server"


def test_every_attempt_failed_504_without_addresses(gateway, backend_factory):
    backends = [backend_factory() for _ in range(2)]
    for backend in backends:
        gateway.register(backend.url)
        backend.control(status=500, count=-1)
    with pytest.raises(openai.InternalServerError) as caught:
        client_for(gateway).chat.completions.create(model="demo-model", messages=MESSAGES)
    assert caught.value.status_code == 504
    message = caught.value.message
    assert message.count("HTTP 500") == 2
    assert "127.0.0.1" not in message and "localhost" not in message
    for backend in backends:
        assert str(backend.port) not in message


@pytest.mark.parametrize(
    ("data", "param"),
    [(b"{not json", None), (b"[1]", None), (b'{"messages": []}', "model"), (b"", None)],
)
def test_invalid_bodies_400(one, data, param):
    response = requests.post(
        one.url + "/v1/chat/completions",
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_stream_chunks_arrive_one_by_one(gateway, backend_factory):
    backend = backend_factory(tokens=6, token_delay_ms=150)
    gateway.register(backend.url)
    response = requests.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "demo-model", "messages": MESSAGES, "stream": True},
        stream=True,
        timeout=30,
    )
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = []
    completed_at_first_token = None
    for line in response.iter_lines():
        if line.startswith(b"data: {") and b'"content":"' in line.replace(b": ", b":"):
            events.append(line)
            if completed_at_first_token is None and b'"content":""' not in line.replace(
                b": ", b":"
            ):
                completed_at_first_token = backend.stats()["streams_completed"]
    # The first token reached us while the backend was still generating.
    assert completed_at_first_token == 0
    assert backend.stats()["streams_completed"] == 1
    assert len(events) >= 6


def test_mid_stream_death_raises_api_error(one, backend):
    backend.control(die_after_tokens=3)
    stream = client_for(one).chat.completions.create(
        model="demo-model", messages=MESSAGES, stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert len(received) == 3
    assert "mid-stream" in str(caught.value)


def test_client_disconnect_closes_the_backend_stream(gateway, backend_factory):
    backend = backend_factory(tokens=200, token_delay_ms=50)
    gateway.register(backend.url)
    response = requests.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "demo-model", "messages": MESSAGES, "stream": True},
        stream=True,
        timeout=30,
    )
    lines = response.iter_lines()
    for _ in range(3):
        next(lines)
    response.close()
    stats = backend.wait_stats(lambda s: s["streams_aborted"] == 1, timeout=10)
    assert stats["streams_completed"] == 0


def test_usage_recorded_for_streamed_and_plain(one):
    client = client_for(one)
    client.chat.completions.create(model="demo-model", messages=MESSAGES)
    list(client.chat.completions.create(model="demo-model", messages=MESSAGES, stream=True))
    client.embeddings.create(model="demo-model", input="hello world")

    def recorded():
        body = one.admin("GET", "/admin/usage").json()
        return body if body["totals"]["requests"] == 3 else None

    body = wait_for(recorded)
    assert body["totals"]["completion_tokens"] == 32
    assert body["totals"]["prompt_tokens"] == 5 + 5 + 2
    assert body["by_model"][0]["model"] == "demo-model"
    assert body["by_server"][0]["requests"] == 3
    assert body["by_day"][0]["requests"] == 3


def test_client_auth_and_rate_limit(gateway_factory, backend):
    gateway = gateway_factory(
        {
            "REQUIRE_CLIENT_AUTH": "true",
            "CLIENT_API_KEYS": "class-key-1,class-key-2",
            "RATE_LIMIT": "3/minute",
        }
    )
    gateway.register(backend.url)
    with pytest.raises(openai.AuthenticationError):
        client_for(gateway, api_key="wrong").models.list()
    missing = requests.get(gateway.url + "/v1/models", timeout=10)
    assert missing.status_code == 401
    good = client_for(gateway, api_key="class-key-1")
    for _ in range(5):
        assert good.models.list().data  # listing models is not counted
    for _ in range(3):
        good.chat.completions.create(model="demo-model", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as caught:
        good.chat.completions.create(model="demo-model", messages=MESSAGES)
    assert int(caught.value.response.headers["retry-after"]) >= 1
    # Another key has its own budget.
    assert client_for(gateway, api_key="class-key-2").chat.completions.create(
        model="demo-model", messages=MESSAGES
    )
    assert "class-key-1" not in gateway.log_text()


def test_oversized_v1_body_413(one):
    big = {"model": "demo-model", "messages": [{"role": "user", "content": "x" * (1024 * 1024)}]}
    response = requests.post(one.url + "/v1/chat/completions", json=big, timeout=10)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_concurrent_streams_all_complete(one, backend):
    results: list[int] = []

    def run() -> None:
        stream = client_for(one).chat.completions.create(
            model="demo-model", messages=MESSAGES, stream=True
        )
        results.append(sum(1 for c in stream if c.choices and c.choices[0].delta.content))

    threads = [threading.Thread(target=run) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [16] * 20
