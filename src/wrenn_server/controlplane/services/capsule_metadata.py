"""A capsule's `metadata`: the creator's labels (checked here) and the versions its host
reports, under keys only the platform sets (the Go system's and its SDK's rules)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ..errors import BadRequest

MAX_KEYS = 20
MAX_VALUE = 64
KEY_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}")
# The platform's keys: filled from what the capsule's host reports, never from a request.
# kernel_version is the Go system's (a VM's kernel); a gVisor capsule has none, but the name
# stays reserved so a label can never pose as it.
PLATFORM_KEYS = frozenset({"kernel_version", "vmm_version", "agent_version", "envd_version"})
MAX_FILTERS = MAX_KEYS


def _check_key(key: str) -> None:
    if not KEY_RE.fullmatch(key):
        raise BadRequest(
            f"metadata key {key[:70]!r} must be 1-64 characters of letters, digits, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    if key in PLATFORM_KEYS:
        raise BadRequest(f"metadata key {key!r} is set by the platform")


def labels(given: Mapping[str, str] | None) -> dict[str, str]:
    """The creator's labels, checked: at most MAX_KEYS, keys as KEY_RE and not the platform's,
    values at most MAX_VALUE printable characters."""
    if not given:
        return {}
    if len(given) > MAX_KEYS:
        raise BadRequest(f"metadata has {len(given)} keys; at most {MAX_KEYS}")
    for key, value in given.items():
        _check_key(key)
        if len(value) > MAX_VALUE or not value.isprintable():
            raise BadRequest(
                f"metadata value of {key!r} must be at most {MAX_VALUE} printable characters"
            )
    return dict(given)


def with_platform(current: Mapping[str, str], reported: Mapping[str, str]) -> dict[str, str]:
    """`current` with the platform's keys replaced by those the host reported now (only those:
    an agent names no labels)."""
    kept = {k: v for k, v in current.items() if k not in PLATFORM_KEYS}
    fresh = {k: v[:MAX_VALUE] for k, v in reported.items() if k in PLATFORM_KEYS and v}
    return {**kept, **fresh}


def parse_filter(values: Iterable[str]) -> dict[str, str]:
    """`?metadata=key:value` (repeated: every pair must match) as {key: value}; a key may be one
    of the platform's (`?metadata=envd_version:0.1.0`)."""
    wanted: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition(":")
        if not sep:
            raise BadRequest(f"metadata filter {item[:70]!r} must be key:value")
        if not KEY_RE.fullmatch(key):
            raise BadRequest(f"metadata filter key {key[:70]!r} is not a valid key")
        if key in wanted and wanted[key] != value:
            raise BadRequest(f"metadata filter names {key!r} twice with different values")
        wanted[key] = value
    if len(wanted) > MAX_FILTERS:
        raise BadRequest(f"at most {MAX_FILTERS} metadata filters")
    return wanted
