"""API errors: the exception endpoints raise, its JSON body, and how OS errors map onto it."""

from __future__ import annotations

import errno

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict

CODES = {
    400: "invalid_argument",
    401: "unauthorized",
    403: "permission_denied",
    404: "not_found",
    409: "already_exists",
    413: "resource_exhausted",
    500: "internal",
}
# A 409 that is about the state of a process (stdin closed, no pty), not about something that
# already exists. The host agent maps it to FAILED_PRECONDITION.
FAILED_PRECONDITION = "failed_precondition"

_ERRNO_STATUS = {
    errno.ENOENT: 404,
    errno.EACCES: 403,
    errno.EPERM: 403,
    errno.EROFS: 403,
    errno.EEXIST: 409,
    errno.ENOTEMPTY: 409,
    errno.ENOTDIR: 400,
    errno.EISDIR: 400,
    errno.EINVAL: 400,
    errno.ENAMETOOLONG: 400,
    errno.ELOOP: 400,
    # The capsule's disk (disk_size_mb) or a file size limit is full.
    errno.ENOSPC: 413,
    errno.EDQUOT: 413,
    errno.EFBIG: 413,
}


class ApiError(Exception):
    """An error reported to the client as `{"error": {"code", "message"}}` with `status`."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def body(self) -> Dict[str, Dict[str, str]]:
        return error_body(self.status, self.message, self.code)


def error_body(status: int, message: str, code: str = "") -> Dict[str, Dict[str, str]]:
    code = code or CODES.get(status) or ("internal" if status >= 500 else "invalid_argument")
    return {"error": {"code": code, "message": message}}


def bad(message: str) -> ApiError:
    return ApiError(400, message)


def failed_precondition(message: str) -> ApiError:
    return ApiError(409, message, FAILED_PRECONDITION)


def from_oserror(exc: OSError, path: str) -> ApiError:
    """Translate a filesystem error into the API error the client should see."""
    reason = "%s: %s" % ((exc.strerror or "error").lower(), path)
    if exc.errno == errno.EBUSY:
        return failed_precondition(reason)
    return ApiError(_ERRNO_STATUS.get(exc.errno or 0, 500), reason)
