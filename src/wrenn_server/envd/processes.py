"""Process table: spawning commands on pipes or a pty, the reaper, signals, forgetting old ones.

envd is pid 1 in the capsule, so one reaper thread waits for every child (orphans included) with
`waitpid(-1)` and hands exit statuses to the records. Spawning and dispatching both hold the
table lock, so a child that exits at once still finds its record.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import termios
import threading
import time

from . import thread_creds, threads, users
from .errors import ApiError
from .pumps import OutputPumps
from .record import Process, set_winsize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

    from .record import Info

KEEP_EXITED = 300.0  # seconds an exited process stays listed and reattachable
MAX_EXITED = 256
# Output kept for exited processes, all together: the oldest are forgotten first beyond this.
EXITED_OUTPUT_BUDGET = 64 * 1024 * 1024
EARLY_KEEP = 10.0  # seconds to keep statuses of pids nobody registered (yet)
MAX_EARLY = 1024
IDLE_WAKE_SEC = 3600.0  # longest sleep of a loop that normally waits for an event
WARM_UP_WAIT_SEC = 2.0  # the second part of the warm-up waits this long at most for a check


class Spec:
    """A validated request to run something."""

    __slots__ = ("args", "argv", "cmd", "cwd", "env", "pty", "stdin", "tag", "user")

    def __init__(
        self,
        cmd: str,
        args: Optional[List[str]],
        env: Dict[str, str],
        cwd: str,
        user: users.User,
        stdin: bool,
        pty: Optional[Tuple[int, int]],
        tag: Optional[str],
    ) -> None:
        self.cmd = cmd
        self.args = args
        self.argv = [cmd, *args] if args is not None else ["/bin/sh", "-c", cmd]
        self.env = env
        self.cwd = cwd
        self.user = user
        self.stdin = stdin
        self.pty = pty  # (cols, rows)
        self.tag = tag


def _take_tty() -> None:
    """In the child, after setsid: make the pty slave (fd 0) the controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _popen(
    spec: Spec,
    stdio: Tuple[int, int, int],
    uid: Optional[int],
    gid: Optional[int],
    groups: Optional[List[int]],
) -> subprocess.Popen[bytes]:
    """Start `spec` as `uid`/`gid`/`groups` (None: as envd).

    subprocess switches user in a full fork (tens of ms under gVisor); a command without a pty
    is instead spawned by vfork from this thread switched to the user (thread_creds.py). Its
    child changes directory as the user, where subprocess's changes it as root before
    switching: a directory the user may not enter fails there, and is then retried the old
    way, so every outcome stays what it was.
    """

    def start(switch: bool) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            spec.argv,
            stdin=stdio[0],
            stdout=stdio[1],
            stderr=stdio[2],
            cwd=spec.cwd,
            env=spec.env,
            start_new_session=True,
            preexec_fn=_take_tty if spec.pty is not None else None,
            user=uid if switch else None,
            group=gid if switch else None,
            extra_groups=groups if switch else None,
        )

    if uid is None or gid is None or groups is None:
        return start(False)
    if spec.pty is None and thread_creds.available():
        try:
            with thread_creds.switched(uid, gid, groups):
                return start(False)
        except PermissionError:
            pass
    return start(True)


