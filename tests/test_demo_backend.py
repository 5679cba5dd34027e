"""The demo backend, run for real: OpenAI shapes, streaming, errors and every test hook.

Every gateway test leans on this server behaving exactly as documented, so its
contract is pinned here with both raw HTTP (``requests``) and the real ``openai``
client.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests

from tests.backends import ROOT, BlackHole, DemoBackend, free_port
from webapp.demo_backend import listen

FULL_REPLY = "Hello from the demo backend! This reply is the same every time you ask."
MODELS = ["demo-model", "second-model"]
CHAT = {"model": "demo-model", "messages": [{"role": "user", "content": "say hello please"}]}


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoBackend]:
    """One fast backend shared by the module (starting one costs ~0.5 s)."""
    with DemoBackend(model=MODELS) as backend:
        yield backend
        # Cut and abandoned streams must be handled quietly, not with tracebacks.
        assert "Traceback" not in backend.stderr()


@pytest.fixture(scope="module")
def slow() -> Iterator[DemoBackend]:
    """A backend whose streams take seconds, so a client can leave mid-stream."""
    with DemoBackend(tokens=400, token_delay_ms=20) as backend:
        yield backend
        assert "Traceback" not in backend.stderr()


@pytest.fixture(autouse=True)
def _normal(demo: DemoBackend) -> Iterator[None]:
    """Each test starts with no misbehaviour and leaves none behind."""
    demo.control()
    yield
    demo.control()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # loopback only, never through a proxy
        yield session


@pytest.fixture
def client(demo: DemoBackend) -> openai.OpenAI:
    return openai.OpenAI(base_url=demo.url + "/v1", api_key="x", max_retries=0)


def events(response: requests.Response) -> Iterator[tuple[float, Any]]:
    """Parse an SSE body as it arrives: (arrival time, parsed data or "[DONE]")."""
    buffer = b""
    for chunk in response.iter_content(chunk_size=None):
        now = time.monotonic()
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            assert event.startswith(b"data: "), event
            data = event[len(b"data: ") :]
            yield now, "[DONE]" if data == b"[DONE]" else json.loads(data)


def error_of(response: requests.Response, status: int) -> dict[str, Any]:
    """Assert an OpenAI-shaped error with ``status`` and return its ``error`` object."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


# -- models and listing ---------------------------------------------------------------


