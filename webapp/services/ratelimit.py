"""Per-client rate limits for ``/v1``, on the engine Flask-Limiter is built on.

The ``/v1`` path is plain WSGI (see ``webapp.proxy``), so Flask-Limiter's decorators
never see it; its engine, the ``limits`` library, is used directly with the same limit
syntax (``600/minute``) and the same storages: ``memory://`` counts per process,
``redis://…`` shares the counters between workers and machines.
"""

from __future__ import annotations

import math
import time

from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter


class ClientRateLimiter:
    """Counts hits per client identity (key id or IP) against every configured limit."""

    def __init__(self, spec: str, storage_url: str) -> None:
        self.limits = parse_many(spec)
        self.strategy = FixedWindowRateLimiter(storage_from_string(storage_url))

    def hit(self, client: str) -> int | None:
        """Count one request; None when allowed, else the seconds to wait (Retry-After)."""
        for limit in self.limits:
            if not self.strategy.hit(limit, "v1", client):
                reset_at, _remaining = self.strategy.get_window_stats(limit, "v1", client)
                return max(1, math.ceil(reset_at - time.time()))
        return None
