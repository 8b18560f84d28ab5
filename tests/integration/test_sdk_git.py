"""The published SDK's git helpers (`capsule.git`) against a real capsule of the base template, as
its default user: configuration, init, add and commit, status, branches, remotes, reset and
restore, push, pull and clone (from a bare repository on the capsule's own filesystem and over
HTTP served on the capsule's loopback, with credentials kept out of the remote), and the errors
the SDK raises (`GitCommandError`, `GitAuthError`). No traffic leaves the machine."""

from __future__ import annotations

import asyncio
import time
from types import ModuleType
from typing import Any

import pytest

from .conftest import HOME
from .test_sdk import sdk, server  # noqa: F401 - the fixtures

pytestmark = pytest.mark.integration

REPO = f"{HOME}/proj"
BARE = f"{HOME}/origin.git"
# A server on the capsule's loopback that asks for credentials it never accepts.
UNAUTHORIZED = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", 8766), H).serve_forever()
"""


def _until(check: Any, what: str, deadline_s: float = 30) -> Any:
    deadline = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _errors(wrenn: Any, call: Any) -> tuple[str, int, str]:
    try:
        call()
    except wrenn.GitError as e:
        return type(e).__name__, e.exit_code, e.message
    raise AssertionError("no error")


def git_session(wrenn: Any, base_url: str, key: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with wrenn.Capsule(api_key=key, base_url=base_url) as capsule:
        git, run = capsule.git, capsule.commands.run
        seen["tools"] = run("git --version && whoami && pwd").stdout.split("\n")
        git.configure_user("Ada Lovelace", "ada@example.com")
        seen["global_name"] = git.get_config("user.name", scope="global")
        seen["gitconfig"] = capsule.files.read(f"{HOME}/.gitconfig")

        git.init("proj", initial_branch="main")  # relative: in the user's home
        capsule.files.write(f"{REPO}/a.txt", "one\n")
        status = git.status(cwd=REPO)
        seen["untracked"] = (status.branch, status.has_untracked, status.is_clean)
        seen["untracked_files"] = [(f.path, f.status) for f in status.files]
        git.add(cwd=REPO)
        seen["staged"] = git.status(cwd=REPO).has_staged
        git.commit("first", cwd=REPO)
        seen["clean"] = git.status(cwd=REPO).is_clean
        seen["log"] = run("git log --format='%an <%ae> %s'", cwd=REPO).stdout.strip()
        git.set_config("core.autocrlf", "false", cwd=REPO)
        seen["local"] = git.get_config("core.autocrlf", cwd=REPO)
        seen["unset"] = git.get_config("no.such", cwd=REPO)

        git.create_branch("feature", cwd=REPO)
        seen["branches"] = sorted((b.name, b.is_current) for b in git.branches(cwd=REPO))
        git.checkout_branch("main", cwd=REPO)
        git.delete_branch("feature", cwd=REPO)
        seen["branches_after"] = [b.name for b in git.branches(cwd=REPO)]

        # Reset and restore.
        capsule.files.write(f"{REPO}/a.txt", "changed\n")
        git.add(["a.txt"], cwd=REPO)
        git.restore(["a.txt"], staged=True, cwd=REPO)
        git.restore(["a.txt"], worktree=True, cwd=REPO)
        seen["restored"] = capsule.files.read(f"{REPO}/a.txt")
        git.commit("empty", allow_empty=True, cwd=REPO)
        git.reset(mode="hard", ref="HEAD~1", cwd=REPO)
        seen["after_reset"] = run("git log --format=%s", cwd=REPO).stdout.split()

        # A bare repository on the capsule's filesystem: push, clone, pull.
        git.init(BARE, bare=True, initial_branch="main")
        git.remote_add("origin", BARE, cwd=REPO)
        seen["remote"] = git.remote_get("origin", cwd=REPO)
        seen["no_remote"] = git.remote_get("upstream", cwd=REPO)
        git.push("origin", "main", set_upstream=True, cwd=REPO)
        git.clone(BARE, f"{HOME}/copy")
        seen["cloned"] = capsule.files.read(f"{HOME}/copy/a.txt")
        capsule.files.write(f"{REPO}/b.txt", "two\n")
        git.add(cwd=REPO)
        git.commit("second", cwd=REPO)
        git.push(cwd=REPO)
        git.pull(cwd=f"{HOME}/copy")
        copy = git.status(cwd=f"{HOME}/copy")
        seen["pulled"] = (capsule.files.read(f"{HOME}/copy/b.txt"), copy.upstream, copy.behind)

        # Over HTTP on the capsule's loopback (git's dumb protocol), with credentials that the
        # SDK takes back out of the remote afterwards.
        run("git update-server-info", cwd=BARE)
        run(f"python3 -m http.server 8765 --bind 127.0.0.1 --directory {HOME}", background=True)
        _until(
            lambda: run("curl -sf http://127.0.0.1:8765/origin.git/HEAD").exit_code == 0,
            "the HTTP server",
        )
        git.clone("http://127.0.0.1:8765/origin.git", username="ada", password="s3cret", cwd="/tmp")
        seen["http_remote"] = git.remote_get("origin", cwd="/tmp/origin")
        seen["http_files"] = sorted(e.name for e in capsule.files.list("/tmp/origin"))

        # Errors.
        seen["not_a_repo"] = _errors(wrenn, lambda: git.status(cwd=HOME))
        seen["no_branch"] = _errors(wrenn, lambda: git.checkout_branch("nope", cwd=REPO))
        seen["nothing_to_commit"] = _errors(wrenn, lambda: git.commit("again", cwd=REPO))
        seen["missing_repo"] = _errors(
            wrenn, lambda: git.clone("http://127.0.0.1:8765/missing.git", cwd="/tmp")
        )
        seen["missing_remote"] = _errors(
            wrenn, lambda: git.push("upstream", username="a", password="b", cwd=REPO)
        )
        capsule.files.write("/tmp/unauthorized.py", UNAUTHORIZED)
        run("python3 /tmp/unauthorized.py", background=True)
        _until(
            lambda: (
                run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8766/").stdout == "401"
            ),
            "the refusing server",
        )
        seen["unauthorized"] = _errors(
            wrenn, lambda: git.clone("http://127.0.0.1:8766/x.git", "/tmp/x")
        )
        try:
            git.configure_user("", "")
        except ValueError as e:
            seen["bad_user"] = str(e)
    return seen


async def async_git_session(wrenn: Any, base_url: str, key: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with await wrenn.AsyncCapsule.create(api_key=key, base_url=base_url) as capsule:
        git = capsule.git
        await git.init("repo", initial_branch="trunk")
        await capsule.files.write(f"{HOME}/repo/x", "x\n")
        await git.add(cwd=f"{HOME}/repo")
        await git.commit("x", author_name="Bo", author_email="bo@example.com", cwd=f"{HOME}/repo")
        status = await git.status(cwd=f"{HOME}/repo")
        seen["status"] = (status.branch, status.is_clean)
        seen["branches"] = [b.name for b in await git.branches(cwd=f"{HOME}/repo")]
        try:
            await git.checkout_branch("nope", cwd=f"{HOME}/repo")
        except wrenn.GitCommandError as e:
            seen["error"] = e.exit_code
    return seen


async def test_the_sdks_git_helpers_work_in_the_base_template(
    sdk: ModuleType,  # noqa: F811
    server: tuple[str, str],  # noqa: F811
) -> None:
    base_url, key = server
    seen = await asyncio.to_thread(git_session, sdk, base_url, key)
    assert seen["tools"][0].startswith("git version 2.")
    assert seen["tools"][1:3] == ["wrenn-user", HOME]
    assert seen["global_name"] == "Ada Lovelace"
    assert "email = ada@example.com" in seen["gitconfig"]
    assert seen["untracked"] == ("main", True, False)
    assert seen["untracked_files"] == [("a.txt", "untracked")]
    assert seen["staged"] is True and seen["clean"] is True
    assert seen["log"] == "Ada Lovelace <ada@example.com> first"
    assert (seen["local"], seen["unset"]) == ("false", None)
    assert seen["branches"] == [("feature", True), ("main", False)]
    assert seen["branches_after"] == ["main"]
    assert seen["restored"] == "one\n"
    assert seen["after_reset"] == ["first"]
    assert (seen["remote"], seen["no_remote"]) == (BARE, None)
    assert seen["cloned"] == "one\n"
    assert seen["pulled"] == ("two\n", "origin/main", 0)
    # The clone worked with the credentials, which the remote no longer holds.
    assert seen["http_remote"] == "http://127.0.0.1:8765/origin.git"
    assert seen["http_files"] == [".git", "a.txt", "b.txt"]

    name, code, message = seen["not_a_repo"]
    assert (name, code) == ("GitCommandError", 128) and "not a git repository" in message
    name, code, message = seen["no_branch"]
    assert name == "GitCommandError" and code != 0 and "nope" in message
    name, code, message = seen["nothing_to_commit"]
    assert (name, code) == ("GitCommandError", 1) and "nothing to commit" in message
    name, code, message = seen["missing_repo"]
    assert name == "GitCommandError" and code == 128 and "not found" in message
    assert seen["missing_remote"] == ("GitCommandError", 1, "Remote 'upstream' not found.")
    name, code, message = seen["unauthorized"]
    assert (name, code, message) == ("GitAuthError", 128, "git clone: authentication failed")
    assert seen["bad_user"] == "Both name and email are required."


async def test_the_async_git_helpers(
    sdk: ModuleType,  # noqa: F811
    server: tuple[str, str],  # noqa: F811
) -> None:
    base_url, key = server
    seen = await async_git_session(sdk, base_url, key)
    assert seen == {"status": ("trunk", True), "branches": ["trunk"], "error": 1}
