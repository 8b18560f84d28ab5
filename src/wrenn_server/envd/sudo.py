#!/usr/bin/env python3
"""sudo for capsules.

gVisor runs every task with no_new_privs set, so the setuid `sudo` of a template cannot raise
anyone's privileges. This module is both halves of a replacement:

- in envd (root, pid 1), `serve(table)` listens on the abstract unix socket `@wrenn-sudo`. A
  caller is identified by the kernel (SCM_CREDENTIALS), never by what it says: root may run
  anything;
  another user only with a `NOPASSWD: ALL` rule for itself or one of its groups in /etc/sudoers
  or /etc/sudoers.d/*. The command runs as the target user (root by default) on the caller's own
  stdin, stdout and stderr (passed as file descriptors), in its directory; its exit status is
  sent back, and SIGINT, SIGTERM and SIGHUP the caller receives are passed on.
- run as a program (envd links /usr/local/bin/sudo to it at start), it is the `sudo` users call:
  `sudo [-n] [-E] [-H] [-u user] [-i | -s] [--] command...`, `sudo -v`, `sudo -l`, `sudo -k`.

Inside a capsule this gives what passwordless sudo gives anywhere: root, within the sandbox.
Standard library only, Python 3.9+ (it runs on the capsule's python3).
"""

from __future__ import annotations

import _thread
import grp
import json
import os
import pwd
import re
import signal
import socket
import struct
import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

ADDRESS = "\0wrenn-sudo"
LINK = "/usr/local/bin/sudo"
SUDOERS = ("/etc/sudoers", "/etc/sudoers.d")
_RULE = re.compile(r"^(%?[A-Za-z0-9_.-]+)\s+ALL\s*=\s*\(ALL(?:\s*:\s*ALL)?\)\s*NOPASSWD\s*:\s*ALL$")
_HEADER = struct.Struct("!I")
_INT = struct.Struct("i")
_UCRED = struct.Struct("3i")  # pid, uid, gid
READY = b"R"
MAX_REQUEST = 1 << 20
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# -- the rules --------------------------------------------------------------------------------


def _rule_lines() -> List[str]:
    paths = [SUDOERS[0]]
    try:
        # The directory too: whoever may write it may add a file root owns by renaming one.
        if _trusted(os.stat(SUDOERS[1])):
            paths += [os.path.join(SUDOERS[1], n) for n in sorted(os.listdir(SUDOERS[1]))]
    except OSError:
        pass
    lines = []
    for path in paths:
        # sudo ignores files in sudoers.d whose names contain a dot or end in ~.
        name = os.path.basename(path)
        if path != SUDOERS[0] and ("." in name or name.endswith("~")):
            continue
        try:
            with open(path) as f:
                if _trusted(os.fstat(f.fileno())):
                    lines += [line.strip() for line in f]
        except OSError:
            continue
    return lines


def _trusted(st: os.stat_result) -> bool:
    """Like sudo: a rules file counts only if root owns it and nobody else may write it,
    otherwise any user who can write it would grant themselves root."""
    return st.st_uid == 0 and not st.st_mode & 0o022


def allowed(uid: int) -> bool:
    """Whether the user may run anything as anyone without a password."""
    if uid == 0:
        return True
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return False
    names = {entry.pw_name}
    try:
        names |= {
            "%" + grp.getgrgid(g).gr_name for g in os.getgrouplist(entry.pw_name, entry.pw_gid)
        }
    except (KeyError, OSError):
        pass
    for line in _rule_lines():
        match = _RULE.match(line)
        if match and match.group(1) in names:
            return True
    return False


# -- the server (in envd) ---------------------------------------------------------------------


