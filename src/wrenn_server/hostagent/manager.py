"""The capsules of this host: bookkeeping, per-capsule locks, activity, the TTL reaper and
in-capsule operations. The isolation itself is the Runtime's job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from . import errors
from .capacity import Room
from .capsule import (
    DEAD,
    PAUSED,
    POOLED,
    RUNNING,
    STARTING,
    Capsule,
    capsule_dir,
    new_sandbox_id,
    validate_sandbox_id,
)
from .config import AgentSettings
from .envd_client import EnvdClient, Event
from .envd_keys import EnvdKeys
from .exec_output import ExecOutput, ExecResult
from .metrics import SAMPLE_INTERVAL, Point, Sampler
from .pool import Pooled, WarmPool
from .reaper import SandboxWatch
from .runtime import Runtime
from .templates import IMAGE, SNAPSHOT, Template, TemplateStore, validate_name

log = logging.getLogger(__name__)

ENVD_START_TIMEOUT = 20.0
# Finding a new sandbox's pid to watch: tries, and the wait between them.
WATCH_ATTEMPTS = 5
WATCH_RETRY_SEC = 1.0
REKEY_TIMEOUT = 10.0
CLEANUP_TIMEOUT = 60.0


@dataclass
class CreateSpec:
    sandbox_id: str = ""
    template: str = ""
    vcpus: int = 0
    memory_mb: int = 0
    disk_size_mb: int = 0
    timeout_sec: int = 0
    default_user: str = ""
    default_env: dict[str, str] | None = None


class SandboxManager:
    def __init__(self, settings: AgentSettings, runtime: Runtime, templates: TemplateStore) -> None:
        self.settings = settings
        self.runtime = runtime
        self.templates = templates
        self.keys = EnvdKeys(settings.data_dir / "envd.key")
        self.capsules: dict[str, Capsule] = {}
        self._clients: dict[str, EnvdClient] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.metrics = Sampler()
        self._sampler: asyncio.Task[None] | None = None
        # Sandboxes watched for dying on their own: the pid watched per capsule handle, and a
        # boot count so a late answer about an earlier sandbox is not taken for the current.
        self._watch: SandboxWatch | None = None
        self._sandbox_pids: dict[str, int] = {}
        self._boots: dict[str, int] = {}
        self._watch_tasks: set[asyncio.Task[None]] = set()
        shape = (
            settings.default_template,
            settings.default_vcpus,
            settings.default_memory_mb,
            settings.default_disk_size_mb,
        )
        self.pool = WarmPool(settings.pool_size, shape, self._boot_pooled, self._discard_pooled)
        self.room = Room(settings, self.capsules, self.pool)

    # -- startup / shutdown ----------------------------------------------------------------

    async def start(self) -> None:
        await self.runtime.prepare()
        self.keys.key()  # a damaged key stops the agent here, not at the first snapshot
        self._watch = SandboxWatch(self._sandbox_exit)
        for capsule in await self.runtime.recover():
            self.capsules[capsule.sandbox_id] = capsule
            if capsule.status == RUNNING:
                self._watch_sandbox(capsule)
                client = self._connect(capsule)
                capsule.touch()
                try:
                    await asyncio.wait_for(self._adopt_token(capsule, client), REKEY_TIMEOUT)
                except (errors.AgentError, TimeoutError):
                    log.warning("could not re-key %s; it keeps its old token", capsule.sandbox_id)
        self._reaper = asyncio.create_task(self._reap_forever(), name="ttl-reaper")
        self._sampler = asyncio.create_task(self._sample_forever(), name="metrics-sampler")
        self.pool.start()

    async def stop(self) -> None:
        """Stop background work. Capsules keep running: a restarted agent adopts them (but
        not pooled ones, which nobody owns yet)."""
        await self.pool.stop()
        for task in (self._reaper, self._sampler, *self._watch_tasks):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._watch is not None:
            self._watch.close()
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    # -- lookup ----------------------------------------------------------------------------

    def get(self, sandbox_id: str) -> Capsule:
        validate_sandbox_id(sandbox_id)
        try:
            return self.capsules[sandbox_id]
        except KeyError:
            raise errors.NotFound(f"sandbox {sandbox_id} not found") from None

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def envd(self, sandbox_id: str) -> EnvdClient:
        """The agent of a running capsule; counts as activity for the TTL reaper."""
        capsule = self.get(sandbox_id)
        if capsule.status == DEAD:
            raise _died(capsule)
        if capsule.status != RUNNING:
            raise errors.InvalidState(f"sandbox {sandbox_id} is {capsule.status}, not running")
        capsule.touch()
        return self._clients[sandbox_id]

    def _client_for(self, capsule: Capsule) -> EnvdClient:
        assert capsule.net is not None
        return EnvdClient(str(capsule.net.capsule_ip), self.settings.envd_port, capsule.token)

    def _connect(self, capsule: Capsule) -> EnvdClient:
        client = self._clients[capsule.sandbox_id] = self._client_for(capsule)
        return client

    async def _disconnect(self, sandbox_id: str) -> None:
        client = self._clients.pop(sandbox_id, None)
        if client:
            await client.aclose()

    # -- lifecycle -------------------------------------------------------------------------

    async def create(self, spec: CreateSpec) -> Capsule:
        sandbox_id = validate_sandbox_id(spec.sandbox_id or new_sandbox_id())
        if sandbox_id in self.capsules:
            raise errors.AlreadyExists(f"sandbox {sandbox_id} already exists")
        template = self._template(spec.template or self.settings.default_template)
        capsule = self._new_capsule(sandbox_id, template, spec)
        async with self._lock(sandbox_id):
            # A pooled capsule handed over already holds what this one needs.
            handover = template.type == IMAGE and self.pool.ready_for(capsule.shape)
            evicted = [] if handover else self._make_room(capsule, disk=True)
            self.capsules[sandbox_id] = capsule  # reserves the id
            try:
                await self._drop_evicted(evicted)
                pooled = self.pool.take(capsule.shape) if template.type == IMAGE else None
                if pooled is not None:
                    capsule = await self._claim(pooled, capsule)
                else:
                    self._clients[sandbox_id] = await self._boot(capsule, template)
                    await self._apply_defaults(capsule)
            except BaseException:
                await self._discard(capsule)
                raise
            capsule.status = RUNNING
            capsule.touch()
            capsule.save()
        log.info("created %s from %s%s", sandbox_id, template.name, " (pool)" if pooled else "")
        return capsule

    def _make_room(self, capsule: Capsule, *, disk: bool) -> list[Pooled]:
        return self.room.make_room(
            vcpus=capsule.vcpus,
            memory_mb=capsule.memory_mb,
            disk_mb=capsule.disk_size_mb if disk else None,
        )

    async def _drop_evicted(self, evicted: list[Pooled]) -> None:
        for pooled in evicted:
            try:
                await asyncio.shield(self._discard_pooled(pooled))
            except Exception:
                log.exception("discarding pooled %s failed", pooled.capsule.handle)

    def _check_memory(self) -> None:
        """Refuse to start another sandbox on a host about to run out of memory: the kernel's
        OOM killer would otherwise pick among running capsules, or the agent."""
        available = available_memory_mb()
        reserve = self.settings.memory_reserve_mb
        if available is not None and available < reserve:
            raise errors.ResourceExhausted(
                f"the host is low on memory ({available} MiB available, {reserve} MiB kept "
                "for the host)"
            )

    async def _boot(self, capsule: Capsule, template: Template) -> EnvdClient:
        """Make the capsule and wait for its agent. On failure the caller discards it."""
        self._check_memory()
        await self.runtime.create(capsule)
        self._watch_sandbox(capsule)
        client = self._client_for(capsule)
        try:
            if template.type == SNAPSHOT:
                # The snapshot's envd still holds the snapshotted capsule's token: replace it.
                client.set_token(self._snapshot_token(template))
                await client.wait_ready(ENVD_START_TIMEOUT)
                await client.init(token=capsule.token)
                client.set_token(capsule.token)
            else:
                await client.wait_ready(ENVD_START_TIMEOUT)
        except BaseException:
            await asyncio.shield(client.aclose())
            raise
        return client

    def _snapshot_token(self, template: Template) -> str:
        """The token the checkpointed envd of a snapshot template answers to."""
        if template.source_capsule:
            return self.keys.token_for(template.source_capsule)
        legacy = self.templates.legacy_envd_token(template.name)
        if legacy is None:
            raise errors.InvalidState(f"snapshot template {template.name!r} cannot be started")
        return legacy

    async def _rekey(self, capsule: Capsule, client: EnvdClient) -> None:
        """Move a capsule started before envd tokens were derived to its derived token. The
        old token was in its envd's environment (readable by every capsule user under gVisor)
        and, once replaced, opens nothing."""
        token = self.keys.token_for(capsule.handle)
        if capsule.token == token:
            return
        await client.init(token=token)
        client.set_token(token)
        capsule.token = token
        capsule.save()

    async def _adopt_token(self, capsule: Capsule, client: EnvdClient) -> None:
        """`_rekey` for a capsule found running at start, which an earlier re-key may have
        reached without its record being saved (the agent stopped in between)."""
        try:
            await self._rekey(capsule, client)
        except errors.AgentError:
            token = self.keys.token_for(capsule.handle)
            client.set_token(token)
            try:
                await client.health()
            except errors.AgentError:
                client.set_token(capsule.token)
                raise
            capsule.token = token
            capsule.save()

    async def _apply_defaults(self, capsule: Capsule) -> None:
        if capsule.default_user or capsule.default_env:
            client = self._clients[capsule.sandbox_id]
            await client.init(capsule.default_user, capsule.default_env)

    async def _claim(self, pooled: Pooled, wanted: Capsule) -> Capsule:
        """Hand a pooled capsule over: it takes the caller's id, timeout and defaults."""
        capsule = pooled.capsule
        for name in ("sandbox_id", "timeout_sec", "default_user", "default_env", "created_at"):
            setattr(capsule, name, getattr(wanted, name))
        self.capsules[capsule.sandbox_id] = capsule
        self._clients[capsule.sandbox_id] = pooled.client
        try:
            await self._apply_defaults(capsule)
        except BaseException:
            await self._discard(capsule)
            raise
        return capsule

    async def _boot_pooled(self) -> Pooled:
        template = self._template(self.settings.default_template)
        capsule = self._new_capsule(new_sandbox_id(), template, CreateSpec())
        # The pool fills only room nobody asked for.
        self.room.make_room(
            vcpus=capsule.vcpus,
            memory_mb=capsule.memory_mb,
            disk_mb=capsule.disk_size_mb,
            evict=False,
        )
        with self.room.claim(capsule):
            try:
                client = await self._boot(capsule, template)
                # One command warms the sandbox's caches, so the owner's first command is fast.
                async for _ev in client.start_process({"cmd": "true"}):
                    pass
                capsule.status = POOLED
                capsule.save()
            except BaseException:
                await asyncio.shield(self.runtime.destroy(capsule))
                raise
        return Pooled(capsule, client)

    async def _discard_pooled(self, pooled: Pooled) -> None:
        await pooled.client.aclose()
        await asyncio.wait_for(self.runtime.destroy(pooled.capsule), CLEANUP_TIMEOUT)

    def _template(self, name: str) -> Template:
        validate_name(name)
        return self.templates.get(name)

    def _new_capsule(self, sandbox_id: str, template: Template, spec: CreateSpec) -> Capsule:
        s = self.settings
        snap = template.type == SNAPSHOT
        vcpus = (template.vcpus if snap else 0) or spec.vcpus or s.default_vcpus
        memory = (template.memory_mb if snap else 0) or spec.memory_mb or s.default_memory_mb
        disk = (template.disk_size_mb if snap else 0) or spec.disk_size_mb or s.default_disk_size_mb
        if not 1 <= vcpus <= 64:
            raise errors.InvalidArgument("vcpus must be between 1 and 64")
        if not 64 <= memory <= 262144:
            raise errors.InvalidArgument("memory_mb must be between 64 and 262144")
        if not 64 <= disk <= 1048576:
            raise errors.InvalidArgument("disk_size_mb must be between 64 and 1048576")
        if spec.timeout_sec < 0:
            raise errors.InvalidArgument("timeout_sec must not be negative")
        return Capsule(
            sandbox_id=sandbox_id,
            template=template.name,
            base_image=template.base if snap and template.base else template.name,
            vcpus=vcpus,
            memory_mb=memory,
            disk_size_mb=disk,
            timeout_sec=spec.timeout_sec,
            token=self.keys.token_for(sandbox_id),
            dir=capsule_dir(s.capsules_dir, sandbox_id),
            handle=sandbox_id,
            default_user=spec.default_user,
            default_env=dict(spec.default_env or {}),
            status=STARTING,
        )

    async def _discard(self, capsule: Capsule) -> None:
        """Remove a capsule whatever the caller's fate: cleanup has its own timeout."""
        self.capsules.pop(capsule.sandbox_id, None)
        self.metrics.forget(capsule.sandbox_id)
        self._unwatch(capsule)

        async def cleanup() -> None:
            await self._disconnect(capsule.sandbox_id)
            await asyncio.wait_for(self.runtime.destroy(capsule), CLEANUP_TIMEOUT)

        await asyncio.shield(asyncio.ensure_future(cleanup()))

    async def destroy(self, sandbox_id: str) -> None:
        capsule = self.get(sandbox_id)
        async with self._lock(sandbox_id):
            await self._discard(capsule)
        self._locks.pop(sandbox_id, None)
        log.info("destroyed %s", sandbox_id)

    def ping(self, sandbox_id: str) -> None:
        self.get(sandbox_id).touch()

    async def pause(self, sandbox_id: str, auto: bool = False) -> Capsule:
        capsule = self.get(sandbox_id)
        async with self._lock(sandbox_id):
            if capsule.status != RUNNING:
                raise errors.InvalidState(f"sandbox {sandbox_id} is {capsule.status}, not running")
            await self._pause_locked(capsule)
            capsule.auto_paused = auto
            capsule.save()
        return capsule

    async def _pause_locked(self, capsule: Capsule) -> None:
        client = self._clients.get(capsule.sandbox_id)
        if client:
            # Flush the capsule's page cache to its disk first; a wedged agent must not block pause.
            with contextlib.suppress(errors.AgentError, TimeoutError):
                await asyncio.wait_for(client.prepare_snapshot(), 10)
        await asyncio.shield(self.runtime.pause(capsule))
        await self._disconnect(capsule.sandbox_id)

    async def resume(
        self,
        sandbox_id: str,
        timeout_sec: int | None = None,
        default_user: str = "",
        default_env: dict[str, str] | None = None,
    ) -> Capsule:
        capsule = self.get(sandbox_id)
        async with self._lock(sandbox_id):
            if capsule.status != PAUSED:
                raise errors.InvalidState(f"sandbox {sandbox_id} is {capsule.status}, not paused")
            if timeout_sec is not None:
                capsule.timeout_sec = timeout_sec
            evicted = self._make_room(capsule, disk=False)
            with self.room.claim(capsule):
                await self._drop_evicted(evicted)
                await self._resume_locked(capsule, default_user, default_env)
        return capsule

    async def _resume_locked(
        self, capsule: Capsule, default_user: str = "", default_env: dict[str, str] | None = None
    ) -> None:
        self._check_memory()
        await self.runtime.resume(capsule)
        self._watch_sandbox(capsule)
        client = self._connect(capsule)
        try:
            await client.wait_ready(ENVD_START_TIMEOUT)
            await self._rekey(capsule, client)
            if default_user or default_env:
                capsule.default_user = default_user or capsule.default_user
                capsule.default_env = dict(default_env or capsule.default_env)
                await client.init(capsule.default_user, capsule.default_env)
        except BaseException:
            await asyncio.shield(self._repause_failed(capsule))
            raise
        self.runtime.drop_checkpoint(capsule)
        capsule.touch()
        capsule.save()

    async def _repause_failed(self, capsule: Capsule) -> None:
        """A restored capsule that does not answer: stop it and keep the checkpoint for a retry."""
        await self._disconnect(capsule.sandbox_id)
        await self.runtime.teardown(capsule)
        capsule.status = PAUSED
        capsule.save()

    async def pause_all(self) -> tuple[list[str], list[str]]:
        paused, failed = [], []
        for sandbox_id, capsule in list(self.capsules.items()):
            if capsule.status != RUNNING:
                continue
            try:
                await self.pause(sandbox_id)
                paused.append(sandbox_id)
            except Exception:
                log.exception("pause of %s failed", sandbox_id)
                failed.append(sandbox_id)
        return paused, failed

    # -- dead sandboxes --------------------------------------------------------------------

    def _watch_sandbox(self, capsule: Capsule) -> None:
        """Watch the capsule's new sandbox for dying, off the caller's path (asking runsc for
        its pid takes a moment)."""
        boot = self._boots[capsule.handle] = self._boots.get(capsule.handle, 0) + 1
        task = asyncio.create_task(self._watch_pid(capsule, boot), name="watch-sandbox")
        self._watch_tasks.add(task)
        task.add_done_callback(self._watch_tasks.discard)

    async def _watch_pid(self, capsule: Capsule, boot: int) -> None:
        handle = capsule.handle
        for _attempt in range(WATCH_ATTEMPTS):
            try:
                pid = await self.runtime.sandbox_pid(capsule)
            except Exception:
                log.exception("cannot ask for the sandbox of %s", capsule.sandbox_id)
                pid = None
            if self._watch is None or self._boots.get(handle) != boot or capsule.net is None:
                return  # stopped since, or booted again: a later task watches that one
            if pid is not None:
                self._sandbox_pids[handle] = pid
                self._watch.watch(handle, pid)
                return
            if not self.runtime.sandbox_running(capsule):
                # It died before it could be watched: an exit all the same.
                self._sandbox_pids[handle] = 0
                self._sandbox_exit(handle, 0)
                return
            await asyncio.sleep(WATCH_RETRY_SEC)
        log.warning("the sandbox of %s cannot be watched", capsule.sandbox_id)

    def _unwatch(self, capsule: Capsule) -> None:
        self._sandbox_pids.pop(capsule.handle, None)
        self._boots.pop(capsule.handle, None)
        if self._watch is not None:
            self._watch.unwatch(capsule.handle)

    def _sandbox_exit(self, handle: str, pid: int) -> None:
        task = asyncio.create_task(self._sandbox_exited(handle, pid), name="sandbox-exited")
        self._watch_tasks.add(task)
        task.add_done_callback(self._watch_tasks.discard)

    async def _sandbox_exited(self, handle: str, pid: int) -> None:
        """A watched sandbox exited. If the agent did not stop it (pause, destroy: they hold
        the capsule's lock, and change its status), it died: its network, mounts and runsc
        state are released, and the capsule stays, DEAD with the reason, for the control plane
        to see and destroy. Calls in flight fail (`explain` says why), later ones are refused."""
        if self._sandbox_pids.get(handle) != pid:
            return
        capsule = next((c for c in self.capsules.values() if c.handle == handle), None)
        if capsule is None:
            pooled = self.pool.drop(handle)
            if pooled is not None:
                log.warning("a pooled capsule's sandbox died; booting another")
                self._unwatch(pooled.capsule)
                await self._discard_pooled(pooled)
            return
        async with self._lock(capsule.sandbox_id):
            current = self.capsules.get(capsule.sandbox_id) is capsule
            if not current or capsule.status != RUNNING or self._sandbox_pids.get(handle) != pid:
                return
            self._sandbox_pids.pop(handle, None)
            capsule.exit_reason = self.runtime.exit_reason(capsule)
            capsule.status = DEAD
            capsule.save()
            log.warning("capsule %s died: %s", capsule.sandbox_id, capsule.exit_reason)
            await self._disconnect(capsule.sandbox_id)
            try:
                await asyncio.shield(
                    asyncio.wait_for(self.runtime.teardown(capsule), CLEANUP_TIMEOUT)
                )
            except Exception:
                log.exception("teardown of dead %s failed", capsule.sandbox_id)
            capsule.save()

    def explain(self, request: Any, error: Exception) -> Exception:
        """The error to answer a failed call with: a call about a capsule that died meanwhile
        (its agent vanished under it) fails because it died, and says so."""
        capsule = self.capsules.get(getattr(request, "sandbox_id", "") or "")
        if capsule is not None and capsule.status == DEAD:
            return _died(capsule)
        return error

    # -- metrics ---------------------------------------------------------------------------

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            try:
                self.metrics.sample(list(self.capsules.values()))
            except Exception:
                log.exception("metrics sample failed")

    def metrics_of(self, sandbox_id: str) -> dict[str, list[Point]]:
        """Every tier of a capsule's samples (empty before its first sample)."""
        self.get(sandbox_id)
        return self.metrics.tiers(sandbox_id)

    # -- TTL reaper ------------------------------------------------------------------------

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval_sec)
            try:
                await self.reap_idle()
            except Exception:
                log.exception("TTL reaper iteration failed")

    async def reap_idle(self) -> None:
        now = time.time()
        idle = [
            c
            for c in self.capsules.values()
            if c.status == RUNNING and c.timeout_sec > 0 and now - c.last_active_at > c.timeout_sec
        ]
        for capsule in idle:
            # Detached from any request: shutdown or a cancelled caller must not cut a pause short.
            await asyncio.shield(asyncio.ensure_future(self._auto_pause(capsule)))

    async def _auto_pause(self, capsule: Capsule) -> None:
        try:
            await self.pause(capsule.sandbox_id, auto=True)
            log.info("auto-paused idle %s", capsule.sandbox_id)
        except errors.InvalidState:
            pass
        except Exception:
            log.exception("auto-pause of %s failed; destroying it", capsule.sandbox_id)
            with contextlib.suppress(errors.NotFound):
                await self.destroy(capsule.sandbox_id)

    # -- templates -------------------------------------------------------------------------

    async def create_snapshot(self, sandbox_id: str, name: str, overwrite: bool) -> Template:
        validate_name(name)
        capsule = self.get(sandbox_id)
        async with self._lock(sandbox_id):
            if capsule.status == PAUSED and capsule.token != self.keys.token_for(capsule.handle):
                # Checkpointed before envd tokens were derived: its envd answers to a token no
                # template may hold. Resumed once, it is re-keyed; then paused again below.
                await self._resume_locked(capsule)
            if capsule.status == RUNNING:
                await self._rekey(capsule, self._clients[capsule.sandbox_id])
                await self._pause_locked(capsule)
            elif capsule.status != PAUSED:
                raise errors.InvalidState(f"sandbox {sandbox_id} is {capsule.status}")
            return await self.runtime.snapshot(capsule, name, overwrite)

    async def flatten(self, sandbox_id: str, name: str, overwrite: bool) -> Template:
        validate_name(name)
        client = self.envd(sandbox_id)
        capsule = self.get(sandbox_id)
        async with self._lock(sandbox_id):
            await client.prepare_snapshot()
            return await self.runtime.flatten(capsule, name, overwrite)

    def delete_template(self, name: str) -> None:
        validate_name(name)
        template = self.templates.get(name)
        users = [c.sandbox_id for c in self.capsules.values() if c.base_image == name]
        dependents = self.templates.dependents(name) if template.type != SNAPSHOT else []
        if users or dependents:
            raise errors.InvalidState(
                f"template {name!r} is in use by {len(users)} capsule(s) and "
                f"{len(dependents)} snapshot template(s)"
            )
        self.templates.delete(name)

    # -- processes -------------------------------------------------------------------------

    async def exec(
        self, sandbox_id: str, spec: dict[str, Any], timeout: float, output: ExecOutput
    ) -> ExecResult:
        """Run a process to its end; `output` keeps a bounded part of what it prints."""
        client = self.envd(sandbox_id)
        result = output.result

        async def consume() -> None:
            async for ev in client.start_process(output.envd_spec(spec)):
                output.collect(ev)

        try:
            if timeout > 0:
                await asyncio.wait_for(consume(), timeout)
            else:
                await consume()
        except TimeoutError:
            result.timed_out = True
            if result.pid:
                with contextlib.suppress(errors.AgentError):
                    await client.signal(result.pid, signal.SIGKILL)
        self.get(sandbox_id).touch()
        return output.finish()

    async def exec_stream(self, sandbox_id: str, spec: dict[str, Any]) -> AsyncIterator[Event]:
        client = self.envd(sandbox_id)
        async for ev in client.start_process(spec):
            yield ev

    async def connect(self, sandbox_id: str, pid: int) -> AsyncIterator[Event]:
        client = self.envd(sandbox_id)
        async for ev in client.connect(pid):
            yield ev


def _died(capsule: Capsule) -> errors.InvalidState:
    return errors.InvalidState(
        f"capsule {capsule.sandbox_id} is dead: its sandbox stopped ({capsule.exit_reason}); "
        "destroy it"
    )


def available_memory_mb(meminfo: str = "/proc/meminfo") -> int | None:
    """The kernel's estimate of memory available without swapping, MiB (None if unknown)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
