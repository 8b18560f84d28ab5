"""The Terminal tab of a capsule's page against a mocked API and a mocked PTY WebSocket: the
socket authenticates with its first message (the token never in the URL), starts a shell at the
terminal's size, sends what is typed as binary frames and draws the binary output; the terminal
follows its box's size; copy and paste go through the clipboard; a dropped socket and a reload
reattach to the same shell by its tag; New session ends the shell and starts another; a shell
that exits, a shell that cannot start and a capsule that is not running are said so."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import BrowserContext, Locator, Page, WebSocketRoute, expect

from tests.waiting import wait_for

from .conftest import TOKEN, MockApi
from .test_capsules import capsule

CID = "cl-term"
PTY_URL = re.compile(rf"/v1/capsules/{CID}/pty$")


@dataclass
class Conn:
    """One socket the page opened: its text messages (parsed) and binary frames (decoded)."""

    ws: WebSocketRoute
    url: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    typed: str = ""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]


@dataclass
class MockPty:
    """The server side of /v1/capsules/{id}/pty: answers a start or connect with `started`
    (tag `tag`), unless `refuse` is set, then with a fatal error."""

    tag: str = "pty-1a2b3c4d"
    refuse: str | None = None
    conns: list[Conn] = field(default_factory=list)

    async def handle(self, ws: WebSocketRoute) -> None:
        conn = Conn(ws, ws.url)
        self.conns.append(conn)

        def on_message(message: str | bytes) -> None:
            if isinstance(message, bytes):
                conn.typed += message.decode()
                return
            msg = json.loads(message)
            conn.messages.append(msg)
            if msg["type"] in ("start", "connect"):
                if self.refuse:
                    ws.send(json.dumps({"type": "error", "data": self.refuse, "fatal": True}))
                else:
                    ws.send(json.dumps({"type": "started", "tag": self.tag, "pid": 7}))

        ws.on_message(on_message)

    async def conn(self, n: int) -> Conn:
        """The n-th socket (from 1), once it has sent its start or connect."""

        def opened() -> Conn | None:
            if len(self.conns) < n:
                return None
            c = self.conns[n - 1]
            return c if len(c.messages) >= 2 else None

        found: Conn | None = await wait_for(opened, 15, what=f"PTY socket #{n}")
        assert found is not None
        return found


async def open_terminal(context: BrowserContext, page: Page, api: MockApi, pty: MockPty) -> None:
    api.on("GET", f"/v1/capsules/{CID}", {"json": capsule(CID)})
    # The overview, shown first.
    api.on("GET", f"/v1/capsules/{CID}/metrics", {"json": {"points": []}})
    api.on("POST", f"/v1/capsules/{CID}/files/list", {"json": {"entries": []}})
    api.on("GET", f"/v1/capsules/{CID}/ports", {"json": {"ports": []}})
    await context.route_web_socket(PTY_URL, pty.handle)
    await page.goto(f"/dashboard/capsules/{CID}")
    await page.get_by_role("link", name="Terminal").click()


def screen(page: Page) -> Locator:
    return page.locator(".xterm-rows")


def status(page: Page) -> Locator:
    return page.get_by_role("status", name="Terminal status")


async def test_typing_output_and_resizing(
    context: BrowserContext, signed_in: Page, api: MockApi
) -> None:
    page, pty = signed_in, MockPty()
    await open_terminal(context, page, api, pty)
    c = await pty.conn(1)
    # The token is the first message, not part of the address; then a shell at the fitted size.
    assert TOKEN not in c.url
    assert c.messages[0] == {"type": "auth", "token": TOKEN}
    start = c.messages[1]
    assert start["type"] == "start" and start["cmd"] == "/bin/bash"
    assert start["cols"] > 80 and start["rows"] > 10, start
    await expect(status(page)).to_contain_text(f"Connected {pty.tag}")
    assert await page.evaluate("sessionStorage.getItem('wrenn.pty.cl-term')") == pty.tag

    c.ws.send(b"Welcome to the capsule\r\nwrenn-user$ ")
    await expect(screen(page)).to_contain_text("Welcome to the capsule")
    await page.locator(".xterm").click()
    await page.keyboard.type("echo hi")
    await page.keyboard.press("Enter")
    await wait_for(lambda: c.typed == "echo hi\r", 10, what="typed input frames")
    c.ws.send(b"echo hi\r\nhi\r\n")
    await expect(screen(page)).to_contain_text("hi")

    # A narrower window: fewer columns, told to the shell.
    await page.set_viewport_size({"width": 700, "height": 900})
    resize = await wait_for(lambda: c.of("resize"), 10, what="a resize message")
    assert 0 < resize[-1]["cols"] < start["cols"], resize
    assert resize[-1]["rows"] == start["rows"]
    # Nothing but the messages above was sent.
    assert {m["type"] for m in c.messages} == {"auth", "start", "resize"}


async def test_copy_and_paste(context: BrowserContext, signed_in: Page, api: MockApi) -> None:
    page, pty = signed_in, MockPty()
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    await open_terminal(context, page, api, pty)
    c = await pty.conn(1)
    await expect(status(page)).to_contain_text("Connected")
    c.ws.send(b"copyable-word\r\n")
    await expect(screen(page)).to_contain_text("copyable-word")

    # Paste: the clipboard's text goes to the shell as input.
    await page.evaluate("navigator.clipboard.writeText('pasted text')")
    await page.locator(".xterm").click()
    await page.keyboard.press("Control+Shift+V")
    await wait_for(lambda: c.typed == "pasted text", 10, what="pasted input")

    # Copy: a selected word (double-click) goes to the clipboard; nothing goes to the shell.
    box = await page.get_by_text("copyable-word").bounding_box()
    assert box
    # On the screen layer above the text, where a user's mouse lands.
    await page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.keyboard.press("Control+Shift+C")

    async def copied() -> bool:
        return bool(await page.evaluate("navigator.clipboard.readText()") == "copyable-word")

    await wait_for(copied, 10, what="the selection in the clipboard")
    assert c.typed == "pasted text"


async def test_reattaches_by_tag_after_a_drop_and_a_reload(
    context: BrowserContext, signed_in: Page, api: MockApi
) -> None:
    page, pty = signed_in, MockPty()
    await open_terminal(context, page, api, pty)
    first = await pty.conn(1)
    await expect(status(page)).to_contain_text("Connected")
    first.ws.send(b"before the drop\r\n")
    await expect(screen(page)).to_contain_text("before the drop")

    # The socket drops: the page reconnects to the same shell, clears the screen for the
    # server's replay and tells the shell its size.
    await first.ws.close()
    second = await pty.conn(2)
    assert second.messages[:2] == [
        {"type": "auth", "token": TOKEN},
        {"type": "connect", "tag": pty.tag},
    ]
    await expect(status(page)).to_contain_text("Connected")
    await wait_for(lambda: second.of("resize"), 10, what="the size after reattaching")
    second.ws.send(b"replayed output\r\n")
    await expect(screen(page)).to_contain_text("replayed output")
    await expect(screen(page)).not_to_contain_text("before the drop")

    # A reload (or coming back to the page) reattaches too.
    await page.reload()
    third = await pty.conn(3)
    assert third.messages[1] == {"type": "connect", "tag": pty.tag}

    # New session: the old shell is killed and a new one started.
    await expect(status(page)).to_contain_text("Connected")
    pty.tag = "pty-99999999"
    await page.get_by_role("button", name="New session").click()
    fourth = await pty.conn(4)
    await wait_for(lambda: third.of("kill"), 10, what="the old shell killed")
    assert fourth.messages[1]["type"] == "start"
    await expect(status(page)).to_contain_text("Connected pty-99999999")
    assert await page.evaluate("sessionStorage.getItem('wrenn.pty.cl-term')") == pty.tag


async def test_a_gone_shell_is_replaced_and_an_exit_is_said(
    context: BrowserContext, signed_in: Page, api: MockApi
) -> None:
    page, pty = signed_in, MockPty()
    # This tab's shell ended meanwhile: the reattach is refused, and a fresh shell starts.
    await context.add_init_script("sessionStorage.setItem('wrenn.pty.cl-term', 'pty-gone')")
    pty.refuse = "PTY session not found"
    api.on("GET", f"/v1/capsules/{CID}", {"json": capsule(CID)})

    async def handle(ws: WebSocketRoute) -> None:
        await pty.handle(ws)
        if len(pty.conns) == 1:
            return
        pty.refuse = None

    await context.route_web_socket(PTY_URL, handle)
    await page.goto(f"/dashboard/capsules/{CID}?tab=terminal")
    first = await pty.conn(1)
    assert first.messages[1] == {"type": "connect", "tag": "pty-gone"}
    second = await pty.conn(2)
    assert second.messages[1]["type"] == "start"
    await expect(status(page)).to_contain_text(f"Connected {pty.tag}")

    # The shell exits: said, with its code; no reconnect.
    second.ws.send(json.dumps({"type": "exit", "exit_code": 3}))
    await second.ws.close()
    await expect(status(page)).to_contain_text("The shell ended (exit code 3)")
    assert await page.evaluate("sessionStorage.getItem('wrenn.pty.cl-term')") is None
    await page.get_by_role("button", name="New session").click()
    third = await pty.conn(3)
    assert third.messages[1]["type"] == "start"
    assert len(pty.conns) == 3


async def test_a_shell_that_cannot_start_and_a_capsule_not_running(
    context: BrowserContext, signed_in: Page, api: MockApi
) -> None:
    page, pty = signed_in, MockPty(refuse="capsule cl-term is not running")
    await open_terminal(context, page, api, pty)
    await pty.conn(1)
    await expect(status(page)).to_contain_text(
        "The terminal could not start: capsule cl-term is not running"
    )

    # A paused capsule has no terminal: said, and no socket is opened.
    api.on("GET", f"/v1/capsules/{CID}", {"json": capsule(CID, "paused")})
    await page.reload()
    await expect(page.get_by_role("region", name="Terminal").get_by_role("status")).to_contain_text(
        "available only while the capsule is running (it is paused)"
    )
    assert len(pty.conns) == 1
