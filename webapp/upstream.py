"""The only code that talks to backends: a small HTTP/1.1 client with keep-alive pools.

Why not ``requests`` or urllib3: measured on this machine, http.client's header
parsing (the email package) and urllib3's layers cost ~150 µs per request before any
byte moves, a large share of the gateway's whole budget. Backends speak plain
HTTP/1.1 JSON and SSE, so a client that writes a request in one ``sendall`` and
parses the answer with ``bytes.find`` is enough, and it hands streamed chunks on the
moment they are complete, several at once when they arrived together.

Every new connection checks the address it actually reached against the network
policy, so a host name that now resolves somewhere forbidden (DNS rebinding) gets
nowhere. Connections are kept per origin and reused; a reused connection that the
backend had closed while idle is retried once on a fresh one, before any byte of an
answer was seen, which is safe because the backend never read that request.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
from collections.abc import Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from webapp.services.netpolicy import Network, check_address

MAX_HEAD = 64 * 1024
RECV_SIZE = 65536


class UpstreamError(Exception):
    """A request to a backend failed; ``str()`` is a short reason without secrets."""


class ConnectRefused(UpstreamError):
    """Nothing listens there (connection refused)."""


class ConnectFailed(UpstreamError):
    """Could not connect for another reason (unreachable, unresolvable...)."""


class ConnectTimeout(UpstreamError):
    """The TCP (or TLS) connect took longer than the connect timeout."""


class ReadTimeout(UpstreamError):
    """No byte arrived within the read timeout."""


class ProtocolFailure(UpstreamError):
    """The backend closed the connection early or answered something that is not HTTP."""


class _Stale(Exception):
    """A reused connection was closed by the backend before it answered."""


class Connection:
    """One socket to one origin, with what has been read but not consumed yet."""

    __slots__ = ("sock", "buffer", "reused")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.reused = False

    def fill(self) -> None:
        """Read more bytes into the buffer; EOF is an error (the answer is incomplete)."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except TimeoutError:
            raise ReadTimeout("timed out") from None
        except OSError as exc:
            raise ProtocolFailure("the server closed the connection") from exc
        if not data:
            raise ProtocolFailure("the server closed the connection")
        self.buffer += data

    def close(self) -> None:
        """Close the socket; a socket already broken needs no more."""
        with contextlib.suppress(OSError):
            self.sock.close()


