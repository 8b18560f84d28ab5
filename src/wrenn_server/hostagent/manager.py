"""The capsules of this host through their lifecycle: create (booted, or handed over from the
warm pool), pause, resume, destroy, snapshot. The isolation itself is the Runtime's job; the
bookkeeping is capsule_table.py's, dying sandboxes sandbox_deaths.py's, idle ones
idle_reaper.py's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from . import errors
from .boot_snapshots import BootSnapshot, BootSnapshots, Key
from .capacity import Room, check_checkpoint_room, check_memory
from .capsule import (
    DEAD,
    PAUSED,
    POOLED,
    RUNNING,
    SNAPSHOTTING,
    Capsule,
    new_sandbox_id,
    validate_sandbox_id,
)
from .capsule_spec import CreateSpec, new_capsule
from .capsule_table import CapsuleTable
from .config import AgentSettings
from .doze import Dozer
from .envd_client import EnvdClient
from .envd_keys import EnvdKeys
from .envd_tokens import adopt_token, rekey, snapshot_token
from .envd_types import ProcessSpec
from .exec_output import ExecOutput, ExecResult, run_to_end
from .idle_reaper import IdleReaper
from .metrics import Point, Sampler
from .pool import Pooled, Shape, WarmPool
from .runtime import CLEANUP_TIMEOUT, Runtime
from .sandbox_deaths import DeathWatch
from .template_start import start_services
from .templates import IMAGE, SNAPSHOT, Template, TemplateStore, validate_name

log = logging.getLogger(__name__)

ENVD_START_TIMEOUT = 20.0
REKEY_TIMEOUT = 10.0
# A restore that fails, or a restored sandbox that exits before its agent answers (killed on a
# host short of memory, by an operator), leaves the checkpoint as it was: the resume tries it
# once more before failing.
RESTORE_TRIES = 2
# How long a sandbox whose checkpoint command timed out is given to stop: measured, runsc's save
# goes on inside the sandbox after the command is killed, and the sandbox then exits.
CHECKPOINT_SETTLE = 30.0


class SandboxManager(CapsuleTable):
    def __init__(self, settings: AgentSettings, runtime: Runtime, templates: TemplateStore) -> None:
        super().__init__(settings)
        self.runtime = runtime
        self.templates = templates
        self.keys = EnvdKeys(settings.data_dir / "envd.key")
        self.metrics = Sampler()
        self.reaper = IdleReaper(self, settings.reaper_interval_sec)
        self.doze = Dozer(
            self,
            settings.doze_after_sec,
            settings.doze_max_cpu_pct,
            pooled=lambda: [p.capsule for p in self.pool.capsules_ready()],
        )
        self._tasks: list[asyncio.Task[None]] = []
        shape = (
            settings.default_template,
            settings.default_vcpus,
            settings.default_memory_mb,
            settings.default_disk_size_mb,
        )
        self.pool = WarmPool(
            settings.pool_size,
            shape,
            self._boot_pooled,
            self._discard_pooled,
            total=settings.pool_max,
            window_sec=settings.pool_demand_window_sec,
            idle_sec=settings.pool_idle_sec,
        )
        self.room = Room(settings, self.capsules, self.pool)
        self.deaths = DeathWatch(self, runtime, self.pool, self._discard_pooled)
        self.boot_snapshots = BootSnapshots(
            settings.boot_snapshots_dir, settings.boot_snapshots, self._make_boot_snapshot
        )

    # -- startup / shutdown ----------------------------------------------------------------

    async def start(self) -> None:
        await self.runtime.prepare()
        self.keys.key()  # a damaged key stops the agent here, not at the first snapshot
        self.deaths.start()
        # An agent before this one may have left capsules dozing: runsc cannot even tell the
        # state of a frozen sandbox.
        self.doze.thaw_leftovers(self.settings.capsules_dir)
        recovered = await self.runtime.recover()
        # After recovery swept what a half-made one ran.
        await self.boot_snapshots.load(self.runtime.checkpoint_stamp(), self._boot_key_current)
        for capsule in recovered:
            self.capsules[capsule.sandbox_id] = capsule
            if capsule.status == RUNNING:
                self.deaths.watch(capsule)
                client = self.connect(capsule)
                capsule.touch()
                try:
                    await asyncio.wait_for(adopt_token(self.keys, capsule, client), REKEY_TIMEOUT)
                except (errors.AgentError, TimeoutError):
                    log.warning("could not re-key %s; it keeps its old token", capsule.sandbox_id)
        self._tasks = [
            asyncio.create_task(self.reaper.run(), name="ttl-reaper"),
            asyncio.create_task(self.metrics.run(self.capsules.values), name="metrics-sampler"),
            asyncio.create_task(self.doze.run(), name="doze"),
        ]
        self.pool.start()

    async def stop(self) -> None:
        """Stop background work. Capsules keep running: a restarted agent adopts them (but
        not pooled ones, which nobody owns yet)."""
        await self.boot_snapshots.stop()
        await self.pool.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.doze.wake_all()  # nobody would thaw them
        await self.deaths.stop()
        await self.disconnect_all()

    # -- create ----------------------------------------------------------------------------

    async def create(self, spec: CreateSpec) -> Capsule:
        sandbox_id = validate_sandbox_id(spec.sandbox_id or new_sandbox_id())
        if sandbox_id in self.capsules:
            raise errors.AlreadyExists(f"sandbox {sandbox_id} already exists")
        template = self._template(spec.template or self.settings.default_template)
        capsule = new_capsule(self.settings, sandbox_id, template, spec, self.keys)
        async with self.lock(sandbox_id):
            # A create of the same id that held the lock first may have taken it meanwhile.
            if sandbox_id in self.capsules:
                raise errors.AlreadyExists(f"sandbox {sandbox_id} already exists")
            stale: list[Pooled] = []
            if template.type == IMAGE:
                self.pool.record(capsule.shape)
                # Booted from a template since replaced under the same name: not handed over.
                stale = self.pool.drop_template(template.name, keep_at=template.created_at)
            # A pooled capsule handed over already holds what this one needs.
            handover = template.type == IMAGE and self.pool.ready_for(capsule.shape)
            evicted = stale + ([] if handover else self._make_room(capsule, disk=True))
            self.capsules[sandbox_id] = capsule  # reserves the id
            try:
                await self._drop_evicted(evicted)
                pooled = self.pool.take(capsule.shape) if template.type == IMAGE else None
                if pooled is not None:
                    capsule = await self._claim(pooled, capsule)
                else:
                    self.clients[sandbox_id] = await self._boot(capsule, template)
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

    async def _boot(
        self, capsule: Capsule, template: Template, *, from_snapshot: bool = True
    ) -> EnvdClient:
        """Make the capsule, wait for its agent and give it the capsule's default user and env:
        restored from its shape's boot snapshot if there is one (`from_snapshot`), else booted,
        and its snapshot asked for. A snapshot that does not restore (runsc upgraded under the
        agent, a damaged file) is dropped and the capsule booted. On failure the caller
        discards it."""
        check_memory(self.settings)
        key = _boot_key(capsule, template) if from_snapshot else None
        with self.boot_snapshots.reading(key) as snap:
            if snap is not None:
                log.info("%s: restoring the boot snapshot %s", capsule.sandbox_id, snap.handle)
                try:
                    return await self._start(capsule, template, snap)
                except (errors.ResourceExhausted, errors.Unavailable):
                    raise  # the host's state, not the snapshot's
                except Exception as e:
                    assert key is not None
                    log.warning(
                        "%s: the boot snapshot %s did not restore (%s); dropped, booting",
                        capsule.sandbox_id,
                        snap.handle,
                        e,
                    )
                    self.boot_snapshots.failed(key)
                self.deaths.unwatch(capsule)
                await asyncio.shield(self.runtime.destroy(capsule))
        client = await self._start(capsule, template, None)
        if key is not None:
            self.boot_snapshots.want(key)
        return client

    async def _start(
        self, capsule: Capsule, template: Template, snap: BootSnapshot | None
    ) -> EnvdClient:
        await self.runtime.create(capsule, None if snap is None else snap.dir)
        self.deaths.watch(capsule)
        client = self.new_client(capsule)
        alive = partial(self.runtime.sandbox_running, capsule)
        try:
            if template.type == SNAPSHOT or snap is not None:
                # The checkpointed envd holds the snapshotted capsule's token. (Its host name
                # stays: setting one needs CAP_SYS_ADMIN, which capsules lack.)
                client.set_token(
                    self.keys.token_for(snap.handle)
                    if snap is not None
                    else snapshot_token(self.keys, self.templates, template)
                )
                capsule.envd_version = await client.wait_ready(ENVD_START_TIMEOUT, alive)
                # One request: every ms of it is a create's.
                await client.init(capsule.default_user, capsule.default_env, capsule.token)
                client.set_token(capsule.token)
            else:
                capsule.envd_version = await client.wait_ready(ENVD_START_TIMEOUT, alive)
                await start_services(client, template)
                await self._apply_defaults(capsule, client)
        except BaseException:
            await asyncio.shield(client.aclose())
            raise
        return client

    def _boot_key_current(self, key: Key) -> bool:
        """Whether a boot snapshot of `key` is still of its template as the template is now."""
        (name, *_sizes), created_at = key
        try:
            template = self._template(name)
        except (errors.AgentError, OSError, ValueError):
            return False
        return _has_boot_snapshots(template) and template.created_at == created_at

    async def _make_boot_snapshot(self, key: Key) -> None:
        """Boot a private capsule of the shape, checkpoint it, and keep its checkpoint and disk
        as the shape's boot snapshot (boot_snapshots.py). It is nobody's: not listed, and its
        room gives way to any capsule someone asks for, like a pooled one's."""
        (name, vcpus, memory_mb, disk_size_mb), created_at = key
        template = self._template(name)
        if template.created_at != created_at:
            return  # replaced since
        spec = CreateSpec(vcpus=vcpus, memory_mb=memory_mb, disk_size_mb=disk_size_mb)
        capsule = new_capsule(self.settings, new_sandbox_id(), template, spec, self.keys)
        capsule.dir = self.boot_snapshots.making / capsule.handle
        self.room.make_room(vcpus=vcpus, memory_mb=memory_mb, disk_mb=disk_size_mb, evict=False)
        with self.room.claim(capsule, pooled=True):
            try:
                client = await self._boot(capsule, template, from_snapshot=False)
                try:
                    if self.room.over_limit():  # a create took the room meanwhile
                        raise errors.ResourceExhausted("its room is needed")
                    # A first command, as the default user, warms the spawn path in the image.
                    async for _ev in client.start_process({"cmd": "true"}):
                        pass
                    await client.prepare_snapshot()
                finally:
                    await asyncio.shield(client.aclose())
                self.deaths.unwatch(capsule)  # its sandbox stops with the checkpoint
                await self.runtime.pause(capsule)
                if self._template(name).created_at == created_at:
                    self.boot_snapshots.keep(key, capsule)
                    log.info("boot snapshot of %s made", key[0])
            finally:
                self.deaths.unwatch(capsule)
                await asyncio.shield(
                    asyncio.wait_for(self.runtime.destroy(capsule), CLEANUP_TIMEOUT)
                )

    async def _apply_defaults(self, capsule: Capsule, client: EnvdClient) -> None:
        if capsule.default_user or capsule.default_env:
            await client.init(capsule.default_user, capsule.default_env)

    async def _claim(self, pooled: Pooled, wanted: Capsule) -> Capsule:
        """Hand a pooled capsule over: it takes the caller's id, timeout and defaults."""
        capsule = pooled.capsule
        self.doze.wake(capsule)  # it may doze in the pool
        applied = (capsule.default_user, capsule.default_env)  # the template's, at its boot
        for name in ("sandbox_id", "timeout_sec", "default_user", "default_env", "created_at"):
            setattr(capsule, name, getattr(wanted, name))
        self.capsules[capsule.sandbox_id] = capsule
        self.clients[capsule.sandbox_id] = pooled.client
        try:
            if (capsule.default_user, capsule.default_env) != applied:
                await self._apply_defaults(capsule, pooled.client)
        except BaseException:
            await self._discard(capsule)
            raise
        return capsule

    async def _boot_pooled(self, shape: Shape) -> Pooled:
        template = self._template(shape[0])
        if template.type != IMAGE:
            raise errors.InvalidState(f"template {template.name!r} is not pooled")
        spec = CreateSpec(vcpus=shape[1], memory_mb=shape[2], disk_size_mb=shape[3])
        capsule = new_capsule(self.settings, new_sandbox_id(), template, spec, self.keys)
        # The pool fills only room nobody asked for.
        self.room.make_room(
            vcpus=capsule.vcpus,
            memory_mb=capsule.memory_mb,
            disk_mb=capsule.disk_size_mb,
            evict=False,
        )
        with self.room.claim(capsule, pooled=True):
            try:
                client = await self._boot(capsule, template)
                # One command, as the template's default user, warms the sandbox's caches and
                # envd's switch to that user, so the owner's first command is fast.
                async for _ev in client.start_process({"cmd": "true"}):
                    pass
                if self.room.over_limit():  # a create took the room meanwhile (capacity.py)
                    await asyncio.shield(client.aclose())
                    raise errors.ResourceExhausted("the room a pooled capsule took is needed")
                capsule.status = POOLED
                capsule.save()
            except BaseException:
                self.deaths.unwatch(capsule)
                await asyncio.shield(self.runtime.destroy(capsule))
                raise
        return Pooled(capsule, client, template.created_at)

    async def _discard_pooled(self, pooled: Pooled) -> None:
        self.doze.forget(pooled.capsule)  # a frozen sandbox cannot be killed (cgroup v1)
        self.deaths.unwatch(pooled.capsule)
        await pooled.client.aclose()
        await asyncio.wait_for(self.runtime.destroy(pooled.capsule), CLEANUP_TIMEOUT)

    def _template(self, name: str) -> Template:
        validate_name(name)
        return self.templates.get(name)

    # -- destroy ---------------------------------------------------------------------------

    async def _discard(self, capsule: Capsule) -> None:
        """Remove a capsule whatever the caller's fate: cleanup has its own timeout."""
        self.doze.forget(capsule)  # a frozen sandbox cannot be killed (cgroup v1)
        self.capsules.pop(capsule.sandbox_id, None)
        self.metrics.forget(capsule.sandbox_id)
        self.deaths.unwatch(capsule)

        async def cleanup() -> None:
            await self.disconnect(capsule.sandbox_id)
            await asyncio.wait_for(self.runtime.destroy(capsule), CLEANUP_TIMEOUT)

        await asyncio.shield(asyncio.ensure_future(cleanup()))

    async def destroy(self, sandbox_id: str) -> None:
        capsule = self.get(sandbox_id)
        async with self.lock(sandbox_id):
            self.current(capsule)  # a destroy that held the lock first already did it
            await self._discard(capsule)
        log.info("destroyed %s", sandbox_id)

    def wake(self, capsule: Capsule) -> None:
        self.doze.wake(capsule)

    def ping(self, sandbox_id: str) -> None:
        self.get(sandbox_id).touch()

    # -- pause / resume --------------------------------------------------------------------

    async def pause(self, sandbox_id: str, auto: bool = False) -> Capsule:
        capsule = self.get(sandbox_id)
        async with self.lock(sandbox_id):
            self.current(capsule)
            if capsule.status != RUNNING:
                raise errors.InvalidState(f"sandbox {sandbox_id} is {capsule.status}, not running")
            await self._pause_locked(capsule)
            capsule.auto_paused = auto
            capsule.save()
        return capsule

    async def _pause_locked(self, capsule: Capsule) -> None:
        check_checkpoint_room(self.settings, capsule)  # before runsc: a failed one kills it
        self.doze.wake(capsule)  # runsc cannot checkpoint a frozen sandbox
        client = self.clients.get(capsule.sandbox_id)
        if client:
            # Flush the capsule's page cache to its disk first; a wedged agent must not block pause.
            with contextlib.suppress(errors.AgentError, TimeoutError):
                await asyncio.wait_for(client.prepare_snapshot(), 10)
        try:
            await asyncio.shield(self.runtime.pause(capsule))
        except Exception as e:
            await self._pause_failed(capsule, e)
            if isinstance(e, TimeoutError) and capsule.status == RUNNING:
                raise errors.Unavailable(
                    "the pause took too long on a busy host and was abandoned; the capsule "
                    "keeps running: try again"
                ) from e
            raise
        await self.disconnect(capsule.sandbox_id)

    async def _pause_failed(self, capsule: Capsule, error: Exception) -> None:
        """A pause that failed before the capsule was paused (its checkpoint failed or took too
        long) leaves it as it was: running, if its sandbox still runs (the runtime thawed it);
        a sandbox that stopped with the failed checkpoint makes it dead with the reason, never a
        capsule listed running that nothing answers in."""
        if isinstance(error, TimeoutError):
            deadline = asyncio.get_running_loop().time() + CHECKPOINT_SETTLE
            while self.runtime.sandbox_running(capsule):
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.1)
        if capsule.status != RUNNING or self.runtime.sandbox_running(capsule):
            log.warning(
                "pause_rolled_back sandbox=%s error=%s: it keeps running",
                capsule.sandbox_id,
                type(error).__name__,
            )
            return
        capsule.exit_reason = "its sandbox stopped during a pause that failed" + (
            " (its checkpoint took too long)" if isinstance(error, TimeoutError) else ""
        )
        capsule.status = DEAD
        capsule.save()
        log.warning("pause_failed_dead sandbox=%s: %s", capsule.sandbox_id, capsule.exit_reason)
        await self.disconnect(capsule.sandbox_id)
        try:
            await asyncio.shield(asyncio.wait_for(self.runtime.teardown(capsule), CLEANUP_TIMEOUT))
        except Exception:
            log.exception("teardown of dead %s failed", capsule.sandbox_id)
        capsule.save()

    async def resume(
        self,
        sandbox_id: str,
        timeout_sec: int | None = None,
        default_user: str = "",
        default_env: dict[str, str] | None = None,
    ) -> Capsule:
        capsule = self.get(sandbox_id)
        async with self.lock(sandbox_id):
            self.current(capsule)
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
        check_memory(self.settings)
        for tries_left in reversed(range(RESTORE_TRIES)):
            try:
                await self.runtime.resume(capsule)
            except errors.RestoreFailed:
                if not tries_left:
                    raise
                log.warning("%s: its restore failed; again", capsule.sandbox_id)
                continue
            self.deaths.watch(capsule)
            client = self.connect(capsule)
            alive = partial(self.runtime.sandbox_running, capsule)
            try:
                capsule.envd_version = await client.wait_ready(ENVD_START_TIMEOUT, alive)
                await rekey(self.keys, capsule, client)
                if default_user or default_env:
                    capsule.default_user = default_user or capsule.default_user
                    capsule.default_env = dict(default_env or capsule.default_env)
                    await client.init(capsule.default_user, capsule.default_env)
                break
            except BaseException as e:
                await asyncio.shield(self._repause_failed(capsule))
                if not isinstance(e, errors.SandboxExited):
                    raise
                if not tries_left:
                    raise errors.RestoreFailed() from e
                log.warning(
                    "%s: its restored sandbox exited while it started; again", capsule.sandbox_id
                )
        # A checkpoint holds the capsule's memory image: removed in a thread, off the loop.
        await asyncio.to_thread(self.runtime.drop_checkpoint, capsule)
        capsule.touch()
        capsule.save()

    async def _repause_failed(self, capsule: Capsule) -> None:
        """A restored capsule that does not answer: stop it and keep the checkpoint for a retry."""
        await self.disconnect(capsule.sandbox_id)
        try:
            await self.runtime.teardown(capsule)
        finally:
            # Its checkpoint is untouched: paused is true even if part of the teardown failed
            # (logged by the caller's error), never a running capsule without a sandbox.
            capsule.status = PAUSED
            capsule.save()

    async def pause_all(self) -> tuple[list[str], list[str]]:
        """Every running capsule paused, as the agent's own decision (a shutdown, the control
        plane lost): reported as auto-paused, like the TTL reaper's, since no caller's pause
        owns them."""
        paused, failed = [], []
        for sandbox_id, capsule in list(self.capsules.items()):
            if capsule.status != RUNNING:
                continue
            try:
                await self.pause(sandbox_id, auto=True)
                paused.append(sandbox_id)
            except Exception:
                log.exception("pause of %s failed", sandbox_id)
                failed.append(sandbox_id)
        return paused, failed

    # -- templates -------------------------------------------------------------------------

    async def create_snapshot(self, sandbox_id: str, name: str, overwrite: bool) -> Template:
        validate_name(name)
        capsule = self.get(sandbox_id)
        async with self.lock(sandbox_id):
            self.current(capsule)
            if capsule.status == PAUSED and capsule.token != self.keys.token_for(capsule.handle):
                # Checkpointed before envd tokens were derived: its envd answers to a token no
                # template may hold. Resumed once, it is re-keyed; then paused again below.
                await self._resume_locked(capsule)
            if capsule.status == RUNNING:
                await rekey(self.keys, capsule, self.clients[capsule.sandbox_id])
                capsule.operation = SNAPSHOTTING  # kept by the runtime until the template is made
                try:
                    await self._pause_locked(capsule)
                except BaseException:
                    capsule.operation = ""
                    raise
            elif capsule.status != PAUSED:
                raise errors.InvalidState(f"sandbox {sandbox_id} is {capsule.status}")
            return await self.runtime.snapshot(capsule, name, overwrite)

    async def flatten(self, sandbox_id: str, name: str, overwrite: bool) -> Template:
        validate_name(name)
        capsule = self.get(sandbox_id)
        async with self.lock(sandbox_id):
            self.current(capsule)
            client = self.envd(sandbox_id)  # running now, not only before the wait
            self.doze.wake(capsule)
            await client.prepare_snapshot()
            return await self.runtime.flatten(capsule, name, overwrite)

    async def delete_template(self, name: str) -> None:
        validate_name(name)
        template = self.templates.get(name)
        users = [c.sandbox_id for c in self.capsules.values() if c.base_image == name]
        dependents = self.templates.dependents(name) if template.type != SNAPSHOT else []
        if users or dependents:
            raise errors.InvalidState(
                f"template {name!r} is in use by {len(users)} capsule(s) and "
                f"{len(dependents)} snapshot template(s)"
            )
        await self._drop_evicted(self.pool.drop_template(name))  # nobody's yet
        self.boot_snapshots.drop_template(name)
        await self.templates.delete_async(name)

    # -- in the capsule --------------------------------------------------------------------

    async def exec(
        self, sandbox_id: str, spec: ProcessSpec, timeout: float, output: ExecOutput
    ) -> ExecResult:
        """Run a process to its end; `output` keeps a bounded part of what it prints."""
        result = await run_to_end(self.envd(sandbox_id), spec, timeout, output)
        self.get(sandbox_id).touch()
        return result

    def metrics_of(self, sandbox_id: str) -> dict[str, list[Point]]:
        """Every tier of a capsule's samples (empty before its first sample)."""
        self.get(sandbox_id)
        return self.metrics.tiers(sandbox_id)


def _boot_key(capsule: Capsule, template: Template) -> Key | None:
    """The boot snapshot a capsule of this template may start from: image templates without a
    start command only (a service's open connections would not survive its restore)."""
    if not _has_boot_snapshots(template):
        return None
    return (capsule.shape, template.created_at)


def _has_boot_snapshots(template: Template) -> bool:
    """Image templates without a start command (see `_boot_key`)."""
    return template.type == IMAGE and not template.start_cmd
