"""Entry point: read the token from stdin and the settings from the environment, start the
reaper, serve HTTP.

Started by the host agent as pid 1 of a capsule, with the package mounted at /opt/wrenn/envd and
the token on a pipe as stdin (see credential.py):
    python3 -I -S -c "import sys; sys.path.insert(0, '/opt/wrenn'); \
        from envd.__main__ import main; main()"
"""

from __future__ import annotations

import os
import signal
import sys

from . import credential

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import NoReturn, Optional, Tuple

DEFAULT_PORT = 49983
DEFAULT_BIND = "0.0.0.0"
PEER_POLICIES = ("gateway", "any")


def _config() -> Tuple[bytes, str, int, str]:
    """(token, bind address, port, peer policy); the settings are removed from the environment."""
    if "WRENN_ENVD_TOKEN" in os.environ:
        # The environment of pid 1 is readable by every user of the capsule.
        _die("the access token is read from stdin, never from WRENN_ENVD_TOKEN")
    port_text = os.environ.pop("WRENN_ENVD_PORT", "") or str(DEFAULT_PORT)
    bind = os.environ.pop("WRENN_ENVD_BIND", "") or DEFAULT_BIND
    policy = os.environ.pop("WRENN_ENVD_PEERS", "") or PEER_POLICIES[0]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        _die("WRENN_ENVD_PORT must be a TCP port, got %r" % port_text)
    if policy not in PEER_POLICIES:
        _die("WRENN_ENVD_PEERS must be one of %s, got %r" % (", ".join(PEER_POLICIES), policy))
    try:
        token = credential.read_stdin()
    except ValueError as exc:
        _die(str(exc))
    return token, bind, int(port_text), policy


def _die(message: str) -> NoReturn:
    sys.stderr.write("envd: %s\n" % message)
    raise SystemExit(2)


def _stop(signum: int, frame: Optional[FrameType]) -> None:
    # Runs in the main thread, which is inside serve_forever: unwinding it stops the server.
    raise SystemExit(0)


def main() -> None:
    token, bind, port, peer_policy = _config()
    from . import peers, sudo
    from .processes import IDLE_WAKE_SEC, ProcessTable
    from .server import EnvdServer, State

    table = ProcessTable()
    table.start()
    if os.getpid() == 1:
        # Only as a capsule's init: sudo takes over /usr/local/bin/sudo, never a host's.
        try:
            sudo.serve(table)
        except OSError as exc:
            sys.stderr.write("envd: sudo unavailable: %s\n" % exc.strerror)
    try:
        allowed = peers.GatewayOnly() if peer_policy == "gateway" else peers.AnyPeer()
        server = EnvdServer((bind, port), State(token), table, allowed)
    except OSError as exc:
        _die("cannot listen on %s:%d: %s" % (bind, port, exc.strerror))
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    table.warm_up()
    try:
        # Nothing calls shutdown() (SIGTERM unwinds the loop), so it need not wake to check for
        # it: each wake-up of an idle capsule costs host CPU in the sentry.
        server.serve_until_signalled(IDLE_WAKE_SEC)
    except SystemExit:
        pass
    finally:
        table.kill_all()
        server.server_close()


if __name__ == "__main__":
    main()
