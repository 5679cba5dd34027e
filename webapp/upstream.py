"""The only code that talks to backends: pooled connections with an address check.

urllib3's pools are used directly rather than through ``requests``: on the request
path every microsecond of per-request Python counts, and ``requests`` adds a layer
of session, adapter and hook machinery that buys nothing here. Each backend origin
gets one pool sized to the worker's concurrency, so connections are reused instead
of being discarded under load ("Connection pool is full").

Every new connection checks the address it actually connected to against the
network policy, so a hostname that resolved to a public address at registration
and to 127.0.0.1 now (DNS rebinding) still cannot reach a forbidden address.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from webapp.services.netpolicy import AddressRefused, Network, check_address


class _PeerCheck:
    """Mixin: refuse a freshly opened socket whose peer address the policy forbids."""

    def __init__(self, *args, allowed_networks: Sequence[Network] = (), **kwargs) -> None:
        self.allowed_networks = allowed_networks
        super().__init__(*args, **kwargs)

    def _new_conn(self):  # type: ignore[override]
        sock = super()._new_conn()  # type: ignore[misc]
        try:
            check_address(sock.getpeername()[0], self.allowed_networks)
        except AddressRefused:
            sock.close()
            raise
        return sock


class CheckedHTTPConnection(_PeerCheck, HTTPConnection):
    """Plain HTTP connection with the peer-address check."""


class CheckedHTTPSConnection(_PeerCheck, HTTPSConnection):
    """TLS connection with the peer-address check, made before the handshake."""


class CheckedHTTPPool(HTTPConnectionPool):
    """Pool of plain HTTP connections that check their peer address."""

    ConnectionCls = CheckedHTTPConnection


class CheckedHTTPSPool(HTTPSConnectionPool):
    """Pool of TLS connections that check their peer address."""

    ConnectionCls = CheckedHTTPSConnection


class Upstream:
    """Connection pools to backends, one per origin, created on first use.

    ``pool_size`` should match the number of requests a worker serves at once
    (``WORKER_CONNECTIONS``); ``block=False`` lets a burst beyond it open extra
    connections instead of queueing behind the pool.
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
        self._pools: dict[tuple[str, str, int], HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def pool_for(self, base_url: str) -> HTTPConnectionPool:
        """The pool for a backend base URL such as ``http://10.0.0.5:8000``."""
        parts = urlsplit(base_url)
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, parts.hostname or "", port)
        pool = self._pools.get(key)
        if pool is None:
            with self._lock:
                pool = self._pools.get(key)
                if pool is None:
                    pool = self._new_pool(*key)
                    self._pools[key] = pool
        return pool

    def _new_pool(self, scheme: str, host: str, port: int) -> HTTPConnectionPool:
        pool_cls = CheckedHTTPSPool if scheme == "https" else CheckedHTTPPool
        return pool_cls(
            host,
            port,
            maxsize=self.pool_size,
            block=False,
            retries=False,
            allowed_networks=self.allowed_networks,
        )

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
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """Send one request without redirects or retries; the caller decides about retrying.

        With ``stream=True`` the body is left unread for the caller to pass through,
        and the caller must ``release_conn()`` or ``close()`` the response.
        """
        prefix = urlsplit(base_url).path.rstrip("/")
        timeout = urllib3.Timeout(
            connect=self.connect_timeout if connect_timeout is None else connect_timeout,
            read=read_timeout,
        )
        return self.pool_for(base_url).urlopen(
            method,
            prefix + path,
            body=body,
            headers=dict(headers),
            redirect=False,
            retries=False,
            timeout=timeout,
            preload_content=not stream,
            decode_content=False,
            assert_same_host=False,
        )

    def close(self) -> None:
        """Close every pooled connection (app shutdown, tests)."""
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()
