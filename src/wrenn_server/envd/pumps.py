"""One thread that copies every process's output (pipes and pty masters) into its record.

A thread per stream would cost two thread starts per command, several ms each under gVisor."""

from __future__ import annotations

import errno
import os
import selectors
import threading

from . import threads
from .record import READ_SIZE, Process

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Tuple


class OutputPumps:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._pending: List[Tuple[Process, int, int]] = []

    def start(self) -> None:
        threads.start(self._run)

    def add(self, proc: Process, fd: int, index: int) -> None:
        """Copy `fd` into `proc`'s stream `index` until EOF; the pump then closes it."""
        with self._lock:
            self._pending.append((proc, fd, index))
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:  # already woken
            pass

    def _run(self) -> None:
        while True:
            for key, _events in self._selector.select():
                if key.data is None:
                    self._register_pending()
                else:
                    proc, index = key.data
                    self._read(key.fd, proc, index)

    def _register_pending(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            pending, self._pending = self._pending, []
        for proc, fd, index in pending:
            self._selector.register(fd, selectors.EVENT_READ, (proc, index))

    def _read(self, fd: int, proc: Process, index: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO on a pty master: every slave fd is closed, which is the pty's EOF.
            if exc.errno not in (errno.EIO, errno.EBADF):
                raise
            data = b""
        if data:
            proc.add_output(index, data)
            return
        self._selector.unregister(fd)
        proc.stream_eof(fd)