class ProcessTable:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._procs: Dict[int, Process] = {}
        self._early: Dict[int, Tuple[int, float]] = {}
        self._spawns = 0
        self.pumps = OutputPumps()
        self.answered = threading.Event()  # set by the first health check answered

    # -- reaping -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the reaper and output threads."""
        self.pumps.start()
        threads.start(self._reap_forever)

    def warm_up(self) -> None:
        """Run a shell once in the background: the first command of a capsule otherwise pays
        for loading /bin/sh and its libraries into the sandbox's page cache (~50 ms under
        gVisor). From a thread of its own, as the spawn takes ~6 ms: envd answers meanwhile.
        posix_spawn, not Popen: the reaper collects it (woken here like by any spawn), and a
        Popen object left behind would later poll its pid, which may by then be another's.
        Then, once envd has answered its first health check (the host agent waits for that,
        and the GIL would hold the answer back), the path of a command run as another user
        than root (a template's default user: most commands): the account look-up reads the
        account files and the identity switch loads _ctypes, ~13 ms of a capsule's first such
        command otherwise (0.35-0.6 MB of host memory, which such a command takes anyway)."""
        threads.start(self._warm_up)

    def _warm_up(self) -> None:
        try:
            os.posix_spawn("/bin/sh", ["/bin/sh", "-c", ":"], {})
        except OSError:
            return
        with self.cond:
            self._spawns += 1
            self.cond.notify_all()
        self.answered.wait(WARM_UP_WAIT_SEC)
        try:
            root = users.lookup("root")
            if thread_creds.available():
                with thread_creds.switched(root.uid, root.gid, root.groups):
                    pass
        except (ApiError, OSError):
            pass

    def _reap_forever(self) -> None:
        while True:
            with self.cond:
                spawns = self._spawns
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                self._wait_for_spawn(spawns)
                continue
            self._dispatch(pid, status)

    def _wait_for_spawn(self, seen: int) -> None:
        """No children at all: sleep until the next spawn. Every spawn notifies, and nothing
        else gives envd a child (an orphan needs a living descendant, which waitpid waits for),
        so the long timeout is only a safety net: an idle capsule should not wake."""
        with self.cond:
            if self._spawns == seen:
                self.cond.wait(IDLE_WAKE_SEC)

    def _dispatch(self, pid: int, status: int) -> None:
        with self.cond:
            proc = self._procs.get(pid)
            if proc is not None and proc.running:
                proc.set_exit(status)
                return
            # An orphan, or a child whose spawn has not registered it yet.
            self._early[pid] = (status, time.monotonic())
            if len(self._early) > MAX_EARLY:
                del self._early[next(iter(self._early))]

    # -- spawning ------------------------------------------------------------------------

    def spawn(self, spec: Spec) -> Process:
        """Start `spec`; raises ApiError for a missing program and similar client errors."""
        keep: List[int] = []  # our ends: closed again if the spawn fails
        child: List[int] = []  # the child's ends: always closed here afterwards
        readers: List[Tuple[int, int]] = []
        try:
            if spec.pty is not None:
                master, slave = os.openpty()
                keep.append(master)
                child.append(slave)
                set_winsize(master, spec.pty[0], spec.pty[1])
                # The pump owns `master` and closes it at EOF; writes and resizes use a dup so
                # that close never races with a read on a recycled fd number.
                writer = os.dup(master)
                keep.append(writer)
                stdin_fd: Optional[int] = writer
                stdio = (slave, slave, slave)
                readers.append((master, 0))
            else:
                out_r, out_w = os.pipe()
                keep.append(out_r)
                child.append(out_w)
                err_r, err_w = os.pipe()
                keep.append(err_r)
                child.append(err_w)
                if spec.stdin:
                    in_r, in_w = os.pipe()
                    keep.append(in_w)
                    stdin_fd = in_w
                else:
                    in_r, stdin_fd = os.open(os.devnull, os.O_RDONLY), None
                child.append(in_r)
                stdio = (in_r, out_w, err_w)
                readers.extend(((out_r, 0), (err_r, 1)))
            proc = self._start(spec, stdio, stdin_fd, [fd for fd, _index in readers])
        except BaseException:
            for fd in keep:
                os.close(fd)
            raise
        finally:
            for fd in child:
                os.close(fd)
        for fd, index in readers:
            self.pumps.add(proc, fd, index)
        return proc

    def spawn_attached(self, spec: Spec, stdio: Tuple[int, int, int]) -> Process:
        """Start `spec` on descriptors someone else reads and writes (sudo's caller's own);
        nothing is captured. Listed like any process; `wait_exit` gives its status."""
        return self._start(spec, stdio, None, [])

    def _start(
        self,
        spec: Spec,
        stdio: Tuple[int, int, int],
        stdin_fd: Optional[int],
        read_fds: List[int],
    ) -> Process:
        uid, gid, groups = users.identity(spec.user)
        program = spec.argv[0]
        with self.cond:
            try:
                popen = _popen(spec, stdio, uid, gid, groups)
            except FileNotFoundError:
                raise ApiError(404, "program not found: %s" % program) from None
            except PermissionError:
                raise ApiError(403, "permission denied: cannot execute %s" % program) from None
            except OSError as exc:
                raise ApiError(400, "cannot execute %s: %s" % (program, exc.strerror)) from None
            proc = Process(
                popen.pid,
                spec.cmd,
                spec.args,
                spec.cwd,
                spec.user.name,
                spec.tag,
                spec.pty is not None,
                stdin_fd,
                read_fds,
                popen,
            )
            old = self._procs.pop(proc.pid, None)
            if old is not None:
                old.release()
            self._procs[proc.pid] = proc
            early = self._early.pop(proc.pid, None)
            if early is not None:
                proc.set_exit(early[0])
            self._spawns += 1
            self.cond.notify_all()
            self._prune()
        return proc

    # -- queries and control -------------------------------------------------------------

    def get(self, pid: int) -> Process:
        with self.cond:
            self._prune()
            proc = self._procs.get(pid)
        if proc is None:
            raise ApiError(404, "no such process: %d" % pid)
        return proc

    def list(self) -> List[Info]:
        with self.cond:
            self._prune()
            procs = sorted(self._procs.values(), key=lambda p: (p.started_at, p.pid))
        return [p.info() for p in procs]

    def signal(self, pid: int, sig: int) -> None:
        self.get(pid)
        signal_session(pid, sig)

    def kill_all(self) -> None:
        with self.cond:
            running = [p.pid for p in self._procs.values() if p.running]
        for pid in running:
            signal_session(pid, signal.SIGKILL)

    def _prune(self) -> None:
        """Forget old exited processes; caller holds `cond`."""
        now = time.monotonic()
        exited = sorted(
            (p for p in self._procs.values() if not p.running), key=lambda p: p.exited_at
        )
        excess = len(exited) - MAX_EXITED
        budget = sum(p.log.buffered for p in exited) - EXITED_OUTPUT_BUDGET
        for position, proc in enumerate(exited):
            if position < excess or budget > 0 or now - proc.exited_at > KEEP_EXITED:
                budget -= proc.log.buffered
                del self._procs[proc.pid]
                proc.release()
        for pid, (_status, at) in list(self._early.items()):
            if now - at > EARLY_KEEP:
                del self._early[pid]


