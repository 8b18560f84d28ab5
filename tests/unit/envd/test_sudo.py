"""The capsule's sudo (envd/sudo.py) without a capsule: option parsing and which sudoers lines
grant passwordless sudo. Its identity checks and running commands are tested in a real capsule
(tests/integration/test_sudo.py)."""

from __future__ import annotations

import pytest

from wrenn_server.envd import sudo


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["whoami"], {"user": "root", "argv": ["whoami"]}),
        (["-n", "-u", "bob", "id", "-u"], {"user": "bob", "argv": ["id", "-u"]}),
        (["-ubob", "true"], {"user": "bob", "argv": ["true"]}),
        (["--user=bob", "true"], {"user": "bob", "argv": ["true"]}),
        (["-E", "--", "-x"], {"user": "root", "argv": ["-x"], "preserve_env": True}),
        (["-nE", "env"], {"user": "root", "argv": ["env"], "preserve_env": True}),
        (["-i"], {"user": "root", "argv": [], "login": True}),
        (["-s", "echo", "hi"], {"user": "root", "argv": ["echo", "hi"], "shell": True}),
        (["-v"], {"user": "root", "argv": [], "check": "v"}),
    ],
)
def test_options(argv: list[str], expected: dict[str, object]) -> None:
    assert sudo._parse(argv) == expected


@pytest.mark.parametrize("argv", [[], ["-u"], ["-X", "true"], ["--frobnicate", "x"]])
def test_bad_usage_exits(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        sudo._parse(argv)


@pytest.mark.parametrize(
    ("line", "who"),
    [
        ("dev ALL=(ALL) NOPASSWD:ALL", "dev"),
        ("dev   ALL = (ALL:ALL) NOPASSWD: ALL", "dev"),
        ("%ops ALL=(ALL:ALL) NOPASSWD: ALL", "%ops"),
    ],
)
def test_rules_that_grant(line: str, who: str) -> None:
    match = sudo._RULE.match(line)
    assert match is not None and match.group(1) == who


@pytest.mark.parametrize(
    "line",
    [
        "dev ALL=(ALL) ALL",  # needs a password: there is none to give
        "dev ALL=(ALL) NOPASSWD: /usr/bin/apt",  # one command only: not supported, refused
        "# dev ALL=(ALL) NOPASSWD:ALL",
        "Defaults env_reset",
    ],
)
def test_rules_that_do_not(line: str) -> None:
    assert sudo._RULE.match(line) is None
