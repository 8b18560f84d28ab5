"""The capsule's default environment (what /init sets for every process) kept in a file as
well, for services a template starts before /init runs: the code interpreter's server
(wrenn_server.codeinterp) reads it to give its kernels, started with the capsule, the
environment a create or resume set. Root's alone (0600 in a 0700 directory): the values may be
secrets, and other users of the capsule get them only in their own processes."""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict

DIRECTORY = "/run/wrenn"
PATH = DIRECTORY + "/environment.json"


def write(env: Dict[str, str], path: str = PATH) -> None:
    """Replace the file at once (a reader sees the old or the new one, never half of one).
    A failure is reported on stderr and otherwise ignored: /init's callers need not fail
    because of a full disk, and every process envd starts gets the environment anyway."""
    directory = os.path.dirname(path)
    temporary = "%s.%d.tmp" % (path, os.getpid())
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(env, f)
        os.replace(temporary, path)
    except OSError as e:
        sys.stderr.write("envd: could not write %s: %s\n" % (path, e))
        try:
            os.unlink(temporary)
        except OSError:
            pass
