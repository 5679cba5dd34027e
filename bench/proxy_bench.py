"""Benchmark the gateway's ``/v1`` proxy against a direct connection, in one run.

    .venv/bin/python bench/proxy_bench.py            # full run (about 7 minutes)
    .venv/bin/python bench/proxy_bench.py --quick    # smaller and shorter (about 3 minutes)
    .venv/bin/python bench/proxy_bench.py --only ttft --no-write

Why this shape: the machine is shared, small and noisy, so absolute figures say
little. Every measurement is therefore taken twice in the same run, once straight
to the demo backend and once through the gateway (gunicorn, one gevent worker),
interleaved, and reported as a difference or ratio. The harness starts everything
itself (demo backends, gunicorn, wrk, stream clients), bounds every wait, and stops
every process it started, also on Ctrl-C or error.

Tests (``--only`` names):

* ``nonstream``: wrk, non-streaming chat completions at concurrency 1, 16, 64.
* ``ttft``: sequential streams; time to first token and inter-chunk gaps.
* ``streams1k`` / ``streams5k``: many concurrent long streams; completion, wall
  time ratio, gateway peak RSS and CPU.

Needs ``wrk`` (Debian package ``wrk``) and enough file descriptors (raised here
with ``setrlimit`` when running as root). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sse_client import (  # noqa: E402
    StreamResult,
    build_request,
    chat_body,
    percentile,
    stream_once,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "RESULTS.md"
PYTHON = sys.executable
ADMIN_KEY = "proxy-bench-admin-key-0123456789abcdef"
HOST = "127.0.0.1"
TESTS = ("nonstream", "ttft", "streams1k", "streams5k")
NOFILE_WANTED = 65536
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1_000_000
LEVEL_RE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")
DIGITS_RE = re.compile(r"\d+")


class BenchError(Exception):
    """Something the benchmark cannot go on without; the message says what to do."""


# -- settings -----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Sizes and durations: full mode meets the brief, quick mode checks the harness."""

    quick: bool
    levels: tuple[int, ...] = (1, 16, 64)
    wrk_seconds: float = 6.0
    wrk_warmup_seconds: float = 2.0
    wrk_rounds: int = 3
    ttft_requests: int = 200
    ttft_tokens: int = 20
    ttft_delay_ms: float = 20.0
    s1_streams: int = 1000
    s1_tokens: int = 200
    s1_delay_ms: float = 50.0
    s2_streams: int = 5000
    s2_tokens: int = 60
    s2_delay_ms: float = 500.0
    ramp_batch: int = 500
    ramp_interval: float = 0.1
    client_procs: int = 1

    @classmethod
    def make(cls, args: argparse.Namespace) -> Plan:
        if args.quick:
            plan = cls(
                quick=True,
                wrk_seconds=3.0,
                wrk_warmup_seconds=1.0,
                wrk_rounds=1,
                ttft_requests=50,
                s1_streams=200,
                s2_streams=1000,
            )
        else:
            plan = cls(quick=False)
        overrides: dict[str, Any] = {}
        if args.wrk_seconds is not None:
            overrides["wrk_seconds"] = args.wrk_seconds
        if args.rounds is not None:
            overrides["wrk_rounds"] = args.rounds
        if args.ttft_requests is not None:
            overrides["ttft_requests"] = args.ttft_requests
        if args.client_procs is not None:
            overrides["client_procs"] = args.client_procs
        if overrides:
            plan = cls(**{**plan.__dict__, **overrides})
        return plan


# -- processes ------------------------------------------------------------------------


class Processes:
    """Every child the harness starts, so that all of them are stopped at the end.

    Children get their own session (process group): a terminal Ctrl-C reaches only
    the harness, which then stops them in order, and gunicorn's worker is stopped
    with its master by signalling the group we created (never by name).
    """

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        stdout_pipe: bool = False,
    ) -> subprocess.Popen[bytes]:
        out: Any = subprocess.PIPE if stdout_pipe else subprocess.DEVNULL
        err: Any = subprocess.DEVNULL
        log_file = None
        if log is not None:
            log_file = open(log, "ab")  # noqa: SIM115 - handed to the child, closed below
            err = log_file
            if not stdout_pipe:
                out = log_file
        try:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        finally:
            if log_file is not None:
                log_file.close()
        self.children.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        """SIGTERM the child's process group, then SIGKILL it if it lingers."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        # The group may outlive its leader (a gunicorn worker whose master died).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        self.children = [(n, p) for n, p in self.children if p is not proc]

    def stop_all(self) -> None:
        """Newest first: clients before the gateway before the backends."""
        for _name, proc in reversed(list(self.children)):
            self.stop(proc, grace=8.0)


def read_line(proc: subprocess.Popen[bytes], prefix: bytes, timeout: float) -> str:
    """Wait (bounded) for the child to print a line starting with ``prefix``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.split(b"\n")[:-1]:
                if line.startswith(prefix):
                    return line.decode()
        elif proc.poll() is not None:
            break
    raise BenchError(
        f"no {prefix.decode()!r} line within {timeout:.0f} s; output: {buffer[-500:]!r}"
    )


def free_port() -> int:
    """A loopback port nobody listens on now (gunicorn cannot report an ephemeral one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def raise_nofile() -> int:
    """5,000 streams need ~10,000 descriptors in the gateway: raise the limit children inherit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, NOFILE_WANTED)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
    except (ValueError, OSError):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- HTTP helpers (control plane only; never in a measured loop) --------------------------


