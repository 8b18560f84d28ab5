"""One process's record: metadata, buffered output, exit status, stdin and pty controls.

Output pumps append to the record and exit statuses arrive from the reaper; subscribers wait on
the record's condition for new output and for the end of the process.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios
import threading
import time

from .errors import failed_precondition
from .output import OutputLog

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Dict, Iterable, List, Optional, Tuple, Union

    Info = Dict[str, Union[bool, int, float, str, List[str], None]]

# After the exit status is known, how long to wait for the output pipes to reach EOF. A
# background grandchild (`sleep 100 &`) can hold them open forever.
EOF_GRACE = 0.2
READ_SIZE = 64 * 1024


class Process:
    """A spawned command. Field access is guarded by `cond` where it matters."""

    def __init__(
        self,
        pid: int,
        cmd: str,
        args: Optional[List[str]],
        cwd: str,
        user: str,
        tag: Optional[str],
        pty: bool,
        stdin_fd: Optional[int],
        read_fds: List[int],
        popen: Optional[subprocess.Popen[bytes]],
    ) -> None:
        self.pid = pid
        self.cmd = cmd
        self.args = args
        self.cwd = cwd
        self.user = user
        self.tag = tag
        self.pty = pty
        self.started_at = time.time()
        self.cond = threading.Condition()
        self.log = OutputLog()
        self._read_fds = list(read_fds)  # output fds not at EOF yet (the pumps own them)
        self.status: Optional[int] = None  # raw wait status
        self.exited_at = 0.0  # monotonic
        self.finished = False
        self._popen = popen
        self._stdin_fd = stdin_fd
        self._stdin_lock = threading.Lock()
        self._stdin_wanted = stdin_fd is not None
        self._released = False

    # -- producers -----------------------------------------------------------------------

    def add_output(self, index: int, data: bytes) -> None:
        with self.cond:
            # Output after the exit event was sent is dropped so every replay ends the same way.
            if not self.finished:
                self.log.append(index, data)
                self.cond.notify_all()

    def stream_eof(self, fd: int) -> None:
        """A pump reached EOF on `fd`: close it (under the lock, see `_unread`)."""
        with self.cond:
            self._read_fds.remove(fd)
            os.close(fd)
            self.cond.notify_all()

    def set_exit(self, status: int) -> None:
        with self.cond:
            self.status = status
            self.exited_at = time.monotonic()
            if self._popen is not None:
                # envd reaps with waitpid(-1); tell Popen so it never waits on a reused pid.
                self._popen.returncode = os.waitstatus_to_exitcode(status)
                self._popen = None
            self.cond.notify_all()

    def wait_exit(self) -> int:
        """Block until the process has exited; its wait status."""
        with self.cond:
            while self.status is None:
                self.cond.wait()
            return self.status

    # -- state ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.status is None

    @property
    def exit_code(self) -> Optional[int]:
        status = self.status
        if status is None:
            return None
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)

    @property
    def signal(self) -> Optional[int]:
        status = self.status
        if status is not None and os.WIFSIGNALED(status):
            return os.WTERMSIG(status)
        return None

    def _check_finished(self) -> bool:
        """True once the exit event may be sent; caller holds `cond`.

        That is when the exit status is known and the output reached EOF, or, if something
        (a background grandchild) still holds the output open, once EOF_GRACE has passed and
        nothing the process wrote is still waiting in the pipe.
        """
        if self.finished or self.status is None:
            return self.finished
        if not self._read_fds:
            self.finished = True
        elif time.monotonic() - self.exited_at >= EOF_GRACE and not self._unread():
            self.finished = True
        return self.finished

    def _unread(self) -> bool:
        """True if output is waiting in a pipe (or pty) for its pump."""
        for fd in self._read_fds:
            try:
                raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
            except OSError:
                continue
            if struct.unpack("i", raw)[0] > 0:
                return True
        return False

    def wait_events(
        self, cursor: List[int], timeout: float
    ) -> Tuple[List[Tuple[int, bytes]], bool]:
        """Output past `cursor`, waiting up to `timeout`; `(events, done)`.

        `done` is only reported once everything buffered has been returned.
        """
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                events = self.log.read(cursor)
                if events:
                    return events, False
                if self._check_finished():
                    return [], True
                now = time.monotonic()
                wait = deadline - now
                if wait <= 0:
                    return [], False
                if self.status is not None:  # wake up to end the stream after EOF_GRACE
                    wait = min(wait, max(0.01, self.exited_at + EOF_GRACE - now))
                self.cond.wait(wait)

    def info(self) -> Info:
        return {
            "pid": self.pid,
            "cmd": self.cmd,
            "args": self.args,
            "cwd": self.cwd,
            "user": self.user,
            "tag": self.tag,
            "pty": self.pty,
            "running": self.running,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
        }

    # -- stdin and terminal --------------------------------------------------------------

    def _stdin(self) -> int:
        if not self._stdin_wanted:
            raise failed_precondition("stdin was not requested for process %d" % self.pid)
        if self._stdin_fd is None:
            raise failed_precondition("stdin of process %d is closed" % self.pid)
        return self._stdin_fd

    def write_stdin(self, chunks: Iterable[bytes]) -> None:
        with self._stdin_lock:
            fd = self._stdin()
            try:
                for chunk in chunks:
                    _write_all(fd, chunk)
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EIO):
                    raise
                raise failed_precondition("stdin of process %d is closed" % self.pid) from None
            finally:
                if self._released:  # forgotten while we were writing: close for release()
                    self._drop_stdin()

    def close_stdin(self) -> None:
        with self._stdin_lock:
            if not self._stdin_wanted:
                raise failed_precondition("stdin was not requested for process %d" % self.pid)
            fd = self._stdin_fd
            if fd is None:
                return
            if self.pty:
                # Closing a terminal would hang it up; end of input on a terminal is ^D.
                try:
                    os.write(fd, b"\x04")
                except OSError:
                    pass
                return
            self._drop_stdin()

    def resize(self, cols: int, rows: int) -> None:
        if not self.pty:
            raise failed_precondition("process %d has no pty" % self.pid)
        with self._stdin_lock:
            fd = self._stdin()
            set_winsize(fd, cols, rows)

    def release(self) -> None:
        """Close what envd still holds for this process (when it is forgotten).

        Never blocks: it runs under the table lock, and a stdin write can block for as long as
        nobody reads the pipe. A writer still holding the lock closes stdin when it is done.
        """
        self._released = True
        if self._stdin_lock.acquire(blocking=False):
            try:
                self._drop_stdin()
            finally:
                self._stdin_lock.release()

    def _drop_stdin(self) -> None:
        fd, self._stdin_fd = self._stdin_fd, None
        if fd is not None:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
