"""The port proxy's pool of kept tunnels on its own, with stand-in tunnels whose pending read the
test ends: what is handed out again, and what is closed (an app's close while idle, the idle
timeout, the bounds per port and in all, another generation); and the request replay."""

from __future__ import annotations

import asyncio

from wrenn_server.controlplane.services.proxy_pool import Replay, TunnelPool

from ...waiting import wait_for


class FakeTunnel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.reused = False
        self.closed = False
        self.app_said: asyncio.Future[bytes] | None = None  # the idle read's outcome

    def read_ahead(self) -> asyncio.Task[bytes]:
        self.app_said = asyncio.get_running_loop().create_future()

        async def read() -> bytes:
            assert self.app_said is not None
            return await self.app_said

        return asyncio.create_task(read())

    def close(self) -> None:
        """Like a real tunnel's: its pending read ends."""
        self.closed = True
        if self.app_said is not None and not self.app_said.done():
            self.app_said.cancel()


async def test_a_kept_tunnel_is_handed_out_once_most_recent_first() -> None:
    pool: TunnelPool[FakeTunnel] = TunnelPool()
    a, b = FakeTunnel("a"), FakeTunnel("b")
    pool.keep("port", 1, a)
    pool.keep("port", 1, b)
    assert pool.take("other port", 1) is None
    assert pool.take("port", 1) is b and b.reused
    assert pool.take("port", 1) is a
    assert pool.take("port", 1) is None
    assert len(pool) == 0 and not (a.closed or b.closed)
    a.close()
    b.close()


async def test_an_app_closing_an_idle_connection_drops_it() -> None:
    pool: TunnelPool[FakeTunnel] = TunnelPool()
    a = FakeTunnel("a")
    pool.keep("port", 1, a)
    assert a.app_said is not None
    a.app_said.set_result(b"")  # the app closed the connection
    await wait_for(lambda: a.closed, 5, what="the tunnel closed")
    assert len(pool) == 0 and pool.take("port", 1) is None


async def test_a_failed_idle_read_drops_it() -> None:
    pool: TunnelPool[FakeTunnel] = TunnelPool()
    a = FakeTunnel("a")
    pool.keep("port", 1, a)
    assert a.app_said is not None
    a.app_said.set_exception(ConnectionResetError())
    await wait_for(lambda: a.closed, 5, what="the tunnel closed")
    assert pool.take("port", 1) is None


async def test_idle_tunnels_are_closed_after_the_timeout() -> None:
    pool: TunnelPool[FakeTunnel] = TunnelPool(idle_timeout=0.05)
    a = FakeTunnel("a")
    pool.keep("port", 1, a)
    await wait_for(lambda: a.closed, 5, what="the idle tunnel closed")
    assert len(pool) == 0


async def test_bounds_per_port_and_in_all_close_the_oldest() -> None:
    pool: TunnelPool[FakeTunnel] = TunnelPool(per_target=2, total=3)
    one = [FakeTunnel(f"one-{i}") for i in range(3)]
    for tunnel in one:
        pool.keep("one", 1, tunnel)
    assert [t.closed for t in one] == [True, False, False]
    two = [FakeTunnel(f"two-{i}") for i in range(2)]
    for tunnel in two:
        pool.keep("two", 1, tunnel)
    assert len(pool) == 3
    assert one[1].closed and not one[2].closed  # the oldest in all went
    assert pool.take("one", 1) is one[2]


async def test_another_generation_closes_the_old_ones() -> None:
    pool: TunnelPool[FakeTunnel] = TunnelPool()
    old = FakeTunnel("old")
    pool.keep("port", "before pause", old)
    assert pool.take("port", "after resume") is None
    assert old.closed and len(pool) == 0
    new = FakeTunnel("new")
    pool.keep("port", "after resume", new)
    pool.close()
    assert new.closed and len(pool) == 0


async def test_replay_gives_back_a_bodiless_request_only() -> None:
    messages = [
        {"type": "http.request", "body": b"", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    replay = Replay(receive)
    first = await replay()
    assert replay.replayable
    replay.rewind()
    assert await replay() == first
    assert (await replay())["type"] == "http.disconnect"

    uploads = [{"type": "http.request", "body": b"data", "more_body": False}]

    async def upload() -> dict[str, object]:
        return uploads.pop(0)

    replay = Replay(upload)
    await replay()
    assert not replay.replayable
