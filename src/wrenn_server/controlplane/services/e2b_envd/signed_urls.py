"""E2B's signed file URLs, without IO: `download_url` / `upload_url` of a secure sandbox carry
`signature=v1_` + unpadded base64 of SHA-256 over `path:operation:username:token[:expiration]`
(the SDK's `get_signature`), made with the sandbox's envd access token, and optionally
`signature_expiration` (Unix seconds). A signed URL reads (GET) or writes (POST) exactly the
one path, as exactly the one user (none: the capsule's default), it was signed for."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from ...errors import Unauthorized

Operation = Literal["read", "write"]
_VERSION = "v1_"


@dataclass(frozen=True, slots=True)
class SignedFile:
    """What a signed `/files` request asks for, as its query names it."""

    path: str
    operation: Operation
    user: str
    signature: str
    expiration: int | None


def from_query(query: dict[str, str], method: str) -> SignedFile | None:
    """The request's signed access, or None when it carries no signature; `Unauthorized` for
    a signature that cannot be one (no path, a bad expiration, neither GET nor POST)."""
    signature = query.get("signature")
    if signature is None:
        if "signature_expiration" in query:
            raise Unauthorized("signature_expiration without a signature")
        return None
    operation: Operation | None = {"GET": "read", "POST": "write"}.get(method)  # type: ignore[assignment]
    path = query.get("path", "")
    if operation is None or not path:
        raise Unauthorized("invalid signature: a signed URL names one path to read or write")
    raw_expiration = query.get("signature_expiration")
    expiration: int | None = None
    if raw_expiration is not None:
        try:
            expiration = int(raw_expiration)
        except ValueError:
            raise Unauthorized("invalid signature_expiration") from None
    return SignedFile(path, operation, query.get("username", ""), signature, expiration)


def sign(path: str, operation: Operation, user: str, token: str, expiration: int | None) -> str:
    """The signature the SDK makes for these with `token`."""
    raw = f"{path}:{operation}:{user}:{token}"
    if expiration is not None:
        raw += f":{expiration}"
    digest = hashlib.sha256(raw.encode("utf-8")).digest()
    return _VERSION + base64.b64encode(digest).rstrip(b"=").decode("ascii")


def check(signed: SignedFile, token: str, now: float) -> None:
    """`Unauthorized` unless `signed` was signed with `token` and has not expired."""
    expected = sign(signed.path, signed.operation, signed.user, token, signed.expiration)
    if not hmac.compare_digest(expected.encode(), signed.signature.encode("utf-8", "replace")):
        raise Unauthorized("invalid signature")
    if signed.expiration is not None and signed.expiration < now:
        raise Unauthorized("the signed URL has expired")
