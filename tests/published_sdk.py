"""The published Python SDK (`wrenn` on the package index), unchanged: it is what our users run.
It declares Python 3.13 but runs on 3.11, so it is fetched into a directory of its own (next to
the test data dir, kept between runs) rather than installed into the project."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

SDK_VERSION = "0.3.0"
SDK_DIR = (
    Path(os.environ.get("WRENN_TEST_DATA_DIR", "/var/lib/wrenn-test")).parent
    / f"wrenn-test-sdk-{SDK_VERSION}"
)


@contextlib.contextmanager
def published_sdk() -> Iterator[ModuleType]:
    """The `wrenn` package, importable while the context lasts, then forgotten again."""
    if not (SDK_DIR / "wrenn").is_dir():
        subprocess.run(
            ["uv", "pip", "install", "--quiet", "--no-deps", "--target", str(SDK_DIR),
             "--python-version", "3.13", f"wrenn=={SDK_VERSION}"],
            check=True,
        )  # fmt: skip
    sys.path.insert(0, str(SDK_DIR))
    try:
        import wrenn

        yield wrenn
    finally:
        sys.path.remove(str(SDK_DIR))
        for name in [m for m in sys.modules if m == "wrenn" or m.startswith("wrenn.")]:
            del sys.modules[name]
