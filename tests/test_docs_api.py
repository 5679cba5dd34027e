"""The OpenAPI document and the /docs page: complete, consistent with the code, safe to show."""

from __future__ import annotations

import re
from typing import Any

import pytest

import webapp
from webapp import proxy
from webapp.blueprints import docs
from webapp.models import HEALTH_STATES
from webapp.openapi import build_spec
from webapp.services import registry, validation

PROXY_OPERATIONS = [
    ("get", "/v1/models"),
    ("get", "/v1/models/{model}"),
    ("post", "/v1/chat/completions"),
    ("post", "/v1/completions"),
    ("post", "/v1/embeddings"),
]
ADMIN_OPERATIONS = [
    ("post", "/admin/register"),
    ("put", "/admin/register/{id}"),
    ("delete", "/admin/register/{id}"),
    ("get", "/admin/servers"),
    ("get", "/admin/servers/{id}"),
    ("post", "/admin/servers/{id}/check"),
    ("get", "/admin/stats"),
    ("get", "/admin/usage"),
]
SERVICE_OPERATIONS = [("get", "/health"), ("get", "/openapi.json"), ("get", "/docs")]
DOCUMENTED_PREFIXES = ("/admin", "/v1", "/health", "/openapi.json", "/docs")
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(autouse=True)
def docs_registered(app):
    """Until the app factory registers the blueprint, register it here (before any request)."""
    if "docs" not in app.blueprints:
        app.register_blueprint(docs.bp)
    return app


@pytest.fixture
def spec(client) -> dict[str, Any]:
    """The document as clients fetch it: over HTTP, without any key."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.json


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every (method, path, operation) in the document."""
    return [
        (method, path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]


def template(path: str) -> str:
    """A path with its parameter names dropped: OpenAPI treats ``{id}`` and ``{x}`` alike."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def refs(node: Any) -> list[str]:
    """Every ``$ref`` anywhere in a JSON document."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def properties(spec: dict[str, Any], name: str) -> set[str]:
    """Property names of a shared schema, parts of an ``allOf`` included."""
    schema = spec["components"]["schemas"][name]
    names: set[str] = set()
    for part in schema.get("allOf", [schema]):
        if "$ref" in part:
            names |= properties(spec, part["$ref"].rsplit("/", 1)[1])
        names |= set(part.get("properties", {}))
    return names


def test_document_has_the_openapi_31_shape(spec):
    assert spec["openapi"].startswith("3.1.")
    assert spec["info"]["title"] == "Multiverse Inference Gateway"
    assert spec["info"]["version"] == webapp.__version__
    assert spec["paths"]
    assert {"schemas", "securitySchemes", "headers"} <= set(spec["components"])
    for ref in refs(spec):
        assert ref.startswith("#/components/"), ref
        section, name = ref.removeprefix("#/components/").split("/")
        assert name in spec["components"][section], f"dangling {ref}"


def test_every_flask_route_of_the_apis_is_documented(app, spec):
    documented = {(method, template(path)) for method, path, _ in operations(spec)}
    seen = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(DOCUMENTED_PREFIXES):
            continue
        path = template(re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule))
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            seen.append((method.lower(), path))
    missing = [route for route in seen if route not in documented]
    assert missing == []
    # Guard against a walk that silently matched nothing.
    assert ("post", "/admin/register") in seen and ("get", "/docs") in seen


@pytest.mark.parametrize(
    ("method", "path"), PROXY_OPERATIONS + ADMIN_OPERATIONS + SERVICE_OPERATIONS
)
def test_each_known_operation_is_documented(spec, method, path):
    """The /v1 proxy is raw WSGI outside Flask's url_map, so its operations are listed here."""
    assert method in spec["paths"][path]


def test_every_operation_has_a_summary_responses_and_error_shape(spec):
    ids = []
    for method, path, op in operations(spec):
        ids.append(op["operationId"])
        assert op["summary"].strip(), (method, path)
        assert op["description"].strip(), (method, path)
        assert any(status.startswith("2") for status in op["responses"]), (method, path)
        for status, answer in op["responses"].items():
            assert answer["description"].strip()
            if status[0] in "45" and path != "/health":
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
    assert len(ids) == len(set(ids))


