"""A background writer: the request path appends, a loop writes batches to the database.

Appending to a deque costs nothing measurable and never blocks, so the request path
stays free of database work; the loop flushes on an interval in one transaction.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from flask import Flask

from webapp.extensions import db

log = logging.getLogger("gateway.api")


class BatchWriter:
    """Collect items anywhere; ``write(items)`` runs in the app context, off the request path."""

    def __init__(
        self,
        app: Flask,
        name: str,
        write: Callable[[list[Any]], None],
        interval: float,
        max_pending: int = 100_000,
    ) -> None:
        self.app = app
        self.name = name
        self.write = write
        self.interval = interval
        self.pending: deque[Any] = deque(maxlen=max_pending)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, item: Any) -> None:
        """Queue one item (drops the oldest if the database has been away for very long)."""
        self.pending.append(item)

    def start(self) -> None:
        """Start the flush loop (a greenlet once gevent has patched threading)."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Flush what is left and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def flush(self) -> int:
        """Write everything queued so far in one transaction; returns how many were written."""
        items: list[Any] = []
        while self.pending:
            items.append(self.pending.popleft())
        if not items:
            return 0
        with self.app.app_context():
            try:
                self.write(items)
                db.session.commit()
            except Exception:  # noqa: BLE001 - keep the items for the next try
                db.session.rollback()
                log.exception("%s: writing %d items failed; will retry", self.name, len(items))
                self.pending.extendleft(reversed(items))
                return 0
        return len(items)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()
