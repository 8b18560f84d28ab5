"""Interactive process sessions over a message channel: exec streams, PTYs, reattaching.

- `channel.py`: the caller's side (a `Channel`), close codes and the session error;
- `messages.py`: the caller's messages, decoded and validated;
- `process.py`: one process in a capsule, through the host agent;
- `sessions.py`: the three session kinds, each pumping between the two.

The API layer adapts a WebSocket to a `Channel`; a session runs one process conversation between
that channel and the capsule's host agent (ExecStream, ConnectProcess, SendStdin, ResizePty,
SignalProcess) and returns the close code for the socket. Wire messages are the public
contract's:

- exec stream: the caller's first message `{"type": "start", "cmd", "args"?, "envs"?, "cwd"?,
  "tag"?}` (no `args`: `cmd` is a shell command line), later `{"type": "stop"}`; out go
  `start`, `stdout`/`stderr` (text), `exit`. The process lives only as long as the socket: it is
  killed when the caller goes away before it exits.
- PTY: first `start` (cmd/args/cols/rows/envs/cwd/user) or `connect` (tag, or pid); then input
  as binary frames (as the SDK sends it) or `{"type": "input", "data": <base64>}`, `resize`,
  `kill`, `pong`. Out go `started` {tag, pid}, the terminal's output as binary frames (what the
  SDK reads), `exit`, `ping` every PING_INTERVAL and `error` with `fatal`. The process outlives
  the socket; `connect` reattaches, replaying the buffered output first.
- reattach (processes/{selector}/stream): `start`, buffered then live `stdout`/`stderr`, `exit`.
  Detaching leaves the process running.

Failures end a session with `{"type": "error", "data": <message>}` (plus `"fatal": true` on a
PTY). Messages are the caller's own mistakes or what `agents.rpc.translate` lets through; other
failures are logged and reported as a fixed "internal error".
"""

from .channel import Channel, ChannelClosed
from .sessions import attach_session, exec_session, pty_session

__all__ = ["Channel", "ChannelClosed", "attach_session", "exec_session", "pty_session"]
