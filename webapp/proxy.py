"""The ``/v1`` data plane: a lean WSGI app in front of Flask.

Every OpenAI-format request passes through here, so it is written as plain WSGI
rather than a Flask blueprint: on this machine Flask's per-request machinery alone
cost ~250 µs (2,900 vs 10,000 requests/s for a trivial view, same server), more than
the whole budget the gateway has for a request. The control plane (admin API,
dashboard, docs) stays in Flask; ``V1Dispatcher`` sends ``/v1/*`` here and the rest
to Flask.

The path: parse and bound the body → client key and rate limit → candidates from the
in-memory routing table → try them in order (failover before the first byte) → pass
the answer through (streams chunk by chunk, never buffered) → queue a usage record.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from webapp.errors import AuthenticationFailed, GatewayError, InvalidRequest, NotFound
from webapp.models import utcnow
from webapp.requestio import REQUEST_ID_RE
from webapp.services.netpolicy import AddressRefused, BackendURLError
from webapp.services.probe import describe_failure
from webapp.services.routing import Candidate, RoutingTable
from webapp.services.usage import extract_usage, token_counts
from webapp.streaming import StreamRelay
from webapp.upstream import Upstream

log = logging.getLogger("gateway.proxy")

POST_ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
STREAMABLE = {"chat", "completions"}
# Response headers that describe one hop, not the content: never passed through.
HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "date",
        "server",
        "x-request-id",
    }
)
STATUS_LINES = {
    200: "200 OK",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    413: "413 Payload Too Large",
    429: "429 Too Many Requests",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
    504: "504 Gateway Timeout",
}
StartResponse = Callable[..., Any]


class NoServerAvailable(GatewayError):
    """A known model with no healthy server right now (503)."""

    status = 503
    type = "server_error"
    code = "no_healthy_server"


class AllAttemptsFailed(GatewayError):
    """Every server tried failed before answering (504)."""

    status = 504
    type = "server_error"
    code = "upstream_failed"


class RateLimited(GatewayError):
    """The client went over RATE_LIMIT (429)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


def status_line(status: int) -> str:
    """A WSGI status line for any code."""
    return STATUS_LINES.get(status) or f"{status} Status"


