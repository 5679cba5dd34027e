"""Register a model server with the gateway through ``POST /admin/register``.

The gateway probes the server before storing it, so a success here means the server
answered and lists the model. On a refusal the gateway's message is printed with the
field it names (``param``), and the exit status is 1.

    python examples/register_server.py http://192.168.1.20:8080 --model-name llama-3-8b \\
        [--upstream-model NAME] [--api-key BACKEND_KEY] [--student-id ID] \\
        [--description TEXT] [--max-tokens N] [--context-length N]

The admin key comes from ``--admin-key``, else ``ADMIN_API_KEY``, else the file
``instance/admin_api_key`` that ``start.sh`` writes (``$INSTANCE_PATH/admin_api_key``
when ``INSTANCE_PATH`` is set). The gateway is ``--gateway-url`` or ``GATEWAY_URL``
(default ``http://127.0.0.1:8000``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent


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
    """Flags mirror the JSON fields of the registration, so the mapping stays obvious."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("endpoint_url", help="base URL of the model server, e.g. http://host:8080")
    parser.add_argument("--model-name", help="public model name (default: the server's only one)")
    parser.add_argument("--upstream-model", help="the server's own name, if it differs")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("BACKEND_API_KEY"),
        help="key the model server expects (env BACKEND_API_KEY)",
    )
    parser.add_argument("--student-id", help="owner of the server")
    parser.add_argument("--description", help="free text shown with the server")
    parser.add_argument("--max-tokens", type=int, help="largest completion the server allows")
    parser.add_argument("--context-length", type=int, help="context window in tokens")
    parser.add_argument("--admin-key", help="admin key (env ADMIN_API_KEY, or instance/ file)")
    parser.add_argument(
        "--gateway-url",
        default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000"),
        help="gateway base URL (env GATEWAY_URL)",
    )
    return parser.parse_args()


def payload(args: argparse.Namespace) -> dict[str, Any]:
    """The registration body with only the fields that were given."""
    body: dict[str, Any] = {"endpoint_url": args.endpoint_url}
    for key in ("model_name", "upstream_model", "api_key"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    capabilities = {
        key: getattr(args, key)
        for key in ("max_tokens", "context_length")
        if getattr(args, key) is not None
    }
    if capabilities:
        body["capabilities"] = capabilities
    metadata = {
        key: getattr(args, key) for key in ("student_id", "description") if getattr(args, key)
    }
    if metadata:
        body["metadata"] = metadata
    return body


def report_error(response: requests.Response) -> None:
    """Print the gateway's OpenAI-shaped error, naming the field at fault when it says."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        print(f"error: HTTP {response.status_code}: {response.text[:300]}", file=sys.stderr)
        return
    print(f"error: {error.get('message')} (HTTP {response.status_code})", file=sys.stderr)
    if error.get("param"):
        print(f"  param: {error['param']}", file=sys.stderr)


def main() -> int:
    """Register, then show the id to keep and the first health verdict."""
    args = parse_args()
    key = admin_key(args.admin_key)
    if not key:
        print(
            "error: no admin key; pass --admin-key, set ADMIN_API_KEY, or run ./start.sh, "
            "which writes instance/admin_api_key",
            file=sys.stderr,
        )
        return 2
    url = args.gateway_url.rstrip("/") + "/admin/register"
    try:
        # Registration waits for the gateway's probe of the server, hence the long timeout.
        response = requests.post(url, json=payload(args), headers={"X-API-Key": key}, timeout=60)
    except requests.RequestException as exc:
        print(f"error: cannot reach the gateway at {url}: {exc}", file=sys.stderr)
        return 2
    if response.status_code != 201:
        report_error(response)
        return 1
    body = response.json()
    probe = body["probe"]
    print(f"Registered {body['model_name']} at {body['endpoint_url']}")
    print(f"  registration id: {body['registration_id']}")
    timing = f"probe answered in {probe['response_time_ms']} ms" if probe["ok"] else "probe failed"
    print(f"  health:          {body['health_status']} ({timing})")
    print(f"  upstream model:  {body['upstream_model']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
