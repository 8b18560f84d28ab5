"""Daemon threads started without threading's start-up handshake.

`threading.Thread.start()` waits until the new thread has run far enough to say so: under
gVisor that round trip between two threads costs more than the thread itself (three threads
~7.8 ms with it, ~2-3.5 ms without, measured in a capsule). envd pays it for its threads at boot,
before it answers, and for every connection it accepts. The threads started here are daemons
nobody joins or names, so nothing needs the handshake; an exception escaping one is printed by
`sys.unraisablehook` as threading's would be by `threading.excepthook`.
"""

from __future__ import annotations

import _thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable


def start(target: Callable[..., object], *args: Any) -> None:
    """Run `target(*args)` in a new daemon thread; returns at once."""
    _thread.start_new_thread(target, args)
