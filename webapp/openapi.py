"""The OpenAPI 3.1 description of every operation the gateway serves.

Written by hand beside the code rather than generated from it: the ``/v1`` proxy is a
raw WSGI app outside Flask's routing and the admin fields live in the validation
service, so no introspection sees the whole API. ``tests/test_docs_api.py`` compares
this document with the app's routes so it cannot fall behind unnoticed.

Schemas are written as tables of ``field("type", "description")`` so that the
document reads like the reference it is: ``"integer?"`` may be null, ``"Server[]"``
is a list of the shared ``Server`` schema, ``"date-time"`` and ``"uuid"`` are strings
in that format.
"""

from __future__ import annotations

import copy
from typing import Any

Schema = dict[str, Any]

HEALTH_STATES = ["healthy", "unhealthy", "unknown"]
SORT_KEYS = ["registered_at", "model_name", "health_status", "last_checked_at", "updated_at"]
FORMATS = {"uuid": "string", "date-time": "string", "date": "string", "uri": "string"}
ADMIN = [{"AdminKey": []}]
# Client keys are checked only when REQUIRE_CLIENT_AUTH is on; ``{}`` makes them optional.
CLIENT: list[dict[str, list[str]]] = [{"ClientKey": []}, {}]
PUBLIC: list[dict[str, list[str]]] = []


def field(kind: str, description: str = "", **extra: Any) -> Schema:
    """A schema from the shorthand above, with the sentence the docs page shows beside it."""
    nullable = kind.endswith("?")
    kind = kind.removesuffix("?")
    if kind.endswith("[]"):
        schema: Schema = {"type": "array", "items": field(kind[:-2])}
    elif kind[0].isupper():
        schema = {"$ref": f"#/components/schemas/{kind}"}
    elif kind in FORMATS:
        schema = {"type": FORMATS[kind], "format": kind}
    else:
        schema = {"type": kind}
    if nullable and "$ref" in schema:
        schema = {"anyOf": [schema, {"type": "null"}]}
    elif nullable:
        schema["type"] = [schema["type"], "null"]
    if description:
        schema["description"] = description
    return {**schema, **extra}


