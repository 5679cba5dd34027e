"""Multiverse Inference Gateway: one OpenAI-compatible endpoint in front of many model servers."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

import sqlalchemy as sa
from flask import Flask

from webapp import logs, requestio
from webapp.config import Config, apply_settings, effective_settings, load_or_create_secret
from webapp.extensions import db
from webapp.upstream import Upstream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

__version__ = "0.1.0"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; busy_timeout waits out short write locks."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults and environment, then ``instance/config.py``, then ``test_config``.

    Raises ``ConfigError`` naming the setting when a value is invalid.
    """
    instance_path = os.environ.get("INSTANCE_PATH") or os.path.join(ROOT, "instance")
    if test_config and test_config.get("INSTANCE_PATH"):
        instance_path = test_config["INSTANCE_PATH"]
    app = Flask(
        __name__,
        instance_path=os.path.abspath(instance_path),
        instance_relative_config=True,
        template_folder=os.path.join(ROOT, "templates"),
        static_folder=os.path.join(ROOT, "static"),
    )
    app.config.from_object(Config())
    app.config.from_pyfile("config.py", silent=True)
    if test_config:
        app.config.update(test_config)
    apply_settings(app.config)
    os.makedirs(app.instance_path, exist_ok=True)

    database_url = app.config["DATABASE_URL"] or "sqlite:///" + os.path.join(
        app.instance_path, "gateway.db"
    )
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        "pool_pre_ping": not database_url.startswith("sqlite")
    }
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_REQUEST_BODY_SIZE"]
    app.config["SECRET_KEY"] = app.config["SECRET_KEY"] or load_or_create_secret(
        os.path.join(app.instance_path, "secret_key")
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]

    logs.configure(app)
    db.init_app(app)
    requestio.init_app(app)
    app.extensions["upstream"] = Upstream(app.config["ALLOWED_BACKEND_NETWORKS"])
    app.extensions["instance_id"] = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    from webapp.blueprints import admin, errors, status

    app.register_blueprint(errors.bp)
    app.register_blueprint(status.bp)
    app.register_blueprint(admin.bp)

    with app.app_context():
        if database_url.startswith("sqlite"):
            sa.event.listen(db.engine, "connect", _sqlite_pragmas)
        db.create_all()
    return app


def start_background(app: Flask) -> None:
    """Start the work that runs beside the requests (the health checker), once per process."""
    log = logging.getLogger("gateway.api")
    log.info("starting with settings: %s", effective_settings(app.config))
    if app.config["HEALTH_CHECKER_ENABLED"] and "health_checker" not in app.extensions:
        from webapp.services.health import HealthChecker

        checker = HealthChecker(app, app.extensions["instance_id"])
        app.extensions["health_checker"] = checker
        checker.start()
