"""envd processes: streaming, users, stdin, signals on whole sessions, reattach, listing, pty."""

from __future__ import annotations

import contextlib
import os
import pwd
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.unit.envd.procs import session_alive
from tests.waiting import wait_until

if TYPE_CHECKING:
    from conftest import Envd

MiB = 1024 * 1024


def session_commands(sid: int) -> list[str]:
    """The command names of the live processes of session `sid`."""
    names = []
    for pid in session_alive(sid):
        with contextlib.suppress(OSError):
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
    return names


def wait_session_gone(sid: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while alive := session_alive(sid):
        assert time.monotonic() < deadline, f"session {sid} still has {alive}"
        time.sleep(0.05)


def test_shell_command_streams_output_and_exit_code(envd: Envd) -> None:
    stream = envd.run(cmd="echo out; echo err >&2; exit 7")
    assert stream.stdout == b"out\n"
    assert stream.stderr == b"err\n"
    assert stream.exit == {"type": "exit", "exit_code": 7, "signal": None}
    assert sorted(e["type"] for e in stream.events) == ["exit", "start", "stderr", "stdout"]
    assert stream.events[0] == {"type": "start", "pid": stream.pid}


def test_interleaved_output_keeps_its_order(envd: Envd) -> None:
    cmd = "for i in 1 2 3; do echo o$i; sleep 0.05; echo e$i >&2; sleep 0.05; done"
    stream = envd.run(cmd=cmd)
    order = [e["type"] for e in stream.events if e["type"] in ("stdout", "stderr")]
    assert order == ["stdout", "stderr"] * 3
    assert stream.stdout == b"o1\no2\no3\n" and stream.stderr == b"e1\ne2\ne3\n"


def test_args_form_runs_the_program_without_a_shell(envd: Envd) -> None:
    stream = envd.run(cmd="echo", args=["$HOME", "a  b", "*"])
    assert stream.stdout == b"$HOME a  b *\n"
    assert envd.run(cmd="echo $HOME").stdout == b"/root\n"
    assert envd.run(cmd="true", args=[]).exit == {"type": "exit", "exit_code": 0, "signal": None}


def test_start_errors(envd: Envd, tmp_path: Path) -> None:
    response = envd.client.post("/processes", json={"cmd": "no-such-program-xyz", "args": []})
    status, code, message = envd.error(response)
    assert (status, code) == (404, "not_found") and "no-such-program-xyz" in message
    response = envd.client.post("/processes", json={"cmd": "true", "user": "no-such-user-xyz"})
    assert envd.error(response)[:2] == (400, "invalid_argument")
    response = envd.client.post("/processes", json={"cmd": "true", "cwd": str(tmp_path / "gone")})
    assert envd.error(response)[:2] == (400, "invalid_argument")
    response = envd.client.post("/processes", json={"cmd": "true", "pty": {"cols": 0, "rows": 5}})
    assert envd.error(response)[:2] == (400, "invalid_argument")
    response = envd.client.post("/processes", json={"cmd": "true", "env": {"A=B": "x"}})
    assert envd.error(response)[:2] == (400, "invalid_argument")


def test_environment_and_cwd(envd: Envd, tmp_path: Path) -> None:
    cmd = 'echo "$FOO|$PATH|$HOME|$USER|$LOGNAME|$SHELL|$LANG"; pwd'
    stream = envd.run(cmd=cmd, env={"FOO": "bar", "LANG": "C"}, cwd=str(tmp_path))
    lines = stream.stdout.decode().splitlines()
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert lines[0] == f"bar|{path}|/root|root|root|/bin/bash|C"
    assert lines[1] == str(tmp_path)
    assert envd.run(cmd="pwd").stdout == b"/root\n"  # cwd defaults to the home


def test_runs_as_the_requested_user(envd: Envd, throwaway_user: str) -> None:
    target = Path(f"/home/{throwaway_user}/made-by-user")
    cmd = f'id -un; id -Gn; echo "$HOME $USER"; pwd; touch {target}'
    stream = envd.run(cmd=cmd, user=throwaway_user)
    assert stream.exit == {"type": "exit", "exit_code": 0, "signal": None}, stream.stderr
    name, groups, env_line, cwd = stream.stdout.decode().splitlines()
    assert name == throwaway_user
    assert f"wtg{throwaway_user[2:]}" in groups.split()  # supplementary group applied
    home = f"/home/{throwaway_user}"
    assert env_line == f"{home} {throwaway_user}" and cwd == home
    assert target.stat().st_uid == pwd.getpwnam(throwaway_user).pw_uid
    # Relative cwd is resolved against that user's home.
    assert envd.run(cmd="pwd", user=throwaway_user, cwd=".").stdout.decode() == home + "\n"


def test_stdin_write_and_close(envd: Envd) -> None:
    with envd.start(cmd="cat", args=[], stdin=True) as stream:
        pid = stream.pid
        assert envd.client.post(f"/processes/{pid}/stdin", content=b"hello\n").status_code == 204
        stream.wait_for(b"hello\n")

        def chunks():  # a chunked request body
            yield b"wor"
            yield b"ld"

        assert envd.client.post(f"/processes/{pid}/stdin", content=chunks()).status_code == 204
        assert envd.client.post(f"/processes/{pid}/stdin/close").status_code == 204
        assert stream.finish() == {"type": "exit", "exit_code": 0, "signal": None}
        assert stream.stdout == b"hello\nworld"
    response = envd.client.post(f"/processes/{pid}/stdin", content=b"late")
    assert envd.error(response)[:2] == (409, "failed_precondition")


def test_stdin_is_dev_null_unless_requested(envd: Envd) -> None:
    with envd.start(cmd="cat; echo done") as stream:
        assert stream.finish()["exit_code"] == 0
        assert stream.stdout == b"done\n"
    response = envd.client.post(f"/processes/{stream.pid}/stdin", content=b"x")
    assert envd.error(response)[:2] == (409, "failed_precondition")


def test_sigkill_kills_the_whole_tree(envd: Envd) -> None:
    # Background grandchildren, one of them in its own process group (out of killpg's reach).
    cmd = (
        "sleep 300 & sleep 301 & "
        'python3 -c \'import os, time; os.setpgid(0, 0); print("grouped", flush=True); '
        "time.sleep(300)' & "
        "sleep 0.3; echo ready; wait"
    )
    with envd.start(cmd=cmd) as stream:
        stream.wait_for(b"ready")
        stream.wait_for(b"grouped")
        assert len(session_alive(stream.pid)) >= 4
        response = envd.client.post(f"/processes/{stream.pid}/signal", json={"signal": "SIGKILL"})
        assert response.status_code == 204
        assert stream.finish() == {"type": "exit", "exit_code": 137, "signal": 9}
    wait_session_gone(stream.pid)


def _alive(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 :].split()[0] != b"Z"


def test_sigkill_reaches_a_descendant_that_left_the_session(envd: Envd) -> None:
    # setsid: neither in the process group nor in the session any more, still a descendant.
    cmd = (
        "python3 -c 'import os, time; os.setsid(); print(os.getpid(), flush=True); "
        "time.sleep(300)' & wait"
    )
    with envd.start(cmd=cmd) as stream:
        stream.wait_for(b"\n")
        escaped = int(stream.stdout)
        assert _alive(escaped) and escaped not in session_alive(stream.pid)
        response = envd.client.post(f"/processes/{stream.pid}/signal", json={"signal": "SIGKILL"})
        assert response.status_code == 204
        assert stream.finish()["signal"] == 9
    wait_until(lambda: not _alive(escaped), what="the escaped process to die")


def test_signals_by_name_and_number(envd: Envd) -> None:
    for signal_value, code, number in (("SIGTERM", 143, 15), ("int", 130, 2), (15, 143, 15)):
        with envd.start(cmd="sleep", args=["300"]) as stream:
            url = f"/processes/{stream.pid}/signal"
            assert envd.client.post(url, json={"signal": signal_value}).status_code == 204
            assert stream.finish() == {"type": "exit", "exit_code": code, "signal": number}
    response = envd.client.post(url, json={"signal": "SIGNOPE"})
    assert envd.error(response)[:2] == (400, "invalid_argument")
    assert envd.client.post("/processes/999999999/signal", json={"signal": 9}).status_code == 404


def test_exit_is_not_held_up_by_a_background_grandchild(envd: Envd) -> None:
    started = time.monotonic()
    with envd.start(cmd="sleep 300 & echo started") as stream:
        assert stream.finish() == {"type": "exit", "exit_code": 0, "signal": None}
    assert time.monotonic() - started < 3
    assert stream.stdout == b"started\n"
    # The sleep still holds the output pipe; a reattach ends the same way, at once.
    assert session_alive(stream.pid)
    with envd.attach(stream.pid) as again:
        again.finish()
    assert (again.stdout, again.stderr, again.exit) == (stream.stdout, b"", stream.exit)
    # Signalling an exited process still reaches what is left of its session.
    response = envd.client.post(f"/processes/{stream.pid}/signal", json={"signal": 9})
    assert response.status_code == 204
    wait_session_gone(stream.pid)


def test_reattach_replays_then_follows_then_exits(envd: Envd) -> None:
    cmd = 'echo one; echo uno >&2; read x; echo "two $x"'
    with envd.start(cmd=cmd, stdin=True) as first:
        first.wait_for(b"one\n")
        first.wait_for(b"uno\n", "stderr")
    # The first client went away; the process is still waiting for input.
    pid = first.pid
    with envd.attach(pid) as stream:
        assert stream.pid == pid
        stream.wait_for(b"one\n")
        stream.wait_for(b"uno\n", "stderr")
        envd.client.post(f"/processes/{pid}/stdin", content=b"abc\n")
        assert stream.finish() == {"type": "exit", "exit_code": 0, "signal": None}
    assert stream.stdout == b"one\ntwo abc\n"
    with envd.attach(pid) as replay:
        replay.finish()
    # Chunk boundaries may differ from the live stream's; the bytes and the ending may not.
    assert (replay.stdout, replay.stderr, replay.exit) == (stream.stdout, b"uno\n", stream.exit)
    assert envd.client.get("/processes/999999999/stream").status_code == 404


def test_replay_keeps_the_last_4_mib_of_output(envd: Envd) -> None:
    stream = envd.run(cmd="seq 1 900000")
    expected = "".join(f"{i}\n" for i in range(1, 900001)).encode()
    assert len(expected) > 5 * MiB
    # A live reader that keeps up sees everything; one that lags may only miss the oldest part.
    assert stream.stdout.endswith(expected[-4 * MiB :])
    with envd.attach(stream.pid) as replay:
        replay.finish()
    assert replay.stdout == expected[-4 * MiB :]


def test_list_processes(envd: Envd, tmp_path: Path) -> None:
    with envd.start(cmd="sleep", args=["300"], tag="sleeper", cwd=str(tmp_path)) as stream:
        listed = {p["pid"]: p for p in envd.client.get("/processes").json()["processes"]}
        entry = listed[stream.pid]
        assert entry["started_at"] <= time.time()
        del entry["started_at"]
        assert entry == {
            "pid": stream.pid,
            "cmd": "sleep",
            "args": ["300"],
            "cwd": str(tmp_path),
            "user": "root",
            "tag": "sleeper",
            "pty": False,
            "running": True,
            "exit_code": None,
        }
        envd.client.post(f"/processes/{stream.pid}/signal", json={"signal": "SIGKILL"})
        stream.finish()
    listed = {p["pid"]: p for p in envd.client.get("/processes").json()["processes"]}
    assert listed[stream.pid]["running"] is False
    assert listed[stream.pid]["exit_code"] == 137


def test_pty_size_resize_echo_and_controlling_terminal(envd: Envd) -> None:
    with envd.start(cmd="sh", args=[], pty={"cols": 100, "rows": 30}) as stream:
        pid = stream.pid
        write = lambda data: envd.client.post(f"/processes/{pid}/stdin", content=data)  # noqa: E731
        write(b"tty; stty size; echo $TERM; echo ctty-ok > /dev/tty\n")
        stream.wait_for(b"ctty-ok\r\n")
        out = stream.stdout.decode()
        assert "/dev/pts/" in out and "30 100\r\n" in out and "xterm-256color\r\n" in out
        assert (
            envd.client.post(f"/processes/{pid}/resize", json={"cols": 120, "rows": 40}).status_code
            == 204
        )
        write(b"stty size\n")
        stream.wait_for(b"40 120\r\n")
        # The terminal echoes input; output arrives as stdout, never stderr.
        write(b"echo marker-$((40+2))\n")
        stream.wait_for(b"marker-42\r\n")
        assert b"echo marker-$((40+2))" in stream.stdout
        # ^C reaches the foreground process group through the terminal.
        write(b"sleep 300; echo after-sleep\n")
        wait_until(lambda: "sleep" in session_commands(pid), 10, what="sleep in the foreground")
        write(b"\x03")
        write(b"echo interrupted\n")
        stream.wait_for(b"interrupted\r\n")
        write(b"exit 3\n")
        assert stream.finish() == {"type": "exit", "exit_code": 3, "signal": None}
        assert stream.stderr == b""
    listed = {p["pid"]: p for p in envd.client.get("/processes").json()["processes"]}
    assert listed[pid]["pty"] is True


def test_pty_stdin_close_sends_end_of_file(envd: Envd) -> None:
    with envd.start(cmd="cat; echo eof-seen", pty={"cols": 80, "rows": 24}) as stream:
        envd.client.post(f"/processes/{stream.pid}/stdin", content=b"abc\n")
        stream.wait_for(b"abc\r\n")
        assert envd.client.post(f"/processes/{stream.pid}/stdin/close").status_code == 204
        stream.wait_for(b"eof-seen")
        assert stream.finish()["exit_code"] == 0


def test_resize_without_pty_is_409(envd: Envd) -> None:
    with envd.start(cmd="sleep", args=["300"]) as stream:
        response = envd.client.post(
            f"/processes/{stream.pid}/resize", json={"cols": 80, "rows": 24}
        )
        assert envd.error(response)[:2] == (409, "failed_precondition")
        envd.client.post(f"/processes/{stream.pid}/signal", json={"signal": 9})
        stream.finish()


def test_output_of_quick_processes_is_never_lost(envd: Envd) -> None:
    # Many short-lived processes race their exit against registration and output pumps.
    for i in range(40):
        stream = envd.run(cmd="echo", args=[str(i)])
        assert stream.stdout == f"{i}\n".encode()
        assert stream.exit == {"type": "exit", "exit_code": 0, "signal": None}


def test_envd_reaps_its_children(envd: Envd) -> None:
    pids = set(map(str, (envd.run(cmd="true").pid for _ in range(5))))
    children = Path(f"/proc/{envd.proc.pid}/task/{envd.proc.pid}/children")
    # Zombies would stay listed.
    wait_until(lambda: not pids & set(children.read_text().split()), 5, what="children reaped")


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root envd switches identities")
def test_the_path_of_a_command_as_another_user_is_warmed_at_start(fresh_envd: Envd) -> None:
    # The first command as a template's default user would otherwise read the account files
    # and load _ctypes (the thread identity switch): ~15 ms under gVisor.
    maps = Path(f"/proc/{fresh_envd.proc.pid}/maps")

    def warmed() -> bool:
        return "_ctypes" in maps.read_text()

    wait_until(warmed, 5, what="_ctypes loaded by envd's warm-up")


def test_the_start_up_shell_is_reaped_before_any_command(fresh_envd: Envd) -> None:
    # envd runs a shell once at start (warming the page cache for the first command); its
    # reaper, asleep with no children by then, must still collect it.
    proc = fresh_envd.proc
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")

    def no_children() -> bool:
        return not children.read_text().split()

    wait_until(no_children, 5, what="the start-up shell reaped")
