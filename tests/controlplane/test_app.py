"""The application shell: OpenAPI documents, Swagger UI, health, and the error body everywhere."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import yaml

from .helpers import assert_error

CONTRACT_OPERATIONS = {
    ("/v1/auth/signup", "post"): "signup",
    ("/v1/auth/login", "post"): "login",
    ("/v1/me", "get"): "getMe",
    ("/v1/api-keys", "post"): "createAPIKey",
    ("/v1/api-keys", "get"): "listAPIKeys",
    ("/v1/api-keys/{id}", "delete"): "deleteAPIKey",
}


async def test_openapi_json_and_yaml(client: httpx.AsyncClient) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status_code == 200
    document = resp.json()
    assert document["openapi"].startswith("3.")
    for (path, method), operation_id in CONTRACT_OPERATIONS.items():
        assert document["paths"][path][method]["operationId"] == operation_id
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["apiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "Team API key from POST /v1/api-keys.",
    }
    assert "/openapi.yaml" not in document["paths"]
    # Validation errors are answered 400 with the error body, never FastAPI's 422.
    assert "422" not in resp.text and "HTTPValidationError" not in resp.text
    assert document["paths"]["/v1/auth/signup"]["post"]["responses"].keys() >= {"201", "400", "409"}

    as_yaml = await client.get("/openapi.yaml")
    assert as_yaml.status_code == 200
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == document


async def test_swagger_ui(client: httpx.AsyncClient) -> None:
    resp = await client.get("/docs")
    assert resp.status_code == 200
    assert "swagger-ui" in resp.text and "/openapi.json" in resp.text


async def test_swagger_ui_is_served_from_this_origin(client: httpx.AsyncClient) -> None:
    """/docs shares the dashboard's origin (and its token): nothing on the page comes from
    elsewhere, and its policy lets only this origin's scripts (and its own inline one) run."""
    page = await client.get("/docs")
    references = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert len(references) >= 3
    for url in references:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 0, url
    assert "https://" not in page.text and "http://" not in page.text
    assert '"validatorUrl": null' in page.text  # no badge fetched from validator.swagger.io
    policy = page.headers["content-security-policy"]
    script_src = next(p for p in policy.split(";") if p.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "'sha256-" in script_src
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.S)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in script_src
    redoc = await client.get("/redoc")  # not served (a built dashboard answers its shell)
    assert redoc.status_code in (200, 404) and "redoc" not in redoc.text.lower()


async def test_health(client: httpx.AsyncClient) -> None:
    resp = await client.get("/health")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"
    assert resp.json()["database"] in ("sqlite", "postgresql")


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(await client.put("/v1/auth/login", json={}), 405, "method_not_allowed")


async def test_unhandled_exception_is_a_generic_500(client: httpx.AsyncClient) -> None:
    resp = await client.get("/_test/boom")
    error = assert_error(resp, 500, "internal_error")
    assert error == {"code": "internal_error", "message": "internal server error"}
    assert "hunter2" not in resp.text and "secret.py" not in resp.text


async def test_retryable_database_error_is_503(client: httpx.AsyncClient) -> None:
    resp = await client.get("/_test/locked")
    error = assert_error(resp, 503, "service_unavailable")
    assert "UPDATE" not in error["message"]


async def test_domain_error_details_join_the_error_body(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.get("/_test/host-busy"), 409, "conflict")
    assert error == {
        "code": "conflict",
        "message": "host has capsules",
        "sandbox_ids": ["sb-1", "sb-2"],
    }
