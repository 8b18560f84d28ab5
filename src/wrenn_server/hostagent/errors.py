"""Domain errors of the host agent, mapped to gRPC status codes in one place (rpc_guard.py)."""

from __future__ import annotations


class AgentError(Exception):
    """Root of the host agent's errors. The message is safe to show to the caller."""


class NotFound(AgentError):
    pass


class InvalidArgument(AgentError):
    pass


class AlreadyExists(AgentError):
    pass


class InvalidState(AgentError):
    """The capsule or template is not in a state that allows the operation."""


class ResourceExhausted(AgentError):
    pass


class Timeout(AgentError):
    pass


class Internal(AgentError):
    """Something failed on the host. The message is generic; details go to the log."""

    def __init__(self, message: str = "internal error") -> None:
        super().__init__(message)


class SandboxExited(Internal):
    """The capsule's sandbox exited while it started (before its agent answered)."""

    def __init__(self) -> None:
        super().__init__("the capsule's sandbox exited while it started")


class RestoreFailed(AgentError):
    """A paused capsule's saved state could not be brought back (its checkpoint is kept)."""

    def __init__(self) -> None:
        super().__init__(
            "the capsule could not be restored from its saved state; it is still paused: "
            "try again, or destroy it"
        )


class PermissionDenied(AgentError):
    pass


class Unavailable(AgentError):
    """The capsule's agent does not answer (it is starting, stopping or wedged)."""


class StartupError(Exception):
    """The agent cannot start as configured; the message says what to change."""
