"""`create_app(settings)`: the control plane's ASGI application.

Builds the database handle and the token codec from the settings (refusing an insecure JWT
secret), installs the error table, mounts the routers, and serves the OpenAPI document generated
from this code at `/openapi.json` and `/openapi.yaml`, with Swagger UI at `/docs`. Startup
migrates the schema when `migrate_on_start` is set; shutdown disposes the engine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from .agents.local import local_host_id
from .agents.pool import HostClientPool
from .agents.scheduler import BalancedScheduler
from .api import dashboard, docs, e2b_errors
from .api import errors as api_errors
from .api.aliases import SandboxAliases
from .api.body_limits import BodyLimits, default_rules
from .api.port_proxy import PortProxy
from .api.routes import ROUTERS
from .builds.queue import build_queue
from .db.migrate import migrate
from .db.session import Database, transaction
from .jobs import loops, periodic
from .jobs.build_runner import BuildRunner
from .jobs.build_workers import Builds, BuildWorkers
from .jobs.leadership import Leadership
from .jobs.reconciler import Reconciler
from .security import TokenCodec
from .services import capsule_routes, channels, event_wakeups, events, quotas
from .services.auth_cache import AuthCache
from .services.bootstrap import bootstrap_single_box
from .services.cache_listener import CacheListener
from .services.capsule_listings import CapsuleListings
from .services.capsule_routes import CapsuleRoutes
from .services.capsules import Hosts
from .services.e2b_envd.watching import Watchers
from .services.event_hub import EventHub
from .services.proxy import Tunnel
from .services.proxy_pool import TunnelPool
from .services.write_stamp import WriteStamp
from .settings import Settings

API_TITLE = "Wrenn API"
API_VERSION = "0.1.0"
# In the data directory: see _share_capsule_writes.
WRITE_STAMP_FILE = "capsule-writes"

log = logging.getLogger(__name__)


def _operation_id(route: APIRoute) -> str:
    # Routes name their operation ids after the contract (createAPIKey, getMe, ...).
    return route.operation_id or route.name


def _openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's generated document, minus its 422 answers: validation errors leave as 400
    `invalid_request` with the common error body (see api/errors.py), as in the contract."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path in document.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        schemas = document.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = document
    return app.openapi_schema


def _agent_secrets(settings: Settings, codec: TokenCodec) -> Callable[[uuid.UUID], str]:
    """The host named in the settings (a single box) shares the operator's secret with its agent;
    every registered host has its own, derived from the control plane's key."""
    local = local_host_id(settings.agent_address) if settings.agent_address else None
    shared = settings.agent_secret.get_secret_value()

    def secret_for(host_id: uuid.UUID) -> str:
        return shared if host_id == local else codec.agent_secret(host_id)

    return secret_for


async def prepare_database(settings: Settings, database: Database) -> None:
    """Migrate (if the settings say so) and add the rows a single box needs. Run by every
    process at start; `wrenn server --workers N` runs it once before starting the workers, so
    that they do not race to create the same rows."""
    if settings.migrate_on_start:
        await migrate(database.url)
    async with database.sessionmaker() as session, transaction(session, write=True):
        await bootstrap_single_box(
            session,
            agent_address=settings.agent_address,
            base_template=settings.base_template,
            data_dir=settings.data_dir,
        )


def _share_capsule_writes(settings: Settings) -> WriteStamp | None:
    """Map the stamp through which the control plane processes of this machine see each other's
    capsule writes at once (services/write_stamp.py). Without it, what another process wrote
    stays unseen in this one's caches for up to their TTL."""
    try:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = WriteStamp(settings.data_dir / WRITE_STAMP_FILE)
    except OSError as e:
        log.warning("capsule writes are not shared between processes: %s", e)
        return None
    capsule_routes.share_writes(stamp)
    return stamp


def _hear_cache_writes(settings: Settings, database: Database) -> CacheListener | None:
    """On PostgreSQL, hear the other processes' writes to what the credential and capsule
    location caches hold, so their entries may outlive their TTL (services/cache_sync.py)."""
    if database.dialect != "postgresql":
        return None
    listener = CacheListener(
        database.url,
        timeout=settings.events_listener_timeout_sec,
        backoff_max=settings.events_listener_backoff_max_sec,
    )
    listener.start()
    return listener


