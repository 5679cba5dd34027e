"""``/openapi.json`` and ``/docs``: the API described for tools and for people.

The page is rendered on the server from the same document the JSON serves, with its
CSS embedded and no script: gateways often run on networks without internet, where a
CDN-hosted Swagger UI would be a blank page. Both are built once per process.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request
from markupsafe import Markup, escape

from webapp import __version__
from webapp.openapi import build_spec

bp = Blueprint("docs", __name__)

METHODS = ("get", "post", "put", "patch", "delete")
CODE_SPAN = re.compile(r"`([^`]+)`")
AUTH_TEXT = {
    "AdminKey": "Admin key in the `X-API-Key` header.",
    "ClientKey": "Optional client key, `Authorization: Bearer <key>` (required when "
    "`REQUIRE_CLIENT_AUTH` is on).",
}
CURL_AUTH = {"AdminKey": "X-API-Key: $ADMIN_KEY", "ClientKey": "Authorization: Bearer $CLIENT_KEY"}


@dataclass
class Row:
    """One line of a field or parameter table."""

    name: str
    type: str
    ref: str | None
    required: bool
    notes: str
    location: str = ""


@dataclass
class Answer:
    """One documented response of an operation."""

    status: str
    description: str
    media: list[str]
    headers: list[tuple[str, str]]
    ref: str | None = None
    rows: list[Row] = field(default_factory=list)
    other_media: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Operation:
    """An operation as the page shows it."""

    anchor: str
    method: str
    path: str
    summary: str
    description: str
    auth: str
    parameters: list[Row]
    body: list[Row]
    answers: list[Answer]
    curl: str


def code_spans(text: str) -> Markup:
    """Escape ``text`` first, then turn `backticks` into <code>; nothing else gets through."""
    return Markup(CODE_SPAN.sub(r"<code>\1</code>", str(escape(text))))


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` to the schema it names."""
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def type_label(schema: dict[str, Any]) -> tuple[str, str | None]:
    """A short type name for a schema, and the shared schema it links to, if any."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return name, name
    if "anyOf" in schema:
        labels = [type_label(part) for part in schema["anyOf"]]
        return " or ".join(text for text, _ in labels), next((r for _, r in labels if r), None)
    kinds = schema.get("type", "object" if "allOf" in schema else "any")
    words, ref = [], None
    for kind in kinds if isinstance(kinds, list) else [kinds]:
        if kind == "array" and "items" in schema:
            item, ref = type_label(schema["items"])
            words.append(f"array of {item}")
        else:
            fmt = schema.get("format") if kind != "null" else None
            words.append(f"{kind} ({fmt})" if fmt else kind)
    return " or ".join(words), ref


def notes(schema: dict[str, Any]) -> str:
    """Description plus the constraints a caller must respect, in words."""
    parts = [schema.get("description", "")]
    if "const" in schema:
        parts.append(f"Always `{schema['const']}`.")
    if "enum" in schema:
        parts.append("One of " + ", ".join(f"`{value}`" for value in schema["enum"]) + ".")
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        parts.append(f"From {low:,} to {high:,}.")
    elif low is not None:
        parts.append(f"At least {low:,}.")
    elif high is not None:
        parts.append(f"At most {high:,}.")
    if "maxLength" in schema:
        parts.append(f"At most {schema['maxLength']} characters.")
    if "pattern" in schema:
        parts.append(f"Pattern `{schema['pattern']}`.")
    if "default" in schema:
        parts.append(f"Default `{schema['default']}`.")
    return " ".join(part for part in parts if part)


def rows(
    spec: dict[str, Any], schema: dict[str, Any], expand_refs: bool, prefix: str = ""
) -> list[Row]:
    """The fields of an object schema, nested ones as ``a.b`` and ``list[].b``.

    Request bodies expand shared schemas (a caller must see ``capabilities.max_tokens``);
    responses link to them instead, so a ``Server`` is described once, at the end.
    """
    found: list[Row] = []
    for part in resolve(spec, schema).get("allOf", [resolve(spec, schema)]):
        part = resolve(spec, part)
        required = set(part.get("required", ()))
        for name, prop in part.get("properties", {}).items():
            label, ref = type_label(prop)
            found.append(Row(prefix + name, label, ref, name in required, notes(prop)))
            child, suffix = prop, "."
            if child.get("type") == "array" and "items" in child:
                child, suffix = child["items"], "[]."
            if "$ref" in child and not expand_refs:
                continue
            child = resolve(spec, child)
            if ("properties" in child or "allOf" in child) and prefix.count(".") < 3:
                found.extend(rows(spec, child, expand_refs, prefix + name + suffix))
    return found


def curl_command(path: str, method: str, op: dict[str, Any]) -> str:
    """A copy-paste curl line: ``$GW`` and the key variables come from the setup box."""
    for param in op.get("parameters", []):
        if param["in"] == "path":
            path = path.replace("{" + param["name"] + "}", str(param.get("example", "")))
    lines = [f'curl -sS -X {method.upper()} "$GW{path}"']
    for scheme in (name for requirement in op["security"] for name in requirement):
        lines.append(f'-H "{CURL_AUTH[scheme]}"')
    media = op.get("requestBody", {}).get("content", {}).get("application/json")
    if media is not None and "example" in media:
        body = json.dumps(media["example"], indent=2).replace("'", "'\\''")
        lines += ['-H "Content-Type: application/json"', f"-d '{body}'"]
    return " \\\n     ".join(lines)


def describe(spec: dict[str, Any], path: str, method: str, op: dict[str, Any]) -> Operation:
    """Everything the page shows about one operation."""
    parameters = []
    for param in op.get("parameters", []):
        # The sentence sits on the parameter, the constraints on its schema: show both.
        described = {**param["schema"], "description": param.get("description", "")}
        label, ref = type_label(param["schema"])
        required = param.get("required", False)
        parameters.append(Row(param["name"], label, ref, required, notes(described), param["in"]))
    body_media = op.get("requestBody", {}).get("content", {}).get("application/json")
    body = rows(spec, body_media["schema"], expand_refs=True) if body_media else []
    if body_media and resolve(spec, body_media["schema"]).get("additionalProperties") is True:
        body.append(Row("(any other)", "any", None, False, "Passed to the server unchanged."))
    answers = []
    for status, answer in op["responses"].items():
        content = answer.get("content", {})
        headers = [
            (name, spec["components"]["headers"][name]["description"])
            for name in answer.get("headers", {})
        ]
        shown = Answer(status, answer["description"], list(content), headers)
        shown.other_media = [
            (media, item["schema"]["description"])
            for media, item in content.items()
            if media != "application/json" and "description" in item.get("schema", {})
        ]
        schema = content.get("application/json", {}).get("schema")
        if schema is not None:
            shown.ref = type_label(schema)[1]
            if status.startswith("2"):
                shown.rows = rows(spec, schema, expand_refs=False)
        answers.append(shown)
    schemes = [name for requirement in op["security"] for name in requirement]
    auth = " ".join(AUTH_TEXT[name] for name in schemes) or "None: no key needed."
    return Operation(
        op["operationId"],
        method.upper(),
        path,
        op["summary"],
        op.get("description", ""),
        auth,
        parameters,
        body,
        answers,
        curl_command(path, method, op),
    )


def page_model(spec: dict[str, Any]) -> dict[str, Any]:
    """The operations grouped by tag in the spec's order, and the shared schemas."""
    groups = {tag["name"]: (tag, []) for tag in spec["tags"]}
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                op = item[method]
                groups[op["tags"][0]][1].append(describe(spec, path, method, op))
    schemas = [
        (name, schema.get("description", ""), rows(spec, schema, expand_refs=False))
        for name, schema in spec["components"]["schemas"].items()
    ]
    return {"info": spec["info"], "groups": list(groups.values()), "schemas": schemas}


def cached() -> dict[str, Any]:
    """The spec, its JSON text and the page model, built on first use in this process."""
    store = current_app.extensions.get("openapi")
    if store is None:
        spec = build_spec(__version__)
        store = {"spec": spec, "json": json.dumps(spec), "page": page_model(spec)}
        current_app.extensions["openapi"] = store
    return store


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI document; no key, since it holds no secret and tools fetch it unattended."""
    return Response(cached()["json"], mimetype="application/json")


@bp.get("/docs")
def docs_page() -> str:
    """The document as a page; the setup box uses the address the reader came in on."""
    gateway_url = request.host_url.rstrip("/")
    return render_template("docs.html", gateway_url=gateway_url, **cached()["page"])


@bp.app_template_filter("code_spans")
def code_spans_filter(text: str) -> Markup:
    """Jinja access to ``code_spans``."""
    return code_spans(text)
