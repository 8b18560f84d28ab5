"""What `wrenn up` tells its user about the port proxy: the domain it picks (`localhost:<port>`
unless WRENN_PROXY_DOMAIN says otherwise), kept in credentials.json (files from before the
proxy still load), printed with the SDK's variables only when the SDK would not derive it; and
a port taken on ::1 counts as taken, since `localhost` names resolve there first."""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path

import pytest

from tests.ports import free_port
from wrenn_server import firstrun
from wrenn_server.controlplane.settings import Settings
from wrenn_server.up import _port_free, proxy_domain


def creds(proxy: str) -> firstrun.Credentials:
    return firstrun.Credentials(
        api_url="http://localhost:8080",
        email="admin@wrenn.local",
        password="pw",
        api_key="wrn_key",
        team_id="team-1",
        proxy_domain=proxy,
    )


def test_the_proxy_domain_defaults_to_localhost_and_the_port(tmp_path: Path) -> None:
    assert proxy_domain(Settings(data_dir=tmp_path), 8080) == "localhost:8080"
    configured = Settings(data_dir=tmp_path, proxy_domain="Preview.Example.com")
    assert proxy_domain(configured, 8080) == "preview.example.com"


def test_credentials_keep_the_proxy_domain_and_old_files_load(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    firstrun.save(path, creds("localhost:8080"))
    assert json.loads(path.read_text())["proxy_domain"] == "localhost:8080"
    assert firstrun.load(path) == creds("localhost:8080")
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "proxy_domain"}
    path.write_text(json.dumps(old))
    loaded = firstrun.load(path)
    assert loaded is not None and loaded.proxy_domain == "" and loaded.api_key == "wrn_key"


def test_the_banner_prints_the_proxy_domain(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    same = firstrun.banner(creds("localhost:8080"), path)
    assert "http://<port>-<capsule id>.localhost:8080/" in same
    # The SDK derives localhost:8080 from the base URL: no variable to set.
    assert "export WRENN_BASE_URL=http://localhost:8080 WRENN_API_KEY=wrn_key\n" in same
    other = firstrun.banner(creds("preview.example.com"), path)
    assert "http://<port>-<capsule id>.preview.example.com/" in other
    assert "WRENN_API_KEY=wrn_key WRENN_PROXY_DOMAIN=preview.example.com\n" in other


def test_credentials_keep_the_e2b_urls_and_the_banner_prints_e2b_variables(
    tmp_path: Path,
) -> None:
    path = tmp_path / "credentials.json"
    with_e2b = creds("localhost:8080")
    with_e2b.e2b = firstrun.e2b_urls("http://localhost:8080")
    firstrun.save(path, with_e2b)
    saved = json.loads(path.read_text())["e2b"]
    assert saved == {"api_url": "http://localhost:8080", "sandbox_url": "http://localhost:8080"}
    assert firstrun.load(path) == with_e2b
    # A file from before keeps loading, without them.
    legacy = {k: v for k, v in json.loads(path.read_text()).items() if k != "e2b"}
    path.write_text(json.dumps(legacy))
    loaded = firstrun.load(path)
    assert loaded is not None and loaded.e2b == {} and loaded.api_key == "wrn_key"
    printed = firstrun.banner(with_e2b, path)
    assert "export E2B_API_KEY=wrn_key E2B_API_URL=http://localhost:8080" in printed
    assert "E2B_SANDBOX_URL=http://localhost:8080\n" in printed


def test_a_port_taken_on_ipv6_loopback_is_taken() -> None:
    port = free_port()
    assert _port_free(port)
    try:
        v6 = socket.socket(socket.AF_INET6)
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        v6.bind(("::1", port))
    except OSError as e:
        if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            pytest.skip("no IPv6 loopback on this host")
        raise
    with v6:
        v6.listen()
        assert not _port_free(port)
    with socket.socket() as v4:
        v4.bind(("127.0.0.1", port))
        v4.listen()
        assert not _port_free(port)