def obj(properties: dict[str, Schema], *required: str, **extra: Any) -> Schema:
    """An object schema; ``required`` names the fields that must be sent or always come back."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return {**schema, **extra}


def passthrough(properties: dict[str, Schema]) -> Schema:
    """A proxied body: ``model`` required, the rest documented but passed on as sent."""
    model = field("string", "A model that `GET /v1/models` lists.")
    return obj({"model": model, **properties}, "model", additionalProperties=True)


def figures(keys: dict[str, Schema]) -> Schema:
    """A usage row: its grouping keys plus the usage figures."""
    return {"allOf": [obj(keys), field("UsageFigures")]}


REGISTRATION = {
    "model_name": field(
        "string",
        "The public name clients ask for; omit it to take the only model the server lists.",
        pattern="^[A-Za-z0-9._:/-]{1,100}$",
    ),
    "endpoint_url": field("uri", "Base URL of the server, with or without a trailing `/v1`."),
    "api_key": field(
        "string?",
        "Sent to the server as `Authorization: Bearer <key>`; never shown.",
        maxLength=1024,
    ),
    "upstream_model": field(
        "string?", "The server's own name for the model, when it differs.", maxLength=200
    ),
    "capabilities": field("Capabilities"),
    "metadata": field("Metadata"),
}
LIMIT = {"minimum": 1, "maximum": 100_000_000}
USAGE_FIGURES = {
    "requests": field("integer"),
    "errors": field("integer", "Requests answered with a status of 400 or more."),
    "prompt_tokens": field("integer"),
    "completion_tokens": field("integer"),
    "total_tokens": field("integer"),
    "mean_latency_ms": field("number?"),
    "mean_ttft_ms": field("number?", "Mean time to the first streamed byte."),
}

SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "message": field("string", "What was wrong, for the person who sent it."),
                    "type": field("string", "e.g. `invalid_request_error`, `not_found_error`."),
                    "code": field("string?", "e.g. `invalid_value`, `model_not_found`."),
                    "param": field("string?", "The field at fault, e.g. `endpoint_url`."),
                },
                *("message", "type", "code", "param"),
            )
        },
        "error",
    ),
    "Capabilities": obj(
        {
            "max_tokens": field("integer?", "Largest completion the server allows.", **LIMIT),
            "context_length": field("integer?", "Context window in tokens.", **LIMIT),
            "streaming": field("boolean", "Whether the server can stream (default true)."),
        },
        additionalProperties=False,
    ),
    "Metadata": obj(
        {
            "student_id": field("string?", "Who owns the server.", maxLength=100),
            "description": field("string?", "Free text about the server.", maxLength=1000),
        },
        additionalProperties=False,
    ),
    "RegisterRequest": obj(REGISTRATION, "endpoint_url", additionalProperties=False),
    "UpdateRequest": obj(
        {**REGISTRATION, "api_key": field("string?", "null or an empty string removes the key.")},
        additionalProperties=False,
    ),
    "Probe": obj(
        {
            "ok": field("boolean"),
            "status_code": field("integer?", "Status of `GET {endpoint_url}/v1/models`."),
            "response_time_ms": field("number?"),
            "reason": field("string?", "Why it failed, e.g. `connection refused`."),
            "models_offered": field("string[]", "The models the server listed."),
        }
    ),
    "Server": obj(
        {
            "id": field("uuid"),
            "model_name": field("string"),
            "upstream_model": field("string"),
            "endpoint_url": field("string", "Normalised: no trailing `/v1`."),
            "has_api_key": field("boolean", "Keys are never returned, only whether one is set."),
            "capabilities": field("Capabilities"),
            "metadata": field("Metadata"),
            "registered_at": field("date-time"),
            "updated_at": field("date-time"),
            "health_status": field("string", enum=HEALTH_STATES),
            "is_active": field("boolean", "False once deactivated after repeated failures."),
            "deactivated_at": field("date-time?"),
            "consecutive_failures": field("integer"),
            "last_checked_at": field("date-time?"),
            "last_transition_at": field("date-time?"),
            "last_response_ms": field("number?"),
            "last_error": field("string?"),
        }
    ),
    "ServerDetail": {
        "allOf": [
            field("Server"),
            obj({"recent_checks": field("HealthCheck[]", "Newest first, at most 20.")}),
            obj(
                {
                    "metrics": obj(
                        {
                            "checks_kept": field("integer"),
                            "uptime_percent": field("number?"),
                            "success_rate": field("number?"),
                            "mean_response_time_ms": field("number?"),
                            "consecutive_failures": field("integer"),
                            "last_transition_at": field("date-time?"),
                        }
                    )
                }
            ),
        ]
    },
    "HealthCheck": obj(
        {
            "checked_at": field("date-time"),
            "ok": field("boolean"),
            "status_code": field("integer?"),
            "response_time_ms": field("number?"),
            "reason": field("string?"),
            "source": field("string", "`probe`, `registration`, `update`, `forced` or `passive`."),
        }
    ),
    "Registered": obj(
        {
            "registration_id": field("uuid"),
            "status": field("string", const="registered"),
            "health_status": field("string", enum=HEALTH_STATES),
            "model_name": field("string"),
            "upstream_model": field("string"),
            "endpoint_url": field("string"),
            "probe": field("Probe"),
            "server": field("Server"),
        }
    ),
    "Updated": obj(
        {
            "registration_id": field("uuid"),
            "status": field("string", const="updated"),
            "probe": field("Probe?", "null when nothing needed a new probe."),
            "server": field("Server"),
        }
    ),
    "Deleted": obj({"registration_id": field("uuid"), "status": field("string", const="deleted")}),
    "ServerPage": obj(
        {
            "servers": field("Server[]"),
            "total": field("integer", "Matches over all pages."),
            "page": field("integer"),
            "per_page": field("integer"),
            "pages": field("integer"),
        }
    ),
    "CheckResult": {
        "allOf": [
            field("Probe"),
            obj(
                {
                    "registration_id": field("uuid"),
                    "checked_at": field("date-time?"),
                    "health_status": field("string", enum=HEALTH_STATES),
                    "is_active": field("boolean"),
                }
            ),
        ]
    },
    "Stats": obj(
        {
            "servers": obj(
                {k: field("integer") for k in ("total", "active", "inactive", *HEALTH_STATES)}
            ),
            "models": field("integer", "Distinct model names."),
            "by_model": field(
                "object",
                "Per model name: how many servers, how many active, how many healthy.",
                additionalProperties=obj(
                    {k: field("integer") for k in ("servers", "active", "healthy")}
                ),
            ),
            "health_checker": obj(
                {
                    "lease_held": field("boolean"),
                    "last_cycle_at": field("date-time?"),
                    "last_cycle_ms": field("number?"),
                    "last_cycle_servers": field("integer?"),
                }
            ),
        }
    ),
    "UsageFigures": obj(USAGE_FIGURES),
    "Usage": obj(
        {
            "since": field("date-time"),
            "days": field("integer"),
            "totals": field("UsageFigures"),
            "by_model": field("array", items=figures({"model": field("string")})),
            "by_server": field(
                "array",
                items=figures(
                    {
                        "server_id": field("string?"),
                        "model": field("string"),
                        "endpoint_url": field("string?"),
                    }
                ),
            ),
            "by_day": field("array", "UTC days.", items=figures({"day": field("date")})),
        }
    ),
    "Health": obj(
        {
            "status": field("string", enum=["ok", "error"]),
            "database": field("string", enum=["ok", "unreachable"]),
            "holds_health_lease": field("boolean", "Whether this process runs the probes."),
            "health_checker_running": field("boolean"),
            "worker_pid": field("integer", "The process that answered (one of the workers)."),
            "servers": obj({k: field("integer") for k in (*HEALTH_STATES, "active")}),
            "last_cycle": obj(
                {
                    "at": field("date-time?"),
                    "duration_ms": field("number?"),
                    "servers": field("integer?"),
                }
            ),
        }
    ),
    "Model": obj(
        {
            "id": field("string", "The public model name."),
            "object": field("string", const="model"),
            "created": field("integer", "Unix time."),
            "owned_by": field("string"),
            "available_servers": field("integer", "Healthy servers hosting it now."),
            "total_servers": field("integer", "Active registrations for it."),
        },
        *("id", "object", "created", "owned_by"),
    ),
    "ModelList": obj({"object": field("string", const="list"), "data": field("Model[]")}),
    "ChatCompletionRequest": passthrough(
        {
            "messages": field("object[]", "The conversation."),
            "stream": field("boolean", "Answer with server-sent events."),
            "max_tokens": field("integer"),
            "temperature": field("number"),
        }
    ),
    "CompletionRequest": passthrough(
        {
            "prompt": field("string", "The prompt (also a list of strings or token arrays)."),
            "stream": field("boolean", "Answer with server-sent events."),
            "max_tokens": field("integer"),
        }
    ),
    "EmbeddingRequest": passthrough(
        {
            "input": field("string", "Text to embed (also a list of texts or token arrays)."),
            "dimensions": field("integer"),
            "encoding_format": field("string", enum=["float", "base64"]),
        }
    ),
    "ModelResponse": obj(
        {
            "id": field("string"),
            "object": field("string", "`chat.completion`, `text_completion` or `list`."),
            "model": field("string"),
            "choices": field("object[]", "Chat and text completions."),
            "data": field("object[]", "Embeddings."),
            "usage": field("object", "Token counts; the gateway records them."),
        },
        additionalProperties=True,
    ),
}

ADMIN_ERRORS = {
    "400": "A field or query value is invalid; `param` names it (e.g. `capabilities.max_tokens`).",
    "401": "No `X-API-Key` header.",
    "403": "The admin key is wrong, or the admin API is off (`ADMIN_API_KEY` unset).",
    "404": "No live server has this id (`param` is `id`).",
    "409": "This model at this endpoint is already registered (`param` is `endpoint_url`).",
    "413": "The body is larger than `MAX_REQUEST_BODY_SIZE`.",
    "503": "The server did not pass the health probe; the message says why.",
}
PROXY_ERRORS = {
    "400": "The body is not a JSON object or has no `model` (`param` is `model`).",
    "401": "`REQUIRE_CLIENT_AUTH` is on and the bearer key is missing or unknown.",
    "404": "The model is not served here (`code` is `model_not_found`, `param` is `model`).",
    "413": "The body is larger than `MAX_REQUEST_BODY_SIZE`.",
    "429": "This client went over `RATE_LIMIT`, or every server of the model is cooling down "
    "after a 429 of its own: wait as long as `Retry-After` says.",
    "503": "The model is known but none of its servers is healthy right now "
    "(`code` is `no_healthy_server`).",
    "504": "Every server tried failed or timed out before answering (`code` is `upstream_failed`).",
}
PROXY_HEADERS = ("X-Gateway-Server-ID", "X-Request-ID", "X-Gateway-Overhead-Ms")
SERVER_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": field("uuid"),
    "description": "The registration id.",
    "example": "3f2c9a3e-7d51-4b8e-9a55-0c1e2d3f4a5b",
}
MODEL_ID = {
    "name": "model",
    "in": "path",
    "required": True,
    "schema": field("string"),
    "description": "A model name as `GET /v1/models` lists it.",
    "example": "llama-3-8b",
}
REGISTER_EXAMPLE = {
    "model_name": "llama-3-8b",
    "endpoint_url": "http://192.168.1.20:8080",
    "api_key": "optional-backend-key",
    "upstream_model": "Meta-Llama-3-8B-Instruct.Q4_K_M.gguf",
    "capabilities": {"max_tokens": 4096, "context_length": 8192, "streaming": True},
    "metadata": {"student_id": "s123", "description": "lab box, 1x RTX 4090"},
}
CHAT_EXAMPLE = {
    "model": "llama-3-8b",
    "messages": [{"role": "user", "content": "Say hello in five words."}],
    "max_tokens": 64,
}


def query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    """An optional query-string parameter."""
    return {"name": name, "in": "query", "schema": schema, "description": description}


def response(description: str, schema: str, headers: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON response with a shared schema and, where the gateway adds them, headers."""
    answer: dict[str, Any] = {"description": description}
    answer["content"] = {"application/json": {"schema": field(schema)}}
    if headers:
        answer["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in headers}
    return answer


def operation(
    tag: str,
    op_id: str,
    summary: str,
    description: str,
    responses: dict[str, Any],
    *,
    parameters: tuple[dict[str, Any], ...] = (),
    body: tuple[str, Any] | None = None,
) -> dict[str, Any]:
    """One operation; ``body`` is (schema name, example), the example feeds the curl line."""
    security = {"Admin": ADMIN, "OpenAI-compatible": CLIENT}.get(tag, PUBLIC)
    op: dict[str, Any] = {"operationId": op_id, "tags": [tag], "summary": summary}
    op.update(description=description, security=security)
    if parameters:
        op["parameters"] = list(parameters)
    if body is not None:
        media = {"schema": field(body[0]), "example": body[1]}
        op["requestBody"] = {"required": True, "content": {"application/json": media}}
    op["responses"] = responses
    return op


def admin(
    op_id: str, summary: str, description: str, ok: tuple[str, str, str], *errors: str, **kw: Any
) -> dict[str, Any]:
    """An ``/admin`` operation: ``ok`` is (status, description, schema); 401 and 403 always."""
    answers = {ok[0]: response(ok[1], ok[2])}
    for code in sorted({*errors, "401", "403"}):
        answers[code] = response(ADMIN_ERRORS[code], "Error")
    return operation("Admin", op_id, summary, description, answers, **kw)


def proxy(
    op_id: str, summary: str, description: str, ok: dict[str, Any], *errors: str, **kw: Any
) -> dict[str, Any]:
    """A ``/v1`` operation: the proxy's errors, 429 with ``Retry-After``."""
    answers = {"200": ok}
    for code in errors:
        headers = ("Retry-After",) if code == "429" else ()
        answers[code] = response(PROXY_ERRORS[code], "Error", headers)
    return operation("OpenAI-compatible", op_id, summary, description, answers, **kw)


def generation(
    op_id: str, summary: str, description: str, body: tuple[str, Any], streams: bool
) -> dict[str, Any]:
    """A proxied ``POST``: the backend's answer unchanged, as JSON or as an event stream."""
    ok = response("The backend's answer, passed on unchanged.", "ModelResponse", PROXY_HEADERS)
    if streams:
        sse = field(
            "string",
            "`data: {chunk}` events as they arrive, ending with `data: [DONE]`; if the server "
            'breaks off, a last `data: {"error": {...}}` event says so.',
        )
        ok["content"]["text/event-stream"] = {"schema": sse}
    errors = ("400", "401", "404", "413", "429", "503", "504")
    return proxy(op_id, summary, description, ok, *errors, body=body)


def paths() -> dict[str, dict[str, Any]]:
    """Every path and method the gateway answers, the ``/v1`` proxy included."""
    sort = field("string", enum=[sign + key for key in SORT_KEYS for sign in ("", "-")])
    return {
        "/v1/models": {
            "get": proxy(
                "listModels",
                "List models",
                "Every model with at least one healthy server, with its server counts.",
                response("The models.", "ModelList", ("X-Request-ID",)),
                *("401", "429"),
            )
        },
        "/v1/models/{model}": {
            "get": proxy(
                "getModel",
                "Show one model",
                "One entry of the model list; also answers for a model with no healthy server.",
                response("The model.", "Model", ("X-Request-ID",)),
                *("401", "404", "429"),
                parameters=(MODEL_ID,),
            )
        },
        "/v1/chat/completions": {
            "post": generation(
                "createChatCompletion",
                "Chat completion",
                "Sent to a healthy server that hosts `model`, with the name rewritten to the "
                "server's own; every other field passes through unchanged. With "
                '`"stream": true` the answer is server-sent events, passed on as they arrive. '
                "A server that fails before its first byte is replaced by another one; a "
                "server's own 4xx answer is passed on as it is.",
                ("ChatCompletionRequest", CHAT_EXAMPLE),
                streams=True,
            )
        },
        "/v1/completions": {
            "post": generation(
                "createCompletion",
                "Text completion (legacy)",
                "Like chat completions, for the older `prompt` API.",
                ("CompletionRequest", {"model": "llama-3-8b", "prompt": "Once upon a time"}),
                streams=True,
            )
        },
        "/v1/embeddings": {
            "post": generation(
                "createEmbedding",
                "Embeddings",
                "Sent to a healthy server that hosts `model`; the body passes through unchanged.",
                ("EmbeddingRequest", {"model": "nomic-embed-text", "input": ["a text", "another"]}),
                streams=False,
            )
        },
        "/admin/register": {
            "post": admin(
                "registerServer",
                "Register a model server",
                "The gateway probes the server first (`GET {endpoint_url}/v1/models`) and stores "
                "it only if it answers and lists the model. Omit `model_name` to take the "
                "server's only model.",
                ("201", "Registered and probed.", "Registered"),
                *("400", "409", "413", "503"),
                body=("RegisterRequest", REGISTER_EXAMPLE),
            )
        },
        "/admin/register/{id}": {
            "put": admin(
                "updateServer",
                "Change a registration",
                "Only the fields sent change. The server is probed again when its URL, key or "
                "upstream model changes, or when it was deactivated; a pass reactivates it.",
                ("200", "Updated.", "Updated"),
                *("400", "404", "409", "413", "503"),
                parameters=(SERVER_ID,),
                body=("UpdateRequest", {"metadata": {"description": "moved to the big GPU"}}),
            ),
            "delete": admin(
                "removeServer",
                "Remove a registration",
                "Soft delete: the history stays, the server is no longer routed to or probed, "
                "and the same endpoint and model can be registered again.",
                ("200", "Removed.", "Deleted"),
                "404",
                parameters=(SERVER_ID,),
            ),
        },
        "/admin/servers": {
            "get": admin(
                "listServers",
                "List servers",
                "Live registrations, filtered, sorted and paged.",
                ("200", "One page of servers.", "ServerPage"),
                "400",
                parameters=(
                    query("model_name", field("string"), "Only this model."),
                    query("health_status", field("string", enum=HEALTH_STATES), "Only this state."),
                    query("student_id", field("string"), "Only this owner."),
                    query("active", field("string", enum=["true", "false"]), "Active or not."),
                    query(
                        "sort", sort, "A leading `-` sorts descending; `-registered_at` if absent."
                    ),
                    query("page", field("integer", minimum=1, default=1), "Page number."),
                    query(
                        "per_page",
                        field("integer", minimum=1, maximum=500, default=50),
                        "Page size.",
                    ),
                ),
            )
        },
        "/admin/servers/{id}": {
            "get": admin(
                "getServer",
                "Show one server",
                "Every field but the key, the last 20 checks and figures over the kept history.",
                ("200", "The server.", "ServerDetail"),
                "404",
                parameters=(SERVER_ID,),
            )
        },
        "/admin/servers/{id}/check": {
            "post": admin(
                "checkServer",
                "Probe a server now",
                "Runs the health probe at once and returns the verdict (a failed probe is still "
                "a 200); a pass reactivates a deactivated server.",
                ("200", "The probe's verdict.", "CheckResult"),
                "404",
                parameters=(SERVER_ID,),
            )
        },
        "/admin/stats": {
            "get": admin(
                "getStats",
                "Counts and checker status",
                "Servers by health and activity, per model, and the health checker's last cycle.",
                ("200", "The counts.", "Stats"),
            )
        },
        "/admin/usage": {
            "get": admin(
                "getUsage",
                "Usage over the last days",
                "Requests, errors, tokens and latency of proxied requests: in total, by model, "
                "by server and by UTC day.",
                ("200", "The figures.", "Usage"),
                "400",
                parameters=(
                    query(
                        "days", field("integer", minimum=1, maximum=365, default=7), "How far back."
                    ),
                    query("model", field("string"), "Only this model."),
                ),
            )
        },
        "/health": {
            "get": operation(
                "Service",
                "getHealth",
                "Liveness",
                "No key needed. 200 when the database answers, 503 when it does not; with "
                "server counts and the health checker's last cycle.",
                {
                    "200": response("The process can serve.", "Health"),
                    "503": response("The database is unreachable (`status` is `error`).", "Health"),
                },
            )
        },
        "/openapi.json": {
            "get": operation(
                "Service",
                "getOpenAPI",
                "This API description",
                "The OpenAPI 3.1 document, for client generators and API tools. No key needed.",
                {"200": {"description": "The document.", "content": {"application/json": {}}}},
            )
        },
        "/docs": {
            "get": operation(
                "Service",
                "getDocs",
                "API documentation page",
                "This document as an HTML page that needs no internet access. No key needed.",
                {"200": {"description": "The page.", "content": {"text/html": {}}}},
            )
        },
    }


def build_spec(version: str) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document for gateway ``version``; a fresh dict on every call."""
    header = {"schema": field("string")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Multiverse Inference Gateway",
            "version": version,
            "description": (
                "One OpenAI-compatible endpoint in front of many self-hosted model servers. "
                "Point any OpenAI client at `/v1`; owners manage their servers through `/admin`. "
                'Every error has the shape `{"error": {"message", "type", "code", "param"}}` '
                "and every response carries `X-Request-ID`."
            ),
        },
        "tags": [
            {"name": "OpenAI-compatible", "description": "Use the models with any OpenAI client."},
            {"name": "Admin", "description": "Register and manage model servers."},
            {"name": "Service", "description": "Liveness and this documentation."},
        ],
        "paths": paths(),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "AdminKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "`ADMIN_API_KEY`; `start.sh` keeps it in "
                    "`instance/admin_api_key`.",
                },
                "ClientKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <key>` with one of `CLIENT_API_KEYS`; "
                    "needed only when `REQUIRE_CLIENT_AUTH` is on.",
                },
            },
            "headers": {
                "X-Gateway-Server-ID": {"description": "Id of the server that answered.", **header},
                "X-Request-ID": {
                    "description": "Yours when you sent a sane one, else new; quote it in reports.",
                    **header,
                },
                "X-Gateway-Overhead-Ms": {
                    "description": "Milliseconds the gateway itself added (non-streamed answers).",
                    "schema": field("number"),
                },
                "Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "schema": field("integer"),
                },
            },
        },
    }
