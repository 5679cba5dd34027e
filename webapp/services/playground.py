"""The playground's chat: one request through the proxy's routing, told as events.

The dashboard's playground must behave like a real client of ``/v1`` without the
browser ever holding a key, so the gateway makes the call itself: candidates from
the same ``RoutingTable``, failover before the first byte by the same rules (connect
error, timeout or 5xx: next server; 429: cooldown, next server; other 4xx: the
answer), bytes through the same ``Upstream``, and a usage record with the proxy's
keys. What comes back is a series of small events (server, text, usage, done or
error) that the page renders as they arrive.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import Flask

from webapp.models import utcnow
from webapp.services.netpolicy import AddressRefused, BackendURLError
from webapp.services.probe import describe_failure
from webapp.services.routing import Candidate
from webapp.services.usage import token_counts
from webapp.upstream import UpstreamError

log = logging.getLogger("gateway.proxy")

Event = dict[str, Any]


@dataclass
class ChatRequest:
    """What the playground form asks for."""

    model: str
    messages: list[dict[str, str]]
    temperature: float
    max_tokens: int
    stream: bool


def _error_message(body: bytes, status: int) -> str:
    try:
        error = json.loads(body).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError, UnicodeDecodeError):
        message = None
    return f"HTTP {status}: {message}" if message else f"HTTP {status} from the server"


class PlaygroundChat:
    """One chat request on behalf of a dashboard user, as an iterator of events."""

    def __init__(self, app: Flask, request: ChatRequest, client: str) -> None:
        config = app.config
        self.routing = app.extensions["routing"]
        self.upstream = app.extensions["upstream"]
        self.usage = app.extensions["usage"]
        self.read_timeout = config["REQUEST_TIMEOUT_SECONDS"]
        self.max_attempts = 1 + config["MAX_RETRY_ATTEMPTS"]
        self.request = request
        self.client = client[:64]
        self.request_id = uuid.uuid4().hex
        self.started = time.perf_counter()
        self.ttft_ms: float | None = None
        self.attempts = 0
        self.recorded = False

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def _record(self, server_id: str | None, status: int, usage: Any, error: str | None) -> None:
        """Queue the usage record, with the keys ``ProxyApp.record`` writes."""
        if self.recorded:
            return
        self.recorded = True
        prompt, completion, total = token_counts(usage if isinstance(usage, dict) else None)
        self.usage.add(
            {
                "created_at": utcnow(),
                "request_id": self.request_id,
                "endpoint": "chat",
                "model": self.request.model[:100],
                "server_id": server_id,
                "client": self.client,
                "status": status,
                "streamed": self.request.stream,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": total,
                "latency_ms": round(self._elapsed_ms(), 3),
                "ttft_ms": round(self.ttft_ms, 3) if self.ttft_ms is not None else None,
                "attempts": max(self.attempts, 1),
                "error": error[:300] if error else None,
            }
        )

    def _fail(self, status: int, message: str, server_id: str | None = None) -> Event:
        self._record(server_id, status, None, message)
        return {"event": "error", "status": status, "message": message}

    def _body(self, candidate: Candidate) -> bytes:
        body: dict[str, Any] = {
            "model": candidate.upstream_model,
            "messages": self.request.messages,
            "temperature": self.request.temperature,
            "max_tokens": self.request.max_tokens,
            "stream": self.request.stream,
        }
        if self.request.stream:
            body["stream_options"] = {"include_usage": True}
        return json.dumps(body).encode()

    def events(self) -> Iterator[Event]:
        """Try the model's servers in routing order; then relay the answer as events."""
        model = self.request.model
        candidates = self.routing.candidates(model)
        if candidates is None:
            yield self._fail(404, f'model "{model}" is not served here')
            return
        if not candidates:
            yield self._fail(503, f'no healthy server for model "{model}" right now')
            return
        reasons: list[str] = []
        for candidate in candidates[: self.max_attempts]:
            self.attempts += 1
            headers = {
                "Content-Type": "application/json",
                "X-Request-ID": self.request_id,
                "Accept": "text/event-stream" if self.request.stream else "application/json",
            }
            if candidate.api_key:
                headers["Authorization"] = "Bearer " + candidate.api_key
            inflight = self.routing.inflight
            inflight[candidate.id] = inflight.get(candidate.id, 0) + 1
            try:
                response = self.upstream.request(
                    "POST",
                    candidate.base_url,
                    "/v1/chat/completions",
                    headers=headers,
                    body=self._body(candidate),
                    read_timeout=self.read_timeout,
                )
            except Exception as exc:  # noqa: BLE001 - _reason re-raises what is not a failure
                inflight[candidate.id] -= 1
                reason = self._reason(exc)
                reasons.append(f"server {candidate.id[:8]}: {reason}")
                self.routing.record_failure(candidate, reason)
                continue
            status = response.status
            if status == 429 or status >= 500:
                inflight[candidate.id] -= 1
                response.close()
                reasons.append(f"server {candidate.id[:8]}: HTTP {status}")
                if status == 429:
                    self.routing.cooldown(candidate, response.header("Retry-After"))
                else:
                    self.routing.record_failure(candidate, f"HTTP {status} on a request")
                continue
            try:
                yield self._server_event(candidate)
                if status != 200:
                    body = response.read(64 * 1024)
                    yield self._fail(status, _error_message(body, status), candidate.id)
                elif self.request.stream:
                    yield from self._relay_stream(response, candidate)
                else:
                    yield from self._relay_whole(response, candidate)
            finally:
                inflight[candidate.id] -= 1
                if not response.complete:
                    response.close()
                # Recorded as the proxy does when its client leaves mid-answer.
                self._record(candidate.id, status, None, "client disconnected")
            return
        yield self._fail(504, "every attempt failed: " + "; ".join(reasons))

    def _reason(self, exc: Exception) -> str:
        if isinstance(exc, AddressRefused | BackendURLError):
            return "the server's address is not allowed by ALLOWED_BACKEND_NETWORKS"
        return describe_failure(exc, self.read_timeout)

    def _server_event(self, candidate: Candidate) -> Event:
        return {
            "event": "server",
            "server_id": candidate.id,
            "model": candidate.model_name,
            "upstream_model": candidate.upstream_model,
            "attempt": self.attempts,
        }

    def _done(self, candidate: Candidate, usage: Any, finish: str | None) -> Iterator[Event]:
        prompt, completion, total = token_counts(usage if isinstance(usage, dict) else None)
        yield {
            "event": "usage",
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": total,
        }
        self._record(candidate.id, 200, usage, None)
        yield {
            "event": "done",
            "ttft_ms": round(self.ttft_ms, 1) if self.ttft_ms is not None else None,
            "total_ms": round(self._elapsed_ms(), 1),
            "finish_reason": finish,
        }

    def _relay_whole(self, response, candidate: Candidate) -> Iterator[Event]:
        body = response.read(16 * 1024 * 1024)
        self.ttft_ms = self._elapsed_ms()
        try:
            answer = json.loads(body)
            choice = answer["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            yield self._fail(502, "the server's answer is not a chat completion", candidate.id)
            return
        yield {"event": "delta", "text": text}
        yield from self._done(candidate, answer.get("usage"), choice.get("finish_reason"))

    def _relay_stream(self, response, candidate: Candidate) -> Iterator[Event]:
        buffer = b""
        usage = None
        finish = None
        try:
            for chunk in response.iter_body():
                buffer += chunk.replace(b"\r\n", b"\n")
                *events, buffer = buffer.split(b"\n\n")
                for raw in events:
                    data = b"".join(
                        line[5:].strip() for line in raw.split(b"\n") if line.startswith(b"data:")
                    )
                    if not data or data == b"[DONE]":
                        continue
                    try:
                        payload = json.loads(data)
                    except ValueError:
                        continue
                    if isinstance(payload.get("error"), dict):
                        message = payload["error"].get("message") or "the server sent an error"
                        yield self._fail(502, message, candidate.id)
                        return
                    usage = payload.get("usage") or usage
                    for choice in payload.get("choices") or []:
                        finish = choice.get("finish_reason") or finish
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            if self.ttft_ms is None:
                                self.ttft_ms = self._elapsed_ms()
                            yield {"event": "delta", "text": text}
        except (UpstreamError, OSError) as exc:
            reason = describe_failure(exc, self.read_timeout)
            log.warning("server %s failed mid-stream (playground): %s", candidate.id, reason)
            yield self._fail(502, f"the model server failed mid-stream: {reason}", candidate.id)
            return
        yield from self._done(candidate, usage, finish)
