"""Versions of what runs a capsule, reported with every capsule (the Go system's metadata keys):
the runtime (`vmm_version`: runsc), this agent (`agent_version`) and the capsule's agent
(`envd_version`)."""

from __future__ import annotations

import importlib.metadata
import logging
import re

from .proc import CommandError, run

log = logging.getLogger(__name__)

VMM_VERSION = "vmm_version"
AGENT_VERSION = "agent_version"
ENVD_VERSION = "envd_version"

# What a version may look like (Debian's runsc is `0.0~20240729.0`); envd answers from inside
# the capsule, so its word is checked.
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}")
_RUNSC_RE = re.compile(r"runsc version (\S+)")


def clean(version: object) -> str:
    """`version` if it looks like one, else empty (never forwards arbitrary text)."""
    if isinstance(version, str) and _VERSION_RE.fullmatch(version):
        return version
    return ""


def agent_version() -> str:
    try:
        return importlib.metadata.version("wrenn-server")
    except importlib.metadata.PackageNotFoundError:
        return ""


async def runsc_version(runsc: str) -> str:
    """`runsc --version`'s release (`release-20240212.0`); empty when it cannot be read."""
    try:
        out = await run(runsc, "--version", timeout=10)
    except (CommandError, TimeoutError, OSError) as e:
        log.warning("could not read runsc's version: %s", e)
        return ""
    found = _RUNSC_RE.search(out)
    return clean(found.group(1)) if found else ""


async def host_versions(runsc: str) -> dict[str, str]:
    """The host-wide keys: the runtime's and this agent's versions (empty ones left out)."""
    found = {VMM_VERSION: await runsc_version(runsc), AGENT_VERSION: agent_version()}
    return {k: v for k, v in found.items() if v}
