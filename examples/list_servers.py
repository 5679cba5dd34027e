"""Show the registered model servers as a table, through ``GET /admin/servers``.

    python examples/list_servers.py [--model NAME] [--status healthy|unhealthy|unknown]
                                    [--student ID]

Columns: id, model, health, active, endpoint, last check (UTC) and the last probe's
response time. The admin key and gateway URL are found as in ``register_server.py``:
``--admin-key`` / ``ADMIN_API_KEY`` / ``instance/admin_api_key``, and ``--gateway-url``
/ ``GATEWAY_URL`` (default ``http://127.0.0.1:8000``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
PAGE_SIZE = 500  # the API's largest page
COLUMNS = ("id", "model", "status", "active", "endpoint", "last check", "response ms")


def admin_key(given: str | None) -> str | None:
    """The admin key: the argument, else the environment, else the key file start.sh wrote."""
    if given:
        return given
    if os.environ.get("ADMIN_API_KEY"):
        return os.environ["ADMIN_API_KEY"]
    key_file = Path(os.environ.get("INSTANCE_PATH") or REPO / "instance") / "admin_api_key"
    try:
        return key_file.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def parse_args() -> argparse.Namespace:
    """Filters map one to one onto the API's query parameters."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="only servers of this model")
    parser.add_argument("--status", choices=("healthy", "unhealthy", "unknown"))
    parser.add_argument("--student", help="only servers of this owner (student_id)")
    parser.add_argument("--admin-key", help="admin key (env ADMIN_API_KEY, or instance/ file)")
    parser.add_argument(
        "--gateway-url",
        default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000"),
        help="gateway base URL (env GATEWAY_URL)",
    )
    return parser.parse_args()


class GatewayRefused(Exception):
    """The gateway answered with an error; the message is the one it gave."""


def fetch_all(url: str, key: str, filters: dict[str, str]) -> list[dict[str, Any]]:
    """Every matching server, page after page, oldest registration first."""
    servers: list[dict[str, Any]] = []
    page = 1
    while True:
        params = {**filters, "sort": "registered_at", "page": page, "per_page": PAGE_SIZE}
        response = requests.get(url, params=params, headers={"X-API-Key": key}, timeout=30)
        if response.status_code != 200:
            try:
                error = response.json()["error"]
                detail = error["message"] + (
                    f" (param: {error['param']})" if error["param"] else ""
                )
            except (ValueError, KeyError, TypeError):
                detail = response.text[:300]
            raise GatewayRefused(f"HTTP {response.status_code}: {detail}")
        body = response.json()
        servers.extend(body["servers"])
        if page >= body["pages"]:
            return servers
        page += 1


def row(server: dict[str, Any]) -> tuple[str, ...]:
    """One server as table cells; never-probed values show as a dash."""
    checked = server["last_checked_at"]
    checked = checked[:19].replace("T", " ") if checked else "-"
    response_ms = server["last_response_ms"]
    return (
        server["id"],
        server["model_name"],
        server["health_status"],
        "yes" if server["is_active"] else "no",
        server["endpoint_url"],
        checked,
        f"{response_ms:.1f}" if response_ms is not None else "-",
    )


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Left-aligned columns as wide as their longest cell."""
    widths = [max(len(cells[i]) for cells in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    for cells in [COLUMNS, tuple("-" * width for width in widths), *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        )


def main() -> int:
    """Fetch, print, and say how many matched."""
    args = parse_args()
    key = admin_key(args.admin_key)
    if not key:
        print(
            "error: no admin key; pass --admin-key, set ADMIN_API_KEY, or run ./start.sh, "
            "which writes instance/admin_api_key",
            file=sys.stderr,
        )
        return 2
    filters = {
        name: value
        for name, value in (
            ("model_name", args.model),
            ("health_status", args.status),
            ("student_id", args.student),
        )
        if value
    }
    url = args.gateway_url.rstrip("/") + "/admin/servers"
    try:
        servers = fetch_all(url, key, filters)
    except requests.RequestException as exc:
        print(f"error: cannot reach the gateway at {url}: {exc}", file=sys.stderr)
        return 2
    except GatewayRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not servers:
        print("No servers match." if filters else "No servers are registered yet.")
        return 0
    print_table([row(server) for server in servers])
    print(f"\n{len(servers)} server{'s' if len(servers) != 1 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
