"""The upstream HTTP client against small real servers that behave like awkward backends."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable

import pytest

from webapp.services.netpolicy import AddressRefused
from webapp.upstream import ConnectRefused, ProtocolFailure, ReadTimeout, Upstream

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


class RawServer:
    """A loopback server whose per-connection behaviour is a plain function of the socket."""

    def __init__(self, handle: Callable[[socket.socket, int], None]) -> None:
        self.handle = handle
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.handle, args=(conn, self.connections), daemon=True).start()

    def read_request(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += conn.recv(65536)
        self.requests.append(head + b"\r\n\r\n" + body)
        return head

    def close(self) -> None:
        # shutdown() wakes the accept() blocked in the other thread; close() alone would not.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


@pytest.fixture
def upstream():
    client = Upstream(LOOPBACK, pool_size=10, connect_timeout=2)
    yield client
    client.close()


def call(upstream: Upstream, server: RawServer, body: bytes | None = b"{}", timeout: float = 5):
    return upstream.request(
        "POST",
        server.url,
        "/v1/x",
        headers={"Content-Type": "application/json"},
        body=body,
        read_timeout=timeout,
    )


def test_keep_alive_reuses_and_survives_an_idle_close(upstream):
    def handle(conn: socket.socket, number: int) -> None:
        # The first connection serves two requests, then the server closes it while idle
        # (as uvicorn does after its keep-alive timeout).
        for _ in range(2 if number == 1 else 100):
            if not server.read_request(conn):
                break
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.close()

    server = RawServer(handle)
    bodies = []
    for _ in range(3):
        response = call(upstream, server)
        bodies.append(response.read())
    assert bodies == [b"ok"] * 3
    assert server.connections == 2  # reused once, then one fresh connection after the idle close
    assert len(server.requests) == 3  # the stale attempt was never read as a request
    server.close()


def test_chunked_events_are_handed_on_together_and_split_heads(upstream):
    first_read = threading.Event()

    def handle(conn: socket.socket, _number: int) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-")
        conn.sendall(b"Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n")
        conn.sendall(b"6\r\ndata:1\r\n6\r\ndata:2\r\n")  # two chunks in one packet
        first_read.wait(5)
        conn.sendall(b"6\r\nda")  # a chunk split across packets
        conn.sendall(b"ta:3\r\n0\r\n\r\n")
        server.read_request(conn)

    server = RawServer(handle)
    response = call(upstream, server)
    assert response.status == 200 and response.chunked
    assert response.header("content-type") == "text/event-stream"
    body = response.iter_body()
    assert next(body) == b"data:1data:2"  # both complete chunks at once, before the rest exists
    first_read.set()
    assert b"".join(body) == b"data:3"
    server.close()


def test_close_delimited_body_and_connection_close(upstream):
    def handle(conn: socket.socket, _number: int) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of")
        conn.sendall(b" it")
        conn.close()

    server = RawServer(handle)
    assert call(upstream, server).read() == b"all of it"
    assert call(upstream, server).read() == b"all of it"
    assert server.connections == 2  # not reused
    server.close()


def test_premature_end_is_a_protocol_failure(upstream):
    def handle(conn: socket.socket, _number: int) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        conn.close()

    server = RawServer(handle)
    response = call(upstream, server)
    with pytest.raises(ProtocolFailure):
        response.read()
    server.close()


def test_read_timeout_and_refused(upstream):
    hold = threading.Event()

    def handle(conn: socket.socket, _number: int) -> None:
        server.read_request(conn)
        hold.wait(10)
        conn.close()

    server = RawServer(handle)
    with pytest.raises(ReadTimeout):
        call(upstream, server, timeout=0.3)
    hold.set()
    server.close()
    with pytest.raises(ConnectRefused):
        call(upstream, server)


def test_connected_address_is_checked_at_connect_time():
    """DNS rebinding: whatever a name resolved to at registration, the socket's peer is checked."""

    def handle(conn: socket.socket, _number: int) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = RawServer(handle)
    strict = Upstream(allowed_networks=(), connect_timeout=2)
    with pytest.raises(AddressRefused):
        strict.request("GET", f"http://localhost:{server.port}", "/", headers={}, read_timeout=2)
    assert server.requests == []
    server.close()


def test_request_is_one_well_formed_message(upstream):
    def handle(conn: socket.socket, _number: int) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    server = RawServer(handle)
    response = upstream.request(
        "POST",
        server.url + "/prefix",
        "/v1/chat",
        headers={"Authorization": "Bearer k"},
        body=b'{"a":1}',
        read_timeout=5,
    )
    assert response.status == 204 and response.read() == b""
    sent = server.requests[0]
    assert sent.startswith(b"POST /prefix/v1/chat HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in sent
    assert b"Content-Length: 7\r\n" in sent and sent.endswith(b'{"a":1}')
    server.close()
