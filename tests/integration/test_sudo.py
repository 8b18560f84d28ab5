"""sudo inside a capsule (envd/sudo.py): gVisor keeps setuid binaries from elevating, so envd
runs commands for callers it identifies by their socket credentials and a NOPASSWD rule. The base
template's default user has one; other users (nobody) stay unprivileged."""

from __future__ import annotations

import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import HOME, CapsuleFactory
from .conftest import run_as_root as run  # setting up users and rules needs root

pytestmark = pytest.mark.integration

SETUP = (
    "useradd -m -s /bin/bash dev && useradd -m -s /bin/bash guest && groupadd ops && "
    "useradd -m -G ops opsy && "
    "echo 'dev ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/dev && "
    "echo '%ops ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/ops && "
    "echo 'guest ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/ignored.bak"
)


async def _as(agent: AgentClient, sid: str, user: str, cmd: str, **kw: object) -> pb.ExecResponse:
    return await run(agent, sid, cmd, user=user, **kw)


async def test_sudo_for_sudoers_only(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    sid = (await new_capsule(memory_mb=256)).sandbox_id
    assert (await run(agent, sid, SETUP)).exit_code == 0

    res = await _as(agent, sid, "dev", "sudo whoami; sudo -u guest id -un; sudo -n true; echo $?")
    assert res.stdout.decode().split() == ["root", "guest", "0"], res.stderr
    # Through a group rule, with stdin, the working directory and the exit status passed on.
    res = await _as(
        agent, sid, "opsy", "cd /tmp && echo piped | sudo sh -c 'cat; pwd; exit 7'; echo rc=$?"
    )
    assert res.stdout.decode().split() == ["piped", "/tmp", "rc=7"], res.stderr
    # The caller's environment stays behind unless -E.
    res = await _as(
        agent,
        sid,
        "dev",
        "SECRET=x sudo sh -c 'echo [$SECRET]'; SECRET=y sudo -E sh -c 'echo [$SECRET]'",
    )
    assert res.stdout.decode().split() == ["[]", "[y]"]
    res = await _as(agent, sid, "dev", "sudo -i pwd; sudo -v && echo valid")
    assert res.stdout.decode().split() == ["/root", "valid"]

    # Not a sudoer (a rule in a file sudo ignores does not count): refused, nothing runs.
    res = await _as(agent, sid, "guest", "sudo touch /root/owned; echo rc=$?; ls /root/owned")
    assert "rc=1" in res.stdout.decode()
    assert "not in the sudoers file" in res.stderr.decode()
    assert (await run(agent, sid, "test -e /root/owned")).exit_code == 1
    # Nor does a rule in a file guest owns or anyone may write (sudo ignores those too), nor a
    # sudoers.d anyone may write.
    res = await run(
        agent,
        sid,
        "cd /etc/sudoers.d && echo 'guest ALL=(ALL) NOPASSWD:ALL' > mine && chown guest mine"
        " && echo 'guest ALL=(ALL) NOPASSWD:ALL' > open && chmod 666 open",
    )
    assert res.exit_code == 0, res.stderr
    res = await _as(agent, sid, "guest", "sudo true; echo rc=$?")
    assert "rc=1" in res.stdout.decode()
    res = await run(
        agent, sid, "rm /etc/sudoers.d/mine /etc/sudoers.d/open && chmod 777 /etc/sudoers.d"
    )
    assert res.exit_code == 0, res.stderr
    res = await _as(agent, sid, "dev", "sudo true; echo rc=$?")
    assert "rc=1" in res.stdout.decode()
    assert (await run(agent, sid, "chmod 755 /etc/sudoers.d")).exit_code == 0
    # A forged claim of identity does not help: the kernel says who is calling.
    res = await _as(agent, sid, "guest", "SUDO_USER=dev USER=root sudo true; echo rc=$?")
    assert "rc=1" in res.stdout.decode()
    # guest's groups change after envd has resolved guest: its next command has the new group
    # (envd's user cache sees the account files change) and with it the group's sudo rule.
    assert (await run(agent, sid, "usermod -aG ops guest")).exit_code == 0
    res = await _as(agent, sid, "guest", "id -Gn; sudo -n whoami")
    assert res.stdout.decode().split() == ["guest", "ops", "root"], res.stderr
    # The command's processes are killed with the caller's signals.
    res = await _as(agent, sid, "dev", "timeout -s INT 1 sudo sleep 30; echo rc=$?", timeout_sec=20)
    assert res.stdout.decode().strip() == "rc=124", res.stderr
    assert (await run(agent, sid, "pgrep -x sleep")).exit_code == 1


async def test_default_user_is_a_sudoer_and_nobody_is_not(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    """Commands run as wrenn-user in its home with a login's environment, and it reaches root
    through sudo (the one deliberate way up); nobody cannot, by sudo or by su."""
    sid = (await new_capsule()).sandbox_id
    res = await agent.exec(
        pb.ExecRequest(sandbox_id=sid, cmd="id -un; pwd; echo $HOME $USER $LOGNAME $SHELL $LANG")
    )
    assert res.stdout.decode().split() == [
        "wrenn-user",
        HOME,
        HOME,
        "wrenn-user",
        "wrenn-user",
        "/bin/bash",
        "C.UTF-8",
    ], res.stderr
    res = await agent.exec(pb.ExecRequest(sandbox_id=sid, cmd="sudo id -u; sudo -n -i pwd"))
    assert res.stdout.decode().split() == ["0", "/root"], res.stderr
    res = await _as(agent, sid, "nobody", "sudo id -u; echo rc=$?; su -c 'id -u' root; echo rc=$?")
    assert res.stdout.decode().split() == ["rc=1", "rc=1"], res.stdout
    assert "nobody is not in the sudoers file" in res.stderr.decode()
    # The home is not other users' to read.
    res = await _as(agent, sid, "nobody", f"stat -c %a {HOME}; ls {HOME}")
    assert res.stdout == b"750\n" and b"Permission denied" in res.stderr, res
    # Nor can nobody give itself a rule: sudoers.d is root's.
    res = await _as(
        agent, sid, "nobody", "echo 'nobody ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/x; sudo true"
    )
    assert res.exit_code != 0
