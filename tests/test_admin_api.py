"""The admin API through Flask's test client, probing real demo backends on loopback."""

from __future__ import annotations

import pytest

from tests.backends import BlackHole, free_port
from tests.gateway import ADMIN_KEY
from webapp import create_app


def register(client, headers, **payload):
    return client.post("/admin/register", json=payload, headers=headers)


def test_register_probes_the_server_and_stores_it(client, admin_headers, backend):
    before = backend.stats()["models_requests"]
    response = register(
        client,
        admin_headers,
        model_name="demo-model",
        endpoint_url=backend.url + "/v1/",
        capabilities={"max_tokens": 512, "context_length": 4096, "streaming": True},
        metadata={"student_id": "s42", "description": "my laptop"},
    )
    assert response.status_code == 201, response.json
    body = response.json
    assert body["status"] == "registered"
    assert body["health_status"] == "healthy"
    assert body["endpoint_url"] == backend.url  # trailing /v1/ stripped
    assert body["upstream_model"] == "demo-model"
    assert body["probe"]["ok"] is True
    assert "demo-model" in body["probe"]["models_offered"]
    assert backend.stats()["models_requests"] == before + 1
    detail = client.get(f"/admin/servers/{body['registration_id']}", headers=admin_headers).json
    assert detail["capabilities"] == {"max_tokens": 512, "context_length": 4096, "streaming": True}
    assert detail["metadata"] == {"student_id": "s42", "description": "my laptop"}
    assert detail["registered_at"].endswith("+00:00")


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model_name": "bad name!", "endpoint_url": "http://127.0.0.1:1"}, "model_name"),
        ({"model_name": "x" * 101, "endpoint_url": "http://127.0.0.1:1"}, "model_name"),
        ({"model_name": 7, "endpoint_url": "http://127.0.0.1:1"}, "model_name"),
        ({"model_name": "m"}, "endpoint_url"),
        ({"model_name": "m", "endpoint_url": "ftp://127.0.0.1/"}, "endpoint_url"),
        ({"model_name": "m", "endpoint_url": "http://user:pw@127.0.0.1/"}, "endpoint_url"),
        ({"model_name": "m", "endpoint_url": "http://127.0.0.1:99999/"}, "endpoint_url"),
        ({"model_name": "m", "endpoint_url": "not a url"}, "endpoint_url"),
        ({"model_name": "m", "endpoint_url": "http://127.0.0.1:1", "api_key": 5}, "api_key"),
        (
            {"model_name": "m", "endpoint_url": "http://127.0.0.1:1", "upstream_model": ["x"]},
            "upstream_model",
        ),
        (
            {
                "model_name": "m",
                "endpoint_url": "http://127.0.0.1:1",
                "capabilities": {"max_tokens": 0},
            },
            "capabilities.max_tokens",
        ),
        (
            {
                "model_name": "m",
                "endpoint_url": "http://127.0.0.1:1",
                "capabilities": {"max_tokens": True},
            },
            "capabilities.max_tokens",
        ),
        (
            {
                "model_name": "m",
                "endpoint_url": "http://127.0.0.1:1",
                "capabilities": {"streaming": "yes"},
            },
            "capabilities.streaming",
        ),
        (
            {"model_name": "m", "endpoint_url": "http://127.0.0.1:1", "capabilities": {"temp": 1}},
            "capabilities.temp",
        ),
        (
            {"model_name": "m", "endpoint_url": "http://127.0.0.1:1", "capabilities": []},
            "capabilities",
        ),
        (
            {
                "model_name": "m",
                "endpoint_url": "http://127.0.0.1:1",
                "metadata": {"student_id": "a\nb"},
            },
            "metadata.student_id",
        ),
        (
            {
                "model_name": "m",
                "endpoint_url": "http://127.0.0.1:1",
                "metadata": {"description": "d" * 1001},
            },
            "metadata.description",
        ),
        ({"model_name": "m", "endpoint_url": "http://127.0.0.1:1", "owner": "me"}, "owner"),
    ],
)
def test_invalid_fields_are_refused_with_param(client, admin_headers, payload, param):
    response = client.post("/admin/register", json=payload, headers=admin_headers)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b'"text"'])
