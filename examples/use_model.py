"""Use the gateway's models with the official ``openai`` client, exactly as with OpenAI.

Lists the models (with how many servers host each), asks one chat completion and one
legacy completion, then streams a chat reply token by token. Only ``base_url`` differs
from code written for OpenAI itself; that is the point of the gateway.

    python examples/use_model.py [--gateway-url URL] [--api-key KEY] [--model NAME]

Settings also come from the environment: ``GATEWAY_URL`` (default
``http://127.0.0.1:8000``) and ``GATEWAY_API_KEY`` (a client key, needed only when the
gateway sets ``REQUIRE_CLIENT_AUTH``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import openai
from openai import OpenAI

PROMPT = "Say hello in one short sentence."


def parse_args() -> argparse.Namespace:
    """Arguments win over the environment, which wins over the defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gateway-url",
        default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000"),
        help="gateway base URL, without /v1 (env GATEWAY_URL)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("GATEWAY_API_KEY"),
        help="client key, if the gateway requires one (env GATEWAY_API_KEY)",
    )
    parser.add_argument("--model", help="model to use (default: the first one listed)")
    return parser.parse_args()


def list_models(client: OpenAI) -> list[str]:
    """Print every model; the gateway adds server counts, which the SDK keeps in model_extra."""
    names = []
    print("Models:")
    for model in client.models.list():
        extra = model.model_extra or {}
        servers = ""
        if "available_servers" in extra:
            total = extra.get("total_servers", "?")
            servers = f"  ({extra['available_servers']} of {total} servers healthy)"
        print(f"  {model.id}{servers}")
        names.append(model.id)
    return names


def chat(client: OpenAI, model: str) -> None:
    """One chat completion; the raw response also shows which server answered."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": PROMPT}]
    )
    completion = raw.parse()
    print(f"\nChat reply (server {raw.headers.get('X-Gateway-Server-ID', '?')}):")
    print(f"  {completion.choices[0].message.content}")
    usage = completion.usage
    if usage is not None:
        print(f"  tokens: {usage.prompt_tokens} in, {usage.completion_tokens} out")


def complete(client: OpenAI, model: str) -> None:
    """The legacy completions API, still what many tools and base models use."""
    completion = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8)
    print("\nLegacy completion:")
    print(f"  {completion.choices[0].text}")


def stream_chat(client: OpenAI, model: str) -> None:
    """Print tokens as they arrive: the gateway passes the server's stream straight through."""
    print("\nStreamed chat: ", end="", flush=True)
    started = time.monotonic()
    chunks = 0
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    for chunk in stream:
        # The last chunk may carry only usage, with no choices.
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
            chunks += 1
    print(f"\n  ({chunks} token chunks in {time.monotonic() - started:.2f} s)")


def main() -> int:
    """Run the tour; any failure ends with one clear line and a non-zero status."""
    args = parse_args()
    base_url = args.gateway_url.rstrip("/") + "/v1"
    # The gateway already fails over between servers; retrying here would only delay
    # the error a person running this needs to see.
    client = OpenAI(base_url=base_url, api_key=args.api_key or "none", max_retries=0, timeout=60)
    try:
        names = list_models(client)
        if not names:
            print(
                f"error: {base_url} lists no models; register a server first "
                "(examples/register_server.py)",
                file=sys.stderr,
            )
            return 1
        model = args.model or names[0]
        print(f"\nUsing model {model}")
        chat(client, model)
        complete(client, model)
        stream_chat(client, model)
    except openai.APIConnectionError:
        print(f"error: cannot reach the gateway at {base_url}; is it running?", file=sys.stderr)
        return 2
    except openai.APIStatusError as exc:
        # The SDK unwraps the gateway's {"error": {...}} into exc.body.
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") or exc.message
        print(f"error: the gateway answered {exc.status_code}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
