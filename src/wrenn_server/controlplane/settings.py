"""Control plane settings, from the environment (prefix `WRENN_`).

Defaults need no external service: the database is a SQLite file in the data dir and the build
queue is in-process. Production choices are URLs (`postgresql+asyncpg://...`, `redis://...`).
The server refuses to start with the built-in JWT secret unless dev mode is on or a secret was
generated into the data dir (`ensure_jwt_secret`, which `wrenn up` calls on a single box).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..addresses import TenantAddressPolicy
from ..private import private_dir
from .errors import InsecureConfiguration

DEFAULT_JWT_SECRET = "wrenn-dev-jwt-secret-never-use-in-production"
JWT_SECRET_FILE = "jwt_secret"
# A domain name (a trailing dot allowed) and an optional port: the port proxy's domain.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PROXY_DOMAIN = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?(?::[0-9]{{1,5}})?")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WRENN_", extra="ignore")

    data_dir: Path = Field(
        default=Path("/var/lib/wrenn"),
        description="Directory for the control plane's own files: the SQLite database and the "
        "generated JWT secret.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL of the database. Default: the SQLite file "
        "<data_dir>/wrenn.db (sqlite+aiosqlite:///...). Production: "
        "postgresql+asyncpg://user:password@host/dbname.",
    )
    database_pool_size: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="PostgreSQL connections each control plane process keeps in its pool. "
        "Every process counts (`wrenn server --workers N`, every server): N x (this + "
        "WRENN_DATABASE_MAX_OVERFLOW) must fit the database's max_connections.",
    )
    database_max_overflow: int = Field(
        default=30,
        ge=0,
        le=1000,
        description="PostgreSQL connections a process may open beyond its pool in a burst "
        "(closed when returned).",
    )
    redis_url: str | None = Field(
        default=None,
        description="redis:// URL of the template build queue (and of lifecycle event "
        "wake-ups when the database is not PostgreSQL, see WRENN_EVENTS_WAKEUP). Unset: an "
        "in-process queue per process (each runs the builds it accepted).",
    )
    redis_connect_timeout_sec: float = Field(
        default=5.0, gt=0, le=60, description="How long connecting to Redis may take, seconds."
    )
    redis_socket_timeout_sec: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="How long one Redis command may wait for its answer, seconds (a build "
        "queue's blocking read: its own wait plus this). A Redis that does not answer makes "
        "POST /v1/admin/builds a 503 instead of a hung request.",
    )
    redis_health_check_interval_sec: float = Field(
        default=30.0,
        ge=0,
        description="A Redis connection idle this long is pinged before it is used, seconds "
        "(0 = never).",
    )
    host: str = Field(default="127.0.0.1", description="Address the REST API listens on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the REST API listens on.")
    dev_mode: bool = Field(
        default=False,
        description="Development mode: allows the built-in JWT secret. Never on a reachable "
        "server.",
    )
    jwt_secret: SecretStr = Field(
        default=SecretStr(DEFAULT_JWT_SECRET),
        description="HMAC key that signs user JWTs. Left at the default, the server uses "
        "<data_dir>/jwt_secret if it exists, the default only in dev mode, and otherwise "
        "refuses to start.",
    )
    jwt_lifetime_sec: int = Field(
        default=6 * 3600,
        ge=60,
        description="Lifetime of a user JWT in seconds (contract: 6 hours).",
    )
    migrate_on_start: bool = Field(
        default=True, description="Upgrade the database schema to the latest revision at startup."
    )
    agent_address: str = Field(
        default="127.0.0.1:50051",
        description="host:port of the host agent on a single box (before hosts register).",
    )
    agent_secret: SecretStr = Field(
        default=SecretStr("dev-agent-secret"),
        description="Shared secret presented to the single-box host agent on every call "
        "(the agent reads the same WRENN_AGENT_SECRET).",
    )

    reconcile_interval_sec: float = Field(
        default=5.0,
        ge=0,
        description="How often the reconciler compares the database with the host agents "
        "(0 = never).",
    )
    e2b_lifecycle_interval_sec: float = Field(
        default=1.0,
        ge=0,
        description="How often capsules made through the E2B API are checked for their end "
        "(killed, or paused with autoPause; 0 = never).",
    )
    create_grace_sec: float = Field(
        default=600.0,
        gt=0,
        description="A capsule still `starting` that its host does not hold after this long "
        "is a create whose control plane stopped during it: the reconciler marks it `error`. "
        "Longer than any create takes (a template's start command included).",
    )
    stats_sample_interval_sec: float = Field(
        default=10.0,
        ge=0,
        description="How often the stats sampler records each team's capsule counts and "
        "reservations (0 = never).",
    )
    events_wakeup: Literal["auto", "postgres", "redis", "local"] = Field(
        default="auto",
        description="How a control plane process learns at once that another one wrote "
        "lifecycle events: 'postgres' (LISTEN/NOTIFY on the database), 'redis' (pub/sub on "
        "WRENN_REDIS_URL), 'local' (this process's own writes only; the others' arrive with "
        "the poll). 'auto': postgres on PostgreSQL, else redis when WRENN_REDIS_URL is set, "
        "else local. The events table stays the source of truth: a wake-up only makes the "
        "process read it.",
    )
    events_poll_interval_sec: float | None = Field(
        default=None,
        gt=0,
        le=300,
        description="How often each process reads new lifecycle events without a wake-up (the "
        "fallback for a lost one). Default: 5 s with postgres or redis wake-ups, 0.5 s with "
        "local ones (how the events of other processes on one SQLite database arrive).",
    )
    events_listener_timeout_sec: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="Timeout of the wake-up listener's connection attempts and liveness "
        "checks (PostgreSQL or Redis), seconds; a listener that fails reconnects with "
        "backoff.",
    )
    events_listener_backoff_max_sec: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Longest wait between the wake-up listener's reconnection attempts, "
        "seconds (doubling from 0.5 s).",
    )
    events_heartbeat_sec: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="An idle event stream gets a comment line this often, seconds.",
    )
    events_retention_hours: int = Field(
        default=24,
        ge=1,
        description="How long lifecycle events are kept for streams resuming with "
        "Last-Event-ID, hours.",
    )
    channel_delivery_attempts: int = Field(
        default=4, ge=1, le=10, description="Attempts per event and webhook before giving up."
    )
    channel_retry_backoff_sec: float = Field(
        default=2.0,
        ge=0,
        le=300,
        description="Wait before a webhook's first retry, doubled at each further one.",
    )
    channel_delivery_timeout_sec: float = Field(
        default=10.0, gt=0, le=60, description="Each webhook attempt's timeout, seconds."
    )
    channel_delivery_interval_sec: float = Field(
        default=1.0, ge=0, description="How often the leader delivers new events (0 = never)."
    )
    stats_retention_days: int = Field(
        default=60, ge=1, description="How long the sampled team statistics are kept, days."
    )
    build_workers: int = Field(
        default=2,
        ge=0,
        le=32,
        description="Template builds run at once by this process (0 = none: another control "
        "plane process runs them).",
    )
    build_stale_after_sec: float = Field(
        default=60.0,
        ge=1.0,
        le=3600.0,
        description="A running template build whose worker has not renewed it (every 5 s) for "
        "this long is failed as interrupted (its control plane died), its capsule destroyed.",
    )
    build_archive_max_mb: int = Field(
        default=512, ge=1, description="Largest archive a template build may upload, MiB."
    )
    auth_cache_ttl_sec: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="How long a control plane process reuses what a credential (API key or "
        "user token) resolved to before asking the database again; 0 turns the cache off. "
        "It bounds how long another process may still honour a revoked key, a removed member, "
        "a deactivated user or a deleted team when it is not told sooner (the process that "
        "made the change drops its cache at once; on PostgreSQL the others hear of it and may "
        "keep entries longer while they do, still within a second of any change).",
    )
    capsule_cache_ttl_sec: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="How long a control plane process reuses where a running capsule is (its "
        "team and host) for calls into it (exec, files, the E2B protocol, the port proxy) "
        "before reading it again; 0 turns the cache off. It bounds how long a pause, destroy "
        "or move made through another process goes unseen here when it is not told sooner "
        "(the process that made it drops the capsule's entry at once; on PostgreSQL the others "
        "hear of it and may keep entries longer while they do), and how long a team's kept "
        "capsule listing may miss a write by a control plane process on another machine "
        "(those on this machine share a stamp in the data directory and are seen at once).",
    )
    exec_max_output_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        le=16 << 20,
        description="Most bytes of each of stdout and stderr that POST /v1/capsules/{id}/exec "
        "returns; the rest is dropped (the command runs on) and the answer says `truncated`. "
        "The WebSocket exec stream is not capped.",
    )
    max_json_body_kb: int = Field(
        default=1024,
        ge=1,
        description="Largest request body, KiB, of API routes that take JSON; /v1/auth, /v1/me "
        "and the host agents' credential routes take at most 64 KiB. Larger bodies get 413 "
        "before they are read. File uploads stream to the capsule and are bounded by its disk.",
    )
    host_jwt_lifetime_sec: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="Lifetime of a host JWT (X-Host-Token) in seconds (contract: 7 days).",
    )
    host_refresh_lifetime_sec: int = Field(
        default=60 * 24 * 3600,
        ge=60,
        description="Lifetime of a host refresh token in seconds (contract: 60 days).",
    )
    host_registration_ttl_sec: int = Field(
        default=3600,
        ge=60,
        description="How long a host's one-time registration token stays valid, seconds.",
    )
    host_down_after_sec: float = Field(
        default=90.0,
        gt=0,
        description="A host neither heard from (heartbeat) nor reached (reconciler) for this "
        "long is marked unreachable and its capsules missing.",
    )
    byoc_allowed_networks: list[str] = Field(
        default_factory=list,
        description="Networks (CIDR) a team's own (BYOC) host may be reached at although they "
        "are special-use (loopback, link-local, ...): a lab whose agents run on the control "
        'plane\'s machine. Unix sockets are never allowed. JSON list, e.g. ["127.0.0.0/8"].',
    )
    byoc_blocked_networks: list[str] = Field(
        default_factory=list,
        description="More networks (CIDR) a team's own (BYOC) host may not be reached at, e.g. "
        "the platform's own private network. JSON list.",
    )
    dashboard_dir: Path | None = Field(
        default=None,
        description="The built dashboard (web/build) served at /. Default: web/build of the "
        "source checkout, if it was built; without one only the API is served.",
    )
    base_template: str = Field(
        default="minimal", description="The platform template capsules use when none is named."
    )
    proxy_domain: str | None = Field(
        default=None,
        description="The domain (with its port, if any) under which `{port}-{capsule_id}.<domain>` "
        "reaches a port of a capsule, e.g. `preview.example.com` behind a wildcard DNS record. "
        "Unset: that prefix is recognised on any Host the control plane is reached at.",
    )

    # Quotas: what one team may hold at once unless an admin gave it its own limits
    # (PUT /v1/admin/teams/{id}/quotas). Generous for a single box; an operator who lets
    # strangers sign up sizes them to the hosts.
    quota_max_capsules: int = Field(
        default=20,
        ge=0,
        le=1_000_000,
        description="Default most capsules a team may have that are not stopped (paused ones "
        "count: they hold disk).",
    )
    quota_max_vcpus: int = Field(
        default=16,
        ge=0,
        le=1_000_000,
        description="Default most vCPUs a team's pending, starting and running capsules may "
        "reserve together (paused ones hold none).",
    )
    quota_max_memory_mb: int = Field(
        default=32768,
        ge=0,
        le=1 << 30,
        description="Default most memory, MiB, a team's pending, starting and running capsules "
        "may reserve together.",
    )
    quota_max_disk_mb: int = Field(
        default=20480,
        ge=0,
        le=1 << 30,
        description="Default largest disk, MiB, one capsule of a team may have.",
    )
    memory_overcommit: float = Field(
        default=1.0,
        gt=0,
        le=16,
        description="Placement puts capsules on a host while the memory reserved by its live "
        "capsules stays within its memory times this ratio (1.0: never promise more than the "
        "host has).",
    )

    github_client_id: str | None = Field(
        default=None,
        description="Client ID of the GitHub OAuth app. GitHub login is offered only when both "
        "the client ID and the client secret are set.",
    )
    github_client_secret: SecretStr | None = Field(
        default=None, description="Client secret of the GitHub OAuth app."
    )
    github_authorize_url: str = Field(
        default="https://github.com/login/oauth/authorize",
        description="GitHub's authorization page, where the login flow sends the browser.",
    )
    github_token_url: str = Field(
        default="https://github.com/login/oauth/access_token",
        description="GitHub's endpoint that exchanges an authorization code for an access token.",
    )
    github_api_url: str = Field(
        default="https://api.github.com",
        description="Base URL of the GitHub REST API (the user and its emails are read there).",
    )
    oauth_callback_base_url: str | None = Field(
        default=None,
        description="Public base URL of this API (scheme://host[:port]), from which the OAuth "
        "redirect URI /v1/auth/oauth/<provider>/callback is built; it must match the OAuth app's "
        "registered callback. Unset: the base URL of the incoming request.",
    )
    oauth_redirect_url: str = Field(
        default="",
        description="Base URL of the dashboard: the OAuth callback redirects the browser to "
        "<this>/auth/<provider>/callback with the token or an error. Empty: the same origin.",
    )
    oauth_state_ttl_sec: int = Field(
        default=600,
        ge=30,
        description="How long a login flow's signed state (and its cookie) stays valid, seconds.",
    )
    oauth_http_timeout_sec: float = Field(
        default=10.0,
        gt=0,
        description="Timeout of each request to the OAuth provider (token exchange, profile), "
        "seconds.",
    )

    # Accounts: who may sign up, sign-in throttling, and mail (password reset, invitations).
    signup: Literal["open", "invite", "closed"] = Field(
        default="closed",
        description="Who may create an account: 'open' (anyone, also through OAuth), 'invite' "
        "(only with an invitation a platform admin made for that email) or 'closed' (only "
        "platform admins add accounts: POST /v1/admin/users, wrenn admin create-user).",
    )
    public_url: str | None = Field(
        default=None,
        description="Public base URL of the dashboard (scheme://host[:port]), used in the links "
        "sent by mail. Required with SMTP: links are never built from a request's Host header.",
    )
    smtp_host: str | None = Field(
        default=None,
        description="SMTP server for password reset and invitation mails. Unset: no mail is "
        "sent and password reset by mail is not offered.",
    )
    smtp_port: int = Field(default=587, ge=1, le=65535, description="Port of the SMTP server.")
    smtp_username: str | None = Field(
        default=None, description="SMTP login; unset: no authentication."
    )
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    smtp_from: str | None = Field(
        default=None, description="Sender address of the mails (required with SMTP)."
    )
    smtp_tls: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description="'starttls' (upgrade a plain connection, refused if the server cannot), "
        "'tls' (TLS from the start, usually port 465) or 'none' (plain text: a local relay only).",
    )
    smtp_timeout_sec: float = Field(
        default=15.0, gt=0, description="Timeout of each SMTP operation, seconds."
    )
    password_reset_ttl_sec: int = Field(
        default=900, ge=60, description="How long a password reset link stays valid, seconds."
    )
    invitation_ttl_sec: int = Field(
        default=7 * 24 * 3600, ge=60, description="How long an invitation stays valid, seconds."
    )
    signup_verify_email: bool = Field(
        default=False,
        description="With open signup: a new account stays inactive until its email is "
        "confirmed through a mailed link (POST /v1/auth/activate). Needs SMTP.",
    )
    activation_ttl_sec: int = Field(
        default=1800, ge=60, description="How long an activation link stays valid, seconds."
    )
    login_max_failures: int = Field(
        default=5,
        ge=1,
        description="Failed sign-ins for one account (from anywhere) before it is throttled: "
        "each further failure doubles the wait, from login_lockout_first_sec up to "
        "login_lockout_max_sec.",
    )
    login_max_failures_per_address: int = Field(
        default=20,
        ge=1,
        description="Failed sign-ins from one client address (for any accounts) before that "
        "address is throttled the same way.",
    )
    login_lockout_first_sec: float = Field(
        default=1.0, gt=0, description="The first wait a run of failed sign-ins imposes, seconds."
    )
    login_lockout_max_sec: int = Field(
        default=900,
        ge=1,
        description="Longest wait a run of failed sign-ins imposes, seconds; counts are "
        "forgotten after an hour without failures, and a successful sign-in clears the "
        "account's.",
    )

    @model_validator(mode="after")
    def _events_wakeup(self) -> Self:
        if self.events_wakeup == "redis" and not self.redis_url:
            raise ValueError("WRENN_EVENTS_WAKEUP=redis needs WRENN_REDIS_URL")
        if self.events_wakeup == "postgres" and self.effective_database_url.startswith("sqlite"):
            raise ValueError("WRENN_EVENTS_WAKEUP=postgres needs a PostgreSQL database")
        return self

    @property
    def effective_events_wakeup(self) -> Literal["postgres", "redis", "local"]:
        if self.events_wakeup != "auto":
            return self.events_wakeup
        if not self.effective_database_url.startswith("sqlite"):
            return "postgres"
        return "redis" if self.redis_url else "local"

    @property
    def effective_events_poll_interval(self) -> float:
        if self.events_poll_interval_sec is not None:
            return self.events_poll_interval_sec
        return 0.5 if self.effective_events_wakeup == "local" else 5.0

    @model_validator(mode="after")
    def _mail_settings(self) -> Self:
        if self.smtp_host and not (self.smtp_from and self.public_url):
            raise ValueError("WRENN_SMTP_HOST needs WRENN_SMTP_FROM and WRENN_PUBLIC_URL too")
        if self.signup_verify_email and not self.smtp_host:
            raise ValueError("WRENN_SIGNUP_VERIFY_EMAIL needs an SMTP server (WRENN_SMTP_HOST)")
        return self

    @field_validator("byoc_allowed_networks", "byoc_blocked_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
        return value

    @field_validator("proxy_domain")
    @classmethod
    def _proxy_domain(cls, value: str | None) -> str | None:
        """A host name with an optional port, compared with Host headers as written: a URL or a
        path would never match, so it is refused at start rather than ignored."""
        if value is None or not value.strip():
            return None
        domain = value.strip().lower()
        if not _PROXY_DOMAIN.fullmatch(domain):
            raise ValueError(
                f"WRENN_PROXY_DOMAIN must be a domain with an optional port, e.g. "
                f"preview.example.com or localhost:8080, not {value!r}"
            )
        return domain.replace(".:", ":").rstrip(".")

    def tenant_address_policy(self) -> TenantAddressPolicy:
        """Where BYOC hosts may be reached (see addresses.py)."""
        return TenantAddressPolicy.of(self.byoc_allowed_networks, self.byoc_blocked_networks)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'wrenn.db'}"

    @property
    def jwt_secret_path(self) -> Path:
        return self.data_dir / JWT_SECRET_FILE

    def resolve_jwt_secret(self) -> str:
        """The key that signs user JWTs; raises `InsecureConfiguration` rather than default it."""
        configured = self.jwt_secret.get_secret_value()
        if configured != DEFAULT_JWT_SECRET:
            if len(configured) < 32:
                raise InsecureConfiguration("WRENN_JWT_SECRET must be at least 32 characters")
            return configured
        if self.jwt_secret_path.is_file():
            generated = self.jwt_secret_path.read_text().strip()
            if generated:
                return generated
        if self.dev_mode:
            return DEFAULT_JWT_SECRET
        raise InsecureConfiguration(
            "refusing to start with the default JWT secret: set WRENN_JWT_SECRET, generate one "
            f"into {self.jwt_secret_path} (wrenn up does), or set WRENN_DEV_MODE=1"
        )


def ensure_jwt_secret(settings: Settings) -> Path:
    """Generate a random JWT secret into the data dir (0600) unless one is there already."""
    path = settings.jwt_secret_path
    if path.is_file() and path.read_text().strip():
        return path
    private_dir(path.parent)
    # Written whole to a private temp file, then hard-linked into place: the link fails if another
    # process won the race, and a crash never leaves a half-written secret behind.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