def test_malformed_bodies_are_400(client, admin_headers, raw):
    response = client.post(
        "/admin/register", data=raw, headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert set(response.json["error"]) == {"message", "type", "code", "param"}


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433:{port}/",
        "http://0x7f000001:{port}/",
        "http://127.1:{port}/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://localhost:{port}/",
        "http://169.254.169.254/",
        "http://10.1.2.3:8000/",
        "http://0.0.0.0:{port}/",
    ],
)
def test_private_addresses_are_refused_without_allow_list(tmp_path, admin_headers, backend, url):
    strict = create_app(
        {"INSTANCE_PATH": str(tmp_path / "strict"), "ADMIN_API_KEY": ADMIN_KEY, "LOG_FILE": "-"}
    )
    response = strict.test_client().post(
        "/admin/register",
        json={"model_name": "demo-model", "endpoint_url": url.format(port=backend.port)},
        headers=admin_headers,
    )
    assert response.status_code == 400
    error = response.json["error"]
    assert error["param"] == "endpoint_url"
    assert error["code"] == "address_not_allowed"
    assert "ALLOWED_BACKEND_NETWORKS" in error["message"]
    assert backend.stats()["models_requests"] == 0  # refused before any connection


def _assert_nothing_stored(client, admin_headers):
    listing = client.get("/admin/servers", headers=admin_headers).json
    assert listing["total"] == 0


def test_probe_failure_connection_refused(client, admin_headers):
    response = register(
        client, admin_headers, model_name="m", endpoint_url=f"http://127.0.0.1:{free_port()}"
    )
    assert response.status_code == 503
    assert "connection refused" in response.json["error"]["message"]
    _assert_nothing_stored(client, admin_headers)


def test_probe_failure_timeout(client, admin_headers):
    hole = BlackHole()
    try:
        response = register(client, admin_headers, model_name="m", endpoint_url=hole.url)
    finally:
        hole.close()
    assert response.status_code == 503
    assert "timed out after 2 s" in response.json["error"]["message"]
    _assert_nothing_stored(client, admin_headers)


@pytest.mark.parametrize(
    ("control", "reason"),
    [
        ({"models_status": 500}, "HTTP 500"),
        ({"models_body": "not json"}, "not JSON"),
    ],
)
def test_probe_failure_bad_answers(client, admin_headers, backend, control, reason):
    backend.control(**control)
    response = register(client, admin_headers, model_name="demo-model", endpoint_url=backend.url)
    assert response.status_code == 503
    assert reason in response.json["error"]["message"]
    _assert_nothing_stored(client, admin_headers)


def test_probe_failure_model_not_listed(client, admin_headers, backend_factory):
    backend = backend_factory(model=["alpha", "beta"])
    response = register(client, admin_headers, model_name="gamma", endpoint_url=backend.url)
    assert response.status_code == 503
    message = response.json["error"]["message"]
    assert 'model "gamma" is not among the models the server lists: alpha, beta' in message
    _assert_nothing_stored(client, admin_headers)


def test_model_name_discovered_or_ambiguous(client, admin_headers, backend_factory):
    single = backend_factory(model="only-one")
    response = register(client, admin_headers, endpoint_url=single.url)
    assert response.status_code == 201
    assert response.json["model_name"] == "only-one"
    several = backend_factory(model=["alpha", "beta"])
    response = register(client, admin_headers, endpoint_url=several.url)
    assert response.status_code == 400
    assert response.json["error"]["param"] == "model_name"
    assert "alpha, beta" in response.json["error"]["message"]


def test_duplicate_is_409(client, admin_headers, backend):
    assert (
        register(
            client, admin_headers, model_name="demo-model", endpoint_url=backend.url
        ).status_code
        == 201
    )
    again = register(client, admin_headers, model_name="demo-model", endpoint_url=backend.url + "/")
    assert again.status_code == 409
    assert again.json["error"]["type"] == "conflict_error"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/admin/register"),
        ("get", "/admin/servers"),
        ("get", "/admin/stats"),
        ("delete", "/admin/register/x"),
        ("put", "/admin/register/x"),
        ("get", "/admin/servers/x"),
        ("post", "/admin/servers/x/check"),
    ],
)
def test_admin_key_required(client, method, path):
    missing = getattr(client, method)(path, json={})
    assert missing.status_code == 401
    assert missing.json["error"]["type"] == "authentication_error"
    wrong = getattr(client, method)(path, json={}, headers={"X-API-Key": "wrong"})
    assert wrong.status_code == 403
    assert wrong.json["error"]["type"] == "permission_error"


