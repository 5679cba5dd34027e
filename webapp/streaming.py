"""Streamed answers: SSE bytes from the backend to the client as they arrive.

Nothing is buffered: each complete chunk the backend sent is handed to the WSGI server
at once. The only bytes ever changed are the usage chunk the gateway asked for on the
client's behalf (removed unless the client asked too); when the backend dies mid-way
the client gets a final OpenAI-style error event rather than a silent cut.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from webapp.services.probe import describe_failure
from webapp.services.routing import Candidate
from webapp.services.usage import extract_usage
from webapp.upstream import UpstreamError

if TYPE_CHECKING:
    from webapp.proxy import ProxyApp, StartResponse

log = logging.getLogger("gateway.proxy")


def usage_in_stream(chunk: bytes, strip: bool) -> tuple[dict | None, bytes]:
    """Find the usage of a stream; when we asked for it ourselves, hide it from the client."""
    usage = None
    kept = []
    for event in chunk.split(b"\n\n"):
        if b'"usage":{' in event or b'"usage": {' in event:
            usage = extract_usage(event) or usage
            if strip and (b'"choices":[]' in event or b'"choices": []' in event):
                continue
        kept.append(event)
    out = b"\n\n".join(kept)
    if strip:
        out = out.replace(b',"usage":null', b"").replace(b', "usage": null', b"")
    return usage, out


class StreamRelay:
    """The iterable a streamed answer is: SSE bytes passed on as they arrive.

    A class rather than a generator so that ``close()`` (which the WSGI server calls when
    the client goes away, even before the first chunk) always closes the upstream
    connection, so the backend stops generating.
    """

    def __init__(self, proxy: ProxyApp, response, candidate: Candidate, state, strip: bool) -> None:
        self.proxy = proxy
        self.response = response
        self.candidate = candidate
        self.state = state
        self.strip = strip
        self.usage: dict | None = None
        self.ttft: float | None = None
        self.error: str | None = None
        self.completed = False
        self.finished = False

    def start(self, start_response: StartResponse) -> StreamRelay:
        """Send the response headers; the body follows as the server iterates."""
        headers = [
            (name, value)
            for name, value in self.proxy._headers_from(self.response, self.candidate, self.state)
            if name.lower() not in ("cache-control", "x-accel-buffering")
        ]
        headers.append(("Cache-Control", "no-cache"))
        headers.append(("X-Accel-Buffering", "no"))
        start_response("200 OK", headers)
        return self

    def __iter__(self) -> Iterator[bytes]:
        state = self.state
        try:
            for chunk in self.response.iter_body():
                if self.ttft is None:
                    self.ttft = (time.perf_counter() - state.started) * 1000
                if b'"usage"' in chunk:
                    found, chunk = usage_in_stream(chunk, self.strip)
                    self.usage = found or self.usage
                    if not chunk:
                        continue
                yield chunk
            self.completed = True
        except (UpstreamError, OSError) as exc:
            self.error = describe_failure(exc, self.proxy.read_timeout)
            log.warning("server %s failed mid-stream: %s", self.candidate.id, self.error)
            event = {
                "error": {
                    "message": f"the model server failed mid-stream: {self.error}",
                    "type": "server_error",
                    "code": "upstream_stream_error",
                    "param": None,
                }
            }
            yield b"data: " + json.dumps(event).encode() + b"\n\n"
        finally:
            self.close()

    def close(self) -> None:
        """Release or close the upstream connection and record usage, exactly once."""
        if self.finished:
            return
        self.finished = True
        self.proxy.routing.inflight[self.candidate.id] -= 1
        if not self.completed:
            # The client left or the backend broke: close so the backend stops generating.
            self.response.close()
        error = self.error
        if not self.completed and error is None:
            error = "client disconnected"
        status = 502 if self.error else 200
        self.proxy.record(self.state, self.candidate.id, status, self.usage, self.ttft, error)
