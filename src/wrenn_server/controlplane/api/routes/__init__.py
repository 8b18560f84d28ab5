"""Route modules, one per area; `ROUTERS` is what `create_app` mounts."""

from . import (
    admin,
    api_keys,
    audit,
    auth,
    builds,
    capsule_files,
    capsule_metrics,
    capsule_ws,
    capsules,
    hosts,
    me,
    oauth,
    snapshots,
    system,
    teams,
    users,
)

ROUTERS = [
    system.router,
    auth.router,
    oauth.router,
    oauth.me_router,
    me.router,
    api_keys.router,
    teams.router,
    users.router,
    audit.router,
    audit.admin_router,
    # Before `capsules`: its /{id} would otherwise take /stats and /usage.
    capsule_metrics.router,
    capsules.router,
    capsule_files.router,
    capsule_ws.router,
    snapshots.router,
    hosts.router,
    admin.router,
    builds.router,
]
