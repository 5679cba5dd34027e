"""A small, fast OpenAI-compatible model server: the demo model, the test backend.

Why it exists: people try the gateway before they have a GPU, every test needs a
real upstream on a loopback port, and benchmarks measure the gateway's added latency
against direct calls to this server. That last use is why it is a raw WSGI app on
``gevent.pywsgi`` (no Flask, no access log, stdlib JSON, precomputed pieces): the
reference must cost as little CPU as possible so that what is measured is the
gateway, not the backend.

Run it::

    python -m webapp.demo_backend --port 8001 --model demo-model [--model other] \\
        [--host 127.0.0.1] [--tokens 16] [--token-delay-ms 0] [--api-key KEY] \\
        [--no-test-hooks]

``--port 0`` picks an ephemeral port. Once listening it prints exactly one line,
``demo backend listening on http://HOST:PORT`` (IPv6 hosts in brackets), which tests
parse. SIGTERM and SIGINT stop it with exit status 0.

Endpoints (OpenAI shapes):

* ``GET /v1/models``, ``GET /v1/models/{id}``
* ``POST /v1/chat/completions`` and ``POST /v1/completions``, plain or with
  ``"stream": true`` (server-sent events ending in ``data: [DONE]``; with
  ``stream_options.include_usage`` every chunk has ``"usage": null`` and a last
  chunk with ``"choices": []`` carries the usage). The reply is the first N tokens
  of a fixed cycle of words, N = ``--tokens`` capped by ``max_tokens`` /
  ``max_completion_tokens`` (finish_reason ``length`` when capped, else ``stop``).
  Streams sleep ``--token-delay-ms`` before each token chunk.
* ``POST /v1/embeddings``: deterministic unit vectors derived from a hash of each
  input (length ``dimensions``, default 8; ``encoding_format: "base64"`` gives
  little-endian float32).
* ``GET /health`` -> ``{"status": "ok"}`` (never needs the API key).

``model`` may be omitted (as vLLM allows) and then the first served model answers;
a model that is not served gets 404 ``model_not_found``, which is how gateway tests
prove the gateway rewrote the model name. With ``--api-key`` every ``/v1/*`` request
needs ``Authorization: Bearer KEY`` (else 401 ``invalid_api_key``).

Test hooks (disabled by ``--no-test-hooks``, then ``/_demo/*`` is 404; they never
need the API key; requests to them are not counted in the stats):

* ``GET /_demo/stats`` -> ``requests`` (all requests except ``/_demo/*``),
  ``by_path`` ({path: count}), ``models_requests`` (every GET /v1/models, i.e. the
  gateway's health probes, however they were answered), ``streams_started``,
  ``streams_completed`` (``[DONE]`` was written), ``streams_aborted`` (the client
  went away before the end: a write failed or the response iterator was closed
  early), ``streams_cut`` (cut on purpose by ``die_after_tokens``) and
  ``last_request``: ``{"method", "path", "headers": {lower-case name: value},
  "body": parsed JSON or null}`` of the last ``/v1`` request.
* ``DELETE /_demo/stats`` zeroes the counters and forgets ``last_request``.
* ``POST /_demo/control`` with a JSON object replaces the whole control state
  (``{}`` resets it) and answers ``{"ok": true}``; ``GET`` shows it. Keys:

  - ``status`` (int 400-599), ``count`` (int, default 1, -1 = until reset),
    ``retry_after`` (int seconds, sent as ``Retry-After``), ``paths`` (list of
    paths, any method; default every POST ``/v1`` endpoint): the next ``count``
    matching requests get that status with an OpenAI error body (after the API key
    check, before the body is validated).
  - ``models_status`` (int): ``GET /v1/models`` answers that status until reset;
    ``models_body`` (str): it answers 200 with this raw body instead (with both,
    the status is sent with the raw body).
  - ``die_after_tokens`` (int >= 0) with ``count`` as above: the next ``count``
    streaming responses send that many token chunks (the chat role chunk does not
    count) and then the connection is shut down: no finish chunk, no ``[DONE]``,
    no terminating zero-length chunk, so clients see a broken chunked body.
  - ``delay_ms`` (float): sleep that long before answering any POST ``/v1``
    request, until reset.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from http import HTTPStatus
from typing import Any

import gevent
from gevent import socket as gsocket
from gevent.event import Event
from gevent.pywsgi import WSGIHandler, WSGIServer

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

#: The reply is a prefix of this cycle; 16 words so the default reply is a sentence.
TOKEN_CYCLE: tuple[str, ...] = (
    "Hello",
    " from",
    " the",
    " demo",
    " backend",
    "!",
    " This",
    " reply",
    " is",
    " the",
    " same",
    " every",
    " time",
    " you",
    " ask",
    ".",
)
MODEL_CREATED = 1700000000
DEFAULT_EMBEDDING_DIMENSIONS = 8
MAX_EMBEDDING_DIMENSIONS = 65536
LISTEN_BACKLOG = 4096

_SSE_HEADERS = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),
]
_DONE = b"data: [DONE]\n\n"
_POST_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")

# Token pieces are JSON-encoded once so a stream chunk is only string concatenation.
_CHAT_TOKEN_CHOICE = tuple(
    '{"index":0,"delta":{"content":' + json.dumps(tok) + '},"logprobs":null,"finish_reason":null}]'
    for tok in TOKEN_CYCLE
)
_TEXT_TOKEN_CHOICE = tuple(
    '{"index":0,"text":' + json.dumps(tok) + ',"logprobs":null,"finish_reason":null}]'
    for tok in TOKEN_CYCLE
)
_CHAT_ROLE_CHOICE = (
    '{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]'
)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _status_line(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Status {code}"


# Built once: a status line per code costs an enum lookup otherwise.
_STATUS = {code: _status_line(code) for code in range(100, 600)}


class ApiError(Exception):
    """An OpenAI-shaped error answer; raised anywhere below the WSGI entry point."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or []

    def body(self) -> bytes:
        return _dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )


