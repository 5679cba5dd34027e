"""Run the real gateway (``python wsgi.py``, gevent-patched) as a subprocess for tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.backends import free_port

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "test-admin-key-0123456789abcdef"


class GatewayProcess:
    """A gateway on a loopback port with its own instance folder (database, logs, secrets)."""

    def __init__(
        self,
        instance: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
        gunicorn: bool = False,
    ):
        """``gunicorn=True`` runs the production server (``WORKERS`` in ``env``), else ``python wsgi.py``."""
        self.instance = Path(instance)
        self.gunicorn = gunicorn
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "INSTANCE_PATH": str(self.instance),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "ADMIN_API_KEY": ADMIN_KEY,
            "ALLOWED_BACKEND_NETWORKS": "127.0.0.0/8,::1/128",
            "HEALTH_CHECK_INTERVAL_SECONDS": "60",
            "HEALTH_CHECK_TIMEOUT_SECONDS": "2",
            "LOG_LEVEL": "DEBUG",
            "GRACEFUL_TIMEOUT_SECONDS": "10",
        }
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.session = requests.Session()

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        """Start and wait until ``/health`` answers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "HEALTH_"))}
        env.update(self.env)
        self.instance.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.instance / "stderr.txt"
        command = [sys.executable, str(ROOT / "wsgi.py")]
        if self.gunicorn:
            gunicorn = str(Path(sys.executable).parent / "gunicorn")
            command = [gunicorn, "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "wsgi:app"]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.stderr_path, "ab"),  # noqa: SIM115 - closed with the process
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.stderr_path.read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass  # not listening yet, or workers still loading
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"gateway did not answer /health: {self.stderr_path.read_text()[-2000:]}"
        )

    def stop(self) -> None:
        """Stop gracefully (TERM), then kill if it lingers."""
        # An idle keep-alive connection would hold a gunicorn worker until its timeout.
        self.session.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.session.close()

    def admin(
        self, method: str, path: str, key: str | None = ADMIN_KEY, **kwargs
    ) -> requests.Response:
        """Call the admin API with the admin key (or another, or none)."""
        headers = kwargs.pop("headers", {})
        if key is not None:
            headers["X-API-Key"] = key
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, headers=headers, **kwargs)

    def register(self, backend_url: str, model: str | None = "demo-model", **fields) -> dict:
        """Register a backend and return the 201 body (fails the test otherwise)."""
        payload = {"endpoint_url": backend_url, **fields}
        if model is not None:
            payload["model_name"] = model
        response = self.admin("POST", "/admin/register", json=payload)
        assert response.status_code == 201, response.text
        return response.json()

    def wait_routable(self, model: str = "demo-model", timeout: float = 15.0) -> None:
        """Poll until every worker routes ``model`` (fresh connections spread over workers)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = [
                requests.get(
                    self.url + "/v1/models", headers={"Connection": "close"}, timeout=10
                ).json()
                for _ in range(12)
            ]
            if all(any(m["id"] == model for m in body["data"]) for body in listed):
                return
            time.sleep(0.2)
        raise AssertionError(f"{model} not routable by every worker within {timeout} s")

    def log_text(self) -> str:
        """Everything the gateway logged: the log file and the console."""
        log_file = self.instance / "logs" / "gateway.log"
        text = log_file.read_text() if log_file.exists() else ""
        return text + self.stderr_path.read_text()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
