"""Logging: one line per event, with UTC time, level, component and request id.

Components are the loggers under ``gateway.`` (``gateway.api``, ``gateway.registry``,
``gateway.health``, ``gateway.proxy``); the request id comes from the request being
served, or ``-`` for background work. Nothing here ever formats a secret: callers
log ids, model names and URLs (which the registry refuses to hold credentials in).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from logging.handlers import RotatingFileHandler, WatchedFileHandler

from flask import Flask, g, has_request_context

FORMAT = "%(asctime)s %(levelname)s %(component)s [%(request_id)s] %(message)s"


class ContextFilter(logging.Filter):
    """Adds ``component`` and ``request_id`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        record.component = name.split(".", 1)[1] if name.startswith("gateway.") else name
        request_id = "-"
        if has_request_context():
            request_id = getattr(g, "request_id", "-")
        record.request_id = request_id
        return True


class UTCFormatter(logging.Formatter):
    """ISO-8601 UTC timestamps with milliseconds and a Z."""

    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


class RecentLines(logging.Handler):
    """Keeps the last lines in memory so the dashboard can show them without reading files."""

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def configure(app: Flask) -> None:
    """Set up the ``gateway`` logger for this app: console, rotating file, recent lines."""
    logger = logging.getLogger("gateway")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(app.config["LOG_LEVEL"])
    logger.propagate = False
    formatter = UTCFormatter(FORMAT)
    context = ContextFilter()
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    log_file = app.config["LOG_FILE"]
    if log_file != "-":
        path = log_file or os.path.join(app.instance_path, "logs", "gateway.log")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.environ.get("GATEWAY_LOG_ROTATION") == "external":
            # Several processes append to one file; rotation belongs to logrotate.
            handlers.append(WatchedFileHandler(path))
        else:
            handlers.append(RotatingFileHandler(path, maxBytes=10 * 1024 * 1024, backupCount=5))
        app.config["LOG_FILE_PATH"] = path
    recent = RecentLines()
    handlers.append(recent)
    app.extensions["recent_log_lines"] = recent
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(context)
        logger.addHandler(handler)
