"""Host monitor and reconciler. Every few seconds:

1. hosts not seen (heartbeat or answer) for `down_after` are marked unreachable and their
   capsules missing (services/host_liveness.py `mark_stale_down`);
2. for each online or unreachable host, compare the capsules the database believes it runs with
   what its agent reports (ListSandboxes), and correct the database.

- the agent paused it on its own (TTL reaper)      -> paused
- its sandbox died (memory limit, crash)           -> error, with the agent's reason; the
  agent is then told to destroy it (its disk)
- the agent no longer knows it                      -> stopped, with the reason (its files
                                                      are gone)
- the agent cannot be reached                       -> missing (reversible: fixed when it answers)
- missing but the agent has it again                -> the agent's status
- its row says it ended but the agent still has it  -> destroyed on the agent (it was stopped
  while its host could not be reached)
- the agent has it live, no row names it, and it    -> destroyed on the agent (its create's row
  was made longer ago than any create takes           was removed while the agent went on)
An agent that answers has been seen: an unreachable host comes back online (`marked_up`).
A capsule whose row changed after the agent was asked is left alone: the answer may predate a
create or resume that finished meanwhile (and "stopped" would be final); one a caller is
pausing, resuming or snapshotting is left to that call for as long as the call may still answer
(agents/call_timeouts.py; a pause the agent made but has not answered yet is the caller's, not
the reaper's). Each pass handles every online host once and is idempotent.

The changes it makes are audited as the system actor, in the transaction that makes them:
running -> paused as `auto_pause` (info), -> stopped as `stopped` and -> missing as
`marked_missing` (warnings), -> error as `died` (error, with the reason), each with what was
found and what was done (metadata `found`, `done`); a capsule destroyed on its agent that no row
change tells of as `host_cleanup` (warning; platform-wide when it has no row). A capsule its
agent no longer has is stopped with the reason (VANISHED).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import grpc
from sqlalchemy import select

from ...agentproto.client import AgentClient
from ...proto.hostagent.v1 import hostagent_pb2 as pb
from .. import ids
from ..agents import call_timeouts
from ..agents.pool import HostClientPool
from ..db.models.capsules import Sandbox
from ..db.models.hosts import Host
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import InvalidID
from ..services import capsule_status, host_liveness, metrics

log = logging.getLogger(__name__)

# DB statuses the agent is the authority on. pending/stopped/error are the control plane's own.
TRACKED = ("starting", "running", "paused", "missing")
AGENT_STATUS = {
    pb.SANDBOX_STATUS_STARTING: "starting",
    pb.SANDBOX_STATUS_RUNNING: "running",
    pb.SANDBOX_STATUS_PAUSED: "paused",
    # Its sandbox died on its own (memory limit, crash): the agent says why.
    pb.SANDBOX_STATUS_DEAD: "error",
}
RPC_TIMEOUT = 10.0
MAX_REASON = 200
# How long a capsule is left to a resume, pause or snapshot call under way: as long as the
# call waits for its agent (the same numbers the calls use).
RESUME_GRACE = call_timeouts.grace(call_timeouts.RESUME_TIMEOUT)
PAUSE_GRACE = call_timeouts.grace(call_timeouts.PAUSE_TIMEOUT)
SNAPSHOT_GRACE = call_timeouts.grace(call_timeouts.SNAPSHOT_TIMEOUT)
# Once its agent reports a pause done, or a resumed sandbox running, a live call records it
# within moments (at most envd's start timeout for a resume); a row still not written this long
# after a pass first saw that is a call whose control plane died (and has restarted since).
SETTLE_GRACE = dt.timedelta(seconds=60)
# The status_reason of a capsule its reachable agent no longer has: its files are gone with it.
VANISHED = (
    "its host agent no longer has it (lost while the agent was down or restarting); "
    "its files are gone"
)


def repair(previous: str, new: str, reason: str | None) -> capsule_status.Repair:
    """What a pass found and did, for the audit event of a status it corrects. Pure."""
    if new == "stopped":
        return capsule_status.Repair("its host agent no longer has it", "marked stopped")
    if new == "error":
        return capsule_status.Repair(
            f"its sandbox is dead on its host ({reason or 'sandbox exited'})",
            "marked error; destroyed on its host to free its disk",
        )
    if new == "missing":
        return capsule_status.Repair(
            "its host agent does not answer", "marked missing until it answers"
        )
    if (previous, new) == ("running", "paused"):
        return capsule_status.Repair(
            "its host agent paused it on its own (idle, or a pause it finished after a restart)",
            "marked paused",
        )
    return capsule_status.Repair(f"its host agent reports it {new}", f"marked {new}")


def reconcile(db_status: str, reported: str | None, reachable: bool) -> str:
    """The status a capsule should have. Pure, so every case is easy to test."""
    if not reachable:
        return "missing" if db_status in ("starting", "running", "paused") else db_status
    if reported is None:
        # A capsule still being created may not be listed by a busy agent yet only if the
        # agent restarted; "starting" rows are left to the create call that owns them.
        return db_status if db_status == "starting" else "stopped"
    return reported


def _record_resources(host: Host, resources: pb.HostResources) -> None:
    """What the agent says about its host, for placement (an older agent says nothing)."""
    if resources.cpu_count:
        host.cpu_cores = resources.cpu_count
    if resources.memory_mb:
        host.memory_mb = resources.memory_mb
    host.disk_free_mb = resources.disk_free_mb


def _resuming(sandbox: Sandbox, reported: str | None, asked_at: dt.datetime) -> bool:
    """A paused capsule being resumed reads "starting" (it holds its quota again) while its
    agent still reports it paused, or already running: a restored sandbox is running before
    its envd has answered, and if it never does the agent pauses it again and the call fails.
    The resume call owns it (taken for running, the row would stay running over a paused
    capsule), unless it has taken longer than any resume does (the control plane died on the
    way: the agent's word wins). A create's row reads "starting" too until its call answers:
    the same holds (its call sets it running, or removes it)."""
    return (
        sandbox.status == "starting"
        and reported in ("paused", "running")
        and asked_at - sandbox.last_updated < RESUME_GRACE
    )


def _pausing(
    sandbox: Sandbox, reported: str | None, auto_paused: bool, asked_at: dt.datetime
) -> bool:
    """A capsule a caller is pausing reads "running" until the agent has answered, while the
    agent may already report it paused (not by its reaper): the pause call owns it, unless it
    has taken longer than any pause does."""
    return (
        sandbox.status == "running"
        and reported == "paused"
        and not auto_paused
        and asked_at - sandbox.last_updated < PAUSE_GRACE
    )


def _snapshotting(sandbox: Sandbox, reported: str | None, asked_at: dt.datetime) -> bool:
    """A capsule being snapshotted reads "paused" from the call's start (the snapshot pauses
    it) while its agent may still report it running: the snapshot call owns it, unless it has
    taken longer than any snapshot does. Taken for running, it would read running once paused,
    and every command would be refused while the API listed it running."""
    return (
        sandbox.status == "paused"
        and reported == "running"
        and asked_at - sandbox.last_updated < SNAPSHOT_GRACE
    )


def _abandoned(
    sandbox: Sandbox, reported: str | None, asked_at: dt.datetime, grace: dt.timedelta
) -> bool:
    """A row still `starting` that its reachable host does not hold, for longer than any
    create takes: the create call that owned it died with its control plane (kill -9, a
    crash), and the agent dropped the capsule with the call. Nothing will finish it."""
    return (
        sandbox.status == "starting"
        and reported is None
        and asked_at - sandbox.last_updated > grace
    )


ABANDONED = "its create did not finish (the control plane stopped during it)"


def _our_id(wire_id: str) -> uuid.UUID | None:
    """The id of a capsule the control plane may have made; None for one it cannot have (an
    agent accepts any `sb-` id from its callers), which has no row to correct."""
    try:
        return ids.SANDBOX.parse(wire_id)
    except InvalidID:
        return None


class Reconciler:
    def __init__(
        self,
        db: Database,
        pool: HostClientPool,
        down_after: float = 90.0,
        create_grace: float = 600.0,
    ) -> None:
        self.db = db
        self.pool = pool
        self.down_after = dt.timedelta(seconds=down_after)
        self.create_grace = dt.timedelta(seconds=create_grace)
        # Per host: capsule -> (row status, reported status, when a pass first saw the pair),
        # for rows left to a pause or resume call whose agent already reports its end.
        self._ended: dict[uuid.UUID, dict[uuid.UUID, tuple[str, str, dt.datetime]]] = {}

    async def run_once(self) -> None:
        async with self.db.sessionmaker() as session, transaction(session, write=True):
            await host_liveness.mark_stale_down(session, down_after=self.down_after)
        async with self.db.sessionmaker() as session:
            hosts = list(
                await session.scalars(
                    select(Host).where(Host.status.in_(("online", "unreachable")))
                )
            )
        for host in hosts:
            await self._reconcile_host(host)

    async def _reconcile_host(self, host: Host) -> None:
        host_id = host.id
        reported: dict[uuid.UUID, str] = {}
        reasons: dict[uuid.UUID, str] = {}
        reaped: set[uuid.UUID] = set()  # paused by the agent's TTL reaper
        made_at: dict[uuid.UUID, dt.datetime] = {}  # as the agent says
        reachable = True
        resources: pb.HostResources | None = None
        # A row changed after this moment may be newer than the agent's answer (a create or
        # resume that finished while the answer was on its way): it is left for the next pass.
        asked_at = utcnow()
        try:
            client = await self.pool.client(host)
            resp = await client.list_sandboxes(pb.ListSandboxesRequest(), timeout=RPC_TIMEOUT)
            if resp.HasField("resources"):
                resources = resp.resources
            for sb in resp.sandboxes:
                sandbox_id = _our_id(sb.sandbox_id)
                if sandbox_id is not None:
                    reported[sandbox_id] = AGENT_STATUS.get(sb.status, "starting")
                    if sb.HasField("created_at"):
                        made_at[sandbox_id] = sb.created_at.ToDatetime(tzinfo=dt.UTC)
                    if sb.auto_paused or sb.sandbox_id in resp.auto_paused_sandbox_ids:
                        reaped.add(sandbox_id)
                    if sb.status == pb.SANDBOX_STATUS_DEAD:
                        # An agent's words (a BYOC host's owner's, maybe): kept short.
                        reason = sb.exit_reason[:MAX_REASON] or "sandbox exited"
                        reasons[sandbox_id] = reason
        except grpc.aio.AioRpcError as e:
            log.warning("host %s unreachable: %s", host_id, e.code().name)
            reachable = False
        auto_paused: list[uuid.UUID] = []
        async with self.db.sessionmaker() as session, transaction(session, write=True):
            current = await session.get(Host, host_id)
            if current is None:
                return  # deleted meanwhile
            if reachable:
                await host_liveness.mark_seen(session, current)
            if resources is not None:
                _record_resources(current, resources)
            rows = await session.scalars(
                select(Sandbox).where(Sandbox.host_id == host_id, Sandbox.status.in_(TRACKED))
            )
            ended = self._ended.get(host_id, {})
            self._ended[host_id] = seen = {}

            def settling(sandbox: Sandbox, now: str) -> bool:
                """Whether the call may still record the end its agent reports (`now`)."""
                pair = (sandbox.status, now)
                first = ended.get(sandbox.id)
                since = first[2] if first is not None and first[:2] == pair else asked_at
                seen[sandbox.id] = (*pair, since)
                return asked_at - since < SETTLE_GRACE

            for sandbox in rows:
                if sandbox.last_updated >= asked_at:
                    continue
                now = reported.get(sandbox.id)
                if _resuming(sandbox, now, asked_at) and (
                    now != "running" or settling(sandbox, now)
                ):
                    continue
                if _pausing(sandbox, now, sandbox.id in reaped, asked_at) and settling(
                    sandbox, "paused"
                ):
                    continue
                if _snapshotting(sandbox, reported.get(sandbox.id), asked_at):
                    continue
                if reachable and _abandoned(
                    sandbox, reported.get(sandbox.id), asked_at, self.create_grace
                ):
                    log.info("capsule %s: starting -> error (%s)", sandbox.id, ABANDONED)
                    await capsule_status.set_status_by_system(
                        session,
                        sandbox,
                        "error",
                        host_id,
                        reason=ABANDONED,
                        repair=capsule_status.Repair(
                            "still starting long after any create ends, and its host agent "
                            "does not have it",
                            "marked error",
                        ),
                    )
                    continue
                new = reconcile(sandbox.status, reported.get(sandbox.id), reachable)
                if new != sandbox.status:
                    log.info("capsule %s: %s -> %s", sandbox.id, sandbox.status, new)
                    previous = sandbox.status
                    why = reasons.get(sandbox.id) or (VANISHED if new == "stopped" else None)
                    await capsule_status.set_status_by_system(
                        session,
                        sandbox,
                        new,
                        host_id,
                        reason=why,
                        repair=repair(previous, new, why),
                    )
                    if (previous, new) == ("running", "paused"):
                        auto_paused.append(sandbox.id)
        # The agent paused these on its own: copy their samples, as a pause through the API does.
        for sandbox_id in auto_paused:
            await metrics.flush(self.db, client, sandbox_id)
        if reported:
            # A live capsule made longer ago than any create takes, with no row: its create's
            # row was removed (the call failed or timed out while the agent went on).
            aged = {i for i, at in made_at.items() if asked_at - at > self.create_grace}
            await self._clear_dead(
                client, host_id, set(reasons), set(reported) - set(reasons), aged
            )

    async def _clear_dead(
        self,
        client: AgentClient,
        host_id: uuid.UUID,
        dead: set[uuid.UUID],
        live: set[uuid.UUID],
        aged: set[uuid.UUID],
    ) -> None:
        """Dead capsules whose row says so (or that have none) are destroyed on their agent,
        freeing their disks; one whose row is newer than the answer waits for the next pass.
        So are live ones whose row says they ended (stopped while their host could not be
        reached, as when their team was deleted): an ended row is final; and live ones with
        no row at all made longer ago than any create takes (`aged`). Only this host is asked,
        about what it reported itself. Each one destroyed is audited (`host_cleanup`) unless
        its row's own change already was (a dead capsule marked error)."""
        async with self.db.sessionmaker() as session:
            rows = {
                sandbox_id: (status, team_id)
                for sandbox_id, status, team_id in await session.execute(
                    select(Sandbox.id, Sandbox.status, Sandbox.team_id).where(
                        Sandbox.id.in_(dead | live)
                    )
                )
            }
        settled = {sandbox_id for sandbox_id, (status, _) in rows.items() if status not in TRACKED}
        unknown = dead - set(rows)
        orphans = (live & aged) - set(rows)
        for sandbox_id in sorted(settled | unknown | orphans):
            await metrics.flush(self.db, client, sandbox_id, tiers=("24h",))
            wire_id = ids.SANDBOX.format(sandbox_id)
            try:
                await client.destroy_sandbox(pb.SandboxRef(sandbox_id=wire_id), timeout=RPC_TIMEOUT)
            except grpc.aio.AioRpcError as e:
                log.warning("dead capsule %s not destroyed on host %s: %s", wire_id, host_id, e)
                continue
            status, team_id = rows.get(sandbox_id, (None, None))
            if status == "error" and sandbox_id in dead:
                continue  # its `died` event says it
            state = "dead" if sandbox_id in dead else "running or paused"
            found = (
                f"its host agent still had it ({state}) though its record says {status}"
                if status
                else f"its host agent had it ({state}) with no record of it in the database"
            )
            log.warning("capsule %s on host %s: %s; destroyed on the host", wire_id, host_id, found)
            async with self.db.sessionmaker() as session, transaction(session, write=True):
                await capsule_status.record_host_cleanup(
                    session,
                    sandbox_id=sandbox_id,
                    team_id=team_id,
                    host_id=host_id,
                    was=status or "no record",
                    repair=capsule_status.Repair(found, "destroyed on its host"),
                )
