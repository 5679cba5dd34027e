"""Multiverse Inference Gateway: one OpenAI-compatible endpoint in front of many model servers."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_migrate import Migrate

from webapp import logs, requestio
from webapp.config import Config, apply_settings, effective_settings, load_or_create_secret
from webapp.extensions import db
from webapp.schema import MIGRATIONS, migrate_database
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
    Migrate(app, db, directory=MIGRATIONS)
    requestio.init_app(app)
    upstream = Upstream(
        app.config["ALLOWED_BACKEND_NETWORKS"],
        pool_size=app.config["WORKER_CONNECTIONS"],
        connect_timeout=app.config["CONNECT_TIMEOUT_SECONDS"],
    )
    app.extensions["upstream"] = upstream
    app.extensions["instance_id"] = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    from webapp import backup, metrics
    from webapp.blueprints import admin, dashboard, docs, errors, status
    from webapp.proxy import ProxyApp, V1Dispatcher
    from webapp.services.routing import RoutingTable
    from webapp.services.usage import make_recorder

    app.register_blueprint(errors.bp)
    app.register_blueprint(status.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(docs.bp)
    dashboard.init_app(app)
    app.register_blueprint(metrics.bp)
    backup.init_app(app)

    with app.app_context():
        if database_url.startswith("sqlite"):
            sa.event.listen(db.engine, "connect", _sqlite_pragmas)
        migrate_database(app)
        routing = RoutingTable(app)
        routing.refresh()
    usage = make_recorder(app)
    app.extensions["routing"] = routing
    app.extensions["usage"] = usage
    # /v1 is served by a lean WSGI app in front of Flask (see webapp.proxy for why).
    app.wsgi_app = V1Dispatcher(ProxyApp(app, routing, upstream, usage), app.wsgi_app)
    return app


def start_background(app: Flask) -> None:
    """Start the work that runs beside the requests (the health checker), once per process."""
    log = logging.getLogger("gateway.api")
    log.info("starting with settings: %s", effective_settings(app.config))
    app.extensions["routing"].start()
    app.extensions["usage"].start()
    if app.config["HEALTH_CHECKER_ENABLED"] and "health_checker" not in app.extensions:
        from webapp.services.health import HealthChecker

        checker = HealthChecker(app, app.extensions["instance_id"])
        app.extensions["health_checker"] = checker
        checker.start()


def stop_background(app: Flask) -> None:
    """Stop the background work: hand the lease back, write what is still queued."""
    checker = app.extensions.pop("health_checker", None)
    if checker is not None:
        checker.stop()
    app.extensions["routing"].stop()
    app.extensions["usage"].stop()
