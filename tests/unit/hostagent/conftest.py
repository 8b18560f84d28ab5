from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fake_envd import FakeEnvd, serving_envd


@pytest.fixture
def envd() -> Iterator[FakeEnvd]:
    """A stand-in envd on 127.0.0.1 (see fake_envd.py)."""
    with serving_envd() as fake:
        yield fake
