"""Outgoing mail (password reset links, invitations) through the operator's SMTP server.

`Mailer.from_settings` is None when no SMTP server is configured: callers then offer no
mail-based flow. Sending uses the standard library's `smtplib` in a worker thread; the TLS mode
is the operator's (`starttls` refuses a server that cannot upgrade, so credentials and links
never go out in clear by accident).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr

from .settings import Settings


class MailError(Exception):
    """The message could not be handed to the SMTP server."""


@dataclass(frozen=True, slots=True)
class MailedLinks:
    """Where the one-time links of a mail point: `<base_url>/<page>#token=...` (a fragment: the
    token never reaches a server log or a Referer header), valid for `ttl`."""

    base_url: str
    page: str
    ttl: dt.timedelta

    def link(self, token: str) -> str:
        return f"{self.base_url.rstrip('/')}/{self.page}#token={token}"


@dataclass(frozen=True, slots=True)
class Mailer:
    host: str
    port: int
    sender: str
    tls: str
    timeout: float
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer | None:
        if not settings.smtp_host or not settings.smtp_from:
            return None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            tls=settings.smtp_tls,
            timeout=settings.smtp_timeout_sec,
            username=settings.smtp_username,
            password=(
                settings.smtp_password.get_secret_value() if settings.smtp_password else None
            ),
        )

    def _message(self, to: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        domain = parseaddr(self.sender)[1].rpartition("@")[2]
        message["Message-ID"] = make_msgid(domain=domain or None)
        message.set_content(body)
        return message

    def _send(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.tls == "tls":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            if self.tls == "starttls":
                smtp.starttls(context=context)
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)

    async def send(self, to: str, subject: str, body: str) -> None:
        """Hand one plain-text message to the server; `MailError` if that fails."""
        message = self._message(to, subject, body)
        try:
            await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"{type(exc).__name__}: {exc}") from None
