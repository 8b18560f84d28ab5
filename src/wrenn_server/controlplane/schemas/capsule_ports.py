"""Wire schemas of a capsule's listening ports."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ListeningPort(BaseModel):
    port: int = Field(ge=1, le=65535)
    address: str = Field(
        description="The widest address the port listens on in the capsule: 0.0.0.0 or :: for "
        "every address, 127.0.0.1 or ::1 for loopback only (the port proxy reaches both)."
    )
    pid: int | None = Field(description="A process holding the socket, when one is found.")
    command: str | None = Field(description="That process's command line.")
    url: str = Field(description="The port's address through the port proxy.")


class PortListResponse(BaseModel):
    ports: list[ListeningPort]
