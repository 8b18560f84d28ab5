"""gVisor runtime: a capsule is a runsc sandbox with its own netns and a CoW disk (storage.py)."""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from ipaddress import IPv4Address
from pathlib import Path

from .. import envd as envd_package
from ..private import private_dir
from . import cgroups, checkpoints, datadir, errors, network, rootfs_io, storage
from .capsule import (
    CGROUP_PARENT,
    DEAD,
    PAUSED,
    PAUSING,
    RUNNING,
    SNAPSHOTTING,
    Capsule,
    capsule_key,
)
from .checkpoint_stamp import checkpoint_stamp
from .config import AgentSettings
from .dns_forwarder import DnsForwarder
from .egress_rules import CAPSULE_RESOLVER, EgressPolicy
from .exhaustion import host_exhausted
from .firewall import Firewall
from .host_facts import Resolvers
from .metrics import has_tasks, oom_kills
from .proc import CommandError, run, run_quiet
from .runsc import Runsc, oci_config
from .templates import IMAGE, SNAPSHOT, Template, TemplateStore

log = logging.getLogger(__name__)

# Where a pause's checkpoint is written before it is the capsule's `checkpoint`.
NEW_CHECKPOINT = "checkpoint.new"
_NOUNS = {PAUSING: "pause", SNAPSHOTTING: "snapshot"}


