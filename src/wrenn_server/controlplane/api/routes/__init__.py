"""Route modules, one per area; `ROUTERS` is what `create_app` mounts."""

from . import api_keys, auth, capsule_files, capsules, me, snapshots, system

ROUTERS = [
    system.router,
    auth.router,
    me.router,
    api_keys.router,
    capsules.router,
    capsule_files.router,
    snapshots.router,
]