def test_models_list_and_retrieve(demo, http, client):
    body = http.get(demo.url + "/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == MODELS
    for model in body["data"]:
        assert model["object"] == "model"
        assert model["owned_by"] == "demo"
        assert isinstance(model["created"], int)
    assert [m.id for m in client.models.list()] == MODELS
    assert client.models.retrieve("second-model").id == "second-model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_health(demo, http):
    response = http.get(demo.url + "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# -- chat and completions -------------------------------------------------------------


def test_chat_non_streaming_exact_shape(demo, http):
    request = {
        "model": "demo-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "one two three"}]},
        ],
    }
    body = http.post(demo.url + "/v1/chat/completions", json=request).json()
    assert body["id"].startswith("chatcmpl-demo-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "demo-model"
    assert body["system_fingerprint"] == "demo"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": FULL_REPLY, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 16, "total_tokens": 21}


def test_chat_with_openai_client_and_second_model(client):
    reply = client.chat.completions.create(**{**CHAT, "model": "second-model"})
    assert reply.model == "second-model"
    assert reply.choices[0].message.content == FULL_REPLY
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == 3


def test_max_tokens_caps_the_reply(client):
    capped = client.chat.completions.create(**CHAT, max_tokens=3)
    assert capped.choices[0].message.content == "Hello from the"
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage.completion_tokens == 3
    newer = client.chat.completions.create(**CHAT, max_completion_tokens=5)
    assert newer.choices[0].message.content == "Hello from the demo backend"
    assert newer.choices[0].finish_reason == "length"
    roomy = client.chat.completions.create(**CHAT, max_tokens=1000)
    assert roomy.choices[0].finish_reason == "stop"
    assert roomy.usage.completion_tokens == 16


def test_reply_cycles_past_the_word_list():
    with DemoBackend(tokens=20) as backend:
        body = requests.post(backend.url + "/v1/completions", json={"prompt": "x"}).json()
    assert body["choices"][0]["text"] == FULL_REPLY + "Hello from the demo"
    assert body["usage"]["completion_tokens"] == 20


def test_completions_non_streaming(demo, http, client):
    body = http.post(
        demo.url + "/v1/completions", json={"model": "demo-model", "prompt": "one two three"}
    ).json()
    assert body["id"].startswith("cmpl-demo-")
    assert body["object"] == "text_completion"
    assert body["model"] == "demo-model"
    assert body["choices"] == [
        {"index": 0, "text": FULL_REPLY, "logprobs": None, "finish_reason": "stop"}
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 16, "total_tokens": 19}
    tokens = client.completions.create(model="demo-model", prompt=[1, 2, 3, 4], max_tokens=2)
    assert tokens.choices[0].text == "Hello from"
    assert tokens.choices[0].finish_reason == "length"
    assert tokens.usage.prompt_tokens == 4


def test_chat_streaming_with_openai_client(client):
    chunks = list(client.chat.completions.create(**CHAT, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    tokens = chunks[1:-1]
    assert len(tokens) == 16
    assert "".join(c.choices[0].delta.content for c in tokens) == FULL_REPLY
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].delta.content is None
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.model for c in chunks} == {"demo-model"}
    assert all(c.usage is None for c in chunks)


def test_chat_streaming_raw_events_and_include_usage(demo, http):
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 4}
    response = http.post(demo.url + "/v1/chat/completions", json=request, stream=True)
    assert response.headers["Content-Type"] == "text/event-stream"
    data = [event for _, event in events(response)]
    assert data[-1] == "[DONE]"
    chunks = data[:-1]
    assert all("usage" in c for c in chunks)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"] for c in chunks[1:5]] == [
        {"content": tok} for tok in ["Hello", " from", " the", " demo"]
    ]
    assert chunks[5]["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    ]
    assert chunks[6]["choices"] == []
    assert chunks[6]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert len(chunks) == 7


def test_completions_streaming(demo, http, client):
    request = {"model": "demo-model", "prompt": "a b", "stream": True, "max_tokens": 3}
    response = http.post(demo.url + "/v1/completions", json=request, stream=True)
    data = [event for _, event in events(response)]
    assert data[-1] == "[DONE]"
    assert {c["object"] for c in data[:-1]} == {"text_completion"}
    assert [c["choices"][0]["text"] for c in data[:-1]] == ["Hello", " from", " the", ""]
    assert data[-2]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in c for c in data[:-1])

    stream = client.completions.create(
        model="demo-model", prompt="a b", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == FULL_REPLY
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == 2
    assert chunks[-1].usage.completion_tokens == 16


def test_stream_tokens_arrive_one_by_one(slow, http):
    request = {**CHAT, "stream": True, "max_tokens": 5}
    response = http.post(slow.url + "/v1/chat/completions", json=request, stream=True)
    # One HTTP chunk per event: iter_content(None) yields each chunk as it is read.
    reads = [chunk for chunk in response.iter_content(chunk_size=None)]
    assert len(reads) == 1 + 5 + 1 + 1  # role, tokens, finish, [DONE]
    assert all(chunk.count(b"data: ") == 1 for chunk in reads)

    response = http.post(slow.url + "/v1/chat/completions", json=request, stream=True)
    arrivals = [t for t, event in events(response) if event != "[DONE]"]
    token_times = arrivals[1:6]
    assert all(
        later > earlier for earlier, later in zip(token_times, token_times[1:], strict=False)
    )
    # The server sleeps 20 ms before each token, so tokens cannot all land together.
    assert token_times[-1] - token_times[0] > 0.02


# -- embeddings -------------------------------------------------------------------------


def embed(http: requests.Session, url: str, **body: Any) -> requests.Response:
    return http.post(url + "/v1/embeddings", json={"model": "demo-model", **body})


def test_embeddings_float(demo, http):
    body = embed(http, demo.url, input=["alpha", "beta gamma", "alpha"]).json()
    assert body["object"] == "list"
    assert body["model"] == "demo-model"
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    vectors = [item["embedding"] for item in body["data"]]
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert {item["object"] for item in body["data"]} == {"embedding"}
    assert all(len(v) == 8 for v in vectors)
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-9) for v in vectors)
    assert vectors[0] == vectors[2]  # deterministic
    assert vectors[0] != vectors[1]
    again = embed(http, demo.url, input="alpha").json()["data"][0]["embedding"]
    assert again == vectors[0]  # a string and a one-item list agree