def _injected_error(status: int, retry_after: int | None) -> ApiError:
    """The error a real upstream would send for ``status``, so clients map it right."""
    if status == 401:
        type_, code = "invalid_request_error", "invalid_api_key"
    elif status == 403:
        type_, code = "permission_error", None
    elif status == 429:
        # OpenAI's own 429s vary the type; tests may check either field.
        type_, code = "rate_limit_exceeded", "rate_limit_exceeded"
    elif status >= 500:
        type_, code = "server_error", None
    else:
        type_, code = "invalid_request_error", None
    headers = [] if retry_after is None else [("Retry-After", str(retry_after))]
    return ApiError(
        status,
        f"demo backend: injected status {status} (test hook)",
        type_=type_,
        code=code,
        headers=headers,
    )


@lru_cache(maxsize=128)
def reply_text(n: int) -> str:
    """The first ``n`` tokens of the cycle, joined; cached since N repeats a lot."""
    full, rest = divmod(n, len(TOKEN_CYCLE))
    return "".join(TOKEN_CYCLE) * full + "".join(TOKEN_CYCLE[:rest])


def count_words(value: Any) -> int:
    """Prompt size in words: strings, chat content parts, or token id lists."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, int) and not isinstance(value, bool):
        return 1
    if isinstance(value, list):
        total = 0
        for item in value:
            if isinstance(item, dict):
                text = item.get("text")
                if item.get("type", "text") == "text" and isinstance(text, str):
                    total += len(text.split())
            else:
                total += count_words(item)
        return total
    return 0


def embed(item: str | list[int], dimensions: int) -> list[float]:
    """A deterministic unit vector for one input, derived from its hash."""
    if isinstance(item, str):
        seed = b"s:" + item.encode("utf-8", "surrogatepass")
    else:
        seed = b"t:" + ",".join(map(str, item)).encode()
    raw = struct.unpack(f"<{dimensions}I", hashlib.shake_256(seed).digest(4 * dimensions))
    vector = [value / 2147483648.0 - 1.0 for value in raw]
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Control:
    """The misbehaviour requested through ``POST /_demo/control``."""

    def __init__(self, raw: dict[str, Any] | None = None) -> None:
        raw = raw or {}
        known = {
            "status",
            "count",
            "retry_after",
            "paths",
            "models_status",
            "models_body",
            "die_after_tokens",
            "delay_ms",
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            # A typo in a test must fail loudly, not silently inject nothing.
            raise ApiError(400, f"unknown control keys: {unknown}", param=unknown[0])
        count = raw.get("count", 1)
        if not _is_int(count) or (count < 1 and count != -1):
            raise ApiError(400, "count must be a positive int or -1", param="count")

        self.raw = raw
        self.status: int | None = raw.get("status")
        if self.status is not None and (not _is_int(self.status) or not 400 <= self.status <= 599):
            raise ApiError(400, "status must be an int in 400..599", param="status")
        self.status_left = count if self.status is not None else 0
        self.retry_after: int | None = raw.get("retry_after")
        if self.retry_after is not None and (not _is_int(self.retry_after) or self.retry_after < 0):
            raise ApiError(400, "retry_after must be an int >= 0", param="retry_after")
        paths = raw.get("paths")
        if paths is not None and (
            not isinstance(paths, list) or not all(isinstance(p, str) for p in paths)
        ):
            raise ApiError(400, "paths must be a list of strings", param="paths")
        self.paths: frozenset[str] | None = None if paths is None else frozenset(paths)

        self.models_status: int | None = raw.get("models_status")
        if self.models_status is not None and (
            not _is_int(self.models_status) or not 100 <= self.models_status <= 599
        ):
            raise ApiError(400, "models_status must be an HTTP status", param="models_status")
        self.models_body: str | None = raw.get("models_body")
        if self.models_body is not None and not isinstance(self.models_body, str):
            raise ApiError(400, "models_body must be a string", param="models_body")

        self.die_after: int | None = raw.get("die_after_tokens")
        if self.die_after is not None and (not _is_int(self.die_after) or self.die_after < 0):
            raise ApiError(400, "die_after_tokens must be an int >= 0", param="die_after_tokens")
        self.die_left = count if self.die_after is not None else 0

        delay_ms = raw.get("delay_ms", 0)
        if not isinstance(delay_ms, int | float) or isinstance(delay_ms, bool):
            raise ApiError(400, "delay_ms must be a number", param="delay_ms")
        if delay_ms < 0:
            raise ApiError(400, "delay_ms must be >= 0", param="delay_ms")
        self.delay_s = delay_ms / 1000.0

    def take_status(self, method: str, path: str) -> ApiError | None:
        """Consume one injected failure if this request matches, else None."""
        if self.status is None or self.status_left == 0:
            return None
        if self.paths is None:
            if method != "POST" or path not in _POST_ENDPOINTS:
                return None
        elif path not in self.paths:
            return None
        if self.status_left > 0:
            self.status_left -= 1
        return _injected_error(self.status, self.retry_after)

    def take_die(self) -> int | None:
        """Consume one stream cut: the token count after which to cut, or None."""
        if self.die_after is None or self.die_left == 0:
            return None
        if self.die_left > 0:
            self.die_left -= 1
        return self.die_after

    def describe(self) -> dict[str, Any]:
        return {
            "control": self.raw,
            "status_remaining": self.status_left,
            "die_remaining": self.die_left,
        }


class Stats:
    """Counters the tests read back through ``GET /_demo/stats``."""

    def __init__(self) -> None:
        self.requests = 0
        self.by_path: dict[str, int] = {}
        self.models_requests = 0
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_aborted = 0
        self.streams_cut = 0
        self.last_request: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_path": self.by_path,
            "models_requests": self.models_requests,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "streams_aborted": self.streams_aborted,
            "streams_cut": self.streams_cut,
            "last_request": self.last_request,
        }


def _request_headers(environ: Environ) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    # WSGI keeps these two outside HTTP_*, but they were request headers too.
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        if environ.get(key):
            headers[name] = environ[key]
    return headers


class _Missing:
    """Marks a body that was not valid JSON (``None`` is valid JSON: ``null``)."""


_INVALID_JSON = _Missing()


class DemoApp:
    """The WSGI application; one instance per server, all state lives here."""

    def __init__(
        self,
        models: list[str] | None = None,
        tokens: int = 16,
        token_delay_ms: float = 0.0,
        api_key: str | None = None,
        test_hooks: bool = True,
    ) -> None:
        self.models = list(models or ["demo-model"])
        self.model_set = frozenset(self.models)
        self.tokens = tokens
        self.token_delay_s = token_delay_ms / 1000.0
        self.expected_auth = None if api_key is None else f"Bearer {api_key}".encode()
        self.test_hooks = test_hooks
        self.stats = Stats()
        self.control = Control()
        self._ids = itertools.count(1)
        self._model_objects = {
            name: {
                "id": name,
                "object": "model",
                "created": MODEL_CREATED,
                "owned_by": "demo",
            }
            for name in self.models
        }
        self._models_body = _dumps({"object": "list", "data": list(self._model_objects.values())})
        self._health_body = _dumps({"status": "ok"})
        self._routes: dict[str, dict[str, Callable[..., Iterable[bytes]]]] = {
            "/v1/models": {"GET": self._list_models},
            "/v1/chat/completions": {"POST": self._chat},
            "/v1/completions": {"POST": self._completions},
            "/v1/embeddings": {"POST": self._embeddings},
        }

    # -- WSGI entry point -------------------------------------------------------

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        # pywsgi serves a keep-alive connection's next request without yielding when its
        # bytes are already there; yield once so busy connections take turns with the
        # rest (otherwise a benchmark's tail latency measures this server's unfairness).
        gevent.sleep(0)
        path: str = environ["PATH_INFO"]
        method: str = environ["REQUEST_METHOD"]
        try:
            if path.startswith("/_demo/"):
                if not self.test_hooks:
                    raise ApiError(404, f"unknown path {path}", code="not_found")
                return self._hooks(environ, start_response, method, path)
            stats = self.stats
            stats.requests += 1
            stats.by_path[path] = stats.by_path.get(path, 0) + 1
            if path == "/v1/models" and method == "GET":
                # Counted before auth and hooks: tests ask "did the gateway probe?",
                # whatever the probe was answered.
                stats.models_requests += 1
            if path.startswith("/v1/"):
                return self._v1(environ, start_response, method, path)
            if path == "/health":
                if method != "GET":
                    raise ApiError(405, f"method {method} not allowed on {path}")
                return self._send(start_response, 200, self._health_body)
            raise ApiError(404, f"unknown path {path}", code="not_found")
        except ApiError as err:
            return self._send(start_response, err.status, err.body(), err.headers)

    @staticmethod
    def _send(
        start_response: StartResponse,
        status: int,
        body: bytes,
        extra: list[tuple[str, str]] | None = None,
    ) -> list[bytes]:
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if extra:
            headers.extend(extra)
        start_response(_STATUS.get(status) or f"{status} Status", headers)
        return [body]

    def _v1(
        self, environ: Environ, start_response: StartResponse, method: str, path: str
    ) -> Iterable[bytes]:
        body: Any = None
        if method in ("POST", "PUT", "PATCH"):
            raw = environ["wsgi.input"].read()
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):
                body = _INVALID_JSON
        if self.test_hooks:
            self.stats.last_request = {
                "method": method,
                "path": path,
                "headers": _request_headers(environ),
                "body": None if body is _INVALID_JSON else body,
            }
        control = self.control
        if method == "POST" and control.delay_s:
            gevent.sleep(control.delay_s)
        if self.expected_auth is not None:
            given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, self.expected_auth):
                raise ApiError(
                    401,
                    "Incorrect API key provided (demo backend).",
                    param=None,
                    code="invalid_api_key",
                )
        injected = control.take_status(method, path)
        if injected is not None:
            raise injected

        route = self._routes.get(path)
        if route is None:
            if path.startswith("/v1/models/") and method == "GET":
                return self._get_model(start_response, path[len("/v1/models/") :])
            raise ApiError(404, f"unknown path {path}", code="not_found")
        handler = route.get(method)
        if handler is None:
            raise ApiError(
                405,
                f"method {method} not allowed on {path}",
                headers=[("Allow", ", ".join(route))],
            )
        if method == "POST":
            if body is _INVALID_JSON:
                raise ApiError(400, "request body is not valid JSON")
            if not isinstance(body, dict):
                raise ApiError(400, "request body must be a JSON object")
        return handler(environ, start_response, body)

    # -- /v1 endpoints ----------------------------------------------------------

    def _list_models(
        self, environ: Environ, start_response: StartResponse, body: Any
    ) -> Iterable[bytes]:
        control = self.control
        if control.models_status is not None:
            if control.models_body is not None:
                payload = control.models_body.encode()
            else:
                payload = _injected_error(control.models_status, None).body()
            return self._send(start_response, control.models_status, payload)
        if control.models_body is not None:
            return self._send(start_response, 200, control.models_body.encode())
        return self._send(start_response, 200, self._models_body)

    def _get_model(self, start_response: StartResponse, name: str) -> Iterable[bytes]:
        model = self._model_objects.get(name)
        if model is None:
            raise ApiError(
                404,
                f"The model `{name}` does not exist.",
                param="model",
                code="model_not_found",
            )
        return self._send(start_response, 200, _dumps(model))

    def _model(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        if model is None:
            return self.models[0]
        if not isinstance(model, str):
            raise ApiError(400, "model must be a string", param="model")
        if model not in self.model_set:
            raise ApiError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return model

    def _token_budget(self, body: dict[str, Any]) -> tuple[int, str]:
        """How many tokens to produce and the finish_reason that goes with it."""
        n = self.tokens
        finish = "stop"
        for param in ("max_tokens", "max_completion_tokens"):
            cap = body.get(param)
            if cap is None:
                continue
            if not _is_int(cap) or cap < 1:
                raise ApiError(400, f"{param} must be an integer >= 1", param=param)
            if cap < n:
                n, finish = cap, "length"
        return n, finish

    @staticmethod
    def _stream_options(body: dict[str, Any]) -> tuple[bool, bool]:
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = (
            stream and isinstance(options, dict) and options.get("include_usage") is True
        )
        return stream, include_usage

    def _chat(
        self, environ: Environ, start_response: StartResponse, body: dict[str, Any]
    ) -> Iterable[bytes]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(
                400,
                "'messages' is required and must be a non-empty array",
                param="messages",
            )
        prompt_tokens = 0
        for message in messages:
            if not isinstance(message, dict):
                raise ApiError(400, "each message must be an object", param="messages")
            prompt_tokens += count_words(message.get("content"))
        model = self._model(body)
        n, finish = self._token_budget(body)
        stream, include_usage = self._stream_options(body)
        completion_id = f"chatcmpl-demo-{next(self._ids)}"
        created = int(time.time())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n,
            "total_tokens": prompt_tokens + n,
        }
        if stream:
            head = (
                'data: {"id":"'
                + completion_id
                + '","object":"chat.completion.chunk","created":'
                + str(created)
                + ',"model":'
                + json.dumps(model)
                + ',"system_fingerprint":"demo","choices":['
            )
            start_response("200 OK", _SSE_HEADERS)
            return self._stream(
                environ,
                head,
                _CHAT_TOKEN_CHOICE,
                head + _CHAT_ROLE_CHOICE,
                '{"index":0,"delta":{},"logprobs":null,"finish_reason":"' + finish + '"}]',
                n,
                usage if include_usage else None,
                None,
            )
        payload = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "demo",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": reply_text(n),
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
        }
        return self._send(start_response, 200, _dumps(payload))

    def _completions(
        self, environ: Environ, start_response: StartResponse, body: dict[str, Any]
    ) -> Iterable[bytes]:
        prompt = body.get("prompt")
        if prompt is None or not isinstance(prompt, str | list):
            raise ApiError(
                400,
                "'prompt' is required: a string, an array of strings or token arrays",
                param="prompt",
            )
        prompt_tokens = count_words(prompt)
        model = self._model(body)
        n, finish = self._token_budget(body)
        stream, include_usage = self._stream_options(body)
        completion_id = f"cmpl-demo-{next(self._ids)}"
        created = int(time.time())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n,
            "total_tokens": prompt_tokens + n,
        }
        if stream:
            head = (
                'data: {"id":"'
                + completion_id
                + '","object":"text_completion","created":'
                + str(created)
                + ',"model":'
                + json.dumps(model)
                + ',"system_fingerprint":"demo","choices":['
            )
            write = start_response("200 OK", _SSE_HEADERS)
            return self._stream(
                environ,
                head,
                _TEXT_TOKEN_CHOICE,
                None,
                '{"index":0,"text":"","logprobs":null,"finish_reason":"' + finish + '"}]',
                n,
                usage if include_usage else None,
                write,
            )
        payload = {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": "demo",
            "choices": [
                {
                    "index": 0,
                    "text": reply_text(n),
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
        }
        return self._send(start_response, 200, _dumps(payload))

    def _stream(
        self,
        environ: Environ,
        head: str,
        token_choices: tuple[str, ...],
        first_chunk: str | None,
        finish_choice: str,
        n: int,
        usage: dict[str, int] | None,
        write: Callable[[bytes], Any] | None,
    ) -> Iterator[bytes]:
        """Yield one SSE event per write so the client sees tokens as they are made.

        Everything that can raise was checked before ``start_response``; from here
        on the only failures are the client leaving and the die hook.
        """
        tail = ',"usage":null}\n\n' if usage is not None else "}\n\n"
        die_after = self.control.take_die()
        stats = self.stats
        delay = self.token_delay_s
        cycle = len(token_choices)
        outcome = "aborted"
        stats.streams_started += 1
        try:
            if first_chunk is not None:
                yield (first_chunk + tail).encode()
            elif write is not None:
                # Send the headers now, as real servers do, rather than after the
                # first token's delay.
                write(b"")
            for i in range(n):
                if i == die_after:
                    break
                if delay:
                    gevent.sleep(delay)
                yield (head + token_choices[i % cycle] + tail).encode()
            if die_after is not None:
                outcome = "cut"
                _cut_connection(environ)
                return
            yield (head + finish_choice + tail).encode()
            if usage is not None:
                yield (head + '],"usage":' + _dumps(usage).decode() + "}\n\n").encode()
            yield _DONE
            outcome = "completed"
        finally:
            # GeneratorExit at a yield (the server closes us after a failed write)
            # leaves outcome at "aborted".
            if outcome == "completed":
                stats.streams_completed += 1
            elif outcome == "cut":
                stats.streams_cut += 1
            else:
                stats.streams_aborted += 1

    def _embeddings(
        self, environ: Environ, start_response: StartResponse, body: dict[str, Any]
    ) -> Iterable[bytes]:
        items = _embedding_inputs(body.get("input"))
        model = self._model(body)
        dimensions = body.get("dimensions")
        if dimensions is None:
            dimensions = DEFAULT_EMBEDDING_DIMENSIONS
        elif not _is_int(dimensions) or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS:
            raise ApiError(
                400,
                f"dimensions must be an integer in 1..{MAX_EMBEDDING_DIMENSIONS}",
                param="dimensions",
            )
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise ApiError(
                400, "encoding_format must be 'float' or 'base64'", param="encoding_format"
            )
        data = []
        prompt_tokens = 0
        for index, item in enumerate(items):
            vector = embed(item, dimensions)
            prompt_tokens += count_words(item)
            embedding: list[float] | str = vector
            if encoding == "base64":
                packed = struct.pack(f"<{dimensions}f", *vector)
                embedding = base64.b64encode(packed).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        payload = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
        return self._send(start_response, 200, _dumps(payload))

    # -- test hooks -------------------------------------------------------------

    def _hooks(
        self, environ: Environ, start_response: StartResponse, method: str, path: str
    ) -> Iterable[bytes]:
        if path == "/_demo/stats":
            if method == "GET":
                return self._send(start_response, 200, _dumps(self.stats.as_dict()))
            if method == "DELETE":
                self.stats = Stats()
                return self._send(start_response, 200, b'{"ok":true}')
            raise ApiError(405, f"method {method} not allowed on {path}")
        if path == "/_demo/control":
            if method == "GET":
                return self._send(start_response, 200, _dumps(self.control.describe()))
            if method != "POST":
                raise ApiError(405, f"method {method} not allowed on {path}")
            try:
                raw = json.loads(environ["wsgi.input"].read() or b"{}")
            except (ValueError, RecursionError):
                raise ApiError(400, "control body is not valid JSON") from None
            if not isinstance(raw, dict):
                raise ApiError(400, "control body must be a JSON object")
            self.control = Control(raw)
            return self._send(start_response, 200, b'{"ok":true}')
        raise ApiError(404, f"unknown path {path}", code="not_found")


def _embedding_inputs(value: Any) -> list[str | list[int]]:
    """Normalise the four accepted ``input`` shapes to a list of items."""
    error = ApiError(
        400,
        "'input' is required: a string, an array of strings, an array of token ids "
        "or an array of token id arrays",
        param="input",
    )
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise error
    if all(isinstance(item, str) for item in value):
        return list(value)
    if all(_is_int(item) for item in value):
        return [value]
    if all(isinstance(item, list) and item and all(_is_int(t) for t in item) for item in value):
        return list(value)
    raise error


def _cut_connection(environ: Environ) -> None:
    """Kill the connection under a running response, like a crashing upstream.

    Shutting the socket down sends FIN without the terminating zero-length chunk,
    so the client's HTTP parser reports an incomplete body instead of a clean end;
    gevent's following write then fails with EPIPE, which it ignores quietly.
    """
    sock = environ.get("demo.socket")
    if sock is None:
        raise ConnectionAbortedError("demo backend: die_after_tokens without socket")
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Handler(WSGIHandler):
    """pywsgi's handler, plus the raw socket in the environ for the die hook."""

    def get_environ(self) -> Environ:
        environ = super().get_environ()
        environ["demo.socket"] = self.socket
        return environ