def test_update_reprobes_when_key_changes(client, admin_headers, backend_factory):
    backend = backend_factory(api_key="backend-secret-1")
    created = register(
        client,
        admin_headers,
        model_name="demo-model",
        endpoint_url=backend.url,
        api_key="backend-secret-1",
    ).json
    server_id = created["registration_id"]

    def probes_seen() -> int:
        return backend.stats()["by_path"].get("/v1/models", 0)

    probes = probes_seen()

    # A change that does not touch address or key: no probe.
    response = client.put(
        f"/admin/register/{server_id}",
        json={"metadata": {"description": "renamed"}},
        headers=admin_headers,
    )
    assert response.status_code == 200
    assert response.json["probe"] is None
    assert probes_seen() == probes

    # A wrong key: the re-probe fails, nothing changes.
    response = client.put(
        f"/admin/register/{server_id}", json={"api_key": "wrong"}, headers=admin_headers
    )
    assert response.status_code == 503
    assert "HTTP 401" in response.json["error"]["message"]
    assert probes_seen() == probes + 1
    detail = client.get(f"/admin/servers/{server_id}", headers=admin_headers).json
    assert detail["health_status"] == "healthy"
    assert detail["metadata"]["description"] == "renamed"

    # The stored key is still the right one: a forced check passes with it.
    check = client.post(f"/admin/servers/{server_id}/check", headers=admin_headers).json
    assert check["ok"] is True
    assert backend.stats()["last_request"]["headers"]["authorization"] == "Bearer backend-secret-1"


def test_update_with_new_key_reprobes_with_it(client, admin_headers, backend):
    server_id = register(
        client, admin_headers, model_name="demo-model", endpoint_url=backend.url
    ).json["registration_id"]
    response = client.put(
        f"/admin/register/{server_id}", json={"api_key": "sk-new-key"}, headers=admin_headers
    )
    assert response.status_code == 200
    assert response.json["probe"]["ok"] is True
    assert backend.stats()["last_request"]["headers"]["authorization"] == "Bearer sk-new-key"
    assert response.json["server"]["has_api_key"] is True
    removed = client.put(
        f"/admin/register/{server_id}", json={"api_key": None}, headers=admin_headers
    )
    assert removed.json["server"]["has_api_key"] is False
    assert "authorization" not in backend.stats()["last_request"]["headers"]


def test_update_validates_like_register(client, admin_headers, backend):
    server_id = register(
        client, admin_headers, model_name="demo-model", endpoint_url=backend.url
    ).json["registration_id"]
    response = client.put(
        f"/admin/register/{server_id}", json={"model_name": "bad name"}, headers=admin_headers
    )
    assert response.status_code == 400
    assert response.json["error"]["param"] == "model_name"
    missing = client.put("/admin/register/nope", json={}, headers=admin_headers)
    assert missing.status_code == 404


def test_delete_then_register_again(client, admin_headers, backend):
    server_id = register(
        client, admin_headers, model_name="demo-model", endpoint_url=backend.url
    ).json["registration_id"]
    deleted = client.delete(f"/admin/register/{server_id}", headers=admin_headers)
    assert deleted.status_code == 200
    assert deleted.json["status"] == "deleted"
    assert client.delete(f"/admin/register/{server_id}", headers=admin_headers).status_code == 404
    assert client.delete("/admin/register/unknown-id", headers=admin_headers).status_code == 404
    assert client.get(f"/admin/servers/{server_id}", headers=admin_headers).status_code == 404
    again = register(client, admin_headers, model_name="demo-model", endpoint_url=backend.url)
    assert again.status_code == 201
    assert again.json["registration_id"] != server_id


