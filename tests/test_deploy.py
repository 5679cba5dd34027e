"""Deployment as operators run it: start.sh/stop.sh, supervisord from deploy/, nginx in front.

Real processes on loopback ports, each with its own instance folder; every process a test
starts is stopped by its own pid (other gateways may run on this machine at the same time).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.backends import free_port
from tests.gateway import ADMIN_KEY
from tests.test_gateway_process import wait_for
from webapp.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MESSAGES = [{"role": "user", "content": "hello"}]
# Variables start.sh, gunicorn.conf.py or supervisord.conf read besides the gateway settings.
DEPLOY_VARIABLES = {
    "INSTANCE_PATH",
    "WORKERS",
    "GRACEFUL_TIMEOUT_SECONDS",
    "PROMETHEUS_MULTIPROC_DIR",
    "GATEWAY_ROOT",
    "GATEWAY_INSTANCE",
    "GATEWAY_USER",
    "GATEWAY_PORT",
}


def clean_env(**values: str) -> dict[str, str]:
    """This environment without any gateway setting of the caller's, plus ``values``."""
    drop = {setting.name for setting in SETTINGS} | DEPLOY_VARIABLES
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(values)
    return env


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (gunicorn's workers below its master)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def health(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def kill_leftovers(pids: set[int]) -> None:
    """Last resort after a failed test: KILL the processes this test saw, by pid."""
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- start.sh / stop.sh ---------------------------------------------------------------------


def run_script(name: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ./start.sh or ./stop.sh as an operator would, capturing what it prints."""
    return subprocess.run(
        [str(ROOT / name)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_start_and_stop_scripts_round_trip(tmp_path):
    instance = tmp_path / "instance"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        INSTANCE_PATH=str(instance),
        HOST="127.0.0.1",
        PORT=str(port),
        WORKERS="1",
        GRACEFUL_TIMEOUT_SECONDS="5",
    )
    pidfile = instance / "gateway.pid"
    seen: set[int] = set()
    try:
        started = run_script("start.sh", env)
        assert started.returncode == 0, started.stdout + started.stderr
        keyfile = instance / "admin_api_key"
        key = keyfile.read_text().strip()
        assert "Generated an admin API key" in started.stdout
        assert started.stdout.count(key) == 1
        assert keyfile.stat().st_mode & 0o777 == 0o600
        assert health(url)
        master = int(pidfile.read_text())
        seen |= {master} | descendants(master)
        servers = requests.get(url + "/admin/servers", headers={"X-API-Key": key}, timeout=10)
        assert servers.status_code == 200
        assert (instance / "logs" / "server.log").exists()
        assert (instance / "logs" / "gateway.log").exists()

        again = run_script("start.sh", env)
        assert again.returncode == 0 and "already running" in again.stdout
        assert int(pidfile.read_text()) == master

        stopped = run_script("stop.sh", env)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not pidfile.exists()
        assert not alive(master)
        wait_for(lambda: not any(alive(pid) for pid in seen), timeout=20)
        assert not health(url)

        restarted = run_script("start.sh", env)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert "Generated" not in restarted.stdout and key not in restarted.stdout
        assert keyfile.read_text().strip() == key
        master = int(pidfile.read_text())
        seen |= {master} | descendants(master)
        assert requests.get(url + "/admin/servers", headers={"X-API-Key": key}, timeout=10).ok
    finally:
        run_script("stop.sh", env)
        kill_leftovers(seen)


# -- supervisord ----------------------------------------------------------------------------


class Supervisor:
    """supervisord in the foreground (``-n``) from deploy/supervisord.conf, as this test's child."""

    def __init__(self, instance: Path, port: int, extra_env: dict[str, str]) -> None:
        self.conf = ROOT / "deploy" / "supervisord.conf"
        self.instance = instance
        self.env = clean_env(
            GATEWAY_ROOT=str(ROOT),
            GATEWAY_INSTANCE=str(instance),
            GATEWAY_USER=pwd.getpwuid(os.getuid()).pw_name,
            GATEWAY_PORT=str(port),
            **extra_env,
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        (self.instance / "logs").mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "supervisord"), "-n", "-c", str(self.conf)],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.instance / "supervisord.stderr", "wb"),  # noqa: SIM115
        )

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(VENV_BIN / "supervisorctl"), "-c", str(self.conf), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=90,
        )

    def status(self) -> str:
        return self.ctl("status", "multiverse-gateway").stdout

    def logs(self) -> str:
        parts = []
        for name in ("logs/server.log", "logs/supervisord.log", "supervisord.stderr"):
            path = self.instance / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text()[-3000:]}")
        return "\n".join(parts)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary folder: a unix socket path must stay under ~100 characters."""
    folder = Path(tempfile.mkdtemp(prefix="mvgw-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_supervisord_restarts_a_killed_gunicorn_master(short_tmp, backend):
    instance = short_tmp / "instance"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    supervisor = Supervisor(
        instance,
        port,
        {
            "ADMIN_API_KEY": ADMIN_KEY,
            "ALLOWED_BACKEND_NETWORKS": "127.0.0.0/8",
            "WORKERS": "2",
            "GRACEFUL_TIMEOUT_SECONDS": "5",
        },
    )
    headers = {"X-API-Key": ADMIN_KEY}
    pidfile = instance / "gateway.pid"
    seen: set[int] = set()
    supervisor.start()
    assert supervisor.proc is not None
    seen.add(supervisor.proc.pid)
    try:
        wait_for(lambda: health(url), timeout=90, interval=0.2)
        first = int(pidfile.read_text())
        wait_for(lambda: len(descendants(first)) == 2, timeout=30)
        first_workers = descendants(first)
        seen |= {first} | first_workers
        wait_for(lambda: "RUNNING" in supervisor.status(), timeout=30)

        registered = requests.post(
            url + "/admin/register",
            headers=headers,
            json={"model_name": "demo-model", "endpoint_url": backend.url},
            timeout=30,
        )
        assert registered.status_code == 201, registered.text
        server_id = registered.json()["registration_id"]

        os.kill(first, signal.SIGKILL)

        def restarted() -> int | None:
            try:
                pid = int(pidfile.read_text())
            except (FileNotFoundError, ValueError):
                return None
            return pid if pid != first and alive(pid) else None

        second = wait_for(restarted, timeout=90, interval=0.2)
        # The killed master's workers notice their parent is gone and leave (until then they
        # still hold the port, and the new master retries binding it).
        wait_for(lambda: not any(alive(pid) for pid in first_workers), timeout=30)

        def served_by_new_master() -> bool:
            try:
                answer = requests.get(url + "/health", timeout=2)
            except requests.RequestException:
                return False
            return answer.status_code == 200 and answer.json()["worker_pid"] in descendants(second)

        wait_for(served_by_new_master, timeout=60, interval=0.2)
        seen |= {second} | descendants(second)

        listed = requests.get(url + "/admin/servers", headers=headers, timeout=10).json()
        assert [s["id"] for s in listed["servers"]] == [server_id]
        reply = requests.post(
            url + "/v1/chat/completions",
            json={"model": "demo-model", "messages": MESSAGES},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["X-Gateway-Server-ID"] == server_id

        seen |= descendants(second)
        shutdown = supervisor.ctl("shutdown")
        assert shutdown.returncode == 0, shutdown.stdout + shutdown.stderr
        assert supervisor.proc.wait(timeout=90) == 0
        wait_for(lambda: not any(alive(pid) for pid in seen), timeout=30)
        assert not health(url)
        assert not pidfile.exists()
    except BaseException:
        print(supervisor.logs())
        raise
    finally:
        if supervisor.proc.poll() is None:
            seen |= descendants(supervisor.proc.pid)
            supervisor.ctl("shutdown")
            try:
                supervisor.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                supervisor.proc.kill()
                supervisor.proc.wait()
        kill_leftovers(seen)


# -- nginx ----------------------------------------------------------------------------------

NGINX_SITE = ROOT / "deploy" / "nginx" / "multiverse-gateway.conf"


def find_nginx() -> str:
    """The nginx binary (it lives in /usr/sbin, often not on a user's PATH), or skip."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        pytest.skip(
            "nginx is not installed, so deploy/nginx/multiverse-gateway.conf was not checked "
            "(apt-get install nginx-light to run this test)"
        )
    return found


