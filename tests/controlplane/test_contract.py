"""Our OpenAPI document (generated from the code) against the public contract we stay
wire-compatible with: every operation of the areas we serve exists here with the same method and
path."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

REFERENCE = Path(__file__).resolve().parents[3] / "shared/reference/wrenn-openapi.yaml"
# Areas of the contract the control plane serves today (channels come with their issue).
SERVED = (
    "/v1/hosts",
    "/v1/capsules",
    "/v1/snapshots",
    "/v1/api-keys",
    "/v1/auth/login",
    "/v1/auth/oauth",
    "/v1/me/providers",
    "/v1/me/password",
    "/v1/auth/signup",
    "/v1/auth/switch-team",
    "/v1/teams",
    "/v1/users/search",
)
METHODS = {"get", "post", "put", "patch", "delete"}


def operations(document: dict[str, object]) -> set[tuple[str, str]]:
    paths = document["paths"]
    assert isinstance(paths, dict)
    return {
        (method, path)
        for path, item in paths.items()
        for method in item
        if method in METHODS and path.startswith(SERVED)
    }


async def test_served_operations_match_the_contract(client: httpx.AsyncClient) -> None:
    if not REFERENCE.is_file():
        pytest.skip(f"the public contract is not beside the repository ({REFERENCE})")
    contract = operations(yaml.safe_load(REFERENCE.read_text()))
    ours = operations((await client.get("/openapi.json")).json())
    # WebSocket routes are not OpenAPI operations on our side; the contract lists them as GETs.
    websockets = {
        ("get", "/v1/capsules/{id}/exec/stream"),
        ("get", "/v1/capsules/{id}/pty"),
        ("get", "/v1/capsules/{id}/processes/{selector}/stream"),
    }
    assert len(contract) > 20
    assert sorted(contract - ours - websockets) == []
    served_yaml = await client.get("/openapi.yaml")
    assert served_yaml.status_code == 200
    assert operations(yaml.safe_load(served_yaml.text)) == ours