def test_embeddings_dimensions_tokens_and_base64(demo, http, client):
    wide = embed(http, demo.url, input="alpha", dimensions=32).json()["data"][0]["embedding"]
    assert len(wide) == 32
    assert math.isclose(math.hypot(*wide), 1.0, rel_tol=1e-9)

    one = embed(http, demo.url, input=[1, 2, 3]).json()
    assert len(one["data"]) == 1
    assert one["usage"]["prompt_tokens"] == 3
    two = embed(http, demo.url, input=[[1, 2], [3]]).json()
    assert len(two["data"]) == 2
    assert two["data"][0]["embedding"] != two["data"][1]["embedding"]

    floats = embed(http, demo.url, input="alpha").json()["data"][0]["embedding"]
    encoded = embed(http, demo.url, input="alpha", encoding_format="base64").json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert len(raw) == 8 * 4
    decoded = struct.unpack("<8f", raw)
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(decoded, floats, strict=True))

    via_client = client.embeddings.create(model="demo-model", input="alpha").data[0].embedding
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(via_client, floats, strict=True))
    assert len(via_client) == 8


def test_embeddings_errors(demo, http):
    assert error_of(embed(http, demo.url), 400)["param"] == "input"
    assert error_of(embed(http, demo.url, input=[]), 400)["param"] == "input"
    assert error_of(embed(http, demo.url, input=["a", 1]), 400)["param"] == "input"
    assert error_of(embed(http, demo.url, input="a", dimensions=0), 400)["param"] == "dimensions"
    bad_format = embed(http, demo.url, input="a", encoding_format="hex")
    assert error_of(bad_format, 400)["param"] == "encoding_format"


# -- errors -------------------------------------------------------------------------------


def test_request_errors(demo, http, client):
    url = demo.url
    headers = {"Content-Type": "application/json"}
    not_json = http.post(url + "/v1/chat/completions", data=b"{nope", headers=headers)
    assert error_of(not_json, 400)["type"] == "invalid_request_error"
    assert "JSON" in error_of(http.post(url + "/v1/chat/completions", json=[1]), 400)["message"]
    missing = http.post(url + "/v1/chat/completions", json={"model": "demo-model"})
    assert error_of(missing, 400)["param"] == "messages"
    no_prompt = http.post(url + "/v1/completions", json={"model": "demo-model"})
    assert error_of(no_prompt, 400)["param"] == "prompt"
    bad_cap = http.post(url + "/v1/chat/completions", json={**CHAT, "max_tokens": "3"})
    assert error_of(bad_cap, 400)["param"] == "max_tokens"

    wrong_model = http.post(url + "/v1/chat/completions", json={**CHAT, "model": "gpt-4o"})
    error = error_of(wrong_model, 404)
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="gpt-4o", input="x")
    assert caught.value.code == "model_not_found"

    assert error_of(http.get(url + "/v1/nope"), 404)["code"] == "not_found"
    assert error_of(http.get(url + "/nope"), 404)["code"] == "not_found"
    wrong_method = http.get(url + "/v1/chat/completions")
    error_of(wrong_method, 405)
    assert wrong_method.headers["Allow"] == "POST"
    error_of(http.post(url + "/v1/models", json={}), 405)


