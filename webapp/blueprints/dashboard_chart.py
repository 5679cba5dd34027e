"""The health history chart: geometry for a server-rendered SVG of the last checks.

One slot per kept check, newest on the right. A passed check is a green bar as tall
as its response time; a failed one is a full-height red bar, so status reads from
height and colour alike. A strip under the bars repeats the verdicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from webapp.blueprints.dashboard_format import ms, utc
from webapp.models import HealthCheck
from webapp.services.health import HISTORY_KEPT

WIDTH = 1000
PLOT_HEIGHT = 140
STRIP_HEIGHT = 12
GAP = 2


@dataclass
class Bar:
    """One check as drawn."""

    x: float
    y: float
    width: float
    height: float
    css: str
    label: str


def _nice_ceiling(value: float) -> float:
    """The next 1, 2 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _label(check: HealthCheck) -> str:
    when = utc(check.checked_at)
    if check.ok:
        return f"{when}: passed in {ms(check.response_ms)} ({check.source})"
    return f"{when}: failed ({check.source}): {check.reason or 'no reason given'}"


def history_chart(checks_newest_first: list[HealthCheck]) -> dict[str, Any]:
    """Bars, the response-time scale and a text summary for ``_history_chart.html``."""
    checks = list(reversed(checks_newest_first[:HISTORY_KEPT]))
    slot = WIDTH / HISTORY_KEPT
    times = [c.response_ms for c in checks if c.ok and c.response_ms is not None]
    scale = _nice_ceiling(max(times)) if times else 1.0
    offset = HISTORY_KEPT - len(checks)
    bars: list[Bar] = []
    strip: list[Bar] = []
    for index, check in enumerate(checks):
        x = (offset + index) * slot + GAP / 2
        width = slot - GAP
        label = _label(check)
        if check.ok:
            share = min((check.response_ms or 0.0) / scale, 1.0)
            height = max(share * PLOT_HEIGHT, 2.0)
            bars.append(Bar(x, PLOT_HEIGHT - height, width, height, "bar-ok", label))
        else:
            bars.append(Bar(x, 0, width, PLOT_HEIGHT, "bar-fail", label))
        strip_css = "strip-ok" if check.ok else "strip-fail"
        strip.append(Bar(x, PLOT_HEIGHT + 4, width, STRIP_HEIGHT, strip_css, label))
    passed = sum(1 for c in checks if c.ok)
    summary = f"{len(checks)} checks, oldest first: {passed} passed, {len(checks) - passed} failed"
    if times:
        summary += f"; response times {ms(min(times))} to {ms(max(times))}"
    return {
        "bars": bars,
        "strip": strip,
        "scale": ms(scale),
        "half": ms(scale / 2),
        "width": WIDTH,
        "height": PLOT_HEIGHT + 4 + STRIP_HEIGHT,
        "plot_height": PLOT_HEIGHT,
        "summary": summary,
        "oldest": checks[0].checked_at if checks else None,
        "newest": checks[-1].checked_at if checks else None,
        "count": len(checks),
    }