class GVisorRuntime:
    def __init__(self, settings: AgentSettings, templates: TemplateStore) -> None:
        self.settings = settings
        self.templates = templates
        self.runsc = Runsc(settings.runsc, settings.run_dir / "runsc")
        self.ipam = network.Ipam(settings.capsule_subnet)
        self.envd_dir = settings.run_dir / "envd"
        resolvers = Resolvers(settings.upstream_dns)
        self.firewall = Firewall(
            EgressPolicy(allow=settings.egress_allow, block=settings.egress_block), resolvers
        )
        self.dns = DnsForwarder(resolvers.current, qps=settings.capsule_dns_qps)
        self.cgroup_root = cgroups.ROOT

    def _owner(self, capsule_id: str) -> str:
        return f"{self.settings.data_dir}:{capsule_id}"

    # -- host setup ------------------------------------------------------------------------

    async def prepare(self) -> None:
        datadir.secure(self.settings)
        private_dir(self.runsc.root)
        self._install_envd()
        await self.firewall.start()

    def _install_envd(self) -> None:
        install_envd(self.envd_dir)

    def checkpoint_stamp(self) -> str:
        return checkpoint_stamp(self.settings)

    # -- lifecycle -------------------------------------------------------------------------

    async def create(self, capsule: Capsule, snapshot: Path | None = None) -> None:
        template = self.templates.get(capsule.template)
        if snapshot is None and template.type == SNAPSHOT:
            snapshot = self.templates.dir(template.name)
        try:
            capsule.dir.mkdir(mode=0o700)
            capsule.save()
            if snapshot is not None:
                await storage.copy_sparse(snapshot / "disk.img", capsule.disk_image)
            else:
                await storage.create_image(capsule.disk_image, capsule.disk_size_mb)
            await self._boot(
                capsule, restore_from=None if snapshot is None else snapshot / "checkpoint"
            )
        except BaseException:
            await asyncio.shield(self.destroy(capsule))
            raise

    async def _boot(self, capsule: Capsule, restore_from: Path | None) -> None:
        """Network, disk and sandbox: everything a running capsule has beyond its files."""
        slot = self.ipam.allocate(self._owner(capsule.handle))
        try:
            capsule.net = network.CapsuleNet(*network.names_for(capsule.key), slot[1], slot[2])
            capsule.save()
            capsule.net = await network.setup(capsule.key, slot)
            # The host's subnets and resolvers, as they are now, are blocked before it runs.
            await self.firewall.ensure_current()
            await self.dns.serve(capsule.net.host_ip)
            await storage.mount(
                capsule.disk_image,
                capsule.disk_dir,
                [self.templates.rootfs(capsule.base_image)],
                capsule.rootfs,
            )
            if restore_from is None:
                self._write_resolv_conf(capsule.rootfs)
            self.write_bundle(capsule)
            if restore_from is None:
                await self.runsc.run(
                    capsule.runsc_id,
                    capsule.dir,
                    capsule.net.netns_path,
                    capsule.log_path,
                    envd_token=capsule.token,
                )
            else:
                await self.runsc.restore(
                    capsule.runsc_id,
                    capsule.dir,
                    restore_from,
                    capsule.net.netns_path,
                    capsule.log_path,
                )
        except BaseException:
            await asyncio.shield(self.teardown(capsule))
            raise

    def write_bundle(self, capsule: Capsule) -> None:
        """Write the capsule's OCI runtime config (config.json), which runsc runs it by."""
        assert capsule.net is not None
        config = oci_config(
            rootfs=capsule.rootfs,
            netns_path=capsule.net.netns_path,
            envd_dir=self.envd_dir / "envd",
            # The token is not here: pid 1's environment is readable by every capsule user.
            # runsc.run hands it to envd on a pipe (its stdin).
            envd_env={"WRENN_ENVD_PORT": str(self.settings.envd_port)},
            hostname=capsule.key,
            vcpus=capsule.vcpus,
            memory_mb=capsule.memory_mb,
            pids_limit=self.settings.pids_limit,
            cgroup=capsule.cgroup,
        )
        fd = os.open(capsule.dir / "config.json", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)

    def _write_resolv_conf(self, rootfs: Path) -> None:
        servers = self.settings.capsule_dns or [str(CAPSULE_RESOLVER)]
        content = "".join(f"nameserver {s}\n" for s in servers)
        _put_resolv_conf(rootfs, content)

    async def teardown(self, capsule: Capsule) -> None:
        """Stop the sandbox and release network and mounts; keep the capsule's files."""
        net = capsule.net
        if net is not None:
            await self.runsc.destroy(capsule.runsc_id, net.netns_path)
            await self._kill_netns_pids(net.netns)
            await self.dns.stop(net.host_ip)
            await network.teardown(net.netns, net.veth)
            self.ipam.release(net.capsule_ip, self._owner(capsule.handle))
        else:
            await self.runsc.forget(capsule.runsc_id)
        await storage.unmount(capsule.disk_dir, capsule.rootfs)
        for point in storage.mounts_under(capsule.dir):
            await run_quiet("umount", "-l", point)
        capsule.net = None
        await self._let_go(capsule)
        # Only once its sandbox and gofer are gone: a cgroup with a task in it stays.
        if busy := await cgroups.remove(capsule.cgroup, cgroups.RELEASE_SEC, self.cgroup_root):
            log.warning("capsule %s: cgroups still in use: %s", capsule.sandbox_id, busy)

    async def _let_go(self, capsule: Capsule) -> None:
        """Wait a while for the stopped sandbox to let go of the disk image. A busy host may take
        longer: then the capsule is left as it is (paused, dead) rather than half torn down, and
        whatever uses the image next waits for it (`storage.wait_released`)."""
        image = capsule.disk_image
        started = time.monotonic()
        timeout = self.settings.disk_release_timeout_sec
        if not image.exists() or await storage.released(image, timeout):
            log.debug("%s: disk let go in %.3fs", capsule.sandbox_id, time.monotonic() - started)
            return
        log.warning(
            "disk_still_held sandbox=%s waited_sec=%.1f: the stopped sandbox has not let go of "
            "the disk image; the next resume or snapshot waits for it",
            capsule.sandbox_id,
            time.monotonic() - started,
        )

    async def _kill_netns_pids(self, netns: str) -> None:
        """Anything still running in the capsule's netns is a sandbox or gofer of this capsule."""
        try:
            out = await run("ip", "netns", "pids", netns, timeout=10)
        except Exception:
            return
        for pid in out.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)

    async def destroy(self, capsule: Capsule) -> None:
        try:
            await self.teardown(capsule)
        except Exception:
            log.exception("teardown of %s failed", capsule.sandbox_id)
        # The record goes first: an agent killed during the removal must not find a paused
        # capsule whose checkpoint or disk is half gone (a directory without a record is
        # removed at start).
        capsule.drop_record()
        # Directory removals here and below run in threads: a capsule's disk and checkpoint
        # are large, and the event loop serves every other capsule meanwhile.
        await asyncio.to_thread(shutil.rmtree, capsule.dir, ignore_errors=True)

    async def pause(self, capsule: Capsule) -> None:
        """Checkpoint, then tear down. The record says PAUSING (or the SNAPSHOTTING the caller
        set) from before the checkpoint starts until it says PAUSED, and a checkpoint directory
        is then always this pause's own (a resume's leftover is removed first): what a
        restarted agent needs to finish or roll back an interrupted pause (recover)."""
        assert capsule.net is not None
        image = capsule.dir / NEW_CHECKPOINT
        await asyncio.to_thread(shutil.rmtree, image, ignore_errors=True)
        await asyncio.to_thread(shutil.rmtree, capsule.checkpoint_dir, ignore_errors=True)
        capsule.operation = capsule.operation or PAUSING
        capsule.save()
        image.mkdir(mode=0o700)
        try:
            await self.runsc.checkpoint(capsule.runsc_id, image, capsule.net.netns_path)
        except BaseException:
            # A half-written image (a full disk) would hold the space every capsule needs.
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, image, ignore_errors=True))
            await asyncio.shield(self._thaw_after_failed_checkpoint(capsule))
            capsule.operation = ""
            capsule.save()
            raise
        image.rename(capsule.checkpoint_dir)
        await asyncio.shield(self.teardown(capsule))
        capsule.status = PAUSED
        if capsule.operation == PAUSING:
            capsule.operation = ""  # a snapshot's mark stays until its template is made
        capsule.save()

    async def _thaw_after_failed_checkpoint(self, capsule: Capsule) -> None:
        """runsc stops the sandbox's tasks while it saves them: a checkpoint that failed or was
        cut short may leave them stopped, and the capsule would answer nothing."""
        assert capsule.net is not None
        state = await self.runsc.state(capsule.runsc_id, capsule.net.netns_path)
        if state and state.get("status") == "paused":
            log.warning("%s: thawing the sandbox its failed checkpoint left", capsule.sandbox_id)
            with contextlib.suppress(CommandError, TimeoutError):
                await self.runsc.thaw(capsule.runsc_id, capsule.net.netns_path)

    async def resume(self, capsule: Capsule) -> None:
        if not capsule.checkpoint_dir.is_dir():
            raise errors.InvalidState("capsule has no checkpoint to resume from")
        # Mounted while the stopped sandbox still holds it, the disk would be corrupted.
        await storage.wait_released(capsule.disk_image, self.settings.disk_release_timeout_sec)
        try:
            await self._boot(capsule, restore_from=capsule.checkpoint_dir)
        except CommandError as e:
            # Torn down, its checkpoint kept (a host out of room says so instead).
            if host_exhausted(e) is None:
                raise errors.RestoreFailed() from e
            raise
        capsule.status = RUNNING
        capsule.auto_paused = False
        capsule.save()

    async def sandbox_pid(self, capsule: Capsule) -> int | None:
        """The pid of the capsule's sandbox process (runsc's `state`; it may have died since:
        the watcher then learns so at once), None if runsc does not know it."""
        if capsule.net is None:
            return None
        state = await self.runsc.state(capsule.runsc_id, capsule.net.netns_path)
        pid = state.get("pid") if state else None
        return pid if isinstance(pid, int) and pid > 0 else None

    def sandbox_running(self, capsule: Capsule) -> bool:
        """Whether anything of the capsule's sandbox (sandbox, gofer) still runs."""
        return has_tasks(capsule.cgroup)

    def exit_reason(self, capsule: Capsule) -> str:
        """Why the capsule's sandbox died; read before teardown, which removes its cgroup."""
        return "out of memory" if oom_kills(capsule.cgroup) else "sandbox exited"

    def drop_checkpoint(self, capsule: Capsule) -> None:
        shutil.rmtree(capsule.checkpoint_dir, ignore_errors=True)

    # -- templates -------------------------------------------------------------------------

    async def snapshot(self, capsule: Capsule, name: str, overwrite: bool) -> Template:
        if self.templates.exists(name) and not overwrite:
            raise errors.AlreadyExists(f"template {name!r} already exists")
        if capsule.status == RUNNING:
            capsule.operation = SNAPSHOTTING
            await self.pause(capsule)
        staging = self.templates.staging(name)
        try:
            # A copy of a disk still live in the stopped sandbox would be torn.
            await storage.wait_released(capsule.disk_image, self.settings.disk_release_timeout_sec)
            await storage.copy_sparse(capsule.disk_image, staging / "disk.img")
            await run("cp", "-a", str(capsule.checkpoint_dir), str(staging / "checkpoint"))
            template = Template(
                name=name,
                type=SNAPSHOT,
                created_at=time.time(),
                size_bytes=await asyncio.to_thread(storage.disk_usage, staging),
                base=capsule.base_image,
                # Names the token of the checkpointed envd (envd_keys.py): the manager made
                # sure that envd answers to the token derived from this handle.
                source_capsule=capsule.handle,
                vcpus=capsule.vcpus,
                memory_mb=capsule.memory_mb,
                disk_size_mb=capsule.disk_size_mb,
            )
            return await self.templates.commit_async(staging, template, overwrite)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
            raise
        finally:
            if capsule.operation:
                capsule.operation = ""
                capsule.save()

    async def flatten(self, capsule: Capsule, name: str, overwrite: bool) -> Template:
        """Freeze the sandbox (after envd synced its writes), copy the merged view, thaw."""
        if self.templates.exists(name) and not overwrite:
            raise errors.AlreadyExists(f"template {name!r} already exists")
        assert capsule.net is not None
        staging = self.templates.staging(name)
        try:
            await self.runsc.freeze(capsule.runsc_id, capsule.net.netns_path)
            try:
                (staging / "rootfs").mkdir()
                await storage.copy_tree(capsule.rootfs, staging / "rootfs")
            finally:
                await self.runsc.thaw(capsule.runsc_id, capsule.net.netns_path)
            _put_resolv_conf(staging / "rootfs", "")
            template = Template(
                name=name,
                type=IMAGE,
                created_at=time.time(),
                size_bytes=await asyncio.to_thread(storage.disk_usage, staging / "rootfs"),
                # The image's services (the code runner's Jupyter) start in its copies too.
                **self.templates.start_settings(capsule.base_image),
            )
            return await self.templates.commit_async(staging, template, overwrite)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
            raise

    # -- restart ---------------------------------------------------------------------------

    async def recover(self) -> list[Capsule]:
        await asyncio.to_thread(self.templates.sweep)
        kept: list[Capsule] = []
        root = self.settings.capsules_dir
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            capsule = await self._recover_one(d)
            if capsule is not None:
                kept.append(capsule)
        await self._sweep_strays({c.handle for c in kept})
        return kept

    async def _recover_one(self, d: Path) -> Capsule | None:
        try:
            capsule = Capsule.load(d)
        except Exception:
            _repaired(d.name, "a capsule directory without a readable record", "removed")
            for point in storage.mounts_under(d):
                await run_quiet("umount", "-l", point)
            await asyncio.to_thread(shutil.rmtree, d, ignore_errors=True)
            return None
        if capsule.operation and capsule.status == RUNNING:
            return await self._recover_pause(capsule)
        if capsule.operation:
            # A snapshot interrupted after its pause: the capsule is paused with its files;
            # the template's staging directory went with the sweep of templates.
            log.info("capsule %s: its snapshot did not finish", capsule.sandbox_id)
            capsule.operation = ""
        if capsule.status == RUNNING and await self._adopt(capsule):
            # A resume's checkpoint whose removal the restart interrupted: older than the disk.
            await asyncio.to_thread(self.drop_checkpoint, capsule)
            return capsule
        if capsule.status == DEAD:
            # Kept for the control plane to learn why, until it destroys it.
            await self.teardown(capsule)
            capsule.save()
            return capsule
        if capsule.status == PAUSED and capsule.checkpoint_dir.is_dir():
            await self.teardown(capsule)
            capsule.save()
            log.info("kept paused capsule %s", capsule.sandbox_id)
            return capsule
        _repaired(
            capsule.sandbox_id,
            f"a record ({capsule.status}) without a live sandbox or a checkpoint to resume",
            "destroyed (its leftovers removed)",
        )
        await self.destroy(capsule)
        return None

    async def _adopt(self, capsule: Capsule) -> bool:
        """Keep a capsule whose sandbox still runs."""
        if capsule.net is None:
            return False
        state = await self.runsc.state(capsule.runsc_id, capsule.net.netns_path)
        if not state or state.get("status") != "running":
            return False
        try:
            await self.dns.serve(capsule.net.host_ip)
        except OSError:
            log.warning("no DNS forwarder for adopted capsule %s", capsule.sandbox_id)
        log.info("adopted running capsule %s", capsule.sandbox_id)
        return True

    async def _recover_pause(self, capsule: Capsule) -> Capsule:
        """A pause (or a snapshot's) the agent did not see to its end. A complete checkpoint
        makes it paused, as the pause would have (marked auto-paused: no caller was told);
        otherwise the image is discarded and the capsule runs on if its sandbox does, else it
        is dead with the reason."""
        operation, capsule.operation = capsule.operation, ""
        image = capsule.dir / NEW_CHECKPOINT
        # runsc's checkpoint may still be writing: it outlives the agent that started it.
        await checkpoints.wait_for_writers(image)
        if checkpoints.is_complete(image):
            # pause removed any older one before it began; one left all the same is older
            await asyncio.to_thread(shutil.rmtree, capsule.checkpoint_dir, ignore_errors=True)
            image.rename(capsule.checkpoint_dir)
        await asyncio.to_thread(shutil.rmtree, image, ignore_errors=True)
        if capsule.checkpoint_dir.is_dir():
            await self.teardown(capsule)
            capsule.status = PAUSED
            capsule.auto_paused = True
            capsule.save()
            log.info(
                "capsule %s: finished its interrupted %s (paused)", capsule.sandbox_id, operation
            )
            return capsule
        if await self._adopt(capsule):
            capsule.save()
            log.info("capsule %s: rolled back its interrupted %s", capsule.sandbox_id, operation)
            return capsule
        capsule.exit_reason = (
            f"its sandbox stopped during a {_NOUNS.get(operation, operation)} "
            "that the host agent did not finish (the agent restarted)"
        )
        await self.teardown(capsule)
        capsule.status = DEAD
        capsule.save()
        log.warning("capsule %s: %s", capsule.sandbox_id, capsule.exit_reason)
        return capsule

    async def _sweep_strays(self, keep: set[str]) -> None:
        """Kernel objects and runsc state that belong to no capsule we kept.

        Only namespaces whose address slot this data dir owns are touched: other agents sharing
        the host keep theirs."""
        prefix = f"{self.settings.data_dir}:"
        slots = {s: o[len(prefix) :] for s, o in self.ipam.owned().items() if o.startswith(prefix)}
        stray_keys = {capsule_key(cid) for cid in slots.values() if cid not in keep}
        for ns in await network.list_netns():
            key = ns.removeprefix(network.NETNS_PREFIX)
            if key in stray_keys:
                await self._kill_netns_pids(ns)
                await network.teardown(*network.names_for(key))
                _repaired(ns, "a network namespace of no capsule", "its processes killed, removed")
        for slot, cid in slots.items():
            if cid not in keep:
                self.ipam.release(IPv4Address(slot), prefix + cid)
                _repaired(cid, f"address slot {slot} held for no capsule", "released")
        for cid in await self.runsc.list_ids():
            if cid not in keep:
                await self.runsc.forget(cid)
                _repaired(cid, "a sandbox (runsc state) without a capsule record", "killed")
        await self._sweep_unclaimed()

    async def _sweep_unclaimed(self) -> None:
        """Capsule namespaces and cgroups no agent of this host holds an address slot for: left
        by an agent whose /run was wiped or that predates their removal, or made by hand. Every
        agent claims a capsule's slot before it makes its namespace and cgroups, and lets it go
        only after removing its namespace, so listing those first and the slots second never
        takes another agent's capsule for a leftover. Cgroups are removed only when empty."""
        namespaces = await network.list_netns()
        cgroup_handles = cgroups.children(CGROUP_PARENT, self.cgroup_root)
        handles = {owner.rsplit(":", 1)[-1] for owner in self.ipam.owned().values()}
        keys = {capsule_key(handle) for handle in handles}
        for ns in namespaces:
            key = ns.removeprefix(network.NETNS_PREFIX)
            if key not in keys:
                await self._kill_netns_pids(ns)
                await network.teardown(*network.names_for(key))
                _repaired(ns, "a capsule network namespace no agent claims", "removed")
        for handle in sorted(cgroup_handles - handles):
            if not await cgroups.remove(f"{CGROUP_PARENT}/{handle}", 0, self.cgroup_root):
                _repaired(handle, "capsule cgroups no agent claims", "removed")


