"""The scripts in examples/ run as a user would run them: subprocesses against a real gateway.

Each example is started with ``sys.executable examples/NAME.py`` against a gateway
process and demo backends on loopback, and judged by its output and exit status
(0 done, 1 the gateway refused, 2 it could not be reached or no admin key was found).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import free_port
from tests.gateway import ADMIN_KEY
from webapp.demo_backend import reply_text

ROOT = Path(__file__).resolve().parent.parent
ID_LINE = re.compile(r"registration id:\s+([0-9a-f-]{36})")
# Settings the examples read from the environment; a test sets the ones it means.
EXAMPLE_SETTINGS = ("ADMIN_API_KEY", "GATEWAY_URL", "GATEWAY_API_KEY", "BACKEND_API_KEY")


@pytest.fixture
def run(tmp_path: Path):
    """Run an example; the key file fallback points at an empty folder unless a test fills it."""
    empty_instance = tmp_path / "no-instance"
    empty_instance.mkdir()

    def run_example(name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if k not in EXAMPLE_SETTINGS}
        environ.update(INSTANCE_PATH=str(empty_instance), NO_PROXY="127.0.0.1,localhost")
        environ.update(env)
        return subprocess.run(
            [sys.executable, str(ROOT / "examples" / f"{name}.py"), *args],
            cwd=ROOT,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run_example


def registered_id(result: subprocess.CompletedProcess[str]) -> str:
    """The registration id register_server.py printed (fails the test if it did not)."""
    assert result.returncode == 0, result.stderr
    match = ID_LINE.search(result.stdout)
    assert match, result.stdout
    return match.group(1)


def test_register_prints_an_id_that_list_servers_shows(run, gateway, backend):
    result = run(
        "register_server",
        backend.url,
        *("--model-name", "demo-model", "--student-id", "s7", "--description", "lab box"),
        *("--max-tokens", "512", "--context-length", "4096", "--gateway-url", gateway.url),
        ADMIN_API_KEY=ADMIN_KEY,
    )
    server_id = registered_id(result)
    assert "health:          healthy" in result.stdout
    stored = gateway.admin("GET", f"/admin/servers/{server_id}").json()
    assert stored["capabilities"] == {"max_tokens": 512, "context_length": 4096, "streaming": True}
    assert stored["metadata"] == {"student_id": "s7", "description": "lab box"}

    listing = run("list_servers", "--gateway-url", gateway.url, ADMIN_API_KEY=ADMIN_KEY)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == [
        "id",
        "model",
        "status",
        "active",
        "endpoint",
        "last",
        "check",
        "response",
        "ms",
    ]
    row = next(line for line in lines if line.startswith(server_id))
    assert row.split()[1:5] == ["demo-model", "healthy", "yes", backend.url]
    assert lines[-1] == "1 server"


def test_list_servers_filters_by_model_status_and_owner(run, gateway, backend_factory):
    first = gateway.register(backend_factory().url, metadata={"student_id": "s1"})
    other = backend_factory(model="other-model")
    second = gateway.register(other.url, model="other-model", metadata={"student_id": "s2"})
    gw = ("--gateway-url", gateway.url)

    by_model = run("list_servers", "--model", "other-model", *gw, ADMIN_API_KEY=ADMIN_KEY)
    assert second["registration_id"] in by_model.stdout
    assert first["registration_id"] not in by_model.stdout
    by_owner = run("list_servers", "--student", "s1", *gw, ADMIN_API_KEY=ADMIN_KEY)
    assert first["registration_id"] in by_owner.stdout
    assert second["registration_id"] not in by_owner.stdout
    healthy = run("list_servers", "--status", "healthy", *gw, ADMIN_API_KEY=ADMIN_KEY)
    assert healthy.stdout.rstrip().endswith("2 servers")
    none = run("list_servers", "--status", "unhealthy", *gw, ADMIN_API_KEY=ADMIN_KEY)
    assert none.returncode == 0
    assert none.stdout.strip() == "No servers match."


@pytest.mark.parametrize(
    ("args", "param", "duplicate"),
    [
        (("--model-name", "bad name!"), "model_name", False),
        (("--model-name", "demo-model", "--max-tokens", "0"), "capabilities.max_tokens", False),
        (("--model-name", "demo-model", "--student-id", "x" * 101), "metadata.student_id", False),
        (("--model-name", "demo-model"), "endpoint_url", True),
    ],
)
def test_register_error_exits_1_naming_the_param(run, gateway, backend, args, param, duplicate):
    if duplicate:
        gateway.register(backend.url)
    result = run(
        "register_server", backend.url, *args, "--gateway-url", gateway.url, ADMIN_API_KEY=ADMIN_KEY
    )
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("error: ")
    assert f"  param: {param}" in result.stderr.splitlines()
    assert "registration id" not in result.stdout


def test_register_reports_a_server_that_fails_the_probe(run, gateway):
    dead = f"http://127.0.0.1:{free_port()}"
    result = run(
        "register_server",
        dead,
        "--model-name",
        "m",
        "--gateway-url",
        gateway.url,
        ADMIN_API_KEY=ADMIN_KEY,
    )
    assert result.returncode == 1
    assert "did not pass the health probe" in result.stderr
    assert "(HTTP 503)" in result.stderr


def test_admin_key_comes_from_flag_then_environment_then_key_file(run, gateway, tmp_path):
    gw = ("--gateway-url", gateway.url)
    instance = tmp_path / "instance"
    instance.mkdir()
    key_file = instance / "admin_api_key"

    assert run("list_servers", *gw, "--admin-key", ADMIN_KEY, ADMIN_API_KEY="wrong").returncode == 0
    key_file.write_text("wrong\n")
    assert (
        run("list_servers", *gw, ADMIN_API_KEY=ADMIN_KEY, INSTANCE_PATH=str(instance)).returncode
        == 0
    )
    key_file.write_text(ADMIN_KEY + "\n")
    assert run("list_servers", *gw, INSTANCE_PATH=str(instance)).returncode == 0

    wrong = run("list_servers", *gw, ADMIN_API_KEY="wrong")
    assert wrong.returncode == 1
    assert "HTTP 403" in wrong.stderr
    missing = run("list_servers", *gw)
    assert missing.returncode == 2
    assert "no admin key" in missing.stderr


@pytest.mark.parametrize(
    "example", [("use_model",), ("register_server", "http://127.0.0.1:9"), ("list_servers",)]
)
def test_examples_say_when_the_gateway_is_unreachable(run, example):
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = run(*example, "--gateway-url", nowhere, ADMIN_API_KEY=ADMIN_KEY)
    assert result.returncode == 2
    assert "cannot reach the gateway" in result.stderr
    assert "Traceback" not in result.stderr


def test_use_model_lists_chats_completes_and_streams(run, gateway, backend):
    """Needs the /v1 proxy: the official openai client end to end through the gateway."""
    gw = ("--gateway-url", gateway.url)
    empty = run("use_model", *gw)
    assert empty.returncode == 1, empty.stdout + empty.stderr
    assert "lists no models" in empty.stderr

    server_id = gateway.register(backend.url)["registration_id"]
    result = run("use_model", *gw)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "  demo-model  (1 of 1 servers healthy)" in out.splitlines()
    assert "Using model demo-model" in out
    assert f"Chat reply (server {server_id}):\n  {reply_text(backend.tokens)}\n" in out
    # The legacy completion asks for 8 tokens, so the demo backend stops after 8.
    assert f"Legacy completion:\n  {reply_text(8)}\n" in out
    assert f"Streamed chat: {reply_text(backend.tokens)}\n" in out
    assert f"({backend.tokens} token chunks in " in out
    assert result.stderr == ""