def test_error_schema_is_the_openai_shape(spec):
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert set(error["properties"]["error"]["required"]) == {"message", "type", "code", "param"}


def test_admin_operations_need_the_admin_key_and_proxy_keys_are_optional(spec):
    scheme = spec["components"]["securitySchemes"]["AdminKey"]
    assert scheme == scheme | {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert spec["components"]["securitySchemes"]["ClientKey"]["scheme"] == "bearer"
    for method, path in ADMIN_OPERATIONS:
        op = spec["paths"][path][method]
        assert op["security"] == [{"AdminKey": []}]
        assert {"401", "403"} <= set(op["responses"])
    for method, path in PROXY_OPERATIONS:
        assert spec["paths"][path][method]["security"] == [{"ClientKey": []}, {}]


def test_proxy_operations_document_streaming_headers_and_errors(spec):
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        op = spec["paths"][path]["post"]
        body = op["requestBody"]["content"]["application/json"]["schema"]
        schema = spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
        assert schema["required"] == ["model"]
        assert schema["additionalProperties"] is True
        ok = op["responses"]["200"]
        assert {"X-Gateway-Server-ID", "X-Request-ID", "X-Gateway-Overhead-Ms"} <= set(
            ok["headers"]
        )
        assert {"400", "401", "404", "413", "429", "503", "504"} <= set(op["responses"])
        assert "Retry-After" in op["responses"]["429"]["headers"]
        streams = "text/event-stream" in ok["content"]
        assert streams == (path != "/v1/embeddings")
    model = spec["components"]["schemas"]["Model"]["properties"]
    assert {"id", "object", "created", "owned_by", "available_servers", "total_servers"} <= set(
        model
    )


def test_registration_fields_match_the_validation_service(spec):
    schemas = spec["components"]["schemas"]
    assert set(schemas["RegisterRequest"]["properties"]) == validation.TOP_FIELDS
    assert set(schemas["UpdateRequest"]["properties"]) == validation.TOP_FIELDS
    assert schemas["RegisterRequest"]["required"] == ["endpoint_url"]
    assert set(schemas["Capabilities"]["properties"]) == validation.CAPABILITY_FIELDS
    assert set(schemas["Metadata"]["properties"]) == validation.METADATA_FIELDS
    pattern = schemas["RegisterRequest"]["properties"]["model_name"]["pattern"]
    assert pattern == validation.MODEL_NAME_RE.pattern


def test_list_filters_match_the_registry(spec):
    params = {p["name"]: p for p in spec["paths"]["/admin/servers"]["get"]["parameters"]}
    assert set(params) == {
        "model_name",
        "health_status",
        "student_id",
        "active",
        "sort",
        "page",
        "per_page",
    }
    assert params["health_status"]["schema"]["enum"] == list(HEALTH_STATES)
    sorts = set(params["sort"]["schema"]["enum"])
    assert sorts == set(registry.SORTABLE) | {"-" + key for key in registry.SORTABLE}
    assert params["per_page"]["schema"]["maximum"] == 500
    usage = {p["name"]: p for p in spec["paths"]["/admin/usage"]["get"]["parameters"]}
    assert usage["days"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 365,
        "default": 7,
    }
    assert "model" in usage


def test_documented_admin_fields_are_what_the_api_returns(client, admin_headers, backend, spec):
    """Field names drift silently; compare the schemas with real answers from the admin API."""
    created = client.post(
        "/admin/register",
        json={"endpoint_url": backend.url, "metadata": {"student_id": "s1"}},
        headers=admin_headers,
    )
    assert created.status_code == 201, created.json
    server_id = created.json["registration_id"]
    answers = {
        "Registered": created.json,
        "Server": created.json["server"],
        "Probe": created.json["probe"],
        "ServerPage": client.get("/admin/servers", headers=admin_headers).json,
        "ServerDetail": client.get(f"/admin/servers/{server_id}", headers=admin_headers).json,
        "CheckResult": client.post(f"/admin/servers/{server_id}/check", headers=admin_headers).json,
        "Stats": client.get("/admin/stats", headers=admin_headers).json,
        "Health": client.get("/health").json,
        "Updated": client.put(
            f"/admin/register/{server_id}", json={"api_key": None}, headers=admin_headers
        ).json,
        "ModelList": client.get("/v1/models").json,
        "Model": client.get("/v1/models/demo-model").json,
        "Usage": client.get("/admin/usage", headers=admin_headers).json,
        "Deleted": client.delete(f"/admin/register/{server_id}", headers=admin_headers).json,
    }
    for name, body in answers.items():
        assert set(body) == properties(spec, name), name
    assert set(answers["Usage"]["totals"]) == properties(spec, "UsageFigures")
    assert set(answers["ModelList"]["data"][0]) == properties(spec, "Model")
    detail = answers["ServerDetail"]
    metrics = spec["components"]["schemas"]["ServerDetail"]["allOf"][2]["properties"]["metrics"]
    assert set(detail["metrics"]) == set(metrics["properties"])
    assert set(detail["recent_checks"][0]) == properties(spec, "HealthCheck")
    error = client.get("/admin/servers/nope", headers=admin_headers).json
    assert set(error["error"]) == {"message", "type", "code", "param"}


def test_documented_proxy_headers_are_sent(client, admin_headers, backend, spec):
    created = client.post(
        "/admin/register", json={"endpoint_url": backend.url}, headers=admin_headers
    )
    assert created.status_code == 201, created.json
    op = spec["paths"]["/v1/chat/completions"]["post"]
    body = op["requestBody"]["content"]["application/json"]["example"] | {"model": "demo-model"}
    answer = client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.json
    assert set(op["responses"]["200"]["headers"]) <= set(answer.headers.keys())
    assert answer.headers["X-Gateway-Server-ID"] == created.json["registration_id"]
    unknown = client.post("/v1/chat/completions", json=body | {"model": "no-such-model"})
    assert unknown.status_code == 404
    assert set(unknown.json["error"]) == {"message", "type", "code", "param"}


def test_every_proxy_endpoint_is_documented(spec):
    """The proxy's own table of POST endpoints, so a new one cannot go undocumented."""
    documented = {path for method, path, _ in operations(spec) if method == "post"}
    assert set(proxy.POST_ENDPOINTS) <= documented


def test_build_spec_returns_an_independent_document():
    first = build_spec("1.2.3")
    first["components"]["schemas"]["Error"]["required"].append("changed")
    assert build_spec("1.2.3")["components"]["schemas"]["Error"]["required"] == ["error"]
    assert first["info"]["version"] == "1.2.3"


def test_docs_page_shows_every_operation_without_outside_resources(client, spec):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    for method, path, op in operations(spec):
        assert f"<code>{path}</code>" in html, path
        assert f'id="{op["operationId"]}"' in html
        assert f'href="#{op["operationId"]}"' in html
        assert op["summary"] in html
        assert f"-X {method.upper()} &#34;$GW{path.split('{')[0]}" in html
    for name in spec["components"]["schemas"]:
        assert f'id="schema-{name}"' in html
    # Offline networks: nothing loaded from elsewhere, and no script at all.
    assert "<script" not in html
    assert "<link" not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)


def test_docs_page_escapes_the_text_it_shows(client):
    html = client.get("/docs").get_data(as_text=True)
    # Descriptions mention `Authorization: Bearer <key>`: shown as text, never as a tag.
    assert "Bearer &lt;key&gt;" in html
    assert "<key>" not in html
    # Backticks become <code>, built only after escaping.
    assert "<code>X-API-Key</code>" in html
    assert "&#34;error&#34;" in html


def test_curl_example_carries_the_register_body(client):
    html = client.get("/docs").get_data(as_text=True)
    article = html.split('id="registerServer"', 1)[1].split("</article>", 1)[0]
    assert "-H &#34;X-API-Key: $ADMIN_KEY&#34;" in article
    assert "&#34;endpoint_url&#34;: &#34;http://192.168.1.20:8080&#34;" in article
