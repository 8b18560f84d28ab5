"""Which Host headers name a capsule's port: `{port}-{capsule_id}.<WRENN_PROXY_DOMAIN>`, with
the domain's port (`wrenn up`'s `localhost:8080`) matched exactly and a Host's port accepted
for a domain without one; and the setting itself refused when it could never match."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from wrenn_server.controlplane.services.proxy import Target, parse_host
from wrenn_server.controlplane.settings import Settings

CID = "sb-4d12c085-e3f9-4e09-a17a-055c2b585451"


@pytest.mark.parametrize(
    ("host", "domain", "expected"),
    [
        (f"8000-{CID}.localhost:8080", "localhost:8080", Target(8000, CID)),
        (f"8000-{CID.upper()}.LOCALHOST:8080", "localhost:8080", Target(8000, CID)),
        (f"8000-{CID}.localhost.:8080", "localhost:8080", Target(8000, CID)),
        (f"8000-{CID}.localhost:8081", "localhost:8080", None),  # another port: not ours
        (f"8000-{CID}.localhost", "localhost:8080", None),
        (f"443-{CID}.preview.example.com", "preview.example.com", Target(443, CID)),
        (f"443-{CID}.preview.example.com:443", "preview.example.com", Target(443, CID)),
        (f"443-{CID}.preview.example.com.", "preview.example.com", Target(443, CID)),
        (f"443-{CID}.preview.example.com:x", "preview.example.com", None),
        (f"443-{CID}.evil.preview.example.com", "preview.example.com", None),
        (f"443-{CID}.example.com", "preview.example.com", None),
        (f"443-{CID}.anything.test:1", None, Target(443, CID)),  # unset: any domain
        ("localhost:8080", "localhost:8080", None),  # the dashboard's own name
        (f"0-{CID}.localhost:8080", "localhost:8080", None),
        (f"65536-{CID}.localhost:8080", "localhost:8080", None),
        ("8000-sb-1234.localhost:8080", "localhost:8080", None),
        (f"8000-{CID}x.localhost:8080", "localhost:8080", None),
    ],
)  # fmt: skip
def test_parse_host(host: str, domain: str | None, expected: Target | None) -> None:
    assert parse_host(host, domain) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("localhost:8080", "localhost:8080"),
        (" Preview.Example.COM. ", "preview.example.com"),
        ("preview.example.com.:8443", "preview.example.com:8443"),
        ("", None),
    ],
)
def test_proxy_domain_setting_is_normalised(value: str, expected: str | None) -> None:
    assert Settings(proxy_domain=value).proxy_domain == expected


@pytest.mark.parametrize(
    "value", ["https://preview.example.com", "preview.example.com/", "*.example.com", "a b", ":80"]
)
def test_proxy_domain_that_never_matches_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="WRENN_PROXY_DOMAIN must be a domain"):
        Settings(proxy_domain=value)