def signal_session(sid: int, sig: int) -> None:
    """Send `sig` to the process tree started as session `sid`: its process group, then every
    other member of the session and every descendant (one that called setsid is still a child
    of its parent until that parent dies, so the tree is read before anything is killed)."""
    rounds = 3 if sig == signal.SIGKILL else 1  # SIGKILL again catches anything forked meanwhile
    for _ in range(rounds):
        others = tree_members(sid, skip_group=True)
        try:
            os.killpg(sid, sig)
        except OSError:
            pass
        for pid in others:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        if not others:
            return


def session_members(sid: int, skip_group: bool = False) -> List[int]:
    """Live pids whose session id (field 6 of /proc/PID/stat) is `sid`.

    With `skip_group`, members of process group `sid` are left out (killpg reached them).
    """
    return [
        pid
        for pid, (_ppid, pgrp, session) in _live_stats().items()
        if session == sid and not (skip_group and pgrp == sid)
    ]


def tree_members(sid: int, skip_group: bool = False) -> List[int]:
    """The session's members plus the descendants of process `sid` (which may have left the
    session with setsid); with `skip_group`, members of process group `sid` are left out."""
    stats = _live_stats()
    children: Dict[int, List[int]] = {}
    for pid, (ppid, _pgrp, _session) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found = {pid for pid, (_ppid, _pgrp, session) in stats.items() if session == sid}
    stack = list(found | {sid})
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    found.discard(sid)
    return sorted(pid for pid in found if not (skip_group and stats[pid][1] == sid))


def _live_stats() -> Dict[int, Tuple[int, int, int]]:
    """(ppid, process group, session) of every live (not zombie) process, from /proc."""
    stats: Dict[int, Tuple[int, int, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return stats
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                raw = f.read()
        except OSError:
            continue
        # The command name (field 2) may contain spaces and parentheses: split after its end.
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) < 4 or fields[0] == b"Z":
            continue
        stats[int(name)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return stats