def http_json(
    method: str,
    port: int,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> tuple[int, Any, dict[str, str]]:
    """One request on a fresh connection: status, parsed JSON (or text), headers."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"} if payload is not None else {}
        hdrs.update(headers or {})
        conn.request(method, path, body=payload, headers=hdrs)
        response = conn.getresponse()
        raw = response.read()
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return response.status, parsed, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


@dataclass
class Backend:
    """A demo backend process serving one model with fixed token timing."""

    proc: subprocess.Popen[bytes]
    port: int
    model: str
    tokens: int
    delay_ms: float


def start_backend(procs: Processes, tmp: Path, model: str, tokens: int, delay_ms: float) -> Backend:
    """One backend per test, so each test's token timing is a command-line fact."""
    argv = [
        PYTHON,
        "-m",
        "webapp.demo_backend",
        "--port",
        "0",
        "--host",
        HOST,
        "--model",
        model,
        "--tokens",
        str(tokens),
        "--token-delay-ms",
        f"{delay_ms:g}",
    ]
    proc = procs.start(f"backend {model}", argv, log=tmp / f"backend-{model}.log", stdout_pipe=True)
    line = read_line(proc, b"demo backend listening on", 20.0)
    port = int(line.rsplit(":", 1)[1])
    return Backend(proc, port, model, tokens, delay_ms)


def reset_backend_stats(backend: Backend) -> None:
    http_json("DELETE", backend.port, "/_demo/stats")


def backend_stats(backend: Backend) -> dict[str, Any]:
    status, body, _ = http_json("GET", backend.port, "/_demo/stats")
    return body if status == 200 and isinstance(body, dict) else {}


@dataclass
class Gateway:
    """The gunicorn master; its workers are found through /proc when sampled."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path


def start_gateway(
    procs: Processes, tmp: Path, worker_connections: int, workers: int = 1
) -> Gateway:
    """gunicorn exactly as in production (one gevent worker unless asked), state in a temp dir."""
    port = free_port()
    instance = tmp / "instance"
    instance.mkdir()
    env = dict(os.environ)
    env.update(
        HOST=HOST,
        PORT=str(port),
        WORKERS=str(workers),
        WORKER_CONNECTIONS=str(worker_connections),
        INSTANCE_PATH=str(instance),
        ADMIN_API_KEY=ADMIN_KEY,
        ALLOWED_BACKEND_NETWORKS="127.0.0.0/8",
        LOG_LEVEL="WARNING",
        HEALTH_CHECK_INTERVAL_SECONDS="60",
        GRACEFUL_TIMEOUT_SECONDS="5",
    )
    log = tmp / "gunicorn.log"
    argv = [PYTHON, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"]
    proc = procs.start("gateway", argv, log=log, env=env)
    deadline = time.monotonic() + 60
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"gunicorn exited with {proc.returncode}:\n{tail(log)}")
        try:
            status, body, _ = http_json("GET", port, "/health", timeout=2)
            if status == 200:
                return Gateway(proc, port, log)
            last = f"{status} {body}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.3)
    raise BenchError(f"gateway /health not 200 within 60 s ({last}):\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def register(gateway: Gateway, backend: Backend) -> str:
    status, body, _ = http_json(
        "POST",
        gateway.port,
        "/admin/register",
        {"model_name": backend.model, "endpoint_url": f"http://{HOST}:{backend.port}"},
        headers={"X-API-Key": ADMIN_KEY},
    )
    if status != 201 or not isinstance(body, dict):
        raise BenchError(f"POST /admin/register answered {status}: {body}")
    return str(body["registration_id"])


def unregister(gateway: Gateway, registration: str) -> None:
    """Best effort: the next test uses another model name anyway."""
    with contextlib.suppress(OSError):
        http_json(
            "DELETE",
            gateway.port,
            f"/admin/register/{registration}",
            headers={"X-API-Key": ADMIN_KEY},
        )


def check_route(port: int, model: str, label: str, api_key: str | None) -> dict[str, str]:
    """One real request before any measurement, so a broken route fails loudly, early."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    status, body, response_headers = http_json(
        "POST", port, "/v1/chat/completions", chat_body(model, stream=False), headers
    )
    if status != 200 or not isinstance(body, dict) or not body.get("choices"):
        raise BenchError(f"{label}: POST /v1/chat/completions answered {status}: {str(body)[:400]}")
    return response_headers


def wait_for_proxy(gateway: Gateway, model: str, api_key: str | None, wait: float) -> None:
    """Poll the gateway route (bounded) for a proxy that is still being deployed."""
    deadline = time.monotonic() + wait
    while True:
        try:
            check_route(gateway.port, model, "gateway", api_key)
            return
        except (BenchError, OSError) as exc:
            if time.monotonic() + 10 > deadline:
                raise BenchError(
                    f"{exc}\nIs the /v1 proxy in place? (reproduce: POST "
                    f"http://{HOST}:{gateway.port}/v1/chat/completions with a chat body "
                    f'for model "{model}")'
                ) from None
            print(f"  gateway route not ready ({str(exc)[:120]}); retrying in 10 s", flush=True)
            time.sleep(10)


# -- /proc sampling -----------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Direct children from /proc (gunicorn's workers)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(x) for x in f.read().split())
    return found


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (fields after the parenthesised command name)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


TCP_COUNTERS = (
    "ListenOverflows",
    "ListenDrops",
    "TCPSynRetrans",
    "TCPTimeouts",
    "RetransSegs",
    "AttemptFails",
    "EstabResets",
    "TCPAbortOnData",
)


def tcp_counters() -> dict[str, int]:
    """System-wide kernel TCP counters: a full accept queue or SYN retries explain
    multi-second stream set-up times that no process log shows."""
    counters: dict[str, int] = {}
    for path in ("/proc/net/netstat", "/proc/net/snmp"):
        with contextlib.suppress(OSError):
            rows = Path(path).read_text().splitlines()
            for names, values in zip(rows[::2], rows[1::2], strict=False):
                keys, numbers = names.split()[1:], values.split()[1:]
                for key, number in zip(keys, numbers, strict=False):
                    if key in TCP_COUNTERS:
                        with contextlib.suppress(ValueError):
                            counters[key] = int(number)
    return counters


def cpu_busy_seconds() -> float:
    """Machine-wide busy CPU time (all CPUs) from /proc/stat, steal included."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields)
    except (OSError, ValueError, IndexError):
        return 0.0
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu_seconds(gateway: Gateway | None) -> float:
    """CPU used by the harness and everything it started: itself, reaped children
    (wrk, clients, stopped backends) and the live gunicorn master and workers."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    if gateway is not None and gateway.proc.poll() is None:
        master = gateway.proc.pid
        total += cpu_seconds(master) + sum(cpu_seconds(w) for w in children_of(master))
    return total