def test_api_key(http):
    with DemoBackend(api_key="sekret") as backend:
        url = backend.url + "/v1/chat/completions"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekret"}):
            error = error_of(http.post(url, json=CHAT, headers=headers), 401)
            assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
        error_of(http.get(backend.url + "/v1/models"), 401)
        assert backend.stats()["models_requests"] == 1  # a refused probe is still a probe
        assert http.get(backend.url + "/health").status_code == 200  # probes need no key

        good = openai.OpenAI(base_url=backend.url + "/v1", api_key="sekret", max_retries=0)
        assert good.chat.completions.create(**CHAT).choices[0].message.content == FULL_REPLY
        seen = backend.stats()["last_request"]["headers"]
        assert seen["authorization"] == "Bearer sekret"
        bad = openai.OpenAI(base_url=backend.url + "/v1", api_key="other", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


# -- stats ----------------------------------------------------------------------------------


def test_stats_count_and_record_the_last_request(demo, http):
    demo.reset_stats()
    assert demo.stats()["requests"] == 0
    http.get(demo.url + "/v1/models")
    http.get(demo.url + "/health")
    body = {**CHAT, "x_unknown": {"nested": [1, 2.5, None]}, "temperature": 0.3}
    http.post(demo.url + "/v1/chat/completions", json=body, headers={"X-Trace": "abc"})
    stats = demo.stats()
    assert stats["requests"] == 3
    assert stats["by_path"] == {"/v1/models": 1, "/health": 1, "/v1/chat/completions": 1}
    assert stats["models_requests"] == 1
    last = stats["last_request"]
    assert (last["method"], last["path"]) == ("POST", "/v1/chat/completions")
    assert last["body"] == body  # unknown parameters arrive unchanged
    assert last["headers"]["x-trace"] == "abc"
    assert last["headers"]["content-type"] == "application/json"

    http.post(demo.url + "/v1/chat/completions", data=b"not json")
    assert demo.stats()["last_request"]["body"] is None
    demo.reset_stats()
    assert demo.stats()["last_request"] is None


def test_streams_completed_and_aborted(slow, http):
    before = slow.stats()
    request = {**CHAT, "stream": True}
    response = http.post(slow.url + "/v1/chat/completions", json=request, stream=True)
    received = response.iter_content(chunk_size=None)
    next(received), next(received)  # the role chunk and one token, then hang up
    response.close()
    after = slow.wait_stats(lambda s: s["streams_aborted"] == before["streams_aborted"] + 1)
    assert after["streams_started"] == before["streams_started"] + 1
    assert after["streams_completed"] == before["streams_completed"]

    stream = openai.OpenAI(base_url=slow.url + "/v1", api_key="x").chat.completions.create(
        **CHAT, stream=True
    )
    next(iter(stream))
    stream.close()
    slow.wait_stats(lambda s: s["streams_aborted"] == before["streams_aborted"] + 2)

    short = http.post(
        slow.url + "/v1/chat/completions", json={**request, "max_tokens": 2}, stream=True
    )
    assert [event for _, event in events(short)][-1] == "[DONE]"
    done = slow.wait_stats(lambda s: s["streams_completed"] == before["streams_completed"] + 1)
    assert done["streams_aborted"] == before["streams_aborted"] + 2


# -- control hooks --------------------------------------------------------------------------


def test_status_hook_with_count_and_retry_after(demo, http, client):
    demo.control(status=500, count=2)
    for _ in range(2):
        error = error_of(http.post(demo.url + "/v1/chat/completions", json=CHAT), 500)
        assert error["type"] == "server_error"
    assert http.post(demo.url + "/v1/chat/completions", json=CHAT).status_code == 200

    demo.control(status=429, retry_after=7)
    limited = http.post(demo.url + "/v1/completions", json={"prompt": "x"})
    assert error_of(limited, 429)["code"] == "rate_limit_exceeded"
    assert limited.headers["Retry-After"] == "7"
    assert http.post(demo.url + "/v1/completions", json={"prompt": "x"}).status_code == 200

    demo.control(status=429)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**CHAT)
    demo.control(status=400)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(**CHAT)
    assert client.chat.completions.create(**CHAT).choices[0].message.content == FULL_REPLY


def test_status_hook_paths_and_until_reset(demo, http):
    demo.control(status=503, count=-1, paths=["/v1/embeddings", "/v1/models"])
    for _ in range(3):
        error_of(embed(http, demo.url, input="x"), 503)
        error_of(http.get(demo.url + "/v1/models"), 503)
    assert http.post(demo.url + "/v1/chat/completions", json=CHAT).status_code == 200
    demo.control()
    assert embed(http, demo.url, input="x").status_code == 200
    assert http.get(demo.url + "/v1/models").status_code == 200


def test_status_hook_skips_get_by_default(demo, http):
    demo.control(status=500, count=-1)
    assert http.get(demo.url + "/v1/models").status_code == 200
    error_of(embed(http, demo.url, input="x"), 500)


def test_control_rejects_typos(demo, http):
    response = http.post(demo.url + "/_demo/control", json={"stauts": 500})
    assert error_of(response, 400)["param"] == "stauts"
    with pytest.raises(RuntimeError):
        demo.control(status="500")
    assert http.get(demo.url + "/_demo/control").json()["control"] == {}


def test_models_status_and_models_body(demo, http, client):
    before = demo.stats()["models_requests"]
    demo.control(models_status=503)
    for _ in range(3):
        error_of(http.get(demo.url + "/v1/models"), 503)
    assert demo.stats()["models_requests"] == before + 3
    assert client.chat.completions.create(**CHAT).choices[0].message.content == FULL_REPLY

    demo.control(models_body="not json")
    response = http.get(demo.url + "/v1/models")
    assert response.status_code == 200
    assert response.content == b"not json"

    demo.control()
    assert [m["id"] for m in http.get(demo.url + "/v1/models").json()["data"]] == MODELS