def _end_streams_on_exit_signal(hub: EventHub) -> None:
    """uvicorn waits for open responses before it runs the lifespan's shutdown, so an event
    stream would hold a stopping server forever: its exit signals also end the streams. Only
    when uvicorn's own handler is installed (not in tests or other hosts of the app)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        owner = getattr(previous, "__self__", None)
        if not callable(previous) or not type(owner).__module__.startswith("uvicorn"):
            continue

        def handler(
            num: int, frame: FrameType | None, previous: Callable[..., Any] = previous
        ) -> None:
            loop.call_soon_threadsafe(hub.end_streams)
            previous(num, frame)

        signal.signal(signum, handler)


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> FastAPI:
    """The application. `db` lets a caller share one database handle across apps (tests); the app
    then leaves disposing it to that caller."""
    settings = settings or Settings()
    codec = TokenCodec(
        settings.resolve_jwt_secret(), dt.timedelta(seconds=settings.jwt_lifetime_sec)
    )
    owns_db = db is None
    database = db or Database(
        settings.effective_database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )
    hosts = Hosts(
        HostClientPool(
            _agent_secrets(settings, codec), tenant_policy=settings.tenant_address_policy()
        ),
        BalancedScheduler(settings.memory_overcommit),
        quotas.Limits.of(settings),
        CapsuleRoutes(ttl=settings.capsule_cache_ttl_sec),
    )
    archives = settings.data_dir / "builds"
    queue = build_queue(
        settings.redis_url,
        connect_timeout=settings.redis_connect_timeout_sec,
        socket_timeout=settings.redis_socket_timeout_sec,
        health_check_interval=settings.redis_health_check_interval_sec,
    )
    builds = Builds(
        queue=queue,
        archives=archives,
        max_archive_bytes=settings.build_archive_max_mb << 20,
        workers=BuildWorkers(
            database,
            queue,
            BuildRunner(database, hosts, archives),
            settings.build_workers,
            stale_after_sec=settings.build_stale_after_sec,
        ),
    )

    event_hub = EventHub(
        database,
        poll_interval=settings.effective_events_poll_interval,
        wakeups=event_wakeups.wakeups_for(
            settings.effective_events_wakeup,
            database_url=database.url,
            redis_url=settings.redis_url,
            timeout=settings.events_listener_timeout_sec,
            backoff_max=settings.events_listener_backoff_max_sec,
            own=events.sender_of(database.engine),
        ),
    )
    proxy_tunnels: TunnelPool[Tunnel] = TunnelPool()
    e2b_watchers = Watchers()  # E2B's polled directory watches (services/e2b_envd)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await prepare_database(settings, database)
        reconciler = Reconciler(
            database,
            hosts.pool,
            settings.host_down_after_sec,
            create_grace=settings.create_grace_sec,
        )
        sampler = periodic.stats_sampler(
            database,
            retention=dt.timedelta(days=settings.stats_retention_days),
        )
        background = {
            "reconciler": (settings.reconcile_interval_sec, reconciler.run_once),
            "stats-sampler": (settings.stats_sample_interval_sec, sampler),
            "login-throttle-purge": (300.0, periodic.login_throttle_purger(database)),
            "channel-deliveries": (
                settings.channel_delivery_interval_sec,
                periodic.channel_deliverer(database, channels.Delivery.of(settings)),
            ),
            "built-templates": (
                settings.reconcile_interval_sec if settings.agent_address else 0,
                periodic.built_templates_registrar(database, data_dir=settings.data_dir),
            ),
            "e2b-lifecycle": (
                settings.e2b_lifecycle_interval_sec,
                periodic.e2b_expirer(database, hosts),
            ),
            "events-purge": (
                300.0,
                periodic.events_purger(
                    database, retention=dt.timedelta(hours=settings.events_retention_hours)
                ),
            ),
        }
        stamp = _share_capsule_writes(settings)
        caches = _hear_cache_writes(settings, database)
        await builds.workers.start()
        await event_hub.start()
        _end_streams_on_exit_signal(event_hub)
        try:
            async with loops.running(background, Leadership(database.sessionmaker)):
                yield
        finally:
            if caches is not None:
                await caches.stop()
            if stamp is not None:
                capsule_routes.unshare_writes(stamp)
            await event_hub.close()
            proxy_tunnels.close()
            e2b_watchers.close()
            await builds.workers.stop()
            await queue.close()
            await hosts.pool.close()
            if owns_db:
                await database.dispose()

    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description="Run untrusted code in isolated, disposable Linux capsules.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        docs_url=None,  # served by api/docs.py, from local files
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = database
    app.state.codec = codec
    app.state.auth_cache = AuthCache(ttl=settings.auth_cache_ttl_sec)
    app.state.capsule_listings = CapsuleListings(ttl=settings.capsule_cache_ttl_sec)
    app.state.hosts = hosts
    app.state.builds = builds
    app.state.events = event_hub
    app.state.proxy_pool = proxy_tunnels
    app.state.e2b_watchers = e2b_watchers
    api_errors.install(app)
    json_max = settings.max_json_body_kb * 1024
    archive_max = settings.build_archive_max_mb << 20
    # Added first, so it runs inside SandboxAliases and sees the /v1/capsules paths.
    app.add_middleware(BodyLimits, rules=default_rules(json_max, archive_max), default=json_max)
    app.add_middleware(SandboxAliases)
    # Outermost: a port proxy request never reaches the API's body limits or routes.
    app.add_middleware(PortProxy, proxy_domain=settings.proxy_domain)
    for router in ROUTERS:
        app.include_router(router)
    docs.install(app, "/openapi.json")
    dashboard.install(app, settings.dashboard_dir or dashboard.DEFAULT_DIR)
    # Last: it wraps every error handler, the dashboard's 404 included.
    e2b_errors.install(app)
    app.openapi = lambda: _openapi_document(app)  # type: ignore[method-assign]
    return app