class Response:
    """A backend's answer: status and headers read, body read on demand."""

    def __init__(self, pool: Upstream, key: tuple, conn: Connection, status: int, headers) -> None:
        self._pool = pool
        self._key = key
        self._conn: Connection | None = conn
        self.status = status
        self.headers: list[tuple[str, str]] = headers
        self.lower = {name.lower(): value for name, value in headers}
        encoding = self.lower.get("transfer-encoding", "").lower()
        self.chunked = "chunked" in encoding
        length = self.lower.get("content-length")
        self.length = int(length) if length and length.isdigit() and not self.chunked else None
        self.keep_alive = self.lower.get("connection", "").lower() != "close"
        self.complete = False

    def header(self, name: str) -> str | None:
        """One response header by (case-insensitive) name."""
        return self.lower.get(name.lower())

    def read(self, limit: int | None = None) -> bytes:
        """The whole body (at most ``limit`` + 1 bytes, so callers can tell it was bigger)."""
        parts = []
        size = 0
        for part in self.iter_body():
            parts.append(part)
            size += len(part)
            if limit is not None and size > limit:
                self.close()
                break
        return b"".join(parts)

    def iter_body(self) -> Iterator[bytes]:
        """Body bytes as they arrive: every complete chunk available is handed on at once."""
        conn = self._conn
        if conn is None:
            return
        if self.status in (204, 304) or 100 <= self.status < 200:
            self._finish()
            return
        if self.chunked:
            yield from self._chunked(conn)
        elif self.length is not None:
            remaining = self.length
            while remaining > 0:
                if not conn.buffer:
                    conn.fill()
                piece = conn.buffer[:remaining]
                conn.buffer = conn.buffer[len(piece) :]
                remaining -= len(piece)
                yield piece
        else:
            self.keep_alive = False
            while True:
                if conn.buffer:
                    yield conn.buffer
                    conn.buffer = b""
                try:
                    conn.fill()
                except ProtocolFailure:
                    break
        self._finish()

    def _chunked(self, conn: Connection) -> Iterator[bytes]:
        while True:
            buffer = conn.buffer
            position = 0
            parts = []
            finished = False
            while True:
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    break
                try:
                    size = int(buffer[position:line_end].split(b";", 1)[0], 16)
                except ValueError:
                    raise ProtocolFailure("invalid chunked encoding") from None
                if size == 0:
                    trailer_end = buffer.find(b"\r\n\r\n", line_end)
                    if buffer[line_end : line_end + 4] == b"\r\n\r\n":
                        trailer_end = line_end
                    if trailer_end < 0:
                        break
                    position = trailer_end + 4
                    finished = True
                    break
                data_end = line_end + 2 + size
                if len(buffer) < data_end + 2:
                    break
                parts.append(buffer[line_end + 2 : data_end])
                position = data_end + 2
            conn.buffer = buffer[position:]
            if parts:
                yield parts[0] if len(parts) == 1 else b"".join(parts)
            if finished:
                return
            conn.fill()

    def _finish(self) -> None:
        self.complete = True
        self.release()

    def release(self) -> None:
        """Give the connection back for reuse if the body was read whole, else close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self.complete and self.keep_alive and not conn.buffer:
            conn.reused = True
            self._pool._put(self._key, conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection (the backend sees it close and can stop generating)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Upstream:
    """Keep-alive connections to backends, per origin, created on first use.

    ``pool_size`` caps idle connections kept per origin; it should match the requests
    a worker serves at once (``WORKER_CONNECTIONS``) so bursts reuse rather than churn.
    """

    def __init__(
        self,
        allowed_networks: Sequence[Network] = (),
        pool_size: int = 100,
        connect_timeout: float = 5.0,
    ) -> None:
        self.allowed_networks = tuple(allowed_networks)
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple, list[Connection]] = {}
        self._origins: dict[str, tuple] = {}
        self._tls = ssl.create_default_context()

    def _origin(self, base_url: str) -> tuple:
        origin = self._origins.get(base_url)
        if origin is None:
            parts = urlsplit(base_url)
            tls = parts.scheme == "https"
            port = parts.port or (443 if tls else 80)
            host = parts.hostname or ""
            default = (tls and port == 443) or (not tls and port == 80)
            shown = f"[{host}]" if ":" in host else host
            host_header = shown if default else f"{shown}:{port}"
            origin = (tls, host, port, host_header, parts.path.rstrip("/"))
            self._origins[base_url] = origin
        return origin

    def _put(self, key: tuple, conn: Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < self.pool_size:
            idle.append(conn)
        else:
            conn.close()

    @staticmethod
    def _open(host: str, port: int, timeout: float) -> socket.socket:
        """A connected TCP socket. An address literal skips the resolver: under gevent every
        lookup is a trip through a small thread pool, which a burst of a thousand new
        streams turns into a queue of seconds."""
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        except ValueError:
            return socket.create_connection((host, port), timeout=timeout)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect(self, tls: bool, host: str, port: int, timeout: float) -> Connection:
        try:
            sock = self._open(host, port, timeout)
        except TimeoutError:
            raise ConnectTimeout("connect timed out") from None
        except ConnectionRefusedError:
            raise ConnectRefused("connection refused") from None
        except socket.gaierror:
            raise ConnectFailed("cannot resolve the server's host name") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect ({type(exc).__name__})") from None
        try:
            check_address(sock.getpeername()[0], self.allowed_networks)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls:
                sock = self._tls.wrap_socket(sock, server_hostname=host)
        except TimeoutError:
            sock.close()
            raise ConnectTimeout("TLS handshake timed out") from None
        except ssl.SSLError as exc:
            sock.close()
            raise ConnectFailed(f"TLS handshake failed ({exc.reason})") from None
        except BaseException:
            sock.close()
            raise
        return Connection(sock)

    def request(
        self,
        method: str,
        base_url: str,
        path: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        read_timeout: float,
        connect_timeout: float | None = None,
    ) -> Response:
        """Send one request and read the answer's head; the body is read from the Response.

        No redirects are followed and nothing is retried except a stale keep-alive
        connection; the caller decides about trying another server.
        """
        tls, host, port, host_header, prefix = origin = self._origin(base_url)
        lines = [f"{method} {prefix}{path} HTTP/1.1", f"Host: {host_header}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        idle = self._idle.get(origin)
        while True:
            if idle:
                conn = idle.pop()
            else:
                timeout = self.connect_timeout if connect_timeout is None else connect_timeout
                conn = self._connect(tls, host, port, timeout)
            conn.sock.settimeout(read_timeout)
            try:
                status, response_headers = self._exchange(conn, payload)
            except _Stale:
                conn.close()
                continue
            except BaseException:
                conn.close()
                raise
            return Response(self, origin, conn, status, response_headers)

    @staticmethod
    def _exchange(conn: Connection, payload: bytes) -> tuple[int, list[tuple[str, str]]]:
        try:
            conn.sock.sendall(payload)
        except TimeoutError:
            raise ReadTimeout("timed out sending the request") from None
        except OSError as exc:
            if conn.reused:
                raise _Stale() from exc
            raise ProtocolFailure("the server closed the connection") from exc
        while True:
            end = conn.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(conn.buffer) > MAX_HEAD:
                raise ProtocolFailure("response headers too large")
            try:
                conn.fill()
            except ProtocolFailure:
                if conn.reused and not conn.buffer:
                    raise _Stale() from None
                raise
        head = conn.buffer[:end].decode("latin-1")
        conn.buffer = conn.buffer[end + 4 :]
        status_line, *header_lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolFailure("the answer is not HTTP/1.x")
        headers = []
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers.append((name.strip(), value.strip()))
        status = int(parts[1])
        if status == 100:
            return Upstream._exchange_continue(conn, headers)
        return status, headers

    @staticmethod
    def _exchange_continue(conn: Connection, _headers) -> tuple[int, list[tuple[str, str]]]:
        """Skip a ``100 Continue`` and read the real answer's head."""
        conn.reused = False
        return Upstream._exchange(conn, b"")

    def close(self) -> None:
        """Close every idle connection (shutdown, tests)."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