def listen(host: str, port: int) -> gsocket.socket:
    """Create the listening socket ourselves to set what WSGIServer would not.

    TCP_NODELAY: pywsgi writes headers and body in separate sends, and with Nagle
    plus the client's delayed ACK every small response would wait ~40 ms (Linux
    copies the option to accepted sockets). SO_REUSEADDR: tests restart a backend
    on the same port while old connections sit in TIME_WAIT. A big backlog:
    benchmarks open thousands of connections at once.
    """
    family, _, _, _, address = socket.getaddrinfo(
        host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )[0]
    sock = gsocket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def display_url(host: str, port: int) -> str:
    """``http://HOST:PORT`` with IPv6 literals bracketed."""
    if ":" in host:
        return f"http://[{host}]:{port}"
    return f"http://{host}:{port}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m webapp.demo_backend",
        description="A small, fast OpenAI-compatible demo model server.",
    )
    parser.add_argument("--port", type=int, required=True, help="0 = ephemeral port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="model name to serve; repeat to serve several (default: demo-model)",
    )
    parser.add_argument("--tokens", type=int, default=16, help="tokens per reply")
    parser.add_argument(
        "--token-delay-ms",
        type=float,
        default=0.0,
        help="sleep before each streamed token",
    )
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument(
        "--no-test-hooks",
        action="store_true",
        help="disable the /_demo/* test hooks",
    )
    args = parser.parse_args(argv)
    if args.tokens < 0:
        parser.error("--tokens must be >= 0")
    if args.token_delay_ms < 0:
        parser.error("--token-delay-ms must be >= 0")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be in 0..65535")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    app = DemoApp(
        models=args.models or ["demo-model"],
        tokens=args.tokens,
        token_delay_ms=args.token_delay_ms,
        api_key=args.api_key,
        test_hooks=not args.no_test_hooks,
    )
    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        print(
            f"demo backend: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 2
    # log=None: an access log line per request would dominate the CPU cost.
    # spawn="default": one unbounded greenlet per connection, no pool limit.
    server = WSGIServer(sock, app, log=None, handler_class=_Handler, spawn="default")
    server.start()
    host, port = sock.getsockname()[:2]
    print(f"demo backend listening on {display_url(host, port)}", flush=True)

    stopping = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    stopping.wait()
    # Without a pool, stop() only closes the listener; open streams die with us.
    server.stop(timeout=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
