"""``flask backup``: a copy taken under load restores to a working gateway.

SQLite: the command makes the copy. PostgreSQL: it prints the pg_dump and pg_restore
commands, which are run here as printed.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from tests.gateway import ADMIN_KEY
from tests.test_deploy import clean_env
from tests.test_gateway_process import wait_for

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "hello"}]


def flask_backup(app: str, target: Path | str, **env: str) -> subprocess.CompletedProcess:
    """Run ``flask --app APP backup TARGET`` the way an operator (or cron) would."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", app, "backup", str(target)],
        cwd=ROOT,
        env=clean_env(LOG_FILE="-", **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


class Load:
    """A thread sending proxy requests and admin updates until stopped, counting answers."""

    def __init__(self, gateway, server_ids: list[str]) -> None:
        self.gateway = gateway
        self.server_ids = server_ids
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        round_number = 0
        while not self._stop.is_set():
            round_number += 1
            try:
                reply = session.post(
                    self.gateway.url + "/v1/chat/completions",
                    json={"model": "demo-model", "messages": MESSAGES},
                    timeout=30,
                )
                update = session.put(
                    f"{self.gateway.url}/admin/register/{self.server_ids[round_number % 2]}",
                    headers={"X-API-Key": ADMIN_KEY},
                    json={"metadata": {"description": f"revision {round_number}"}},
                    timeout=30,
                )
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
                break
            for response in (reply, update):
                if response.status_code == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
        session.close()

    def wait(self, at_least: int) -> None:
        """Wait until ``at_least`` answers have come back (or a request failed)."""
        wait_for(lambda: self.ok >= at_least or self.failures, timeout=30)
        assert self.failures == []

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def serving_gateway(gateway_factory, backend_factory):
    """A gateway with two registrations of demo-model, usage written often."""
    gateway = gateway_factory({"USAGE_FLUSH_SECONDS": "0.2"})
    server_ids = [gateway.register(backend_factory().url)["registration_id"] for _ in range(2)]
    return gateway, server_ids


def assert_serves(gateway, server_ids: list[str]) -> None:
    """The registrations are all there, and a chat completion goes through one of them."""
    listed = gateway.admin("GET", "/admin/servers").json()["servers"]
    assert sorted(s["id"] for s in listed) == sorted(server_ids)
    reply = requests.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "demo-model", "messages": MESSAGES},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["X-Gateway-Server-ID"] in server_ids
    # Usage recorded before the backup came along.
    assert gateway.admin("GET", "/admin/usage").json()["totals"]["requests"] >= 1


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
def test_sqlite_backup_under_load_restores_to_a_working_gateway(
    tmp_path, gateway_factory, backend_factory
):
    gateway, server_ids = serving_gateway(gateway_factory, backend_factory)
    backups = tmp_path / "backups"
    backups.mkdir()

    with Load(gateway, server_ids) as load:
        load.wait(20)
        served = [load.ok]
        by_factory = flask_backup(
            "webapp", backups / "gateway.db", INSTANCE_PATH=str(gateway.instance)
        )
        served.append(load.ok)
        # The form the issue names, through wsgi.py, into a folder (a timestamped file).
        by_wsgi = flask_backup("wsgi", backups, INSTANCE_PATH=str(gateway.instance))
        served.append(load.ok)
        load.wait(served[-1] + 20)
    # Requests were answered while each backup ran: the copy did not stop the gateway.
    assert served[0] < served[1] < served[2], served

    for result in (by_factory, by_wsgi):
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"servers\s+2 rows", result.stdout), result.stdout
        usage_rows = re.search(r"usage_records\s+(\d+) rows", result.stdout)
        assert usage_rows and int(usage_rows.group(1)) > 0, result.stdout
    # The one-off processes did not take the health lease from the gateway.
    assert requests.get(gateway.url + "/health", timeout=10).json()["holds_health_lease"]

    written = sorted(backups.iterdir())
    assert [p.name for p in written if not p.name.startswith("gateway-")] == ["gateway.db"]
    assert len(written) == 2, written  # no temporary files or -wal/-shm left behind
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o600
        assert str(path) in by_factory.stdout + by_wsgi.stdout
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        finally:
            conn.close()

    gateway.stop()
    # Restore as DEPLOYMENT.md says: the backup becomes gateway.db of a fresh instance.
    restored_instance = tmp_path / "restored"
    restored_instance.mkdir()
    shutil.copy(backups / "gateway.db", restored_instance / "gateway.db")
    assert_serves(gateway_factory(instance=restored_instance), server_ids)


def printed_command(output: str, program: str) -> str:
    """The line of ``flask backup``'s output that runs ``program``."""
    return next(line.strip() for line in output.splitlines() if line.strip().startswith(program))


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_postgres_backup_under_load_restores_to_a_working_gateway(
    tmp_path, gateway_factory, backend_factory
):
    for program in ("pg_dump", "pg_restore"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed")
    gateway, server_ids = serving_gateway(gateway_factory, backend_factory)
    database_url = gateway.env["DATABASE_URL"]
    # A password in the URL (the test server trusts local connections and ignores it):
    # the printed commands must not show it.
    password = "never-shown-" + uuid.uuid4().hex[:8]
    url = sa.engine.make_url(database_url)
    # (a URL carries a password only with a user name: default to the one psycopg would use)
    user = url.username or pwd.getpwuid(os.getuid()).pw_name
    with_password = url.set(username=user, password=password)
    dump = tmp_path / "gateway.dump"
    printed = flask_backup(
        "webapp",
        dump,
        INSTANCE_PATH=str(gateway.instance),
        DATABASE_URL=with_password.render_as_string(hide_password=False),
    )
    assert printed.returncode == 0, printed.stdout + printed.stderr
    assert password not in printed.stdout + printed.stderr
    assert "~/.pgpass" in printed.stdout
    pg_dump = printed_command(printed.stdout, "pg_dump")
    pg_restore = printed_command(printed.stdout, "pg_restore")
    assert "+psycopg" not in pg_dump + pg_restore

    with Load(gateway, server_ids) as load:
        load.wait(20)
        before = load.ok
        dumped = subprocess.run(
            ["bash", "-c", pg_dump], capture_output=True, text=True, timeout=120
        )
        assert dumped.returncode == 0, dumped.stderr
        load.wait(before + 20)

    # A change after the backup, which the restore must undo.
    gone = gateway.admin("DELETE", f"/admin/register/{server_ids[0]}")
    assert gone.status_code in (200, 204), gone.text
    gateway.stop()
    restored = subprocess.run(
        ["bash", "-c", pg_restore], capture_output=True, text=True, timeout=120
    )
    assert restored.returncode == 0, restored.stderr
    assert_serves(
        gateway_factory({"DATABASE_URL": database_url}, instance=tmp_path / "restored"), server_ids
    )


def test_backup_targets(tmp_path):
    instance = tmp_path / "instance"
    made = flask_backup("webapp", f"{tmp_path}/new/folder/", INSTANCE_PATH=str(instance))
    assert made.returncode == 0, made.stderr
    assert "no registrations" in made.stderr  # an empty database: probably the wrong one
    [written] = (tmp_path / "new" / "folder").iterdir()
    assert re.fullmatch(r"gateway-\d{8}T\d{6}Z\.db", written.name)
    assert (tmp_path / "new" / "folder").stat().st_mode & 0o777 == 0o700

    refused = flask_backup("webapp", instance / "gateway.db", INSTANCE_PATH=str(instance))
    assert refused.returncode != 0
    assert "live database" in refused.stderr