def nginx_config(folder: Path, gateway_port: int, http_port: int, https_port: int) -> Path:
    """The site as shipped, wrapped in a main config that keeps every file inside ``folder``.

    Only what cannot work on a test machine changes: the certificate (a self-signed one made
    here instead of certbot's), log paths, listen ports and the gateway's port.
    """
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=gateway.example.org",
            "-addext", "subjectAltName=DNS:gateway.example.org,IP:127.0.0.1",
            "-keyout", str(folder / "privkey.pem"), "-out", str(folder / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    site = NGINX_SITE.read_text()
    site = site.replace("/etc/letsencrypt/live/gateway.example.org/", f"{folder}/")
    site = site.replace("/var/log/nginx/", f"{folder}/")
    site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{gateway_port};")
    site = re.sub(r"listen \[::\]:\d+[^;]*;", "", site)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    (folder / "site.conf").write_text(site)
    main = folder / "nginx.conf"
    main.write_text(
        f"""
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    access_log {folder}/access.log;
    include {folder}/site.conf;
}}
"""
    )
    return main


def test_nginx_site_passes_nginx_t(tmp_path):
    nginx = find_nginx()
    conf = nginx_config(tmp_path, free_port(), free_port(), free_port())
    checked = subprocess.run(
        [nginx, "-t", "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    print(checked.stderr)
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)  # nginx is the subject
def test_streams_pass_through_nginx_unbuffered(tmp_path, gateway_factory, backend_factory):
    """The site in front of a real gateway: redirect, TLS, body limit, SSE token by token."""
    nginx = find_nginx()
    gateway = gateway_factory({"TRUSTED_PROXIES": "127.0.0.1/32"})
    backend = backend_factory(tokens=4, token_delay_ms=500)
    http_port, https_port = free_port(), free_port()
    conf = nginx_config(tmp_path, gateway.port, http_port, https_port)
    proc = subprocess.Popen(
        [nginx, "-c", str(conf), "-e", str(tmp_path / "error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "nginx.stderr", "wb"),  # noqa: SIM115
    )
    base = f"https://127.0.0.1:{https_port}"
    session = requests.Session()
    session.trust_env = False  # no proxies, and no CA bundle from the environment
    session.verify = str(tmp_path / "fullchain.pem")  # the certificate made for this test
    try:

        def up() -> bool:
            try:
                return session.get(base + "/health", timeout=2).status_code == 200
            except requests.RequestException:
                assert proc.poll() is None, (tmp_path / "error.log").read_text()
                return False

        wait_for(up, timeout=30)
        plain = requests.get(
            f"http://127.0.0.1:{http_port}/v1/models", allow_redirects=False, timeout=5
        )
        assert plain.status_code == 301
        assert plain.headers["Location"].startswith("https://")

        registered = session.post(
            base + "/admin/register",
            headers={"X-API-Key": ADMIN_KEY},
            json={"model_name": "demo-model", "endpoint_url": backend.url},
            timeout=30,
        )
        assert registered.status_code == 201, registered.text
        assert session.get(base + "/v1/models", timeout=10).json()["data"][0]["id"] == "demo-model"

        too_big = session.post(base + "/v1/chat/completions", data=b"x" * (2 * 1024 * 1024))
        assert too_big.status_code == 413

        # Buffering anywhere would hold the first token until the stream ends: the first
        # token must arrive while the backend is still generating the rest.
        backend.reset_stats()
        with session.post(
            base + "/v1/chat/completions",
            json={"model": "demo-model", "messages": MESSAGES, "stream": True},
            stream=True,
            timeout=30,
        ) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            lines = response.iter_lines()
            first = next(line for line in lines if b'"content"' in line)
            assert backend.stats()["streams_completed"] == 0, first
            rest = [line for line in lines if line]
        assert rest[-1] == b"data: [DONE]"
        assert backend.stats()["streams_completed"] == 1
    finally:
        session.close()
        workers = descendants(proc.pid)
        proc.terminate()  # TERM: nginx's fast shutdown
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        kill_leftovers(workers)
