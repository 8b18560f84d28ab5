"""E2B's code interpreter API on port 49999, what `e2b_code_interpreter.Sandbox` calls:

- `POST /execute` `{"code", "context_id"?, "language"?, "env_vars"?}`: the execution's output as
  JSON lines (stdout, stderr, result, error, number_of_executions, keepalive), then
  `{"type": "end_of_execution"}`;
- `POST /contexts` `{"language"?, "cwd"?}`, `GET /contexts`, `DELETE /contexts/{id}`,
  `POST /contexts/{id}/restart`;
- `GET /health` (200 once the default Python context is up, 503 before).

Errors are plain text with their status, as E2B's server answers them (the SDK reads 404 as
NotFoundException). Runs inside the capsule on the template's python3 with Debian's tornado and
jupyter_client, listening on the capsule's loopback only: the port proxy reaches it through envd,
authenticated; nothing else outside the capsule can.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from typing import Any

from tornado import httpserver, web
from tornado.iostream import StreamClosedError

from .kernels import Context, Contexts, RequestError

PORT = 49999
ADDRESS = "127.0.0.1"
MAX_BODY = 16 << 20
END = b'{"type": "end_of_execution"}\n'

log = logging.getLogger("wrenn-code-interpreter")


class Handler(web.RequestHandler):  # type: ignore[misc]
    @property
    def contexts(self) -> Contexts:
        contexts: Contexts = self.application.settings["contexts"]
        return contexts

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(message)

    def body_json(self) -> dict[str, Any]:
        if not self.request.body.strip():
            return {}
        try:
            value = json.loads(self.request.body)
        except ValueError:
            raise RequestError(400, "the request body is not valid JSON") from None
        if not isinstance(value, dict):
            raise RequestError(400, "the request body must be a JSON object")
        return value

    def send_json(self, value: object) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(self._reason)


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise RequestError(400, f"{name} must be a string")
    return value


class Health(Handler):
    def get(self) -> None:
        if not self.application.settings["ready"].is_set():
            self.fail(503, "starting")
            return
        self.finish("OK")


class Execute(Handler):
    gone = False

    async def post(self) -> None:
        try:
            body = self.body_json()
            code = body.get("code")
            if not isinstance(code, str):
                raise RequestError(400, "code must be a string")
            context_id = _optional_text(body, "context_id")
            language = _optional_text(body, "language")
            env = body.get("env_vars")
            if env is not None and not (
                isinstance(env, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
            ):
                raise RequestError(400, "env_vars must map names to strings")
            if context_id and language:
                raise RequestError(400, "Only one of context_id or language can be provided")
            context = await self._context(context_id, language)
        except RequestError as exc:
            self.fail(exc.status, exc.message)
            return
        self.set_header("Content-Type", "application/x-ndjson")
        await self._stream(context, code, env)

    async def _context(self, context_id: str | None, language: str | None) -> Context:
        if context_id:
            return self.contexts.get(context_id)
        return await self.contexts.default(language)

    async def _stream(self, context: Context, code: str, env: dict[str, str] | None) -> None:
        lines = self.contexts.execute(context, code, env)
        try:
            async for line in lines:
                if self.gone:
                    break
                self.write(json.dumps(line).encode() + b"\n")
                await self.flush()
            else:
                self.write(END)
                self.finish()
        except StreamClosedError:
            pass  # the client went: closing the lines interrupts the kernel
        except Exception as exc:
            # Mid-stream the status is sent already: the caller learns it from an error line.
            log.exception("execution failed")
            error = {"type": "error", "name": "ServerError", "value": str(exc), "traceback": ""}
            self.write(json.dumps(error).encode() + b"\n" + END)
            self.finish()
        finally:
            await lines.aclose()

    def on_connection_close(self) -> None:
        self.gone = True


class ContextList(Handler):
    async def post(self) -> None:
        try:
            body = self.body_json()
            language, cwd = _optional_text(body, "language"), _optional_text(body, "cwd")
            context = await self.contexts.create(language, cwd)
        except RequestError as exc:
            self.fail(exc.status, exc.message)
            return
        self.send_json(context.describe())

    def get(self) -> None:
        self.send_json([c.describe() for c in self.contexts.by_id.values()])


class ContextItem(Handler):
    async def delete(self, context_id: str) -> None:
        try:
            await self.contexts.remove(context_id)
        except RequestError as exc:
            self.fail(exc.status, exc.message)
            return
        self.send_json(None)


class ContextRestart(Handler):
    async def post(self, context_id: str) -> None:
        try:
            await self.contexts.restart(context_id)
        except RequestError as exc:
            self.fail(exc.status, exc.message)
            return
        self.send_json(None)


def application(contexts: Contexts, ready: asyncio.Event) -> web.Application:
    return web.Application(
        [
            (r"/health", Health),
            (r"/execute", Execute),
            (r"/contexts", ContextList),
            (r"/contexts/([0-9a-f-]{1,64})", ContextItem),
            (r"/contexts/([0-9a-f-]{1,64})/restart", ContextRestart),
        ],
        contexts=contexts,
        ready=ready,
    )


async def serve(port: int = PORT, address: str = ADDRESS) -> None:
    contexts = Contexts(os.environ.get("HOME") or "/")
    ready = asyncio.Event()
    server = httpserver.HTTPServer(application(contexts, ready), max_body_size=MAX_BODY)
    server.listen(port, address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        # The default Python context is started before the server reports healthy, so the
        # capsule's first run_code does not wait for a kernel.
        await contexts.default("python")
        ready.set()
        log.info("code interpreter ready on %s:%d", address, port)
        await stop.wait()
    finally:
        server.stop()
        await contexts.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve())


if __name__ == "__main__":
    main()
