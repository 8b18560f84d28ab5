"""Tokens of the in-capsule agents, derived from one master key of this host agent.

A capsule's envd token is HMAC-SHA256(key, capsule handle). A snapshot template then only needs
to name the capsule it was taken from (not a secret) for the agent to know the token its
checkpointed envd answers to, and re-key each capsule restored from it. The key lives in
`<data dir>/envd.key`, readable by root only; losing it makes snapshot templates unusable
(capsules keep their token in their own record and keep working).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from .errors import StartupError

KEY_BYTES = 32
_CONTEXT = b"wrenn envd token\0"


def token_for(key: bytes, handle: str) -> str:
    digest = hmac.new(key, _CONTEXT + handle.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class EnvdKeys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: bytes | None = None

    def token_for(self, handle: str) -> str:
        return token_for(self.key(), handle)

    def key(self) -> bytes:
        if self._key is None:
            self._key = self._read() or self._create()
        return self._key

    def _read(self) -> bytes | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StartupError(f"cannot read the envd key {self.path}: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise StartupError(f"{self.path} is not a regular file owned by this agent's user")
            if st.st_mode & 0o077:
                os.fchmod(f.fileno(), 0o600)
            key = f.read(KEY_BYTES + 1)
        if len(key) != KEY_BYTES:
            # Never replaced silently: snapshot templates depend on this very key.
            raise StartupError(
                f"{self.path} is damaged ({len(key)} bytes, expected {KEY_BYTES}); restore it "
                "from a backup, or delete it to make a new one (snapshot templates made with the "
                "old key will no longer start)"
            )
        return key

    def _create(self) -> bytes:
        """A new key, made whole before it appears under its name (no torn key after a crash)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}")
        key = secrets.token_bytes(KEY_BYTES)
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                existing = self._read()
                assert existing is not None
                return existing
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return key
