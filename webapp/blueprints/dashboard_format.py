"""How values look on dashboard pages: times, durations, addresses, numbers."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import Flask

from webapp.models import utcnow


def ago(value: datetime | None) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``; ``never`` for None."""
    if value is None:
        return "never"
    seconds = max(0, int((utcnow() - value).total_seconds()))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def utc(value: datetime | None, seconds: bool = True) -> str:
    """``2025-01-31 14:05:09 UTC``; an empty string for None."""
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def clock(value: datetime | None) -> str:
    """``14:05:09 UTC``: the time of day, for labels where the date is already known."""
    return value.strftime("%H:%M:%S UTC") if value is not None else ""


def duration(value: timedelta) -> str:
    """``42 s``, ``5 min``, ``3 h 12 min``, ``2 d 4 h``."""
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def iso(value: datetime | None) -> str:
    """ISO-8601 for ``<time datetime>``."""
    return value.isoformat() if value is not None else ""


def ms(value: float | None) -> str:
    """A duration in milliseconds, precise where it matters: ``0.8 ms``, ``42 ms``, ``1.2 s``."""
    if value is None:
        return "–"
    if value < 10:
        return f"{value:.1f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    return f"{value / 1000:.1f} s"


def short_url(value: str, limit: int = 32) -> str:
    """An endpoint without its scheme, cut in the middle when long."""
    text = value.split("://", 1)[-1]
    if len(text) <= limit:
        return text
    keep = (limit - 1) // 2
    return text[:keep] + "…" + text[-(limit - 1 - keep) :]


def host(value: str) -> str:
    """The host (and port) of a URL."""
    return urlsplit(value).netloc or value


def number(value: int | float | None) -> str:
    """Thousands separated by a thin space: ``12 345``."""
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}".replace(",", "\u2009")
    return f"{int(value):,}".replace(",", "\u2009")


def percent(value: float | None) -> str:
    """``99.5 %``; ``–`` when there is nothing to measure."""
    if value is None:
        return "–"
    rounded = round(value, 1)
    return f"{rounded:.0f} %" if rounded.is_integer() else f"{rounded:.1f} %"


def register_filters(app: Flask) -> None:
    """Make these available to every template as filters."""
    app.jinja_env.filters.update(
        ago=ago,
        utc=utc,
        clock=clock,
        duration=duration,
        iso=iso,
        ms=ms,
        short_url=short_url,
        host=host,
        number=number,
        percent=percent,
    )