def key_id(key: str) -> str:
    """A stable, non-reversible name for a client key, safe to store and show."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _within(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


class RequestState:
    """What one request carries from parsing to its usage record."""

    __slots__ = ("request_id", "started", "client", "endpoint", "model", "streamed", "attempts")

    def __init__(self, request_id: str, client: str) -> None:
        self.request_id = request_id
        self.started = time.perf_counter()
        self.client = client
        self.endpoint = ""
        self.model = ""
        self.streamed = False
        self.attempts = 0


class ProxyApp:
    """The WSGI callable for ``/v1``."""

    def __init__(self, app: Flask, routing: RoutingTable, upstream: Upstream, usage) -> None:
        config = app.config
        self.routing = routing
        self.upstream = upstream
        self.usage = usage
        self.max_body = config["MAX_REQUEST_BODY_SIZE"]
        self.max_attempts = 1 + config["MAX_RETRY_ATTEMPTS"]
        self.read_timeout = config["REQUEST_TIMEOUT_SECONDS"]
        self.connect_timeout = config["CONNECT_TIMEOUT_SECONDS"]
        self.require_auth = config["REQUIRE_CLIENT_AUTH"]
        self.trusted = config["TRUSTED_PROXIES"]
        keys = [k.strip() for k in config["CLIENT_API_KEYS"].split(",") if k.strip()]
        self.client_keys = {hashlib.sha256(k.encode()).digest(): key_id(k) for k in keys}
        self.limiter = None
        if config["RATE_LIMIT"]:
            from webapp.services.ratelimit import ClientRateLimiter

            self.limiter = ClientRateLimiter(config["RATE_LIMIT"], config["RATE_LIMIT_STORAGE_URL"])

    # -- entry ----------------------------------------------------------------------

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if incoming and REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        state = RequestState(request_id, self._client_ip(environ))
        try:
            return self._dispatch(environ, start_response, state)
        except GatewayError as error:
            return self._error(start_response, error, state)

    def _client_ip(self, environ: dict) -> str:
        """The client's address: the socket's, or X-Forwarded-For's when a trusted proxy sent it."""
        peer = environ.get("REMOTE_ADDR") or "-"
        if not self.trusted or not _within(peer, self.trusted):
            return peer
        hops = [h.strip() for h in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        # Walk back from the nearest hop; the first address not ours is the client.
        for hop in reversed(hops):
            if not _within(hop, self.trusted):
                return hop[:64]
        return peer

    def _dispatch(self, environ: dict, start_response: StartResponse, state: RequestState):
        path = environ.get("PATH_INFO", "")
        method = environ["REQUEST_METHOD"]
        self._authenticate(environ, state)
        endpoint = POST_ENDPOINTS.get(path)
        if endpoint is not None:
            if method != "POST":
                raise GatewayError(f"{path} takes POST", status=405, code="method_not_allowed")
            state.endpoint = endpoint
            self._rate_limit(state)
            return self._forward(environ, start_response, state)
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                raise GatewayError(f"{path} takes GET", status=405, code="method_not_allowed")
            return self._models(start_response, state, path[len("/v1/models/") :])
        raise NotFound(f"no such endpoint {path}; see /openapi.json")

    def _authenticate(self, environ: dict, state: RequestState) -> None:
        """Identify the client by key (when it sent a known one) or by IP; enforce auth."""
        header = environ.get("HTTP_AUTHORIZATION", "")
        identity = None
        if header[:7].lower() == "bearer ":
            identity = self.client_keys.get(hashlib.sha256(header[7:].strip().encode()).digest())
        if identity is not None:
            state.client = identity
        elif self.require_auth:
            if header:
                raise AuthenticationFailed(
                    "the API key is not valid for this gateway", code="invalid_api_key"
                )
            raise AuthenticationFailed("send a client key as 'Authorization: Bearer <key>'")

    def _rate_limit(self, state: RequestState) -> None:
        """Count a model call against the client's RATE_LIMIT (listing models is free)."""
        if self.limiter is not None:
            wait = self.limiter.hit(state.client)
            if wait is not None:
                raise RateLimited(
                    f"rate limit exceeded for this client; retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )

    # -- responses ----------------------------------------------------------------------

    def _respond(
        self,
        start_response: StartResponse,
        status: int,
        body: bytes,
        state: RequestState,
        headers: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> list[bytes]:
        out = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("X-Request-ID", state.request_id),
        ]
        if headers:
            out.extend(headers)
        start_response(status_line(status), out)
        return [body]

    def _error(self, start_response: StartResponse, error: GatewayError, state: RequestState):
        body = json.dumps(error.to_dict()).encode()
        if state.model:
            self.record(state, None, error.status, None, None, error.message)
        return self._respond(start_response, error.status, body, state, list(error.headers.items()))

    def _models(self, start_response: StartResponse, state: RequestState, name: str):
        """``/v1/models`` from the routing table: models with a healthy server, with counts."""

        def entry(model) -> dict[str, Any]:
            return {
                "id": model.name,
                "object": "model",
                "created": model.created,
                "owned_by": "multiverse-gateway",
                "available_servers": len(model.healthy),
                "total_servers": model.total,
            }

        if name:
            model = self.routing.models.get(name)
            if model is None:
                raise NotFound(
                    f'model "{name}" is not served here', code="model_not_found", param="model"
                )
            return self._respond(start_response, 200, json.dumps(entry(model)).encode(), state)
        data = [entry(m) for m in self.routing.models.values() if m.healthy]
        body = json.dumps({"object": "list", "data": data}).encode()
        return self._respond(start_response, 200, body, state)

    # -- forwarding ----------------------------------------------------------------------

    def _read_body(self, environ: dict) -> bytes:
        length = environ.get("CONTENT_LENGTH")
        if length:
            try:
                size = int(length)
            except ValueError:
                raise InvalidRequest("Content-Length is not a number") from None
            if size > self.max_body:
                raise self._too_large()
        body = environ["wsgi.input"].read(self.max_body + 1)
        if len(body) > self.max_body:
            raise self._too_large()
        return body

    def _too_large(self) -> GatewayError:
        return GatewayError(
            f"the request body is larger than MAX_REQUEST_BODY_SIZE ({self.max_body} bytes)",
            status=413,
            code="request_too_large",
        )

    def _parse(self, raw: bytes) -> dict[str, Any]:
        if not raw:
            raise InvalidRequest("the request body is empty; send a JSON object")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("you must provide a model parameter", param="model")
        return body

    def _forward(self, environ: dict, start_response: StartResponse, state: RequestState):
        raw = self._read_body(environ)
        body = self._parse(raw)
        model = state.model = body["model"]
        stream = body.get("stream") is True and state.endpoint in STREAMABLE
        state.streamed = stream
        candidates = self.routing.candidates(model)
        if candidates is None:
            available = sorted(m.name for m in self.routing.models.values() if m.healthy)
            listed = ", ".join(available) if available else "none right now"
            raise NotFound(
                f'model "{model}" is not served here; available models: {listed}',
                code="model_not_found",
                param="model",
            )
        if not candidates:
            if self.routing.cooling_down(model):
                raise RateLimited(
                    f'every server of model "{model}" is rate-limited; retry shortly',
                    headers={"Retry-After": "1"},
                )
            raise NoServerAvailable(f'no healthy server for model "{model}" right now; retry later')
        # Streams ask the backend for usage so it can be recorded; the client only sees
        # that chunk if it asked for it itself.
        options = body.get("stream_options")
        client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        inject_usage = stream and not client_wants_usage
        payloads: dict[str, bytes] = {}
        reasons: list[str] = []
        upstream_ms = 0.0
        path = environ["PATH_INFO"]
        tries = candidates[: self.max_attempts]
        for number, candidate in enumerate(tries, 1):
            state.attempts = number
            payload = payloads.get(candidate.upstream_model)
            if payload is None:
                payload = payloads[candidate.upstream_model] = self._payload(
                    raw, body, candidate.upstream_model, inject_usage
                )
            headers = {"Content-Type": "application/json", "X-Request-ID": state.request_id}
            headers["Accept"] = "text/event-stream" if stream else "application/json"
            if candidate.api_key:
                headers["Authorization"] = "Bearer " + candidate.api_key
            sent = time.perf_counter()
            inflight = self.routing.inflight
            inflight[candidate.id] = inflight.get(candidate.id, 0) + 1
            try:
                response = self.upstream.request(
                    "POST",
                    candidate.base_url,
                    path,
                    headers=headers,
                    body=payload,
                    read_timeout=self.read_timeout,
                )
            except Exception as exc:  # noqa: BLE001 - failure_reason re-raises bugs
                inflight[candidate.id] -= 1
                reason = self._failure_reason(exc)
                reasons.append(f"server {candidate.id[:8]}: {reason}")
                self.routing.record_failure(candidate, reason)
                continue
            status = response.status
            if stream and status == 200:
                return StreamRelay(self, response, candidate, state, inject_usage).start(
                    start_response
                )
            upstream_ms += (time.perf_counter() - sent) * 1000
            inflight[candidate.id] -= 1
            if status == 429:
                self.routing.cooldown(candidate, response.header("Retry-After"))
                if number < len(tries):
                    reasons.append(f"server {candidate.id[:8]}: HTTP 429")
                    response.close()
                    continue
            elif status >= 500:
                reasons.append(f"server {candidate.id[:8]}: HTTP {status}")
                self.routing.record_failure(candidate, f"HTTP {status} on a request")
                response.close()
                continue
            return self._pass_through(start_response, response, candidate, state, upstream_ms)
        raise AllAttemptsFailed(f"every attempt failed ({len(reasons)}): " + "; ".join(reasons))

    def _failure_reason(self, exc: Exception) -> str:
        """Why a request to a backend failed, without any address in it (clients see it)."""
        if isinstance(exc, AddressRefused | BackendURLError):
            return "the server's address is not allowed by ALLOWED_BACKEND_NETWORKS"
        return describe_failure(exc, self.read_timeout, self.connect_timeout)

    @staticmethod
    def _payload(raw: bytes, body: dict, upstream_model: str, inject_usage: bool) -> bytes:
        """The body to send: the client's bytes untouched unless something must change."""
        if body["model"] == upstream_model and not inject_usage:
            return raw
        changed = dict(body)
        changed["model"] = upstream_model
        if inject_usage:
            options = changed.get("stream_options")
            changed["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return json.dumps(changed, ensure_ascii=False, separators=(",", ":")).encode()

    @staticmethod
    def _headers_from(response, candidate: Candidate, state: RequestState) -> list[tuple[str, str]]:
        headers = [
            (name, value) for name, value in response.headers if name.lower() not in HOP_HEADERS
        ]
        headers.append(("X-Gateway-Server-ID", candidate.id))
        headers.append(("X-Request-ID", state.request_id))
        return headers

    def _pass_through(self, start_response, response, candidate, state, upstream_ms):
        """A complete answer (non-streamed, or an error): status, body and type unchanged."""
        data = response.read()
        headers = self._headers_from(response, candidate, state)
        headers.append(("Content-Length", str(len(data))))
        elapsed = (time.perf_counter() - state.started) * 1000
        headers.append(("X-Gateway-Overhead-Ms", f"{max(elapsed - upstream_ms, 0.0):.2f}"))
        start_response(status_line(response.status), headers)
        usage = extract_usage(data) if response.status < 300 else None
        self.record(state, candidate.id, response.status, usage, None, None)
        return [data]

    def record(self, state, server_id, status, usage, ttft, error) -> None:
        """Queue the usage record of a finished request (written later, in a batch)."""
        prompt, completion, total = token_counts(usage)
        self.usage.add(
            {
                "created_at": utcnow(),
                "request_id": state.request_id,
                "endpoint": state.endpoint or "models",
                "model": state.model[:100],
                "server_id": server_id,
                "client": state.client[:64],
                "status": status,
                "streamed": state.streamed,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": total,
                "latency_ms": round((time.perf_counter() - state.started) * 1000, 3),
                "ttft_ms": round(ttft, 3) if ttft is not None else None,
                "attempts": max(state.attempts, 1),
                "error": error[:300] if error else None,
            }
        )


class V1Dispatcher:
    """WSGI middleware: ``/v1`` to the proxy, everything else to Flask."""

    def __init__(self, proxy: ProxyApp, flask_wsgi: Callable) -> None:
        self.proxy = proxy
        self.flask_wsgi = flask_wsgi

    def __call__(self, environ: dict, start_response: StartResponse):
        path = environ.get("PATH_INFO", "")
        if path == "/v1" or path.startswith("/v1/"):
            return self.proxy(environ, start_response)
        return self.flask_wsgi(environ, start_response)
