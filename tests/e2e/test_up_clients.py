"""Both clients a user brings, configured only from what `wrenn up` printed and saved, against the
platform started the README's way: the published `wrenn` SDK and the stock `e2b` SDK, each
seeing (and working in) the capsules the other made."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from e2b import Sandbox

from ..published_sdk import published_sdk
from .conftest import Platform, start

HOME = "/home/wrenn-user"


def test_both_sdks_against_wrenn_up(
    platforms: list[Platform], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = start(tmp_path, "clients")
    platforms.append(platform)
    creds = platform.credentials()
    printed = platform.output.read_text()
    # The E2B SDK takes nothing but the three variables `wrenn up` printed.
    for name, value in [
        ("E2B_API_KEY", creds["api_key"]),
        ("E2B_API_URL", creds["e2b"]["api_url"]),
        ("E2B_SANDBOX_URL", creds["e2b"]["sandbox_url"]),
    ]:
        assert f"{name}={value}" in printed
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("E2B_DOMAIN", raising=False)

    with published_sdk() as wrenn:
        with wrenn.Capsule(api_key=creds["api_key"], base_url=creds["api_url"]) as capsule:
            # A capsule as the Go system gives it: the default user in its home.
            assert capsule.commands.run("whoami").stdout == "wrenn-user\n"
            assert capsule.commands.run("pwd").stdout == f"{HOME}\n"
            capsule.files.write(f"{HOME}/from-wrenn.txt", "written by the wrenn SDK")
            capsule.git.init(f"{HOME}/repo", initial_branch="main")
            capsule.files.write(f"{HOME}/repo/README", "hello")
            capsule.git.add(cwd=f"{HOME}/repo")
            capsule.git.commit(
                "first", author_name="A", author_email="a@example.com", cwd=f"{HOME}/repo"
            )
            status = capsule.git.status(cwd=f"{HOME}/repo")
            assert status.branch == "main" and status.is_clean

            # Its E2B face: the same capsule, reached by id with the E2B SDK.
            sbx = Sandbox.connect(capsule.capsule_id)
            assert sbx.files.read(f"{HOME}/from-wrenn.txt") == "written by the wrenn SDK"
            assert sbx.commands.run("git -C repo log --format=%s").stdout == "first\n"
            sbx.files.write(f"{HOME}/from-e2b.txt", "written by the e2b SDK")
            assert capsule.files.read(f"{HOME}/from-e2b.txt") == "written by the e2b SDK"

        # A sandbox created through E2B is a Wrenn capsule the wrenn SDK lists and drives.
        sbx = Sandbox.create("base", timeout=120, metadata={"made-by": "e2b"})
        try:
            assert sbx.commands.run("echo $((6 * 7))").stdout == "42\n"
            listed = wrenn.Capsule.list(api_key=creds["api_key"], base_url=creds["api_url"])
            assert sbx.sandbox_id in {c.id for c in listed}
            with wrenn.Capsule.connect(
                sbx.sandbox_id, api_key=creds["api_key"], base_url=creds["api_url"]
            ) as same:
                assert same.commands.run("whoami").stdout == "wrenn-user\n"
        finally:
            sbx.kill()
        assert not Sandbox.kill(sbx.sandbox_id)  # already gone
    platform.proc.send_signal(signal.SIGINT)
    assert platform.proc.wait(90) == 0
