"""What a fake agent call refuses with: a gRPC status code and the message the real agent would
send (service.py maps the agent's domain errors to these codes)."""

from __future__ import annotations

import grpc


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(message: str) -> Refused:
    return Refused(grpc.StatusCode.NOT_FOUND, message)


def invalid(message: str) -> Refused:
    return Refused(grpc.StatusCode.INVALID_ARGUMENT, message)


def exists(message: str) -> Refused:
    return Refused(grpc.StatusCode.ALREADY_EXISTS, message)


def wrong_state(message: str) -> Refused:
    return Refused(grpc.StatusCode.FAILED_PRECONDITION, message)


def denied(message: str) -> Refused:
    return Refused(grpc.StatusCode.PERMISSION_DENIED, message)
