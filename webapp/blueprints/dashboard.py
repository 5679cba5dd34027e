"""The dashboard: login-protected pages, htmx fragments for the parts that change.

This module holds the blueprint, what every page shares (login and CSRF guard,
security headers, the header's quick stats) and the overview page with its server
table. The other pages live beside it and add their views to the same blueprint:
``dashboard_servers`` (register, detail, edit, delete), ``dashboard_tools`` (models,
playground, requests) and ``dashboard_system`` (logs, settings).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, current_app, render_template, request, url_for
from flask_login import current_user

from webapp.blueprints import auth
from webapp.blueprints.dashboard_format import register_filters
from webapp.htmx import csrf_token, htmx_script, protect, security_headers
from webapp.models import utcnow
from webapp.services import registry, usage

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")
bp.after_request(security_headers)

NAV = (
    ("dashboard.index", "Dashboard"),
    ("dashboard.register", "Register"),
    ("dashboard.models", "Models"),
    ("dashboard.playground", "Playground"),
    ("dashboard.requests_page", "Requests"),
    ("dashboard.logs", "Logs"),
    ("dashboard.settings", "Settings"),
)
# Pages below another page in the navigation mark that one as the current page.
NAV_PARENT = {
    "dashboard.server_detail": "dashboard.index",
    "dashboard.edit": "dashboard.index",
}
SORTS = {
    "newest": ("-registered_at", "Newest registration"),
    "oldest": ("registered_at", "Oldest registration"),
    "model": ("model_name", "Model (A–Z)"),
    "status": ("health_status", "Status"),
    "checked": ("-last_checked_at", "Last check (newest)"),
}
STATUSES = ("healthy", "unhealthy", "unknown", "inactive")
PAGE_SIZE = 50


def init_app(app: Flask) -> None:
    """Accounts, sessions, the dashboard's pages and the template helpers they use."""
    auth.init_app(app)
    app.register_blueprint(bp)
    app.jinja_env.globals.update(csrf_token=csrf_token, htmx_script=htmx_script, nav=NAV)
    register_filters(app)
    app.extensions.setdefault("started_at", utcnow())


@bp.before_request
def guard() -> Response | None:
    """Every dashboard URL needs a signed-in user, and a CSRF token when it changes things."""
    if not current_user.is_authenticated:
        return auth.login_manager.unauthorized()
    protect()
    return None


@bp.context_processor
def page_context() -> dict[str, Any]:
    """What the shared layout needs on every page (the header's figures only when drawn)."""
    seconds = current_app.config["DASHBOARD_REFRESH_SECONDS"]
    return {
        "poll": f"every {seconds:g}s",
        "refresh_label": f"{seconds:g} s",
        "nav_current": NAV_PARENT.get(request.endpoint or "", request.endpoint),
        "header_stats": quick_stats,
    }


def quick_stats() -> dict[str, Any]:
    """Server counts by health and the number of models, for the header and the cards.

    Deactivated servers count as unhealthy here: they were deactivated for failing, and
    an owner looking at the figures wants to see them, not a reassuring zero.
    """
    stats = registry.stats()
    servers = stats["servers"]
    failing = servers["unhealthy"] + servers["inactive"]
    return {**servers, "failing": failing, "models": stats["models"]}


def usage_today() -> dict[str, Any]:
    """Requests and tokens since midnight UTC (the last day's bucket of the usage summary)."""
    today = utcnow().date().isoformat()
    for row in usage.summary(1)["by_day"]:
        if row["day"] == today:
            return row
    return {"requests": 0, "errors": 0, "total_tokens": 0}


@bp.get("/quick-stats")
def quick_stats_fragment() -> str:
    """The header's figures; the fragment polls itself."""
    return render_template("_quick_stats.html", stats=quick_stats())


@bp.get("/blank")
def blank() -> str:
    """An empty answer, swapped in to close a panel (Cancel buttons)."""
    return ""


# -- overview ----------------------------------------------------------------------------


def table_filters() -> dict[str, str]:
    """The server table's filters and sort from the query string, unknown values dropped."""
    args = request.args
    filters = {
        "model": args.get("model", "").strip()[:100],
        "status": args.get("status", "") if args.get("status") in STATUSES else "",
        "student": args.get("student", "").strip()[:100],
        "q": args.get("q", "").strip()[:200],
        "sort": args.get("sort", "") if args.get("sort") in SORTS else "newest",
    }
    page = args.get("page", "1")
    filters["page"] = page if page.isdigit() and 0 < int(page) < 100_000 else "1"
    return filters


def _matches(server, needle: str) -> bool:
    fields = (
        server.id,
        server.model_name,
        server.upstream_model,
        server.endpoint_url,
        server.student_id or "",
        server.description or "",
    )
    return any(needle in value.lower() for value in fields)


def server_table(filters: dict[str, str]) -> dict[str, Any]:
    """The rows for one page of the server table, and what the filter menus offer."""
    status = filters["status"]
    servers, _ = registry.list_servers(
        model_name=filters["model"] or None,
        health_status=status if status in ("healthy", "unhealthy", "unknown") else None,
        student_id=filters["student"] or None,
        active=False if status == "inactive" else (True if status else None),
        sort=SORTS[filters["sort"]][0],
        per_page=100_000,
    )
    if filters["q"]:
        servers = [s for s in servers if _matches(s, filters["q"].lower())]
    total = len(servers)
    pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
    page = min(int(filters["page"]), pages)
    everyone, _ = registry.list_servers(per_page=100_000)
    shown = {**filters, "sort": "" if filters["sort"] == "newest" else filters["sort"]}
    query = {k: v for k, v in shown.items() if v and k != "page"}
    return {
        "servers": servers[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
        "total": total,
        "page": page,
        "pages": pages,
        "first": (page - 1) * PAGE_SIZE + 1,
        "filters": filters,
        "query": urlencode(query),
        "page_query": lambda n: urlencode({**query, "page": n}),
        "models": sorted({s.model_name for s in everyone}),
        "students": sorted({s.student_id for s in everyone if s.student_id}),
        "sorts": SORTS,
        "statuses": STATUSES,
    }


@bp.get("/")
def index() -> str:
    """Cards with the day's figures, and the server table with filters, sort and search."""
    return render_template(
        "dashboard.html",
        table=server_table(table_filters()),
        stats=quick_stats(),
        today=usage_today(),
    )


@bp.get("/servers/table")
def servers_table() -> Response:
    """The table alone (polling and filter changes), with the cards swapped out of band.

    The address bar follows the filters, so a reload or a shared link shows the same view.
    """
    table = server_table(table_filters())
    body = render_template(
        "_servers_table.html", table=table, stats=quick_stats(), today=usage_today(), oob=True
    )
    response = Response(body)
    page_url = url_for("dashboard.index") + (f"?{table['query']}" if table["query"] else "")
    response.headers["HX-Replace-Url"] = page_url
    return response


# The other pages register their views on ``bp`` when imported; they must be imported
# before the blueprint is registered on an app.
from webapp.blueprints import (  # noqa: E402, F401
    dashboard_servers,
    dashboard_system,
    dashboard_tools,
)
