"""envd starting a command as another user from a thread switched to that user (vfork instead of
subprocess's full fork): the command gets exactly the identity subprocess's own switch gives, and
envd's threads never keep it."""

from __future__ import annotations

import os
import pwd
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from wrenn_server.envd import thread_creds

if TYPE_CHECKING:
    from conftest import Envd

IDENTITY = "grep -E '^(Uid|Gid|Groups|Cap[A-Za-z]+|NoNewPrivs):' /proc/self/status"


def thread_identities(pid: int) -> dict[str, list[str]]:
    """The Uid/Gid/Groups/CapEff lines of every thread of `pid`."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        lines = (task / "status").read_text().splitlines()
        keep = ("Uid:", "Gid:", "Groups:", "CapEff:")
        found[task.name] = [line for line in lines if line.startswith(keep)]
    return found


def test_command_gets_the_users_ids_only_and_envd_stays_root(
    envd: Envd, throwaway_user: str
) -> None:
    envd_pid = envd.proc.pid
    before = set(map(tuple, thread_identities(envd_pid).values()))
    stream = envd.run(cmd=IDENTITY, user=throwaway_user)
    assert stream.exit == {"type": "exit", "exit_code": 0, "signal": None}, stream.stderr
    status = dict(line.split(":", 1) for line in stream.stdout.decode().splitlines())
    entry = pwd.getpwnam(throwaway_user)
    uid, gid = str(entry.pw_uid), str(entry.pw_gid)
    assert status["Uid"].split() == [uid] * 4  # real, effective, saved, filesystem
    assert status["Gid"].split() == [gid] * 4
    assert sorted(status["Groups"].split()) == sorted(
        str(g) for g in os.getgrouplist(throwaway_user, entry.pw_gid)
    )
    assert int(status["CapPrm"], 16) == 0 and int(status["CapEff"], 16) == 0
    # The same command on a pty still takes subprocess's switch in a forked child: both agree.
    with envd.start(cmd=IDENTITY, user=throwaway_user, pty={"cols": 200, "rows": 24}) as pty:
        pty.finish()
    assert pty.stdout.decode().replace("\r\n", "\n") == stream.stdout.decode()
    # No thread of envd kept the user's identity.
    assert set(map(tuple, thread_identities(envd_pid).values())) == before


def test_saved_ids_do_not_let_the_command_become_root_again(
    envd: Envd, throwaway_user: str
) -> None:
    probe = "import os\ntry:\n    os.setuid(0)\nexcept PermissionError:\n    print('refused')"
    stream = envd.run(cmd="python3", args=["-c", probe], user=throwaway_user)
    assert stream.stdout == b"refused\n", stream.stderr


def test_a_directory_the_user_may_not_enter_works_as_before(
    envd: Envd, throwaway_user: str, tmp_path: Path
) -> None:
    """subprocess changes directory as root before switching; the switched thread's child
    cannot, and envd falls back to subprocess's way (same outcome as before)."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    before = set(map(tuple, thread_identities(envd.proc.pid).values()))
    stream = envd.run(cmd="pwd; id -un", user=throwaway_user, cwd=str(private))
    assert stream.exit == {"type": "exit", "exit_code": 0, "signal": None}, stream.stderr
    assert stream.stdout.decode() == f"{private}\n{throwaway_user}\n"
    assert set(map(tuple, thread_identities(envd.proc.pid).values())) == before


@pytest.mark.skipif(not thread_creds.available(), reason="needs root on x86_64 or aarch64")
def test_switch_changes_the_calling_thread_only_and_is_undone() -> None:
    seen: dict[str, object] = {}
    inside = threading.Event()
    release = threading.Event()

    def worker() -> None:
        with thread_creds.switched(65534, 65534, [65534]):
            seen["inside"] = (os.getresuid(), os.getresgid(), os.getgroups())
            inside.set()
            release.wait(10)
        seen["after"] = (os.getresuid(), os.getresgid(), sorted(os.getgroups()))
        try:
            with thread_creds.switched(65534, 65534, []):
                raise KeyError("raised inside")
        except KeyError:
            seen["after_error"] = (os.getresuid(), os.getresgid(), sorted(os.getgroups()))

    own = (os.getresuid(), os.getresgid(), sorted(os.getgroups()))
    thread = threading.Thread(target=worker)
    thread.start()
    assert inside.wait(10)
    assert (os.getresuid(), os.getresgid(), sorted(os.getgroups())) == own  # this thread: as is
    release.set()
    thread.join(10)
    euid, egid = own[0][1], own[1][1]
    assert seen["inside"] == ((65534, 65534, euid), (65534, 65534, egid), [65534])
    assert seen["after"] == own
    assert seen["after_error"] == own
