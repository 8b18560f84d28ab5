"""The code runner template: the base template's packages plus Debian's Jupyter Server, ipykernel,
numpy, pandas and matplotlib (built on the host with debootstrap, so capsules need no internet), a
Python kernelspec `wrenn`, and Jupyter Server on port 8888 started with every capsule.

Jupyter answers without a token, as the published SDK's code runner expects: only the
authenticated port proxy (or a process in the capsule) reaches port 8888."""

from __future__ import annotations

import json
from pathlib import Path

from . import base_image, rootfs_io

NAME = "code-runner-beta"
PORT = 8888
KERNEL = "wrenn"
# Installed with apt over the base template ("minimal").
BASE = "minimal"
PACKAGES = (
    "python3-jupyter-server",
    "python3-ipykernel",
    "python3-numpy",
    "python3-pandas",
    "python3-matplotlib",
)
WORKDIR = "/root"
START_CMD = f"cd {WORKDIR} && exec python3 -m jupyter_server"
HEALTHCHECK = f"curl -sf http://127.0.0.1:{PORT}/api/status"
# Jupyter with ipykernel imports slowly on a loaded host; create waits at most this long.
START_TIMEOUT_SEC = 120.0

SERVER_CONFIG = {
    "ServerApp": {
        "ip": "0.0.0.0",
        "port": PORT,
        "port_retries": 0,
        "token": "",
        "password": "",
        "allow_origin": "*",
        "allow_remote_access": True,
        "disable_check_xsrf": True,
        "open_browser": False,
        "allow_root": True,
        "root_dir": WORKDIR,
    },
    "MultiKernelManager": {"default_kernel_name": KERNEL},
}

KERNELSPEC = {
    "argv": ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    "display_name": "Python 3 (wrenn)",
    "language": "python",
    "env": {"PYTHONUNBUFFERED": "1"},
    "metadata": {"debugger": True},
}


def finish_rootfs(rootfs: Path) -> None:
    """The base template's finishing plus Jupyter's system-wide config and the `wrenn` kernel."""
    base_image.finish_rootfs(rootfs)
    rootfs_io.make_dirs(rootfs, "etc/jupyter")
    rootfs_io.write_file(rootfs, "etc/jupyter/jupyter_server_config.json", _json(SERVER_CONFIG))
    kernel_dir = f"usr/local/share/jupyter/kernels/{KERNEL}"
    rootfs_io.make_dirs(rootfs, kernel_dir)
    rootfs_io.write_file(rootfs, f"{kernel_dir}/kernel.json", _json(KERNELSPEC))


RECIPE = base_image.ImageRecipe(
    base=BASE,
    packages=PACKAGES,
    finish=finish_rootfs,
    start_cmd=START_CMD,
    healthcheck=HEALTHCHECK,
    start_timeout_sec=START_TIMEOUT_SEC,
)


def _json(value: object) -> bytes:
    return json.dumps(value, indent=2).encode() + b"\n"
