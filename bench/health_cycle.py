"""Time one health cycle over many servers, half of them black holes.

Starts a gateway (``python wsgi.py``) on loopback, registers N servers served by this
script (tiny OpenAI model lists on N loopback ports), then turns half of them into
black holes — they keep accepting connections and never answer — and reports how
long the next full cycle takes. Probes run concurrently, so the cycle should last
about one probe timeout, not (N/2) x timeout.

    .venv/bin/python bench/health_cycle.py --servers 200 --timeout 10
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN_KEY = "bench-admin-key-0123456789"


class FakeServer:
    """Answers GET /v1/models until it is told to become a black hole."""

    def __init__(self, model: str) -> None:
        self.black_hole = False
        body = json.dumps({"object": "list", "data": [{"id": model, "object": "model"}]}).encode()
        self.answer = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self.server = StreamServer(("127.0.0.1", 0), self.handle, backlog=256)
        self.server.start()
        self.port = self.server.address[1]

    def handle(self, sock: socket.socket, _address) -> None:
        buffer = b""
        while True:
            data = sock.recv(65536)
            if not data:
                return
            buffer += data
            while b"\r\n\r\n" in buffer:
                _, buffer = buffer.split(b"\r\n\r\n", 1)
                if self.black_hole:
                    gevent.sleep(3600)  # hold the connection, never answer
                    return
                sock.sendall(self.answer)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args()

    fakes = [FakeServer(f"bench-model-{i % 10}") for i in range(args.servers)]
    port = free_port()
    instance = tempfile.mkdtemp(prefix="bench-health-")
    env = {
        **os.environ,
        "INSTANCE_PATH": instance,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "ADMIN_API_KEY": ADMIN_KEY,
        "ALLOWED_BACKEND_NETWORKS": "127.0.0.0/8",
        "HEALTH_CHECK_INTERVAL_SECONDS": str(args.interval),
        "HEALTH_CHECK_TIMEOUT_SECONDS": str(args.timeout),
        "MAX_CONSECUTIVE_FAILURES": "100",
        "LOG_LEVEL": "WARNING",
    }
    gateway = subprocess.Popen([sys.executable, os.path.join(ROOT, "wsgi.py")], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(base + "/health", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        session = requests.Session()
        session.headers["X-API-Key"] = ADMIN_KEY
        started = time.monotonic()
        for i, fake in enumerate(fakes):
            response = session.post(
                base + "/admin/register",
                json={
                    "model_name": f"bench-model-{i % 10}",
                    "endpoint_url": f"http://127.0.0.1:{fake.port}",
                },
                timeout=30,
            )
            response.raise_for_status()
        print(f"registered {len(fakes)} servers in {time.monotonic() - started:.1f} s")
        for fake in fakes[::2]:
            fake.black_hole = True
        flipped = time.time()
        print(f"{len(fakes[::2])} of them are now black holes; waiting for a full cycle...")
        deadline = time.monotonic() + args.interval * 2 + args.timeout * 10 + 30
        while time.monotonic() < deadline:
            cycle = session.get(base + "/health", timeout=5).json()["last_cycle"]
            if cycle["at"]:
                ended = (
                    time.mktime(time.strptime(cycle["at"][:19], "%Y-%m-%dT%H:%M:%S"))
                    - time.timezone
                )
                if ended - cycle["duration_ms"] / 1000 > flipped:
                    seconds = cycle["duration_ms"] / 1000
                    print(
                        f"health cycle: {cycle['servers']} servers, {len(fakes[::2])} black holes, "
                        f"probe timeout {args.timeout:g} s -> {seconds:.2f} s "
                        f"({seconds / args.timeout:.2f} x timeout; serial would be "
                        f"{len(fakes[::2]) * args.timeout:.0f} s)"
                    )
                    stats = session.get(base + "/admin/stats", timeout=5).json()["servers"]
                    print(f"after the cycle: {stats}")
                    return
            time.sleep(0.5)
        raise SystemExit("no complete cycle seen before the deadline")
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)


if __name__ == "__main__":
    main()
