"""Client of the in-capsule agent (envd, see docs/envd-api.md), one per running capsule."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from . import errors

_ERRORS: dict[str, type[errors.AgentError]] = {
    "invalid_argument": errors.InvalidArgument,
    "not_found": errors.NotFound,
    "already_exists": errors.AlreadyExists,
    "permission_denied": errors.PermissionDenied,
    "resource_exhausted": errors.ResourceExhausted,
}

Event = dict[str, Any]


class EnvdClient:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.base_url = f"http://{host}:{port}"
        # trust_env=False: a proxy set in the agent's environment must never see capsule traffic.
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=16, keepalive_expiry=60),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def set_token(self, token: str) -> None:
        self._http.headers["Authorization"] = f"Bearer {token}"

    # -- plumbing --------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = await self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise errors.Unavailable("capsule agent is not reachable") from e
        if resp.status_code >= 400:
            _raise_for(resp.status_code, resp.content)
        return resp

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = await self._request(method, path, **kw)
        return resp.json() if resp.content else None

    # -- health and defaults ---------------------------------------------------------------

    async def wait_ready(self, timeout: float) -> None:
        """Poll /health until envd answers; it needs a few hundred ms after the sandbox starts."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                resp = await self._http.get("/health", timeout=2.0)
                if resp.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise errors.Timeout("capsule agent did not start in time")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", "/health", timeout=5.0)
        return result

    async def init(
        self,
        default_user: str | None = None,
        env: dict[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        body = {"default_user": default_user or None, "env": env or None, "token": token}
        await self._request("POST", "/init", json=body)

    async def prepare_snapshot(self) -> None:
        await self._request("POST", "/snapshot/prepare", timeout=120.0)

    # -- processes -------------------------------------------------------------------------

    async def start_process(self, spec: dict[str, Any]) -> AsyncIterator[Event]:
        """Start a process and stream its events: start, stdout/stderr (bytes), exit."""
        async for ev in self._stream("POST", "/processes", json=spec):
            yield ev

    async def connect(self, pid: int) -> AsyncIterator[Event]:
        async for ev in self._stream("GET", f"/processes/{pid}/stream"):
            yield ev

    async def _stream(self, method: str, path: str, **kw: Any) -> AsyncIterator[Event]:
        timeout = httpx.Timeout(None, connect=5.0)
        try:
            async with self._http.stream(method, path, timeout=timeout, **kw) as resp:
                if resp.status_code >= 400:
                    _raise_for(resp.status_code, await resp.aread())
                async for line in resp.aiter_lines():
                    if not line:
                        continue
                    ev: Event = json.loads(line)
                    if ev.get("type") in ("stdout", "stderr"):
                        ev["data"] = base64.b64decode(ev["data"])
                    yield ev
        except httpx.TransportError as e:
            raise errors.Unavailable("capsule agent is not reachable") from e

    async def list_processes(self) -> list[dict[str, Any]]:
        data = await self._json("GET", "/processes")
        procs: list[dict[str, Any]] = data["processes"]
        return procs

    async def send_stdin(self, pid: int, data: bytes) -> None:
        await self._request("POST", f"/processes/{pid}/stdin", content=data)

    async def close_stdin(self, pid: int) -> None:
        await self._request("POST", f"/processes/{pid}/stdin/close")

    async def signal(self, pid: int, signal: int) -> None:
        await self._request("POST", f"/processes/{pid}/signal", json={"signal": signal})

    async def resize(self, pid: int, cols: int, rows: int) -> None:
        await self._request("POST", f"/processes/{pid}/resize", json={"cols": cols, "rows": rows})

    # -- files -----------------------------------------------------------------------------

    async def read_file(self, path: str, user: str | None = None) -> AsyncIterator[bytes]:
        params = _params(path=path, user=user)
        try:
            async with self._http.stream(
                "GET", "/files", params=params, timeout=httpx.Timeout(None, connect=5.0)
            ) as resp:
                if resp.status_code >= 400:
                    _raise_for(resp.status_code, await resp.aread())
                async for chunk in resp.aiter_bytes(256 * 1024):
                    yield chunk
        except httpx.TransportError as e:
            raise errors.Unavailable("capsule agent is not reachable") from e

    async def write_file(
        self,
        path: str,
        body: bytes | AsyncIterator[bytes],
        user: str | None = None,
        mode: int | None = None,
    ) -> dict[str, Any]:
        params = _params(path=path, user=user, mode=f"{mode:o}" if mode else None)
        entry: dict[str, Any] = await self._json(
            "PUT", "/files", params=params, content=body, timeout=httpx.Timeout(None, connect=5.0)
        )
        return entry

    async def list_dir(self, path: str, depth: int = 1, user: str | None = None) -> list[Any]:
        data = await self._json(
            "GET", "/fs/list", params=_params(path=path, depth=depth, user=user)
        )
        entries: list[Any] = data["entries"]
        return entries

    async def stat(self, path: str, user: str | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = await self._json(
            "GET", "/fs/stat", params=_params(path=path, user=user)
        )
        return entry

    async def mkdir(self, path: str, user: str | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = await self._json(
            "POST", "/fs/mkdir", json={"path": path, "user": user}
        )
        return entry

    async def move(self, source: str, destination: str, user: str | None = None) -> dict[str, Any]:
        body = {"source": source, "destination": destination, "user": user}
        entry: dict[str, Any] = await self._json("POST", "/fs/move", json=body)
        return entry

    async def remove(self, path: str, user: str | None = None) -> None:
        await self._request("POST", "/fs/remove", json={"path": path, "user": user})


def _params(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v not in (None, "")}


def _raise_for(status: int, body: bytes) -> None:
    try:
        err = json.loads(body)["error"]
        code, message = err["code"], str(err["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "", ""
    if status == 409 and code != "already_exists":
        raise errors.InvalidState(message or "conflict")
    cls = _ERRORS.get(code)
    if cls is None:
        raise errors.Internal("capsule agent error")
    raise cls(message)
