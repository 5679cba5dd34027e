"""Dashboard pages about models and traffic: models, playground, requests.

Logs and settings, which describe the gateway itself, live in ``dashboard_system``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from flask import (
    Response,
    current_app,
    render_template,
    request,
    stream_with_context,
)
from flask_login import current_user

from webapp.blueprints.dashboard import bp
from webapp.services import registry, usage
from webapp.services.playground import ChatRequest, PlaygroundChat

MAX_PLAYGROUND_TOKENS = 32768
RECENT_SCANNED = 1000
RECENT_SHOWN = 100
WINDOWS = {"1": "last 24 hours", "7": "last 7 days", "30": "last 30 days"}


def _servers_by_model() -> dict[str, list]:
    servers, _ = registry.list_servers(sort="model_name", per_page=100_000)
    grouped: dict[str, list] = {}
    for server in servers:
        grouped.setdefault(server.model_name, []).append(server)
    return grouped


# -- models ------------------------------------------------------------------------------


def model_rows(needle: str) -> list[dict[str, Any]]:
    """Each model with its counts and servers, filtered by ``needle`` in its name."""
    by_model = registry.stats()["by_model"]
    grouped = _servers_by_model()
    rows = []
    for name in sorted(by_model):
        if needle and needle.lower() not in name.lower():
            continue
        counts = by_model[name]
        share = 100.0 * counts["healthy"] / counts["servers"] if counts["servers"] else None
        rows.append({"name": name, **counts, "health": share, "servers_list": grouped[name]})
    return rows


@bp.get("/models")
def models() -> str:
    """Every model with its number of servers, healthy servers and health %, with search."""
    q = request.args.get("q", "").strip()[:100]
    return render_template("models.html", rows=model_rows(q), q=q)


@bp.get("/models/list")
def models_list() -> str:
    """The model list alone, for the search box."""
    q = request.args.get("q", "").strip()[:100]
    return render_template("_models_list.html", rows=model_rows(q), q=q)


# -- playground --------------------------------------------------------------------------


def healthy_models() -> list[str]:
    """Models with at least one healthy server right now, from the routing table."""
    table = current_app.extensions["routing"].models
    return sorted(name for name, entry in table.items() if entry.healthy)


@bp.get("/playground")
def playground() -> str:
    """Try a model: the page's script posts to ``playground_chat`` and renders the events."""
    return render_template(
        "playground.html",
        models=healthy_models(),
        chosen=request.args.get("model", ""),
        max_tokens=MAX_PLAYGROUND_TOKENS,
    )


def _chat_request(form) -> ChatRequest:
    """The form's fields, checked; ValueError carries a message for the page."""
    model = form.get("model", "").strip()
    message = form.get("message", "").strip()
    system = form.get("system", "").strip()
    if not model:
        raise ValueError("Choose a model.")
    if not message:
        raise ValueError("Write a message.")
    try:
        temperature = float(form.get("temperature") or 0.7)
    except ValueError:
        raise ValueError("Temperature must be a number from 0 to 2.") from None
    if not 0 <= temperature <= 2:
        raise ValueError("Temperature must be a number from 0 to 2.")
    raw_tokens = form.get("max_tokens") or "256"
    if not raw_tokens.isdigit() or not 1 <= int(raw_tokens) <= MAX_PLAYGROUND_TOKENS:
        raise ValueError(f"Max tokens must be a whole number from 1 to {MAX_PLAYGROUND_TOKENS}.")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": message})
    return ChatRequest(model, messages, temperature, int(raw_tokens), form.get("stream") == "on")


@bp.post("/playground/chat")
def playground_chat() -> Response:
    """Run the chat through the gateway's routing and stream events as JSON lines.

    The browser never sees a key: the gateway calls the server itself, on behalf of the
    signed-in user, and usage is recorded as ``dashboard:<user>``.
    """
    try:
        chat_request = _chat_request(request.form)
    except ValueError as exc:
        event = {"event": "error", "status": 400, "message": str(exc)}
        return Response(json.dumps(event) + "\n", mimetype="application/x-ndjson")
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    chat = PlaygroundChat(app, chat_request, f"dashboard:{current_user.username}")

    def lines() -> Iterator[str]:
        for event in chat.events():
            yield json.dumps(event) + "\n"

    response = Response(stream_with_context(lines()), mimetype="application/x-ndjson")
    response.headers["X-Accel-Buffering"] = "no"
    return response


# -- requests ----------------------------------------------------------------------------


def request_filters() -> dict[str, str]:
    """The requests page's filters, unknown values dropped."""
    args = request.args
    return {
        "model": args.get("model", "").strip()[:100],
        "server": args.get("server", "").strip()[:36],
        "status": args.get("status", "") if args.get("status") in ("ok", "errors") else "",
        "days": args.get("days", "") if args.get("days") in WINDOWS else "7",
    }


def requests_context(filters: dict[str, str]) -> dict[str, Any]:
    """Recent requests matching the filters, and totals per model and per server."""
    records = usage.recent(RECENT_SCANNED, filters["model"] or None)
    if filters["server"]:
        records = [r for r in records if r.server_id == filters["server"]]
    if filters["status"] == "ok":
        records = [r for r in records if r.status < 400]
    elif filters["status"] == "errors":
        records = [r for r in records if r.status >= 400]
    summary = usage.summary(int(filters["days"]), filters["model"] or None)
    everything = usage.summary(int(filters["days"]))
    servers, _ = registry.list_servers(per_page=100_000)
    return {
        "records": records[:RECENT_SHOWN],
        "summary": summary,
        "models": sorted({row["model"] for row in everything["by_model"]}),
        "server_names": {s.id: f"{s.model_name} @ {s.endpoint_url}" for s in servers},
        "known_servers": sorted(
            {row["server_id"] for row in everything["by_server"] if row["server_id"]}
        ),
        "filters": filters,
        "windows": WINDOWS,
        "query": urlencode({k: v for k, v in filters.items() if v}),
    }


@bp.get("/requests")
def requests_page() -> str:
    """Recent requests with filters, and totals per model and per server."""
    return render_template("requests.html", **requests_context(request_filters()))


@bp.get("/requests/table")
def requests_table() -> str:
    """The requests and totals alone (filters, polling)."""
    return render_template("_requests_body.html", **requests_context(request_filters()))
