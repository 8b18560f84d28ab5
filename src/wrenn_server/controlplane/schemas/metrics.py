"""Schemas of capsule metrics (`/v1/capsules/{id}/metrics`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..services.metrics import MetricSample


class MetricPoint(BaseModel):
    timestamp_unix: int
    cpu_pct: float = Field(description="CPU use normalized to the capsule's vCPUs, 0-100.")
    mem_bytes: int = Field(description="Resident memory of the capsule's sandbox.")
    disk_bytes: int = Field(description="Bytes allocated to the capsule's copy-on-write disk.")

    @classmethod
    def of(cls, sample: MetricSample) -> MetricPoint:
        return cls(
            timestamp_unix=int(sample.ts.timestamp()),
            cpu_pct=sample.cpu_pct,
            mem_bytes=sample.mem_bytes,
            disk_bytes=sample.disk_bytes,
        )


class CapsuleMetrics(BaseModel):
    sandbox_id: str
    range: str
    points: list[MetricPoint]