def test_die_after_tokens_breaks_the_stream(demo, http):
    demo.control(die_after_tokens=3)
    before = demo.stats()
    response = http.post(
        demo.url + "/v1/chat/completions", json={**CHAT, "stream": True}, stream=True
    )
    assert response.status_code == 200
    seen: list[Any] = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for _, event in events(response):
            seen.append(event)
    assert [e["choices"][0]["delta"].get("content") for e in seen] == ["", "Hello", " from", " the"]
    after = demo.wait_stats(lambda s: s["streams_cut"] == before["streams_cut"] + 1)
    assert after["streams_aborted"] == before["streams_aborted"]

    # count defaults to 1: the next stream is whole again
    response = http.post(
        demo.url + "/v1/chat/completions", json={**CHAT, "stream": True}, stream=True
    )
    assert [event for _, event in events(response)][-1] == "[DONE]"


def test_die_after_tokens_with_openai_client(demo, client):
    demo.control(die_after_tokens=2, count=2)
    texts: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(**CHAT, stream=True):
            texts.append(chunk.choices[0].delta.content)
    assert texts == ["", "Hello", " from"]

    pieces: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.completions.create(model="demo-model", prompt="x", stream=True):
            pieces.append(chunk.choices[0].text)
    assert pieces == ["Hello", " from"]
    assert (
        "".join(
            c.choices[0].text
            for c in client.completions.create(model="demo-model", prompt="x", stream=True)
        )
        == FULL_REPLY
    )


def test_delay_ms(demo, http):
    demo.control(delay_ms=500)
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.post(demo.url + "/v1/chat/completions", json=CHAT, timeout=(2, 0.1))
    assert http.get(demo.url + "/v1/models", timeout=2).status_code == 200  # GETs not delayed
    demo.control()
    assert http.post(demo.url + "/v1/chat/completions", json=CHAT, timeout=2).status_code == 200


def test_no_test_hooks(http):
    with DemoBackend(extra_args=["--no-test-hooks"]) as backend:
        error_of(http.get(backend.url + "/_demo/stats"), 404)
        error_of(http.post(backend.url + "/_demo/control", json={"status": 500}), 404)
        assert http.post(backend.url + "/v1/chat/completions", json=CHAT).status_code == 200


# -- process lifecycle ----------------------------------------------------------------------


def test_kill_restart_same_port_and_clean_stop(http):
    backend = DemoBackend(port=free_port())
    port = backend.start().port
    try:
        assert http.get(backend.url + "/health").status_code == 200
        backend.kill()
        assert backend.proc.returncode == -9
        with pytest.raises(requests.ConnectionError):
            http.get(backend.url + "/health", timeout=2)
        backend.restart()
        assert backend.port == port
        assert http.get(backend.url + "/health").status_code == 200
    finally:
        backend.stop()
    assert backend.proc.returncode == 0  # SIGTERM is a clean exit
    assert "Traceback" not in backend.stderr()


def test_port_in_use_is_reported():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        backend = DemoBackend(port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="in use"):
            backend.start()
        assert not backend.running


def test_bad_arguments_exit_with_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "webapp.demo_backend", "--port", "0", "--tokens", "-1"],
        cwd=ROOT,
        capture_output=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert b"--tokens" in result.stderr


def test_ipv6_loopback(http):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with DemoBackend(host="::1") as backend:
        assert backend.url == f"http://[::1]:{backend.port}"
        assert http.get(backend.url + "/v1/models").json()["data"][0]["id"] == "demo-model"


def test_accepted_connections_have_nagle_off():
    # pywsgi sends headers and body separately; with Nagle on, each small response
    # would wait ~40 ms for the client's delayed ACK. Linux copies TCP_NODELAY from
    # the listener to accepted sockets, which is what the server relies on.
    listener = listen("127.0.0.1", 0)
    try:
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        with socket.create_connection(listener.getsockname()[:2], timeout=2):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        listener.close()


# -- helpers ----------------------------------------------------------------------------------


def test_blackhole_accepts_and_never_answers(http):
    with BlackHole() as hole:
        assert hole.url == f"http://127.0.0.1:{hole.port}"
        with pytest.raises(requests.exceptions.ReadTimeout):
            http.get(hole.url + "/v1/models", timeout=(2, 0.2))
        assert hole.accepted >= 1
    with pytest.raises(requests.ConnectionError):
        http.get(hole.url + "/v1/models", timeout=2)


def test_free_port_is_bindable():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
