"""Domain errors of the control plane.

Services raise these; they know nothing about HTTP. The one table that maps them to status codes
and wire error codes is `api/errors.py`. Every message must be safe to show to the caller: never
put internal details (SQL, paths, agent errors) in one.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Root of the control plane's errors.

    `details` are extra fields merged into the wire error object (e.g. the capsule ids that block
    a host deletion).
    """

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(DomainError):
    """The request is malformed or violates a rule about its own content."""


class InvalidID(BadRequest):
    """A prefixed wire ID with the wrong prefix or a malformed UUID."""


class Unauthorized(DomainError):
    """No credentials, or credentials that do not identify an active principal."""


class WrongPassword(Unauthorized):
    """The current password given to change it is not the account's."""


class InvalidToken(BadRequest):
    """A mailed link's token (password reset, activation) is unknown, used or expired."""


class AlreadyActivated(BadRequest):
    """The account of an activation link is active already."""


class Forbidden(DomainError):
    """The principal is known but may not do this."""


class AccountNotActivated(Forbidden):
    """The credentials are right but the account's email was never confirmed (signup with
    email verification)."""


class QuotaExceeded(Forbidden):
    """The team would go over one of its quotas; the message names it, `details` carry the
    numbers."""


class AccountDisabled(Forbidden):
    """The account was deactivated by a platform admin (sign-in refused until reactivated)."""


class NotFound(DomainError):
    """The resource does not exist, or is not visible to the principal."""


class Conflict(DomainError):
    """The request collides with existing state (duplicate name, email, ...)."""


class InvalidState(Conflict):
    """The resource is not in a state that allows the operation (e.g. pausing a paused capsule)."""


class NameTaken(Conflict):
    """A template (or snapshot) of that name already exists for the team."""


class NameReserved(Conflict):
    """The name is a platform template's, which no team may take."""


class EmailTaken(Conflict):
    """An account with that email already exists."""


class OwnsTeamWithMembers(Conflict):
    """The account owns a team others are members of, so it cannot be deleted."""


class SignupCooldown(Conflict):
    """An activation mail for that email went out moments ago."""


class HostHasCapsules(Conflict):
    """A host still runs capsules; `details["sandbox_ids"]` lists them."""


class TooManyRequests(DomainError):
    """The caller must wait `retry_after` seconds (sign-in throttling): the contract's 429."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(DomainError):
    """A dependency (database, host) is temporarily unavailable; retrying may succeed."""


class InsufficientCapacity(ServiceUnavailable):
    """No host can hold the capsule (none online, or none with the memory, disk or CPUs); one
    may later."""


class HostUnavailable(ServiceUnavailable):
    """The host that must do it (the capsule's, the template's) cannot be reached now."""


class InsecureConfiguration(Exception):
    """The settings would run the server with a default secret outside dev mode."""


class HostAgentError(DomainError):
    """A host agent failed, or the work it was given did (a command past its timeout): the
    contract's 502."""


class PortUnreachable(DomainError):
    """Nothing answers on a capsule's port the port proxy was asked to reach (502)."""


class TooLarge(DomainError):
    """The capsule has no room for it (its disk is full): the contract's 413."""
