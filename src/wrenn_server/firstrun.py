"""First start of a single box: an admin account and its team, added straight to the control
plane's database (signup is closed by default, so nobody else can take the first account), then
an API key made through the REST API with the admin's login; all saved to
<data dir>/credentials.json (0600)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from .controlplane import provision
from .controlplane.settings import Settings


@dataclass
class Credentials:
    api_url: str
    email: str
    password: str
    api_key: str
    team_id: str
    # `{port}-{capsule_id}.<proxy_domain>` reaches a port of a capsule; files written before
    # the port proxy existed lack it (`wrenn up` fills it in).
    proxy_domain: str = ""
    # What the stock `e2b` SDK is pointed at (E2B_API_URL, E2B_SANDBOX_URL): `api_url` and
    # `sandbox_url`, both this control plane (in-sandbox calls go to it with E2B's headers).
    e2b: dict[str, str] = field(default_factory=dict)


def load(path: Path) -> Credentials | None:
    try:
        return Credentials(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def create_admin(
    api_url: str, path: Path, settings: Settings, email: str = "admin@wrenn.local"
) -> Credentials:
    """The platform admin of a new single box, in the database `settings` name (the running
    control plane's), with an API key."""
    password = secrets.token_urlsafe(18)
    asyncio.run(
        provision.create_user(settings, email=email, name="Admin", password=password, is_admin=True)
    )
    with httpx.Client(base_url=api_url, timeout=30, trust_env=False) as http:
        login = http.post("/v1/auth/login", json={"email": email, "password": password})
        login.raise_for_status()
        signed_in = login.json()
        headers = {"Authorization": f"Bearer {signed_in['token']}"}
        key = http.post("/v1/api-keys", json={"name": "wrenn up"}, headers=headers)
        key.raise_for_status()
    creds = Credentials(
        api_url=api_url,
        email=email,
        password=password,
        api_key=key.json()["key"],
        team_id=signed_in.get("team_id", ""),
    )
    save(path, creds)
    return creds


def e2b_urls(api_url: str) -> dict[str, str]:
    """What the E2B SDK's environment points at: this control plane, for both its API and the
    in-sandbox calls."""
    return {"api_url": api_url, "sandbox_url": api_url}


def save(path: Path, creds: Credentials) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(creds), f, indent=2)
    tmp.replace(path)


def banner(creds: Credentials, path: Path) -> str:
    return f"""
Wrenn is running.

  dashboard    {creds.api_url}/    (sign in as the admin below; signup is closed:
                                     add people under Admin area > Users)
  API          {creds.api_url}/v1  (Swagger UI: {creds.api_url}/docs)
  admin        {creds.email} / {creds.password}
  API key      {creds.api_key}
  port proxy   http://<port>-<capsule id>.{creds.proxy_domain}/ reaches a port of a capsule
               (the SDK's capsule.get_url(port); send the API key as X-API-Key)
  saved in     {path} (mode 0600)

Try it with the Python SDK (pip install wrenn):

  export WRENN_BASE_URL={creds.api_url} WRENN_API_KEY={creds.api_key}{_sdk_proxy_domain(creds)}
  python3 -c "from wrenn import Capsule
  with Capsule() as c: print(c.commands.run('echo hello from a capsule').stdout)"

Or with E2B's SDK (pip install e2b), unchanged:

  export E2B_API_KEY={creds.api_key} E2B_API_URL={creds.e2b.get("api_url", creds.api_url)} \\
    E2B_SANDBOX_URL={creds.e2b.get("sandbox_url", creds.api_url)}
  python3 -c "from e2b import Sandbox
  with Sandbox.create() as s: print(s.commands.run('echo hello from E2B').stdout)"

Ctrl-C stops everything.
"""


def _sdk_proxy_domain(creds: Credentials) -> str:
    """The SDK takes the proxy domain from WRENN_PROXY_DOMAIN, else from the base URL's host and
    port: the variable is printed only when that would not give ours."""
    if creds.proxy_domain == httpx.URL(creds.api_url).netloc.decode():
        return ""
    return f" WRENN_PROXY_DOMAIN={creds.proxy_domain}"