def _repaired(what: str, found: str, done: str) -> None:
    """One log line per repair of what a crash left, with its fields for log tools."""
    log.warning(
        "recovery %s: found %s; %s",
        what,
        found,
        done,
        extra={"fields": {"repair": what, "found": found, "done": done}},
    )


def _put_resolv_conf(rootfs: Path, content: str) -> None:
    """Make the tree's /etc/resolv.conf a fresh file with `content`, through no link the tree
    holds (capsule code made the tree: following its links would write host files). A tree
    without a plain /etc directory keeps what it has."""
    try:
        rootfs_io.write_file(rootfs, "etc/resolv.conf", content.encode())
    except (rootfs_io.UnsafePath, FileNotFoundError):
        log.warning("no resolv.conf written under %s: its /etc is not a plain directory", rootfs)


def install_envd(envd_dir: Path) -> None:
    """Copy envd to `envd_dir`/envd, where capsules mount it from, with bytecode compiled:
    capsules mount it read-only, so they could not cache it and would compile it at every
    start."""
    src = Path(envd_package.__file__).parent
    staging = envd_dir.with_name(envd_dir.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copytree(src, staging / "envd", ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(str(staging), quiet=1)
    shutil.rmtree(envd_dir, ignore_errors=True)
    staging.rename(envd_dir)
