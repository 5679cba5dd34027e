"""``flask --app webapp backup PATH``: a consistent copy of the database while the gateway serves.

SQLite: the sqlite3 online backup API copies the database as of one read transaction. In WAL
mode that snapshot does not block the gateway's writers, and what is copied is exactly what was
committed, never a half-written page: copying ``gateway.db`` with ``cp`` while the gateway runs
can miss the ``-wal`` file or tear it. The copy is written to a temporary file next to PATH,
checked, made self-contained (rollback journal, no ``-wal``/``-shm`` to carry around) and renamed
into place, so PATH is either the old file or a complete new one, never a partial one.

PostgreSQL: ``pg_dump`` is the right tool; the command prints the exact invocation for the
configured ``DATABASE_URL`` (without its password) instead of reimplementing it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sqlite3
import tempfile
import time
from pathlib import Path

import click
import sqlalchemy as sa
from flask import Flask, current_app

BACKUP_MODE = 0o600


def init_app(app: Flask) -> None:
    """Register the ``backup`` command on the app's CLI."""
    app.cli.add_command(backup_command)


@click.command("backup")
@click.argument("path")
def backup_command(path: str) -> None:
    """Back up the gateway's database to PATH: a file, or a folder (an existing one, or any path
    ending in /) that receives a timestamped file.

    SQLite: an online, consistent copy (safe while the gateway serves), written atomically with
    mode 600. PostgreSQL: prints the pg_dump command to run instead.
    """
    into_folder = path.endswith("/") or Path(path).is_dir()
    url = sa.engine.make_url(current_app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "postgresql":
        click.echo(pg_dump_instructions(url, Path(path), into_folder))
        return
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise click.ClickException(
            f"backup supports SQLite files and PostgreSQL, not {url.get_backend_name()!r}"
        )
    source = Path(url.database).resolve()
    if not source.is_file():
        raise click.ClickException(f"no database at {source}")
    if into_folder:
        Path(path).mkdir(mode=0o700, parents=True, exist_ok=True)
        target = Path(path, time.strftime("gateway-%Y%m%dT%H%M%SZ.db", time.gmtime())).resolve()
    else:
        target = Path(path).resolve()
    if target == source:
        raise click.ClickException("PATH is the live database itself; choose another path")
    counts = backup_sqlite(source, target)
    size = target.stat().st_size
    click.echo(f"Backed up {source} to {target} ({size} bytes, mode 600)")
    width = max((len(name) for name in counts), default=0)
    for name, rows in counts.items():
        click.echo(f"  {name:<{width}}  {rows} rows")
    if not counts.get("servers"):
        click.echo(
            "Warning: no registrations in this database. Is it the right one? The command reads "
            "INSTANCE_PATH, DATABASE_URL and instance/config.py like the gateway does.",
            err=True,
        )


def backup_sqlite(source: Path, target: Path) -> dict[str, int]:
    """Copy ``source`` to ``target`` atomically (mode 600); return row counts per table."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    temp = Path(temp_name)
    try:
        os.chmod(temp, BACKUP_MODE)  # mkstemp makes it 600 already; say so explicitly
        src = sqlite3.connect(source, timeout=30)
        try:
            dst = sqlite3.connect(temp)
            try:
                # One step (all pages at once) = one read transaction = one snapshot.
                src.backup(dst)
                # A single self-contained file: no -wal/-shm to copy alongside it. The
                # gateway switches it back to WAL when it opens it.
                dst.execute("PRAGMA journal_mode=DELETE")
                check = dst.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise click.ClickException(f"the copy failed its integrity check: {check}")
                counts = _row_counts(dst)
            finally:
                dst.close()
        finally:
            src.close()
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, target)
        _fsync_directory(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return counts


def _row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    names = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    return {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (a crash right after must not lose the new name)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pg_dump_instructions(url: sa.engine.URL, path: Path, into_folder: bool) -> str:
    """The pg_dump (and pg_restore) commands for ``url``, with the password left out."""
    has_password = bool(url.password)
    # URL.set() cannot clear a field (None means "keep"): build the URL again without it.
    plain = sa.engine.URL.create(
        "postgresql",
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )
    conninfo = plain.render_as_string()
    # For a folder, leave $(date ...) unquoted so the shell fills in the time at each run.
    if into_folder:
        dump_to = shlex.quote(str(path)) + "/gateway-$(date -u +%Y%m%dT%H%M%SZ).dump"
        restore_from = shlex.quote(str(path)) + "/gateway-YYYYMMDDTHHMMSSZ.dump"
    else:
        dump_to = restore_from = shlex.quote(str(path))
    url_arg = shlex.quote(conninfo)
    lines = [
        "The database is PostgreSQL: back it up with pg_dump (custom format, consistent while",
        "the gateway serves):",
        "",
        f"  pg_dump --format=custom --no-owner --file={dump_to} {url_arg}",
        "",
        "Restore (stop every gateway first; --clean replaces what the database holds):",
        "",
        f"  pg_restore --clean --if-exists --no-owner --dbname={url_arg} {restore_from}",
    ]
    if has_password:
        lines += [
            "",
            "The password is not shown: give it through ~/.pgpass (mode 600) or PGPASSWORD.",
        ]
    return "\n".join(lines)
