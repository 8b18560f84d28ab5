"""A real SMTP server on this machine (aiosmtpd, in a thread) that keeps what it receives, for
the tests of mailed links (password reset, invitations)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from .ports import free_port


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())

    def link(self, pattern: str) -> str:
        """The first URL in the body that matches `pattern`."""
        for url in re.findall(r"https?://\S+", self.body):
            if re.search(pattern, url):
                return str(url)
        raise AssertionError(f"no link matching {pattern!r} in:\n{self.body}")


class MailServer:
    """Collects every message; `wait_for(recipient)` polls for one with a deadline."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.received: list[Mail] = []
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname=host, port=self.port)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.received.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def settings(self) -> dict[str, Any]:
        """What the control plane's settings need to send through this server."""
        return {
            "smtp_host": self.host,
            "smtp_port": self.port,
            "smtp_tls": "none",
            "smtp_from": "Wrenn <wrenn@mail.test>",
        }

    def to(self, recipient: str) -> list[Mail]:
        with self._lock:
            return [m for m in self.received if recipient in m.recipients]

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    async def wait_for(self, recipient: str, count: int = 1, timeout: float = 15) -> Mail:
        """The `count`-th message to `recipient`, once it has arrived."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(mails := self.to(recipient)) < count:
            assert loop.time() < deadline, f"no mail for {recipient} within {timeout} s"
            await asyncio.sleep(0.02)
        return mails[count - 1]

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


@contextlib.contextmanager
def mail_server(host: str = "127.0.0.1") -> Iterator[MailServer]:
    server = MailServer(host)
    server.start()
    try:
        yield server
    finally:
        server.stop()