class Noise:
    """How much CPU other work took during one test: the reader's noise gauge.

    Busy CPU of the whole machine minus the benchmark's own processes leaves other
    users' work, VM steal and kernel work not charged to a process.
    """

    def __init__(self, gateway: Gateway | None) -> None:
        self.gateway = gateway
        self.t0 = time.monotonic()
        self.busy0 = cpu_busy_seconds()
        self.own0 = own_cpu_seconds(gateway)

    def finish(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        busy = cpu_busy_seconds() - self.busy0
        own = own_cpu_seconds(self.gateway) - self.own0
        capacity = max(wall * (os.cpu_count() or 1), 1e-9)
        return {
            "wall_s": wall,
            "own_pct": 100 * own / capacity,
            "other_pct": 100 * max(busy - own, 0.0) / capacity,
            "loadavg_end": os.getloadavg()[0],
        }


class Sampler:
    """Samples gateway RSS (master + workers) every 0.5 s and CPU at start and end.

    A thread, not a process: the orchestrator is idle while the clients run, and
    reading two small /proc files per pid twice a second costs nothing measurable.
    """

    def __init__(self, gateway: Gateway | None, extra_pids: dict[str, int]) -> None:
        self.gateway = gateway
        self.extra = extra_pids
        self.peak_total = 0
        self.peak_worker = 0
        self.first_total = 0
        self.last_total = 0
        self.workers_seen: set[int] = set()
        self.health_ms: list[float] = []
        self.health_failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu_start: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.wall = 0.0
        self._t0 = 0.0

    def _pids(self) -> dict[str, int]:
        pids = dict(self.extra)
        if self.gateway is not None:
            pids["gateway master"] = self.gateway.proc.pid
            for i, worker in enumerate(children_of(self.gateway.proc.pid)):
                pids[f"gateway worker{i or ''}"] = worker
        return pids

    def _cpu_by_role(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for name, pid in self._pids().items():
            role = "gateway" if name.startswith("gateway") else name
            totals[role] = totals.get(role, 0.0) + cpu_seconds(pid)
        return totals

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu_start = self._cpu_by_role()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.wall = time.monotonic() - self._t0
        end = self._cpu_by_role()
        self.cpu = {k: end.get(k, 0.0) - self._cpu_start.get(k, 0.0) for k in end}

    def _run(self) -> None:
        next_health = time.monotonic() + 1.0
        while not self._stop.is_set():
            if self.gateway is not None:
                master = self.gateway.proc.pid
                workers = children_of(master)
                self.workers_seen.update(workers)
                worker_rss = [rss_bytes(w) for w in workers]
                total = rss_bytes(master) + sum(worker_rss)
                if not self.first_total:
                    self.first_total = total
                self.last_total = total
                self.peak_total = max(self.peak_total, total)
                self.peak_worker = max([self.peak_worker, *worker_rss])
                if time.monotonic() >= next_health:
                    # The control plane shares the worker's event loop: a slow
                    # /health during the streams shows a stalled loop.
                    next_health = time.monotonic() + 1.0
                    t = time.perf_counter()
                    try:
                        status, _, _ = http_json("GET", self.gateway.port, "/health", timeout=10)
                        if status == 200:
                            self.health_ms.append((time.perf_counter() - t) * 1000)
                        else:
                            self.health_failures += 1
                    except OSError:
                        self.health_failures += 1
            self._stop.wait(0.5)


# -- test 1: non-streaming, wrk -------------------------------------------------------------


def wrk_run(
    port: int,
    model: str,
    connections: int,
    seconds: float,
    api_key: str | None,
    procs: Processes,
) -> dict[str, Any]:
    """One wrk run; its Lua ``done()`` prints the exact percentiles on one line."""
    env = dict(os.environ)
    env["WRK_BODY"] = json.dumps(chat_body(model, stream=False), separators=(",", ":"))
    env["WRK_PATH"] = "/v1/chat/completions"
    env["WRK_API_KEY"] = api_key or ""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "wrk_report.lua"),
        f"http://{HOST}:{port}",
    ]
    proc = procs.start("wrk", argv, env=env, stdout_pipe=True)
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        raise BenchError(f"wrk did not finish within {seconds + 30:.0f} s") from None
    procs.stop(proc)
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("WRK_REPORT "):
            report = json.loads(line[len("WRK_REPORT ") :])
            report["rps"] = report["requests"] / (report["duration_us"] / 1e6)
            report["error_total"] = sum(report["errors"].values())
            return report
    raise BenchError(f"wrk printed no WRK_REPORT line (exit {proc.returncode}):\n{out[-800:]!r}")


