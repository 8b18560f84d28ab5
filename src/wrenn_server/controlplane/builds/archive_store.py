"""A build's uploaded archive in the database, in 1 MiB pieces: the process that receives the
upload is not always the one whose worker runs the build. The worker copies it back to a local
file (what `archive` reads) and checks its SHA-256 against the one taken at upload."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...private import open_private, private_dir
from ..db.models.capsules import TemplateBuildArchive
from ..db.session import Database

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


async def store(session: AsyncSession, build_id: uuid.UUID, path: Path) -> None:
    """Add the file's pieces to the session (the caller's transaction commits them)."""
    with open(path, "rb") as f:
        seq = 0
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            session.add(TemplateBuildArchive(build_id=build_id, seq=seq, data=chunk))
            seq += 1
            if seq % 16 == 0:
                await session.flush()  # a few pieces in memory at a time, not the whole archive


class DamagedArchive(Exception):
    """No pieces, or pieces that do not add up to the archive that was uploaded."""


async def fetch(db: Database, build_id: uuid.UUID, sha256: str, target: Path) -> None:
    """Write the archive to `target` (whole or not at all), piece by piece."""
    private_dir(target.parent)  # teams' uploads: the server's eyes only
    tmp = target.with_name(f".{target.name}.tmp")
    digest = hashlib.sha256()
    try:
        with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as out:
            seq = 0
            while True:
                async with db.sessionmaker() as session:
                    data = await session.scalar(
                        select(TemplateBuildArchive.data).where(
                            TemplateBuildArchive.build_id == build_id,
                            TemplateBuildArchive.seq == seq,
                        )
                    )
                if data is None:
                    break
                digest.update(data)
                await asyncio.to_thread(out.write, data)
                seq += 1
        if seq == 0 or digest.hexdigest() != sha256:
            raise DamagedArchive("the build's archive is missing or damaged")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


async def drop(session: AsyncSession, build_id: uuid.UUID) -> None:
    await session.execute(
        delete(TemplateBuildArchive).where(TemplateBuildArchive.build_id == build_id)
    )
