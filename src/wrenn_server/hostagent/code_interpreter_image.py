"""The code interpreter template (`code-interpreter-v1`, the name E2B's code interpreter SDK asks
for): the code runner template plus the code interpreter server (wrenn_server.codeinterp) copied
to /usr/local/lib/wrenn/codeinterp, which every capsule starts next to Jupyter Server. It answers
on the capsule's loopback port 49999, reached through the authenticated port proxy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .. import codeinterp
from . import base_image, code_runner_image, rootfs_io
from .templates import Template, TemplateStore

NAME = "code-interpreter-v1"
PORT = 49999
BASE = code_runner_image.NAME
INSTALL_DIR = "usr/local/lib/wrenn"
_SERVER = (
    "python3 -c \"import sys; sys.path.insert(0, '/usr/local/lib/wrenn'); "
    'from codeinterp.server import main; main()"'
)
# Jupyter Server as in the code runner (port 8888), the code interpreter in the foreground.
START_CMD = f"cd {code_runner_image.WORKDIR} && {{ python3 -m jupyter_server & }} && exec {_SERVER}"
# /health answers 200 once the default Python kernel is up.
HEALTHCHECK = (
    f"{code_runner_image.HEALTHCHECK} && curl -sf http://127.0.0.1:{PORT}/health >/dev/null"
)
START_TIMEOUT_SEC = code_runner_image.START_TIMEOUT_SEC


def finish_rootfs(rootfs: Path) -> None:
    """The base finishing (the copied code runner tree was finished already; apt left lists
    behind again) plus the server's modules."""
    base_image.finish_rootfs(rootfs)
    target = f"{INSTALL_DIR}/codeinterp"
    rootfs_io.make_dirs(rootfs, target)
    for source in sorted(Path(codeinterp.__file__).parent.glob("*.py")):
        rootfs_io.write_file(rootfs, f"{target}/{source.name}", source.read_bytes())


RECIPE = base_image.ImageRecipe(
    base=BASE,
    packages=(),  # everything it needs (tornado, jupyter_client, ipykernel) is the code runner's
    finish=finish_rootfs,
    start_cmd=START_CMD,
    healthcheck=HEALTHCHECK,
    start_timeout_sec=START_TIMEOUT_SEC,
)


async def ensure(store: TemplateStore, progress: Callable[[float, str], None]) -> Template:
    """Build the template (and the code runner's it starts from) unless it exists."""
    await store.ensure_base(code_runner_image.NAME, progress, code_runner_image.RECIPE)
    return await store.ensure_base(NAME, progress, RECIPE)
