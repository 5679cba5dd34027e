"""Real upstreams for tests: the demo backend as a subprocess, and a silent listener.

Tests of the gateway need a backend that speaks real HTTP on a real socket (so
connection handling, streaming and timeouts are exercised for real), that can
misbehave on demand and that reports what it saw. ``DemoBackend`` runs
``python -m webapp.demo_backend`` for that and wraps its ``/_demo/*`` test hooks;
``BlackHole`` accepts connections and never answers, for timeout tests.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
LISTENING_PREFIX = "demo backend listening on "


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (someone else may take it; fine for tests)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _url(host: str, port: int) -> str:
    # A wildcard bind is reached through loopback; IPv6 literals need brackets.
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        return f"http://[{host}]:{port}"
    return f"http://{host}:{port}"


class DemoBackend:
    """``webapp.demo_backend`` in a subprocess on a loopback port.

    Not started by the constructor: call ``start()`` (or use ``with``), so a
    fixture can build it, start it and always stop it.
    """

    def __init__(
        self,
        model: str | Iterable[str] = "demo-model",
        tokens: int = 16,
        token_delay_ms: float = 0,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.models = [model] if isinstance(model, str) else list(model)
        self.tokens = tokens
        self.token_delay_ms = token_delay_ms
        self.api_key = api_key
        self.host = host
        self.port = port
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    # -- lifecycle --------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``), the endpoint URL tests register."""
        return _url(self.host, self.port)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, port: int) -> list[str]:
        """The command line; public so a failing test can print how to reproduce."""
        cmd = [sys.executable, "-m", "webapp.demo_backend", "--host", self.host]
        cmd += ["--port", str(port), "--tokens", str(self.tokens)]
        cmd += ["--token-delay-ms", str(self.token_delay_ms)]
        for name in self.models:
            cmd += ["--model", name]
        if self.api_key is not None:
            cmd += ["--api-key", self.api_key]
        return cmd + self.extra_args

    def start(self, timeout: float = 15.0) -> DemoBackend:
        """Start (no-op if running) and wait for the "listening" line."""
        if self.running:
            return self
        self._spawn(self.port, timeout)
        return self

    def restart(self, timeout: float = 15.0) -> DemoBackend:
        """Start again on the SAME port, e.g. after ``kill()``, to test recovery.

        The server sets SO_REUSEADDR, so TIME_WAIT is not an obstacle; still, the old
        process may release the port a moment late, so binding is retried briefly.
        """
        if self.running:
            self.stop()
        if not self.port:
            raise RuntimeError("restart() needs a backend that was started before")
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._spawn(self.port, max(deadline - time.monotonic(), 0.5))
                return self
            except _BindError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _spawn(self, port: int, timeout: float) -> None:
        self._close_stderr()
        # A file, not a pipe: nobody reads stderr while the server runs, and a full
        # pipe would block the server mid-test.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            self.command(port),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        try:
            line = self._read_line(timeout)
        except Exception:
            self.kill()
            raise
        self.port = int(line.rsplit(":", 1)[1])

    def _read_line(self, timeout: float) -> str:
        """Read the one "listening" line without blocking past the deadline."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        data = b""
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"demo backend did not start in {timeout}s{self._tail()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                self.proc.wait(timeout=5)
                err = self._tail()
                if "in use" in err:
                    raise _BindError(f"demo backend could not bind port {self.port}{err}")
                raise RuntimeError(
                    f"demo backend exited with {self.proc.returncode} before listening{err}"
                )
            data += chunk
        line = data.split(b"\n", 1)[0].decode().strip()
        if not line.startswith(LISTENING_PREFIX):
            raise RuntimeError(f"unexpected first line from demo backend: {line!r}{self._tail()}")
        return line

    def _tail(self) -> str:
        """The end of the server's stderr, for error messages."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")[-4000:]
        return f"; stderr:\n{text}" if text else ""

    def stderr(self) -> str:
        """Everything the server wrote to stderr so far (tracebacks, warnings)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait, SIGKILL if it lingers. Keeps ``port`` for ``restart()``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL: simulate a crash (no clean shutdown of open connections)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> DemoBackend:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._close_stderr()

    # -- test hooks ---------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        # http.client, not requests: ignores proxy variables and shares no pool
        # with the code under test.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = "::1" if host == "::" else host
        conn = http.client.HTTPConnection(host, self.port, timeout=10)
        try:
            payload = None if body is None else json.dumps(body)
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"{method} {path} -> {response.status}: {data[:500]!r}")
        return json.loads(data)

    def stats(self) -> dict[str, Any]:
        """``GET /_demo/stats``: counters and ``last_request`` (see the server docs)."""
        return self._call("GET", "/_demo/stats")

    def reset_stats(self) -> None:
        """Zero the counters and forget ``last_request``."""
        self._call("DELETE", "/_demo/stats")

    def control(self, **settings: Any) -> None:
        """Replace the misbehaviour settings; ``control()`` resets to normal."""
        self._call("POST", "/_demo/control", settings)

    def wait_stats(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """Poll stats until ``predicate`` holds (things settle asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() >= deadline:
                raise AssertionError(f"stats condition not met within {timeout}s: {stats}")
            time.sleep(0.02)


class _BindError(RuntimeError):
    """The port was still taken; ``restart()`` retries on this one only."""


class BlackHole:
    """A loopback listener that accepts connections and never says a word.

    Connections are kept open until ``close()``, so clients hang until their own
    read timeout: the way to test probe and request timeouts.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.bind((host, 0))
        self._listener.listen(128)
        # Polling with a timeout keeps close() simple: closing a socket does not
        # reliably wake a thread blocked in accept().
        self._listener.settimeout(0.05)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self.url = _url(host, self.port)
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="blackhole", daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        """How many connections were accepted so far."""
        with self._lock:
            return len(self._connections)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._connections.append(conn)

    def close(self) -> None:
        """Stop accepting and drop every held connection."""
        self._closed.set()
        self._thread.join(timeout=2)
        self._listener.close()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