def median_report(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of each figure: one noisy round does not decide the result."""
    latency = {
        key: statistics.median(r["latency"][key] for r in runs)
        for key in ("p50", "p95", "p99", "max")
    }
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "latency_ms": {k: v / 1000.0 for k, v in latency.items()},
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["error_total"] for r in runs),
        "rounds": [
            {"rps": r["rps"], "p50": r["latency"]["p50"], "p99": r["latency"]["p99"]} for r in runs
        ],
    }


def overhead_header_sample(port: int, model: str, api_key: str | None, n: int = 50) -> list[float]:
    """The gateway's own ``X-Gateway-Overhead-Ms``, sampled sequentially on one connection."""
    values: list[float] = []
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    body = json.dumps(chat_body(model, stream=False)).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        for _ in range(n):
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            raw = response.getheader("X-Gateway-Overhead-Ms")
            if raw is not None:
                with contextlib.suppress(ValueError):
                    values.append(float(raw))
    except (OSError, http.client.HTTPException):
        pass
    finally:
        conn.close()
    return values


def run_nonstream(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    backend = start_backend(ctx.procs, ctx.tmp, "bench-chat", 16, 0.0)
    targets = ctx.targets(backend)
    registration = ctx.register(backend)
    try:
        for label, port in targets.items():
            check_route(port, backend.model, label, ctx.api_key)
        header_sample: list[float] = []
        if "gateway" in targets:
            header_sample = overhead_header_sample(targets["gateway"], backend.model, ctx.api_key)
        levels: dict[int, dict[str, Any]] = {}
        for index, connections in enumerate(plan.levels):
            order = list(targets)
            if index % 2:
                order.reverse()
            print(f"  concurrency {connections}: warm-up", flush=True)
            for label in order:
                wrk_run(
                    targets[label],
                    backend.model,
                    connections,
                    plan.wrk_warmup_seconds,
                    ctx.api_key,
                    ctx.procs,
                )
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label in order}
            for round_no in range(plan.wrk_rounds):
                # ABBA order across rounds: a slow spell hits both sides alike.
                for label in order if round_no % 2 == 0 else list(reversed(order)):
                    report = wrk_run(
                        targets[label],
                        backend.model,
                        connections,
                        plan.wrk_seconds,
                        ctx.api_key,
                        ctx.procs,
                    )
                    runs[label].append(report)
                    print(
                        f"    {label:8s} round {round_no + 1}: {report['rps']:8.0f} req/s  "
                        f"p50 {report['latency']['p50'] / 1000:7.2f} ms  "
                        f"p99 {report['latency']['p99'] / 1000:7.2f} ms  "
                        f"errors {report['error_total']}",
                        flush=True,
                    )
            levels[connections] = {label: median_report(r) for label, r in runs.items()}
        return {"levels": levels, "overhead_header_ms": header_sample}
    finally:
        ctx.unregister(registration)
        ctx.procs.stop(backend.proc)


# -- test 2: time to first token, chunk timing -------------------------------------------------


class KeepAlive:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.reconnects = 0

    def get(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection((HOST, self.port), timeout=10)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.reconnects += 1
        return self.sock

    def drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def run_ttft(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    tokens, delay_ms = plan.ttft_tokens, plan.ttft_delay_ms
    backend = start_backend(ctx.procs, ctx.tmp, "bench-ttft", tokens, delay_ms)
    targets = ctx.targets(backend)
    registration = ctx.register(backend)
    conns = {label: KeepAlive(port) for label, port in targets.items()}
    expected_events = tokens + 3
    results: dict[str, dict[str, Any]] = {
        label: {"ttft": [], "first_token": [], "total": [], "gaps": [], "errors": []}
        for label in targets
    }
    try:
        requests = {
            label: build_request(
                HOST,
                port,
                "/v1/chat/completions",
                chat_body(backend.model, stream=True),
                keep_alive=True,
                api_key=ctx.api_key,
            )
            for label, port in targets.items()
        }
        deadline = time.monotonic() + plan.ttft_requests * 2 * (tokens * delay_ms / 1000 + 1) + 60

        def one(label: str, record: bool) -> None:
            conn = conns[label]
            try:
                result, reusable = stream_once(conn.get(), requests[label], timeout=30)
            except OSError as exc:
                result, reusable = StreamResult(error=f"{type(exc).__name__}: {exc}"), False
            if not reusable:
                conn.drop()
            if not record:
                return
            problem = stream_problem(result, expected_events)
            bucket = results[label]
            if problem:
                bucket["errors"].append(problem)
                return
            times = result.event_times
            bucket["ttft"].append((times[0] - result.sent_at) * 1000)
            bucket["first_token"].append((times[1] - result.sent_at) * 1000)
            bucket["total"].append((times[-1] - result.sent_at) * 1000)
            # Gaps before each token chunk (role -> token 1, ..., token n-1 -> token n):
            # the backend sleeps delay_ms before each, so buffering shows here.
            bucket["gaps"].extend((times[k + 1] - times[k]) * 1000 for k in range(tokens))

        for _ in range(5):
            for label in targets:
                one(label, record=False)
        for i in range(plan.ttft_requests):
            if time.monotonic() > deadline:
                raise BenchError("ttft: deadline passed")
            order = list(targets) if i % 2 == 0 else list(reversed(list(targets)))
            for label in order:
                one(label, record=True)
        summary: dict[str, Any] = {"tokens": tokens, "delay_ms": delay_ms}
        for label, bucket in results.items():
            gaps = bucket["gaps"]
            summary[label] = {
                "n": len(bucket["ttft"]),
                "errors": len(bucket["errors"]),
                "error_samples": bucket["errors"][:5],
                "ttft_p50": percentile(bucket["ttft"], 50),
                "ttft_p95": percentile(bucket["ttft"], 95),
                "ttft_p99": percentile(bucket["ttft"], 99),
                "first_token_p50": percentile(bucket["first_token"], 50),
                "total_p50": percentile(bucket["total"], 50),
                "gap_p5": percentile(gaps, 5),
                "gap_p50": percentile(gaps, 50),
                "gap_p95": percentile(gaps, 95),
                "gap_within_5ms": (
                    sum(1 for g in gaps if abs(g - delay_ms) <= 5.0) / len(gaps) if gaps else None
                ),
                "gap_under_1ms": (sum(1 for g in gaps if g < 1.0) / len(gaps) if gaps else None),
                "reconnects": conns[label].reconnects,
            }
        return summary
    finally:
        for conn in conns.values():
            conn.drop()
        ctx.unregister(registration)
        ctx.procs.stop(backend.proc)


def stream_problem(result: StreamResult, expected_events: int) -> str | None:
    """Why a stream does not count (None when it is a clean, complete stream)."""
    if result.error:
        return result.error
    if result.status != 200:
        return f"status {result.status}: {result.body_head[:200]!r}"
    if result.error_event:
        return "error event in stream"
    if not result.done:
        return f"no [DONE] after {len(result.event_times)} events"
    if len(result.event_times) != expected_events:
        return f"{len(result.event_times)} events, expected {expected_events}"
    return None


# -- test 3: many concurrent streams -------------------------------------------------------------


def run_clients(
    ctx: Context, port: int, backend: Backend, streams: int, deadline: float
) -> dict[str, Any]:
    """Start the stream client process(es) and merge their reports."""
    plan = ctx.plan
    k = max(1, min(plan.client_procs, streams))
    shares = [streams // k + (1 if i < streams % k else 0) for i in range(k)]
    procs = []
    for i, share in enumerate(shares):
        argv = [
            PYTHON,
            str(BENCH / "sse_client.py"),
            "--host",
            HOST,
            "--port",
            str(port),
            "--model",
            backend.model,
            "--streams",
            str(share),
            "--tokens",
            str(backend.tokens),
            "--deadline",
            f"{deadline:.0f}",
            "--ramp-batch",
            str(max(1, plan.ramp_batch // k)),
            "--ramp-interval",
            str(plan.ramp_interval),
        ]
        if ctx.api_key:
            argv += ["--api-key", ctx.api_key]
        procs.append(
            ctx.procs.start(
                f"sse client {i}", argv, log=ctx.tmp / "sse_client.log", stdout_pipe=True
            )
        )
    reports = []
    try:
        for proc in procs:
            line = read_line(proc, b"SSE_CLIENT ", deadline + 60)
            reports.append(json.loads(line[len("SSE_CLIENT ") :]))
    finally:
        for proc in procs:
            ctx.procs.stop(proc, grace=5)
    errors: dict[str, int] = {}
    for report in reports:
        for kind, count in report["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    firsts = [r["first_sent"] for r in reports if r["first_sent"] is not None]
    lasts = [r["last_finished"] for r in reports if r["last_finished"] is not None]
    return {
        "streams": streams,
        "completed": sum(r["completed"] for r in reports),
        "errors": errors,
        "error_samples": [s for r in reports for s in r["error_samples"]][:8],
        "wall_s": (max(lasts) - min(firsts)) if firsts and lasts else None,
        "events_total": sum(r["events_total"] for r in reports),
        "ttfb_p50_ms": max_or_none(r["ttfb_p50_ms"] for r in reports),
        "ttfb_p99_ms": max_or_none(r["ttfb_p99_ms"] for r in reports),
        "ttfb_max_ms": max_or_none(r["ttfb_max_ms"] for r in reports),
        "ttfb_over_1s": sum(r["ttfb_over_1s"] for r in reports),
        "max_gap_p99_ms": max_or_none(r["max_gap_p99_ms"] for r in reports),
        "max_gap_ms": max_or_none(r["max_gap_ms"] for r in reports),
        "duration_max_s": max_or_none(r["duration_max_s"] for r in reports),
        "client_cpu_s": sum(r["client_cpu_s"] for r in reports),
    }


def max_or_none(values: Iterator[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def run_streams(ctx: Context, name: str, streams: int, tokens: int, delay_ms: float) -> dict:
    plan = ctx.plan
    backend = start_backend(ctx.procs, ctx.tmp, f"bench-{name}", tokens, delay_ms)
    targets = ctx.targets(backend)
    registration = ctx.register(backend)
    ramp_s = (streams / plan.ramp_batch) * plan.ramp_interval
    expected = tokens * delay_ms / 1000 + ramp_s
    deadline = expected * 3 + 60
    out: dict[str, Any] = {
        "streams": streams,
        "tokens": tokens,
        "delay_ms": delay_ms,
        "expected_s": expected,
        "deadline_s": deadline,
    }
    try:
        for label, port in targets.items():
            check_route(port, backend.model, label, ctx.api_key)
        order = list(targets)
        if name == "streams5k":
            order.reverse()
        for label in order:
            reset_backend_stats(backend)
            time.sleep(1.0)  # let the previous run's sockets close
            gateway = ctx.gateway if label == "gateway" else None
            workers_before = set(children_of(ctx.gateway.proc.pid)) if ctx.gateway else set()
            sampler = Sampler(gateway, {"backend": backend.proc.pid})
            tcp_before = tcp_counters()
            sampler.start()
            print(f"  {label}: {streams} streams x {tokens} tokens x {delay_ms:g} ms", flush=True)
            try:
                result = run_clients(ctx, targets[label], backend, streams, deadline)
            finally:
                sampler.stop()
            result["backend_stats"] = {
                k: v
                for k, v in backend_stats(backend).items()
                if k in ("streams_started", "streams_completed", "streams_aborted")
            }
            result["cpu_s"] = sampler.cpu
            tcp_after = tcp_counters()
            result["tcp"] = {
                k: tcp_after[k] - tcp_before.get(k, 0)
                for k in TCP_COUNTERS
                if k in tcp_after and tcp_after[k] != tcp_before.get(k, 0)
            }
            result["sample_wall_s"] = sampler.wall
            if gateway is not None:
                workers_after = set(children_of(ctx.gateway.proc.pid))
                result["gateway_rss_peak_mb"] = sampler.peak_total / MB
                result["gateway_worker_rss_peak_mb"] = sampler.peak_worker / MB
                result["gateway_rss_start_mb"] = sampler.first_total / MB
                result["gateway_rss_end_mb"] = sampler.last_total / MB
                result["worker_restarted"] = workers_before != workers_after or len(
                    sampler.workers_seen
                ) > len(workers_before)
                result["health_p50_ms"] = percentile(sampler.health_ms, 50)
                result["health_max_ms"] = max(sampler.health_ms) if sampler.health_ms else None
                result["health_failures"] = sampler.health_failures
            out[label] = result
            errs = sum(result["errors"].values())
            wall = result["wall_s"]
            print(
                f"    completed {result['completed']}/{streams}, errors {errs} "
                f"{result['errors'] or ''}, wall {fmt(wall, 2)} s, "
                f"max gap {fmt(result['max_gap_ms'], 0)} ms, "
                f"cpu {', '.join(f'{k} {v:.1f} s' for k, v in sampler.cpu.items())}",
                flush=True,
            )
        return out
    finally:
        ctx.unregister(registration)
        ctx.procs.stop(backend.proc)


# -- orchestration ------------------------------------------------------------------------------


@dataclass
class Context:
    """What every test needs: the plan, the process list, the gateway (if any)."""

    plan: Plan
    procs: Processes
    tmp: Path
    gateway: Gateway | None
    api_key: str | None
    wait_proxy: float
    registrations: list[str] = field(default_factory=list)

    def targets(self, backend: Backend) -> dict[str, int]:
        """Where to send traffic: straight to the backend, and through the gateway."""
        targets = {"direct": backend.port}
        if self.gateway is not None:
            targets["gateway"] = self.gateway.port
        return targets

    def register(self, backend: Backend) -> str | None:
        if self.gateway is None:
            return None
        registration = register(self.gateway, backend)
        wait_for_proxy(self.gateway, backend.model, self.api_key, self.wait_proxy)
        return registration

    def unregister(self, registration: str | None) -> None:
        if self.gateway is not None and registration is not None:
            unregister(self.gateway, registration)


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def machine_info() -> dict[str, str]:
    """What the reader needs to judge the figures: a shared 2-core VM is not a server."""

    def run(argv: list[str]) -> str:
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=10, cwd=ROOT
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "?"

    # Uncommitted changes outside bench/ change what is measured; ours do not.
    dirty = [
        line
        for line in run(["git", "status", "--porcelain"]).splitlines()
        if not line[3:].startswith("bench/")
    ]
    return {
        "date": run(["date", "-u"]),
        "nproc": run(["nproc"]),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gevent": version("gevent"),
        "gunicorn": version("gunicorn"),
        "wrk": " ".join(run(["wrk", "-v"]).split()[:2]) if shutil.which("wrk") else "missing",
        "commit": run(["git", "rev-parse", "--short", "HEAD"])
        + (f" (+ {len(dirty)} uncommitted paths outside bench/)" if dirty else ""),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def noise_line(result: dict[str, Any]) -> str:
    """One line per test: how busy the machine was with other work meanwhile."""
    noise = result.get("noise")
    if not noise:
        return ""
    return (
        f"Machine during this test ({noise['wall_s']:.0f} s): the benchmark's processes used "
        f"{noise['own_pct']:.0f}% of the {os.cpu_count()} CPUs, other work "
        f"{noise['other_pct']:.0f}%; load average at the end {noise['loadavg_end']:.2f}."
    )


def render(results: dict[str, Any], plan: Plan, gateway: bool) -> tuple[list[str], list[str]]:
    """Markdown tables (readable on stdout too) and the target verdict lines."""
    lines: list[str] = []
    verdicts: list[str] = []

    def verdict(name: str, ok: bool | None, detail: str, scaled: bool = False) -> None:
        if ok is None:
            state = "not measured"
        else:
            state = "met" if ok else "MISSED"
        if scaled and ok is not None:
            state += " (quick mode: scaled down, indicative only)"
        verdicts.append(f"- {name}: **{state}** — {detail}")

    nonstream = results.get("nonstream")
    if nonstream:
        lines += [
            "### Non-streaming chat completions (wrk, 1 thread, median of rounds)",
            "",
            noise_line(nonstream),
            "",
            "| conc. | target | req/s | p50 ms | p95 ms | p99 ms | max ms | errors |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for connections, by_label in nonstream["levels"].items():
            for label, r in by_label.items():
                lat = r["latency_ms"]
                lines.append(
                    f"| {connections} | {label} | {r['rps']:.0f} | {lat['p50']:.3f} | "
                    f"{lat['p95']:.3f} | {lat['p99']:.3f} | {lat['max']:.1f} | {r['errors']} |"
                )
            if "gateway" in by_label:
                g, d = by_label["gateway"]["latency_ms"], by_label["direct"]["latency_ms"]
                ratio = by_label["gateway"]["rps"] / by_label["direct"]["rps"]
                lines.append(
                    f"| {connections} | **added** | x{ratio:.2f} | "
                    f"{g['p50'] - d['p50']:+.3f} | {g['p95'] - d['p95']:+.3f} | "
                    f"{g['p99'] - d['p99']:+.3f} | | |"
                )
        lines.append("")
        for connections, by_label in nonstream["levels"].items():
            per_round = "; ".join(
                f"{label} "
                + ", ".join(f"{x['rps']:.0f}/{x['p99'] / 1000:.2f}" for x in r["rounds"])
                for label, r in by_label.items()
            )
            lines.append(f"- Rounds at concurrency {connections} (req/s / p99 ms): {per_round}")
        lines += [
            "",
            "At concurrency 16 and 64 the direct tail is inflated by the demo backend's "
            "keep-alive loop, which does not yield between requests (bench/README.md, "
            '"Known distortions"): a negative added p95/p99 there is that, not a faster proxy.',
        ]
        sample = nonstream.get("overhead_header_ms") or []
        if sample:
            lines += [
                "",
                f"Gateway's own `X-Gateway-Overhead-Ms` (sequential, n={len(sample)}): "
                f"p50 {percentile(sample, 50):.3f} ms, max {max(sample):.3f} ms.",
            ]
        lines.append("")
        levels = nonstream["levels"]
        if gateway and 1 in levels and "gateway" in levels[1]:
            g, d = levels[1]["gateway"]["latency_ms"], levels[1]["direct"]["latency_ms"]
            a50, a99 = g["p50"] - d["p50"], g["p99"] - d["p99"]
            verdict(
                "concurrency 1: added p50 <= 1 ms and p99 <= 3 ms",
                a50 <= 1.0 and a99 <= 3.0 and levels[1]["gateway"]["errors"] == 0,
                f"added p50 {a50:+.3f} ms, p99 {a99:+.3f} ms",
            )
        if gateway and 64 in levels and "gateway" in levels[64]:
            g, d = levels[64]["gateway"], levels[64]["direct"]
            a99 = g["latency_ms"]["p99"] - d["latency_ms"]["p99"]
            verdict(
                "concurrency 64: >= 1,500 req/s through the gateway, added p99 <= 60 ms",
                g["rps"] >= 1500 and a99 <= 60.0 and g["errors"] == 0,
                f"{g['rps']:.0f} req/s (direct {d['rps']:.0f}), added p99 {a99:+.2f} ms, "
                f"errors {g['errors']}",
            )

    ttft = results.get("ttft")
    if ttft:
        labels = [x for x in ("direct", "gateway") if x in ttft]
        lines += [
            f"### Streaming: time to first token, chunk timing "
            f"({ttft['tokens']} tokens, {ttft['delay_ms']:g} ms apart, sequential)",
            "",
            noise_line(ttft),
            "",
            "| target | n | errors | TTFT p50 ms | TTFT p95 ms | TTFT p99 ms | 1st token p50 ms "
            "| gap p5/p50/p95 ms | gaps within ±5 ms | gaps < 1 ms | stream p50 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for label in labels:
            r = ttft[label]
            lines.append(
                f"| {label} | {r['n']} | {r['errors']} | {fmt(r['ttft_p50'], 3)} | "
                f"{fmt(r['ttft_p95'], 3)} | {fmt(r['ttft_p99'], 3)} | "
                f"{fmt(r['first_token_p50'], 2)} | {fmt(r['gap_p5'], 1)} / "
                f"{fmt(r['gap_p50'], 2)} / {fmt(r['gap_p95'], 1)} | "
                f"{fmt_pct(r['gap_within_5ms'])} | {fmt_pct(r['gap_under_1ms'])} | "
                f"{fmt(r['total_p50'], 1)} |"
            )
        if "gateway" in ttft:
            g, d = ttft["gateway"], ttft["direct"]
            lines.append(
                f"| **added** | | | {fmt(diff(g['ttft_p50'], d['ttft_p50']), 3)} | "
                f"{fmt(diff(g['ttft_p95'], d['ttft_p95']), 3)} | "
                f"{fmt(diff(g['ttft_p99'], d['ttft_p99']), 3)} | "
                f"{fmt(diff(g['first_token_p50'], d['first_token_p50']), 3)} | "
                f"p50 {fmt(diff(g['gap_p50'], d['gap_p50']), 3)} | | | "
                f"{fmt(diff(g['total_p50'], d['total_p50']), 2)} |"
            )
            for label in labels:
                if ttft[label]["error_samples"]:
                    lines.append(f"\n{label} errors: {ttft[label]['error_samples']}")
            added = diff(g["ttft_p95"], d["ttft_p95"])
            verdict(
                "streaming TTFT added p95 <= 2 ms",
                None if added is None else added <= 2.0 and g["errors"] == 0,
                f"added p95 {fmt(added, 3)} ms; gateway gaps within ±5 ms of "
                f"{ttft['delay_ms']:g} ms: {fmt_pct(g['gap_within_5ms'])} "
                f"(direct {fmt_pct(d['gap_within_5ms'])})",
            )
        lines.append("")

    for name, limit_rss in (("streams1k", None), ("streams5k", 400.0)):
        r = results.get(name)
        if not r:
            continue
        labels = [x for x in ("direct", "gateway") if x in r]
        lines += [
            f"### Concurrent streams: {r['streams']:,} x {r['tokens']} tokens x "
            f"{r['delay_ms']:g} ms (expected ~{r['expected_s']:.1f} s, "
            f"deadline {r['deadline_s']:.0f} s)",
            "",
            noise_line(r),
            "",
            "| target | completed | errors | wall s | TTFB p50/p99/max ms (> 1 s) "
            "| max gap p99/max ms | backend started/completed/aborted "
            "| CPU s (gateway / backend) | client CPU s |",
            "|---|---:|---|---:|---|---|---|---|---:|",
        ]
        for label in labels:
            x = r[label]
            bs = x["backend_stats"]
            lines.append(
                f"| {label} | {x['completed']:,}/{x['streams']:,} | {fmt_errors(x['errors'])} | "
                f"{fmt(x['wall_s'], 2)} | {fmt(x['ttfb_p50_ms'], 0)} / "
                f"{fmt(x['ttfb_p99_ms'], 0)} / {fmt(x['ttfb_max_ms'], 0)} ({x['ttfb_over_1s']}) "
                f"| {fmt(x['max_gap_p99_ms'], 0)} / {fmt(x['max_gap_ms'], 0)} | "
                f"{bs.get('streams_started', '?')}/{bs.get('streams_completed', '?')}/"
                f"{bs.get('streams_aborted', '?')} | "
                f"{fmt(x['cpu_s'].get('gateway'), 1) if label == 'gateway' else '-'} / "
                f"{fmt(x['cpu_s'].get('backend'), 1)} | {x['client_cpu_s']:.1f} |"
            )
        if "gateway" in r:
            g, d = r["gateway"], r["direct"]
            ratio = g["wall_s"] / d["wall_s"] if g["wall_s"] is not None and d["wall_s"] else None
            lines += [
                "",
                f"Wall time gateway / direct: **{fmt(ratio, 3)}**. Gateway RSS (master + worker): "
                f"start {g['gateway_rss_start_mb']:.0f} MB, peak "
                f"**{g['gateway_rss_peak_mb']:.0f} MB** (worker peak "
                f"{g['gateway_worker_rss_peak_mb']:.0f} MB), end {g['gateway_rss_end_mb']:.0f} MB. "
                f"Gateway CPU {g['cpu_s'].get('gateway', 0):.1f} s over "
                f"{g['sample_wall_s']:.1f} s "
                f"({100 * g['cpu_s'].get('gateway', 0) / max(g['sample_wall_s'], 1e-9):.0f}% "
                f"of one core). `/health` during the run: p50 {fmt(g['health_p50_ms'], 1)} ms, "
                f"max {fmt(g['health_max_ms'], 1)} ms, failures {g['health_failures']}. "
                f"Worker restarted: {'YES' if g['worker_restarted'] else 'no'}.",
            ]
            for label in labels:
                tcp = r[label].get("tcp") or {}
                shown = ", ".join(f"{k} +{v}" for k, v in tcp.items()) or "no change"
                lines.append(f"\nKernel TCP counters, {label} run (system-wide): {shown}.")
                if r[label]["error_samples"]:
                    lines.append(f"\n{label} error samples: {r[label]['error_samples'][:4]}")
            clean = (
                g["completed"] == g["streams"]
                and not g["errors"]
                and d["completed"] == d["streams"]
            )
            ok = clean and ratio is not None and ratio <= 1.10
            detail = (
                f"gateway {g['completed']:,}/{g['streams']:,} complete, errors "
                f"{fmt_errors(g['errors'])}, wall ratio {fmt(ratio, 3)}"
            )
            if limit_rss is not None:
                ok = ok and g["gateway_rss_peak_mb"] <= limit_rss
                detail += f", peak RSS {g['gateway_rss_peak_mb']:.0f} MB"
            title = (
                "1,000 streams all complete, wall within 10% of direct"
                if name == "streams1k"
                else "5,000 streams all complete without error, within 10% of direct, "
                "peak RSS <= 400 MB"
            )
            verdict(title, ok, detail, scaled=plan.quick)
        lines.append("")
    return lines, verdicts


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def fmt_errors(errors: dict[str, int]) -> str:
    return "0" if not errors else ", ".join(f"{k} {v}" for k, v in sorted(errors.items()))


def log_findings(tmp: Path) -> list[str]:
    """Warnings, errors and exceptions the processes logged during the run.

    A benchmark that "passes" while the gateway logs tracebacks is not a pass, so
    they are summarised (message counts with digits folded, exception types) next to
    the figures, and the temp dir is kept for the full logs.
    """
    findings: list[str] = []
    for path in sorted(tmp.rglob("*.log")):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        levels: Counter[str] = Counter()
        messages: Counter[str] = Counter()
        exceptions: Counter[str] = Counter()
        for i, line in enumerate(lines):
            match = LEVEL_RE.search(line)
            if match:
                levels[match.group(1)] += 1
                text = line[match.end() :].strip(" ]:")
                messages[f"{match.group(1)} {DIGITS_RE.sub('N', text)[:160]}"] += 1
            if line.startswith("Traceback"):
                for follow in lines[i + 1 : i + 200]:
                    if follow and not follow.startswith((" ", "\t")):
                        exceptions[follow[:200]] += 1
                        break
        if not levels and not exceptions:
            continue
        counts = ", ".join(f"{n} {level}" for level, n in sorted(levels.items()))
        detail = "; ".join(f"{n}x {m}" for m, n in messages.most_common(3))
        found = f"`{path.relative_to(tmp)}`: {counts or 'no level lines'}"
        if detail:
            found += f"; top: {detail}"
        if exceptions:
            found += "; exceptions: " + "; ".join(f"{n}x {e}" for e, n in exceptions.most_common(3))
        findings.append(found)
    return findings


def write_results(
    info: dict[str, str],
    command: str,
    plan: Plan,
    body: list[str],
    verdicts: list[str],
    findings: list[str],
    elapsed: float,
) -> None:
    """Append one dated section to bench/RESULTS.md (created with a header if missing)."""
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Proxy benchmark results\n\n"
            "Appended by `bench/proxy_bench.py` (see `bench/README.md`). Figures compare the "
            "gateway with a direct connection to the same demo backend, measured in the same "
            "run on a shared, noisy machine: read the differences and ratios, not the absolute "
            "numbers.\n"
        )
    section = [
        "",
        f"## {info['date']} — {'quick' if plan.quick else 'full'} run",
        "",
        f"- Command: `{command}`",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, "
        f"kernel {info['kernel']}, load average at start {info['loadavg']}",
        f"- Software: Python {info['python']}, gevent {info['gevent']}, "
        f"gunicorn {info['gunicorn']}, {info['wrk']}; commit {info['commit']}",
        f"- Gateway: gunicorn, {info['workers']} gevent worker(s); load generator, gateway and "
        "backend share the machine",
        f"- Run time: {elapsed / 60:.1f} min",
        "",
        *body,
        "### Targets",
        "",
        *verdicts,
        "",
    ]
    if findings:
        section += ["### Log findings", "", *[f"- {f}" for f in findings], ""]
    with RESULTS.open("a") as f:
        f.write("\n".join(section))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the gateway's /v1 proxy against a direct connection."
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter runs")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these tests (repeat or comma-separate): {', '.join(TESTS)}",
    )
    parser.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument(
        "--direct-only", action="store_true", help="measure the backend only (no gateway)"
    )
    parser.add_argument("--wrk-seconds", type=float, help="seconds per measured wrk run")
    parser.add_argument("--rounds", type=int, help="measured wrk rounds per target and level")
    parser.add_argument("--ttft-requests", type=int, help="sequential streams per target")
    parser.add_argument("--client-procs", type=int, help="stream client processes")
    parser.add_argument(
        "--wait-proxy",
        type=float,
        default=0.0,
        help="seconds to keep retrying a gateway route that does not answer 200 yet",
    )
    parser.add_argument("--api-key", default=None, help="client bearer key for /v1, if needed")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp dir (logs, db)")
    parser.add_argument(
        "--workers", type=int, default=1, help="gunicorn gevent workers (the targets assume 1)"
    )
    args = parser.parse_args(argv)
    only = [name for item in args.only or [] for name in item.split(",") if name]
    unknown = sorted(set(only) - set(TESTS))
    if unknown:
        parser.error(f"unknown test(s) {unknown}; choose from {', '.join(TESTS)}")
    args.tests = [t for t in TESTS if not only or t in only]
    return args


def preflight(plan: Plan, tests: list[str]) -> int:
    """Fail before starting anything when a prerequisite is missing."""
    if shutil.which("wrk") is None and "nonstream" in tests:
        raise BenchError(
            "wrk not found on PATH. Install it (Debian/Ubuntu: apt-get install wrk) "
            "or skip the non-streaming test with --only ttft,streams1k,streams5k."
        )
    nofile = raise_nofile()
    biggest = max(
        [plan.s1_streams if "streams1k" in tests else 0]
        + [plan.s2_streams if "streams5k" in tests else 0]
    )
    needed = 2 * biggest + 1000
    if nofile < needed:
        raise BenchError(
            f"open-file limit is {nofile}, need at least {needed} for {biggest} streams "
            f"(gateway holds 2 sockets per stream). Run as root or raise it: ulimit -n 65536"
        )
    return nofile


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan.make(args)
    started = time.monotonic()
    command = ".venv/bin/python bench/proxy_bench.py" + "".join(
        " " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    ok = False

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # Installed explicitly: a shell that starts us in the background ignores SIGINT,
    # and Python would then never raise KeyboardInterrupt for it.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    results: dict[str, Any] = {}
    findings: list[str] = []
    try:
        nofile = preflight(plan, args.tests)
        info = machine_info()
        info["workers"] = str(args.workers)
        if os.getloadavg()[0] > 1.0:
            print(
                f"warning: load average {info['loadavg']} before starting: other work is "
                "running, figures will be noisier (see 'other work' per test)",
                flush=True,
            )
        print(
            f"proxy benchmark ({'quick' if plan.quick else 'full'}): tests {args.tests}; "
            f"{info['nproc']} CPUs, load {info['loadavg']}, RLIMIT_NOFILE {nofile}; temp {tmp}",
            flush=True,
        )
        gateway = None
        if not args.direct_only:
            gateway = start_gateway(procs, tmp, worker_connections=12000, workers=args.workers)
            print(f"gateway up on port {gateway.port} (pid {gateway.proc.pid})", flush=True)
        ctx = Context(plan, procs, tmp, gateway, args.api_key, args.wait_proxy)
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "nonstream": lambda: run_nonstream(ctx),
            "ttft": lambda: run_ttft(ctx),
            "streams1k": lambda: run_streams(
                ctx, "streams1k", plan.s1_streams, plan.s1_tokens, plan.s1_delay_ms
            ),
            "streams5k": lambda: run_streams(
                ctx, "streams5k", plan.s2_streams, plan.s2_tokens, plan.s2_delay_ms
            ),
        }
        for name in args.tests:
            t0 = time.monotonic()
            print(f"\n== {name}", flush=True)
            noise = Noise(gateway)
            results[name] = runners[name]()
            results[name]["noise"] = machine = noise.finish()
            print(
                f"   ({time.monotonic() - t0:.0f} s; CPU of the {os.cpu_count()} CPUs: benchmark "
                f"{machine['own_pct']:.0f}%, other work {machine['other_pct']:.0f}%)",
                flush=True,
            )
        if gateway is not None and gateway.proc.poll() is not None:
            raise BenchError(f"gunicorn exited during the run:\n{tail(gateway.log)}")
        elapsed = time.monotonic() - started
        body, verdicts = render(results, plan, gateway is not None)
        findings = log_findings(tmp)
        print("\n" + "\n".join(body))
        print("Targets:\n" + "\n".join(verdicts or ["- (gateway not measured)"]))
        if findings:
            print("Log findings:\n" + "\n".join(f"- {f}" for f in findings))
        print(f"\ntotal run time {elapsed / 60:.1f} min", flush=True)
        if not args.no_write:
            write_results(info, command, plan, body, verdicts, findings, elapsed)
            print(f"appended to {RESULTS.relative_to(ROOT)}")
        ok = True
        return 0
    except BenchError as exc:
        print(f"\nproxy_bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nproxy_bench: interrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        if ok and not args.keep_temp and not findings:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"proxy_bench: logs kept in {tmp}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
