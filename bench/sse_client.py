"""A cheap HTTP/1.1 + server-sent-events client for the proxy benchmark.

Why raw sockets: the benchmark compares the gateway with a direct connection on a
2-core machine that also runs the gateway and the backend, so every microsecond the
client spends per chunk is stolen from the thing being measured. ``requests`` or
``httpx`` cost far more per chunk than the gateway's own forwarding; this parser
does a few ``bytes.find`` calls per ``recv`` and never decodes JSON.

Two uses:

* ``stream_once`` (blocking socket, imported by ``proxy_bench.py``): one timed
  streaming request on a keep-alive connection, returning every SSE event's arrival
  time, for time-to-first-token and inter-chunk gaps.
* Run as a script: many concurrent streams from one process on gevent sockets,
  opened with a bounded ramp, reporting one JSON line (completed, errors by kind,
  wall time, gaps)::

      python bench/sse_client.py --port 8000 --model demo-model --streams 1000 \\
          --tokens 200 --deadline 90

  gevent is imported only there (explicit ``gevent.socket``, which is what
  monkey-patching would have substituted), so importing this module from the
  orchestrator never patches it.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

RECV_SIZE = 16384
MAX_HEAD = 65536


class ProtocolError(Exception):
    """The server broke HTTP framing; the message says how."""


def build_request(
    host: str,
    port: int,
    path: str,
    body: dict[str, Any],
    *,
    keep_alive: bool,
    api_key: str | None = None,
) -> bytes:
    """Serialise one POST once, so the hot loop only calls ``sendall``."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        f"Content-Length: {len(payload)}",
    ]
    if api_key:
        lines.append(f"Authorization: Bearer {api_key}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def chat_body(model: str, *, stream: bool, max_tokens: int | None = None) -> dict[str, Any]:
    """A small chat request: the benchmark measures the proxy, not prompt size."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in a few words."}],
    }
    if stream:
        body["stream"] = True
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


class ResponseParser:
    """Incremental HTTP/1.1 response parser: status, headers, then the body bytes.

    Handles ``Transfer-Encoding: chunked``, ``Content-Length`` and close-delimited
    bodies, because a proxy may legitimately re-frame what the backend sent.
    """

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.complete = False
        self.chunked = False
        self.length: int | None = None
        self.keep_alive = True
        self._buf = b""
        self._remaining = 0  # bytes left in the current chunk (or the length body)
        self._need_crlf = False

    def feed(self, data: bytes) -> bytes:
        """Consume raw bytes, return the body bytes they carried (possibly empty)."""
        if not self.head_done:
            self._buf += data
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    raise ProtocolError("response head larger than 64 KiB")
                return b""
            head, data = self._buf[:end], self._buf[end + 4 :]
            self._buf = b""
            self._parse_head(head)
            if self.complete:
                return b""
        if self.chunked:
            return self._dechunk(data)
        if self.length is not None:
            take = data[: self._remaining]
            self._remaining -= len(take)
            if self._remaining == 0:
                self.complete = True
            return take
        return data  # close-delimited: everything until EOF is body

    def eof(self) -> None:
        """The peer closed: fine for a close-delimited body, a truncation otherwise."""
        if self.complete:
            return
        if self.head_done and not self.chunked and self.length is None:
            self.complete = True
            return
        raise ProtocolError("connection closed before the response was complete")

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        self.status = int(parts[1])
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        self.head_done = True
        connection = self.headers.get("connection", "").lower()
        self.keep_alive = "close" not in connection and parts[0] == b"HTTP/1.1"
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self.chunked = True
        elif "content-length" in self.headers:
            self.length = int(self.headers["content-length"])
            self._remaining = self.length
            if self.length == 0:
                self.complete = True
        else:
            self.keep_alive = False
        if self.status in (204, 304):
            self.complete = True

    def _dechunk(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos, n = 0, len(buf)
        while pos < n and not self.complete:
            if self._remaining:
                take = min(self._remaining, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._need_crlf = True
                continue
            if self._need_crlf:
                if n - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                pos += 2
                self._need_crlf = False
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if n - pos > 1024:
                    raise ProtocolError("chunk size line too long")
                break
            try:
                size = int(buf[pos:eol].split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {buf[pos:eol][:40]!r}") from None
            pos = eol + 2
            if size == 0:
                # Trailers are not used by SSE; the terminator is what matters.
                self.complete = True
                break
            self._remaining = size
        self._buf = buf[pos:]
        return b"".join(out)


@dataclass
class StreamResult:
    """One stream as the client saw it; times are ``time.perf_counter()`` seconds."""

    status: int = 0
    sent_at: float = 0.0
    event_times: list[float] = field(default_factory=list)
    done: bool = False
    error_event: bool = False
    error: str | None = None
    body_head: bytes = b""


def _split_events(pending: bytes) -> tuple[list[bytes], bytes]:
    """Complete SSE events (blank-line separated) and the unfinished rest."""
    if b"\r\n" in pending:
        pending = pending.replace(b"\r\n", b"\n")
    cut = pending.rfind(b"\n\n")
    if cut < 0:
        return [], pending
    return pending[:cut].split(b"\n\n"), pending[cut + 2 :]


def stream_once(
    sock: socket.socket, request: bytes, timeout: float = 30.0
) -> tuple[StreamResult, bool]:
    """Send one streaming request on ``sock`` and time every ``data:`` event.

    Returns the result and whether the connection may be reused. Blocking I/O on
    purpose: the TTFT test is sequential, so the simplest loop is the cheapest.
    """
    result = StreamResult()
    parser = ResponseParser()
    pending = b""
    sock.settimeout(timeout)
    result.sent_at = time.perf_counter()
    sock.sendall(request)
    try:
        while not parser.complete:
            data = sock.recv(RECV_SIZE)
            now = time.perf_counter()
            if not data:
                parser.eof()
                break
            body = parser.feed(data)
            if not body:
                continue
            if parser.status != 200:
                result.body_head += body[: 300 - len(result.body_head)]
                continue
            events, pending = _split_events(pending + body)
            for event in events:
                if not event.startswith(b"data:"):
                    continue
                result.event_times.append(now)
                if event.startswith(b"data: [DONE]"):
                    result.done = True
                elif b'"error":' in event:
                    result.error_event = True
    except (OSError, ProtocolError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.status = parser.status
        return result, False
    result.status = parser.status
    return result, parser.keep_alive and parser.complete


# -- concurrent streams (script mode, gevent) ----------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no data (the caller prints n/a)."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(p / 100.0 * len(ordered)) - 1))
    return ordered[index]


def run_concurrent(args: argparse.Namespace) -> dict[str, Any]:
    """Open ``args.streams`` streams with a bounded ramp and follow them all to the end.

    Per stream the work is: one connect, one ``sendall``, then per ``recv`` a
    de-chunk and three ``bytes.count``/``in`` scans. Wall time runs from the first
    request sent to the last ``[DONE]`` received; ``time.monotonic`` is system-wide
    on Linux, so the orchestrator can merge several client processes.
    """
    import gevent
    from gevent import socket as gsocket

    request = build_request(
        args.host,
        args.port,
        "/v1/chat/completions",
        chat_body(args.model, stream=True),
        keep_alive=False,
        api_key=args.api_key,
    )
    expected_events = args.tokens + 3  # role chunk, tokens, finish chunk, [DONE]
    errors: dict[str, int] = {}
    samples: list[str] = []
    first_sent: list[float] = []
    finished: list[float] = []
    ttfb: list[float] = []
    durations: list[float] = []
    max_gaps: list[float] = []
    completed = 0
    events_total = 0

    def fail(kind: str, detail: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1
        if len(samples) < 10:
            samples.append(f"{kind}: {detail}"[:300])

    def one_stream() -> None:
        nonlocal completed, events_total
        events = 0
        done = False
        error_event = False
        parser = ResponseParser()
        pending = b""
        last = 0.0
        max_gap = 0.0
        body_head = b""
        start = 0.0
        try:
            sock = gsocket.create_connection((args.host, args.port), timeout=args.connect_timeout)
        except OSError as exc:
            fail("connect", f"{type(exc).__name__}: {exc}")
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(args.read_timeout)
            start = time.monotonic()
            if not first_sent:
                first_sent.append(start)
            sock.sendall(request)
            while not parser.complete:
                data = sock.recv(RECV_SIZE)
                if not data:
                    parser.eof()
                    break
                now = time.monotonic()
                body = parser.feed(data)
                if not body:
                    continue
                if parser.status != 200:
                    body_head += body[: 200 - len(body_head)]
                    continue
                pending += body
                cut = pending.rfind(b"\n\n")
                if cut < 0:
                    continue
                complete, pending = pending[:cut], pending[cut + 2 :]
                n = complete.count(b"data:")
                if n:
                    if events == 0:
                        ttfb.append(now - start)
                    elif now - last > max_gap:
                        max_gap = now - last
                    last = now
                    events += n
                    if b'"error":' in complete:
                        error_event = True
                    if b"data: [DONE]" in complete and not done:
                        done = True
                        finished.append(now)
                        durations.append(now - start)
        except (OSError, ProtocolError) as exc:
            if done:
                # [DONE] arrived but the HTTP body never ended cleanly: a keep-alive
                # client (httpx, the openai SDK) would hang or break here.
                kind = "body_not_terminated"
            else:
                kind = "read" if parser.head_done else "no_response"
            fail(kind, f"{type(exc).__name__}: {exc}")
            return
        finally:
            sock.close()
            events_total += events
            if max_gap:
                max_gaps.append(max_gap)
        if parser.status != 200:
            fail(f"status_{parser.status}", body_head.decode("utf-8", "replace"))
        elif error_event:
            fail("error_event", "a data: event carried an error object")
        elif not done:
            fail("no_done", f"stream ended after {events} events without [DONE]")
        elif events != expected_events:
            fail("event_count", f"{events} data: events, expected {expected_events}")
        else:
            completed += 1

    started = time.monotonic()
    deadline = started + args.deadline
    greenlets = []
    timed_out = False
    try:
        for i in range(0, args.streams, args.ramp_batch):
            if time.monotonic() > deadline:
                break
            for _ in range(min(args.ramp_batch, args.streams - i)):
                greenlets.append(gevent.spawn(one_stream))
            gevent.sleep(args.ramp_interval)
        remaining = max(0.0, deadline - time.monotonic())
        gevent.joinall(greenlets, timeout=remaining)
    finally:
        alive = [g for g in greenlets if not g.dead]
        if alive:
            timed_out = True
            gevent.killall(alive, block=True, timeout=10)
            for _ in alive:
                fail("timeout", f"stream still open at the {args.deadline:.0f} s deadline")
    not_started = args.streams - len(greenlets)
    if not_started:
        errors["not_started"] = not_started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "streams": args.streams,
        "completed": completed,
        "errors": errors,
        "error_samples": samples,
        "timed_out": timed_out,
        "events_total": events_total,
        "first_sent": first_sent[0] if first_sent else None,
        "last_finished": max(finished) if finished else None,
        "ttfb_p50_ms": _ms(percentile(ttfb, 50)),
        "ttfb_p99_ms": _ms(percentile(ttfb, 99)),
        "ttfb_max_ms": _ms(max(ttfb)) if ttfb else None,
        "ttfb_over_1s": sum(1 for t in ttfb if t > 1.0),
        "duration_p50_s": percentile(durations, 50),
        "duration_max_s": max(durations) if durations else None,
        "max_gap_p99_ms": _ms(percentile(max_gaps, 99)),
        "max_gap_ms": _ms(max(max_gaps)) if max_gaps else None,
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
        "client_max_rss_kb": usage.ru_maxrss,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--tokens", type=int, required=True, help="tokens per stream (to check)")
    parser.add_argument("--deadline", type=float, required=True, help="seconds for everything")
    parser.add_argument("--ramp-batch", type=int, default=500, help="connections per ramp step")
    parser.add_argument("--ramp-interval", type=float, default=0.1, help="seconds per ramp step")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--read-timeout", type=float, default=60.0, help="longest silent gap")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)
    if args.streams < 1 or args.ramp_batch < 1 or args.deadline <= 0:
        parser.error("--streams, --ramp-batch and --deadline must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Script mode: run the streams, print one ``SSE_CLIENT {json}`` line."""
    report = run_concurrent(parse_args(argv))
    sys.stdout.write("SSE_CLIENT " + json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
