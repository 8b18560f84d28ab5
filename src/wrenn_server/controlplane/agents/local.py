"""The single-box host: the agent `wrenn up` starts next to the control plane is a regular host
row, created (or brought back online) at control plane start-up."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from ...agentproto.specs import host_specs
from ..db.models.hosts import Host
from ..db.types import utcnow

_NAMESPACE = uuid.UUID("5b0c1f0e-7a51-4b4a-9a39-9d0e6f3c8d21")


def local_host_id(address: str) -> uuid.UUID:
    """Stable per address, so restarts find the same row (and its capsules)."""
    return uuid.uuid5(_NAMESPACE, address)


async def ensure_local_host(session: AsyncSession, address: str, data_dir: Path) -> Host:
    host_id = local_host_id(address)
    host = await session.get(Host, host_id)
    if host is None:
        host = Host(id=host_id, type="regular", address=address, provider="local")
        session.add(host)
    if address.startswith("unix:"):
        # On this machine, so its specs are this machine's (the scheduler weighs hosts by them).
        specs = host_specs(data_dir if data_dir.exists() else Path("/"))
        host.arch, host.cpu_cores = specs["arch"], specs["cpu_cores"]
        host.memory_mb, host.disk_gb = specs["memory_mb"], specs["disk_gb"]
    host.status = "online"
    host.last_heartbeat_at = utcnow()
    await session.flush()
    return host
