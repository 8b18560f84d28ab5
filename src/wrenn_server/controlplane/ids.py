"""Prefixed wire IDs: the one place that formats and parses them.

Inside the control plane every entity id is a `uuid.UUID`; on the wire (REST, RPC, JWT claims) it
is `<prefix><canonical uuid>`, e.g. `sb-6f1c...`. IDs are parsed once at the edge: a wrong prefix or
a malformed UUID raises `InvalidID` (400) or, where the caller asks for it, `NotFound` (404).
Template names are plain text and never prefixed.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass

from .errors import InvalidID, NotFound

# Only the canonical hyphenated form is accepted, so every id has exactly one spelling
# (uuid.UUID would also take braces, "urn:uuid:" and unhyphenated hex).
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

PLATFORM_TEAM_ID = uuid.UUID(int=0)
"""Owner of platform-wide resources (base templates): visible to every team."""


@dataclass(frozen=True, slots=True)
class IdKind:
    """One kind of prefixed id: `prefix` on the wire, `noun` in error messages."""

    prefix: str
    noun: str

    def format(self, value: uuid.UUID) -> str:
        return f"{self.prefix}{value}"

    def parse(self, text: str, *, not_found: bool = False) -> uuid.UUID:
        """The UUID inside `text`.

        Raises `InvalidID`, or `NotFound` when `not_found` is set (for routes whose contract
        answers 404 for an id that cannot exist).
        """
        body = text[len(self.prefix) :] if text.startswith(self.prefix) else None
        if body is None or not _UUID_RE.fullmatch(body):
            if not_found:
                raise NotFound(f"{self.noun} not found")
            raise InvalidID(f"invalid {self.noun} id: expected '{self.prefix}<uuid>'")
        return uuid.UUID(body)


SANDBOX = IdKind("sb-", "capsule")
USER = IdKind("usr-", "user")
TEAM = IdKind("team-", "team")
API_KEY = IdKind("key-", "API key")
HOST = IdKind("host-", "host")
HOST_TOKEN = IdKind("htok-", "host token")
REFRESH_TOKEN = IdKind("hrt-", "refresh token")
AUDIT_LOG = IdKind("log-", "audit log entry")
BUILD = IdKind("bld-", "build")
INVITATION = IdKind("inv-", "invitation")
CHANNEL = IdKind("ch-", "channel")

ALL_KINDS = (
    SANDBOX,
    USER,
    TEAM,
    API_KEY,
    HOST,
    HOST_TOKEN,
    REFRESH_TOKEN,
    AUDIT_LOG,
    BUILD,
    INVITATION,
    CHANNEL,
)


def new_id() -> uuid.UUID:
    """A fresh random id for any entity."""
    return uuid.uuid4()


def new_team_slug() -> str:
    """An immutable team slug: 12 random hex digits as `a1b2c3-d1e2f3`."""
    raw = secrets.token_hex(6)
    return f"{raw[:6]}-{raw[6:]}"


def new_snapshot_name() -> str:
    """A template name for a snapshot the caller did not name."""
    return f"template-{secrets.token_hex(4)}"