def test_list_filters_sort_and_paging(client, admin_headers, backend_factory):
    first = backend_factory(model=["alpha", "beta"])
    second = backend_factory(model="alpha")
    register(
        client,
        admin_headers,
        model_name="alpha",
        endpoint_url=first.url,
        metadata={"student_id": "s1"},
    )
    register(
        client,
        admin_headers,
        model_name="beta",
        endpoint_url=first.url,
        metadata={"student_id": "s2"},
    )
    register(
        client,
        admin_headers,
        model_name="alpha",
        endpoint_url=second.url,
        metadata={"student_id": "s2"},
    )

    def listing(query: str) -> dict:
        response = client.get("/admin/servers" + query, headers=admin_headers)
        assert response.status_code == 200, response.json
        return response.json

    assert listing("")["total"] == 3
    alpha = listing("?model_name=alpha")
    assert {s["model_name"] for s in alpha["servers"]} == {"alpha"} and alpha["total"] == 2
    assert listing("?student_id=s2")["total"] == 2
    assert listing("?health_status=healthy")["total"] == 3
    assert listing("?health_status=unhealthy")["total"] == 0
    by_model = [s["model_name"] for s in listing("?sort=model_name")["servers"]]
    assert by_model == ["alpha", "alpha", "beta"]
    by_model_desc = [s["model_name"] for s in listing("?sort=-model_name")["servers"]]
    assert by_model_desc == ["beta", "alpha", "alpha"]
    newest_first = listing("?sort=-registered_at")["servers"]
    assert newest_first[0]["endpoint_url"] == second.url
    page2 = listing("?per_page=2&page=2&sort=registered_at")
    assert page2["pages"] == 2 and len(page2["servers"]) == 1
    assert page2["servers"][0]["endpoint_url"] == second.url
    for bad in ("?sort=password", "?health_status=dead", "?page=0", "?per_page=x", "?active=maybe"):
        response = client.get("/admin/servers" + bad, headers=admin_headers)
        assert response.status_code == 400
        assert response.json["error"]["param"]


def test_details_history_metrics_and_forced_check(client, admin_headers, backend):
    server_id = register(
        client, admin_headers, model_name="demo-model", endpoint_url=backend.url
    ).json["registration_id"]
    backend.control(models_status=503)
    failed = client.post(f"/admin/servers/{server_id}/check", headers=admin_headers).json
    assert failed["ok"] is False and failed["reason"] == "HTTP 503"
    assert failed["health_status"] == "unhealthy"
    backend.control()
    passed = client.post(f"/admin/servers/{server_id}/check", headers=admin_headers).json
    assert passed["ok"] is True and passed["health_status"] == "healthy"
    detail = client.get(f"/admin/servers/{server_id}", headers=admin_headers).json
    checks = detail["recent_checks"]
    assert [c["ok"] for c in checks] == [True, False, True]  # newest first
    assert [c["source"] for c in checks] == ["forced", "forced", "registration"]
    assert checks[1]["status_code"] == 503 and checks[1]["reason"] == "HTTP 503"
    metrics = detail["metrics"]
    assert metrics["checks_kept"] == 3
    assert metrics["success_rate"] == pytest.approx(66.67)
    assert 0 < metrics["uptime_percent"] < 100
    assert metrics["mean_response_time_ms"] > 0
    assert detail["last_transition_at"] == checks[0]["checked_at"]
    assert "api_key" not in detail


def test_stats_counts(client, admin_headers, backend_factory):
    backend = backend_factory(model=["alpha", "beta"])
    register(client, admin_headers, model_name="alpha", endpoint_url=backend.url)
    register(client, admin_headers, model_name="beta", endpoint_url=backend.url)
    stats = client.get("/admin/stats", headers=admin_headers).json
    assert stats["servers"]["total"] == 2 and stats["servers"]["healthy"] == 2
    assert stats["models"] == 2
    assert stats["by_model"]["alpha"] == {"servers": 1, "active": 1, "healthy": 1}


def test_backend_key_never_returned(client, admin_headers, backend_factory):
    secret = "sk-backend-very-secret-value-123456"
    backend = backend_factory(api_key=secret)
    created = register(
        client, admin_headers, model_name="demo-model", endpoint_url=backend.url, api_key=secret
    )
    assert created.status_code == 201
    server_id = created.json["registration_id"]
    responses = [
        created,
        client.get("/admin/servers", headers=admin_headers),
        client.get(f"/admin/servers/{server_id}", headers=admin_headers),
        client.post(f"/admin/servers/{server_id}/check", headers=admin_headers),
        client.put(
            f"/admin/register/{server_id}", json={"api_key": "wrong-key"}, headers=admin_headers
        ),
        client.get("/admin/stats", headers=admin_headers),
        client.get("/health"),
    ]
    for response in responses:
        text = response.get_data(as_text=True)
        assert secret not in text and "wrong-key" not in text
        assert ADMIN_KEY not in text
    assert created.json["server"]["has_api_key"] is True


def test_unknown_admin_route_is_404_json(client, admin_headers):
    response = client.get("/admin/nothing-here", headers=admin_headers)
    assert response.status_code == 404
    assert response.json["error"]["type"] == "not_found_error"
    wrong_method = client.get("/admin/register", headers=admin_headers)
    assert wrong_method.status_code == 405
    assert wrong_method.json["error"]["code"] == "method_not_allowed"
