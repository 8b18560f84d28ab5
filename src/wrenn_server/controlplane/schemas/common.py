"""Schemas shared by every area: the error body and the helpers for documenting it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str


class ErrorBody(BaseModel):
    """`{"error": {"code": ..., "message": ...}}`, the body of every error response."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Invalid request",
    401: "Missing or invalid credentials",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict with the current state",
    429: "Too many attempts: wait the Retry-After seconds",
    503: "Temporarily unavailable",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can answer."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}
