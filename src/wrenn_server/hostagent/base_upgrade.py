"""The base template after an upgrade.

A data dir keeps the base template an older version built. When the recipe has changed since
(base_image.ImageRecipe.version), new capsules would silently differ from what this version
promises (no default user, say). Capsules made from it, running or paused, and snapshot
templates on it mount that very tree as their lower layer, so it cannot be swapped under them:
a stale base template nothing uses is rebuilt and swapped in; one still in use is kept, and the
operator is told loudly what uses it and the exact command to run once that is gone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import base_image
from .capsule import PAUSED, RECORD, RUNNING
from .templates import TemplateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseCheck:
    """What ensure_current found: rebuilt, kept stale (with what uses it), or neither."""

    rebuilt: bool = False
    stale_users: tuple[str, ...] = ()
    warning: str = ""


def users(store: TemplateStore, capsules_dir: Path, name: str) -> list[str]:
    """Capsules and snapshot templates whose lower layer is the image template `name`: running
    and paused capsules (the ones an agent keeps at start; pooled, half-made and dead ones it
    tears down) and snapshot templates."""
    found = []
    if capsules_dir.is_dir():
        for d in sorted(capsules_dir.iterdir()):
            try:
                meta = json.loads((d / RECORD).read_text())
            except (OSError, ValueError):
                continue
            if (
                isinstance(meta, dict)
                and meta.get("base_image") == name
                and meta.get("status") in (RUNNING, PAUSED)
            ):
                found.append(f"capsule {d.name}")
    found.extend(f"snapshot template {t}" for t in store.dependents(name))
    return found


def rebuild_command(name: str, data_dir: Path) -> str:
    return f"wrenn image build {name} --force --data-dir {data_dir}"


async def ensure_current(
    store: TemplateStore,
    capsules_dir: Path,
    name: str,
    progress: Callable[[float, str], None],
    recipe: base_image.ImageRecipe = base_image.MINIMAL,
) -> BaseCheck:
    """Build the base template if missing; rebuild it if stale and unused; otherwise keep it
    and warn (logged, and returned for a terminal)."""
    if not store.stale(name, recipe):
        await store.ensure_base(name, progress, recipe)
        return BaseCheck()
    used_by = users(store, capsules_dir, name)
    if not used_by:
        log.warning("template %r was built by an older version: rebuilding it", name)
        await store.ensure_base(name, progress, recipe, replace_stale=True)
        return BaseCheck(rebuilt=True)
    old = store.get(name).recipe_version
    shown = ", ".join(used_by[:5]) + (f" and {len(used_by) - 5} more" if len(used_by) > 5 else "")
    warning = (
        f"template {name!r} was built by an older version (recipe {old}, this version builds "
        f"{recipe.version}): new capsules get the old tree until it is rebuilt. It is kept "
        f"because {shown} use it; once they are destroyed, run: "
        f"{rebuild_command(name, store.root.parent)}"
    )
    log.warning("%s", warning)
    return BaseCheck(stale_users=tuple(used_by), warning=warning)