def serve(table: Any) -> None:
    """Accept sudo requests in a daemon thread; `table` is envd's ProcessTable."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(ADDRESS)
    sock.listen(16)
    # _thread, not threading: no start-up handshake (see threads.py; this file runs on its own
    # as `sudo` too, so it imports nothing of envd's).
    _thread.start_new_thread(_accept_forever, (sock, table))
    _link()


def _link() -> None:
    """Make `sudo` on the standard PATH this one, unless the template has its own there."""
    here = os.path.abspath(__file__)
    try:
        if os.path.lexists(LINK) or not os.path.isdir(os.path.dirname(LINK)):
            return
        os.symlink(here, LINK)
    except OSError:
        pass


def _accept_forever(sock: socket.socket, table: Any) -> None:
    while True:
        conn, _ = sock.accept()
        _thread.start_new_thread(_handle, (conn, table))


def _recv_request(conn: socket.socket) -> Tuple[Dict[str, Any], List[int], int]:
    """The request, the caller's stdio descriptors and its real uid.

    The uid comes from SCM_CREDENTIALS, which the kernel attaches and checks (a caller cannot
    claim another uid). SO_PEERCRED cannot be used: gVisor (2024-07) answers it with the
    listener's own credentials. SO_PASSCRED is on before the caller is told to send."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    conn.sendall(READY)
    space = socket.CMSG_SPACE(3 * _INT.size) + socket.CMSG_SPACE(_UCRED.size)
    header, ancillary, _flags, _addr = conn.recvmsg(_HEADER.size, space)
    fds: List[int] = []
    uid: Optional[int] = None
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _INT.size
            fds += list(struct.unpack("%di" % (usable // _INT.size), data[:usable]))
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            uid = _UCRED.unpack(data[: _UCRED.size])[1]
    try:
        if uid is None:
            raise PermissionError("cannot tell who is calling")
        if len(header) != _HEADER.size:
            raise ValueError("short request")
        size = _HEADER.unpack(header)[0]
        if size > MAX_REQUEST:
            raise ValueError("request too large")
        body = b""
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                raise ValueError("short request")
            body += chunk
        return json.loads(body), fds, uid
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _reply(conn: socket.socket, **message: Any) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass


def _handle(conn: socket.socket, table: Any) -> None:
    fds: List[int] = []
    try:
        request, fds, uid = _recv_request(conn)
        if not allowed(uid):
            _reply(conn, error="%s is not in the sudoers file" % _name(uid))
            return
        if request.get("check"):
            _reply(conn, exit=0)
            return
        if len(fds) != 3:
            raise ValueError("expected stdin, stdout and stderr")
        proc = _spawn(table, request, fds, uid)
        _relay(conn, proc)
    except Exception as exc:  # a bad request must never take envd's thread down loudly
        _reply(conn, error=str(exc) or type(exc).__name__)
    finally:
        for fd in fds:
            os.close(fd)
        conn.close()


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _spawn(table: Any, request: Dict[str, Any], fds: List[int], caller: int) -> Any:
    from . import users
    from .processes import Spec

    target = users.lookup(str(request.get("user") or "root"))
    argv = [str(a) for a in request.get("argv") or []]
    env = users.environment(target)
    if request.get("preserve_env"):
        env.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
    env.update(
        {"SUDO_USER": _name(caller), "SUDO_UID": str(caller), "SUDO_COMMAND": " ".join(argv)}
    )
    cwd = str(request.get("cwd") or "/")
    if request.get("login"):
        cwd = target.home
        argv = [target.shell, "-l"] + (["-c", " ".join(argv)] if argv else [])
    elif request.get("shell"):
        argv = [target.shell] + (["-c", " ".join(argv)] if argv else [])
    if not argv:
        raise ValueError("no command")
    if not os.path.isdir(cwd):
        cwd = target.home
    spec = Spec(argv[0], argv[1:], env, cwd, target, False, None, "sudo")
    return table.spawn_attached(spec, (fds[0], fds[1], fds[2]))


def _relay(conn: socket.socket, proc: Any) -> None:
    """Pass the caller's signals on until the command exits, then report its status."""
    done = threading.Event()

    def signals() -> None:
        while not done.is_set():
            try:
                data = conn.recv(1)
            except OSError:
                return
            if not data:
                return
            if data[0] in [int(s) for s in FORWARDED]:
                try:
                    os.kill(proc.pid, data[0])
                except OSError:
                    pass

    _thread.start_new_thread(signals, ())
    status = proc.wait_exit()
    done.set()
    code = os.waitstatus_to_exitcode(status)
    _reply(conn, exit=code if code >= 0 else 128 - code)


# -- the client (`sudo`) ----------------------------------------------------------------------

USAGE = "usage: sudo [-n] [-E] [-H] [-u user] [-i | -s] [--] command...\n       sudo -v | -l | -k"


def _parse(args: List[str]) -> Dict[str, Any]:
    request: Dict[str, Any] = {"user": "root"}
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            flags = {"non-interactive": "n", "preserve-env": "E", "set-home": "H", "login": "i",
                     "shell": "s", "validate": "v", "list": "l", "reset-timestamp": "k",
                     "user": "u"}  # fmt: skip
            if name not in flags:
                raise SystemExit("sudo: unknown option --%s\n%s" % (name, USAGE))
            letters = flags[name]
            if letters == "u":
                request["user"] = value or (args[i] if i < len(args) else "")
                i += 0 if value else 1
                continue
        else:
            letters = arg[1:]
        for j, letter in enumerate(letters):
            if letter == "u":
                rest = letters[j + 1 :]
                if rest:
                    request["user"] = rest
                elif i < len(args):
                    request["user"] = args[i]
                    i += 1
                else:
                    raise SystemExit("sudo: option requires an argument -- 'u'\n" + USAGE)
                break
            if letter in "nHSk":
                continue  # no password is ever asked; the home is always the target's
            if letter == "E":
                request["preserve_env"] = True
            elif letter == "i":
                request["login"] = True
            elif letter == "s":
                request["shell"] = True
            elif letter in "vl":
                request["check"] = letter
            else:
                raise SystemExit("sudo: invalid option -- '%s'\n%s" % (letter, USAGE))
    request["argv"] = args[i:]
    if (
        not request["argv"]
        and not request.get("check")
        and not (request.get("login") or request.get("shell"))
    ):
        if "-k" in args or "--reset-timestamp" in args:
            raise SystemExit(0)
        raise SystemExit(USAGE)
    return request


def main(args: Optional[List[str]] = None) -> int:
    request = _parse(sys.argv[1:] if args is None else args)
    if request.get("preserve_env"):
        request["env"] = dict(os.environ)
    try:
        request["cwd"] = os.getcwd()
    except OSError:
        request["cwd"] = "/"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(ADDRESS)
    except OSError as exc:
        sys.stderr.write("sudo: the capsule agent is not reachable (%s)\n" % exc.strerror)
        return 1
    body = json.dumps(request).encode()
    if sock.recv(1) != READY:
        sys.stderr.write("sudo: the capsule agent closed the connection\n")
        return 1
    socket.send_fds(sock, [_HEADER.pack(len(body))], [0, 1, 2])
    sock.sendall(body)
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: _forward(sock, signum))
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            sys.stderr.write("sudo: the capsule agent closed the connection\n")
            return 1
        reply += chunk
    answer = json.loads(reply)
    if "error" in answer:
        sys.stderr.write("sudo: %s\n" % answer["error"])
        return 1
    if request.get("check") == "l":
        sys.stdout.write("User may run the following commands:\n    (ALL : ALL) NOPASSWD: ALL\n")
    return int(answer.get("exit", 1))


def _forward(sock: socket.socket, signum: int) -> None:
    try:
        sock.send(bytes([signum]))
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
