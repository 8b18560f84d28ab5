"""Contexts (one Jupyter kernel each, started with jupyter_client) and running code in them, with
the output as the lines of E2B's code interpreter protocol: stdout, stderr, result (a MIME
bundle), error, number_of_executions; keepalive while nothing happens.

Runs in the capsule on the template's python3 (Debian's jupyter_client), like server.py."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from jupyter_client.multikernelmanager import AsyncMultiKernelManager

# The languages a context may have and the kernelspec each runs on (the code runner's).
KERNELS = {"python": "wrenn"}
MAX_CONTEXTS = 16
KEEPALIVE_SEC = 5.0
POLL_SEC = 1.0  # how soon a restart, a removal or a dead kernel ends an execution
READY_TIMEOUT_SEC = 120.0
INTERRUPT_WAIT_SEC = 10.0
# A kernel's MIME types as E2B's result fields; what is left goes to `extra`.
MIME_FIELDS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",
}

# The capsule's default environment (a create's or resume's envs), written by envd's /init
# (wrenn_server.envd.environment_file): the kernels start with the capsule, before it is set.
SANDBOX_ENV_FILE = "/run/wrenn/environment.json"

# Run in each new kernel: matplotlib figures also display as E2B's `e2b/chart` (charts.py,
# imported from where this package is installed; the kernel's sys.path is left as it was).
_CHARTS = (
    "import sys as __wrenn_sys\n"
    f"__wrenn_sys.path.append({os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})\n"
    "try:\n"
    "    from codeinterp import charts as __wrenn_charts\n"
    "    __wrenn_charts.register(get_ipython())\n"
    "    del __wrenn_charts\n"
    "except ImportError:\n"
    "    pass  # no matplotlib: no charts, nothing else changes\n"
    "finally:\n"
    "    __wrenn_sys.path.pop()\n"
    "    del __wrenn_sys\n"
)

Line = dict[str, Any]

log = logging.getLogger("wrenn-code-interpreter")


class RequestError(Exception):
    """A request that cannot be served: `status` and a plain-text message (as E2B's server)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def normalize_language(language: str | None) -> str:
    return (language or "python").strip().lower()


def result_line(data: dict[str, Any], main: bool) -> Line:
    """A display_data or execute_result bundle as E2B's result: known types as fields (text
    without the quotes of a string's repr), the rest in `extra`."""
    rest = dict(data)
    line: Line = {"type": "result", "is_main_result": main}
    for mime, field in MIME_FIELDS.items():
        value = rest.pop(mime, None)
        if value is None:
            continue
        if field == "text" and isinstance(value, str) and len(value) >= 2:
            if value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
        line[field] = value
    line["extra"] = rest
    return line


def _timestamp(header: dict[str, Any]) -> str | None:
    date = header.get("date")
    if date is None:
        return None
    return date.isoformat() if hasattr(date, "isoformat") else str(date)


def _env_snippets(env: dict[str, str]) -> tuple[str, str]:
    """Python that sets `env` in the kernel's process, and Python that puts back what was there."""
    encoded = repr(json.dumps(env))
    apply = (
        "import os as __wrenn_os, json as __wrenn_json\n"
        f"__wrenn_env = __wrenn_json.loads({encoded})\n"
        "__wrenn_saved = {k: __wrenn_os.environ.get(k) for k in __wrenn_env}\n"
        "__wrenn_os.environ.update(__wrenn_env)\n"
    )
    restore = (
        "for __wrenn_k, __wrenn_v in __wrenn_saved.items():\n"
        "    if __wrenn_v is None:\n"
        "        __wrenn_os.environ.pop(__wrenn_k, None)\n"
        "    else:\n"
        "        __wrenn_os.environ[__wrenn_k] = __wrenn_v\n"
        "del __wrenn_env, __wrenn_saved\n"
    )
    return apply, restore


def _sync_snippet(wanted: dict[str, str], applied: dict[str, str]) -> str:
    """Python that makes the kernel's environment hold `wanted` where it held `applied`."""
    gone = [name for name in applied if name not in wanted]
    return (
        "import os as __wrenn_os, json as __wrenn_json\n"
        f"__wrenn_os.environ.update(__wrenn_json.loads({json.dumps(wanted)!r}))\n"
        f"for __wrenn_k in __wrenn_json.loads({json.dumps(gone)!r}):\n"
        "    __wrenn_os.environ.pop(__wrenn_k, None)\n"
    )


class SandboxEnvironment:
    """The capsule's default environment as envd last wrote it, re-read when the file changes
    (a resume or a snapshot's create may set it again)."""

    def __init__(self, path: str = SANDBOX_ENV_FILE) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._env: dict[str, str] = {}

    def current(self) -> dict[str, str]:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return self._env  # none set yet (or never: a capsule without envs)
        if (stat.st_mtime_ns, stat.st_ino) != self._seen:
            try:
                with open(self.path, encoding="utf-8") as f:
                    value = json.load(f)
            except (OSError, ValueError):
                log.exception("could not read the sandbox's environment")
                return self._env
            if isinstance(value, dict):
                self._env = {str(k): str(v) for k, v in value.items()}
            self._seen = (stat.st_mtime_ns, stat.st_ino)
        return self._env


class Context:
    def __init__(self, context_id: str, language: str, cwd: str) -> None:
        self.id = context_id
        self.language = language
        self.cwd = cwd
        self.kernel_id = ""  # the Jupyter kernel running it now (a restart starts another)
        self.lock = asyncio.Lock()  # one execution at a time, as in a notebook
        self.client: Any = None
        self.generation = 0  # bumped by a restart or removal: a running execution ends
        self.running = ""  # the message id of the execution in progress
        self.sandbox_env: dict[str, str] = {}  # the capsule's environment its kernel holds

    def describe(self) -> dict[str, str]:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}


class Contexts:
    def __init__(self, default_cwd: str, environment: SandboxEnvironment | None = None) -> None:
        self.environment = environment or SandboxEnvironment()
        # Plain kernel managers, without jupyter_client's auto-restarter: a kernel that dies is
        # seen by the execution waiting on it, which reports it and starts another.
        self.kernels = AsyncMultiKernelManager(
            kernel_manager_class="jupyter_client.manager.AsyncKernelManager"
        )
        self.default_cwd = default_cwd
        self.by_id: dict[str, Context] = {}
        self.defaults: dict[str, str] = {}  # language -> its default context
        self._default_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    async def create(self, language: str | None, cwd: str | None) -> Context:
        language = normalize_language(language)
        if language not in KERNELS:
            known = ", ".join(sorted(KERNELS))
            raise RequestError(400, f"language {language!r} is not available here ({known})")
        cwd = cwd or self.default_cwd
        if not os.path.isdir(cwd):
            raise RequestError(400, f"cwd is not a directory: {cwd}")
        if len(self.by_id) >= MAX_CONTEXTS:
            raise RequestError(429, f"at most {MAX_CONTEXTS} contexts: remove one first")
        context = Context(str(uuid.uuid4()), language, cwd)
        await self._start(context)
        self.by_id[context.id] = context
        return context

    async def _start(self, context: Context) -> None:
        """A new kernel for the context (new ports: a dead kernel's may not be free yet)."""
        kernel = KERNELS[context.language]
        context.sandbox_env = {}  # a new kernel has the server's environment
        context.kernel_id = await self.kernels.start_kernel(kernel_name=kernel, cwd=context.cwd)
        try:
            client = self.kernels.get_kernel(context.kernel_id).client()
            client.start_channels()
            context.client = client
            await client.wait_for_ready(timeout=READY_TIMEOUT_SEC)
            await self._silent(context, _CHARTS)
        except BaseException:
            await self._shutdown(context)
            raise

    async def _shutdown(self, context: Context) -> None:
        if context.client is not None:
            context.client.stop_channels()
            context.client = None
        if context.kernel_id in self.kernels.list_kernel_ids():
            try:
                await self.kernels.shutdown_kernel(context.kernel_id, now=True)
            except Exception:
                log.exception("could not shut a kernel down")

    def get(self, context_id: str) -> Context:
        context = self.by_id.get(context_id)
        if context is None:
            raise RequestError(404, f"Context {context_id} not found")
        return context

    async def default(self, language: str | None) -> Context:
        """The language's default context, made when first needed (or after it was removed)."""
        language = normalize_language(language)
        async with self._default_lock:
            context_id = self.defaults.get(language)
            if context_id is not None and context_id in self.by_id:
                return self.by_id[context_id]
            context = await self.create(language, None)
            self.defaults[language] = context.id
            return context

    async def restart(self, context_id: str) -> None:
        await self._renew(self.get(context_id))

    async def _renew(self, context: Context) -> None:
        """A fresh kernel for the context, in its directory; an execution in progress ends."""
        context.generation += 1
        await self._shutdown(context)
        await self._start(context)

    async def remove(self, context_id: str) -> None:
        context = self.by_id.pop(self.get(context_id).id)
        context.generation += 1
        await self._shutdown(context)

    async def close(self) -> None:
        for context in list(self.by_id.values()):
            await self._shutdown(context)
        self.by_id.clear()

    # -- running code ------------------------------------------------------------------

    async def execute(
        self, context: Context, code: str, env: dict[str, str] | None
    ) -> AsyncGenerator[Line, None]:
        """The output lines of running `code`; if the caller stops reading (it went away), the
        kernel is interrupted so the next execution is not stuck behind this one."""
        async with context.lock:
            restore = None
            generation = context.generation
            sandbox_env = self.environment.current()
            if sandbox_env != context.sandbox_env:
                # First, so a call's own env_vars win and are restored to the sandbox's.
                await self._silent(context, _sync_snippet(sandbox_env, context.sandbox_env))
                context.sandbox_env = sandbox_env
            if env:
                apply, restore = _env_snippets(env)
                await self._silent(context, apply)
            done = False
            try:
                async for line in self._run(context, code):
                    yield line
                done = True
            finally:
                if not done and context.generation == generation:
                    await self._interrupt(context)
                # A restarted or removed kernel took the variables with it.
                if restore is not None and context.generation == generation:
                    await self._silent(context, restore)

    async def _run(self, context: Context, code: str) -> AsyncGenerator[Line, None]:
        generation = context.generation
        client = context.client
        msg_id = client.execute(code, store_history=True, allow_stdin=False, stop_on_error=True)
        context.running = msg_id
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while True:
            if context.generation != generation:  # restarted or removed meanwhile
                yield _error("ContextRestarting", "Context was restarted")
                return
            try:
                msg = await client.get_iopub_msg(timeout=POLL_SEC)
            except queue.Empty:
                if context.generation != generation:
                    continue  # said at the top
                if not await self.kernels.get_kernel(context.kernel_id).is_alive():
                    yield _error("KernelDied", "The context's kernel exited: it is restarted")
                    await self._renew(context)
                    return
                if loop.time() - quiet_since >= KEEPALIVE_SEC:
                    quiet_since = loop.time()
                    yield {"type": "keepalive"}
                continue
            except (Exception, asyncio.CancelledError):
                # Closing the channels (a restart or removal) cancels their poll: said above.
                # A cancellation of this task itself goes on.
                task = asyncio.current_task()
                if context.generation == generation or (task and task.cancelling()):
                    raise
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") in ("stdout", "stderr"):
                stamp = _timestamp(msg["header"])
                yield {"type": content["name"], "text": content["text"], "timestamp": stamp}
            elif kind in ("execute_result", "display_data"):
                yield result_line(content.get("data", {}), kind == "execute_result")
            elif kind == "error":
                yield _error(content["ename"], content["evalue"], "\n".join(content["traceback"]))
            elif kind == "execute_input":
                count = content.get("execution_count")
                yield {"type": "number_of_executions", "execution_count": count}
            elif kind == "status" and content.get("execution_state") == "idle":
                return

    async def _silent(self, context: Context, code: str) -> None:
        """Run `code` without history or output, to its end."""
        msg_id = context.client.execute(code, silent=True, store_history=False)
        await self._until_idle(context, msg_id, READY_TIMEOUT_SEC)

    async def _until_idle(self, context: Context, msg_id: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                msg = await context.client.get_iopub_msg(timeout=max(deadline - loop.time(), 0.01))
            except queue.Empty:
                return
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
                return

    async def _interrupt(self, context: Context) -> None:
        """Stop the execution in progress and wait until the kernel is idle again, so that the
        next one is neither queued behind it nor aborted with it."""
        if context.kernel_id not in self.kernels.list_kernel_ids():
            return
        await self.kernels.get_kernel(context.kernel_id).interrupt_kernel()
        await self._until_idle(context, context.running, INTERRUPT_WAIT_SEC)


def _error(name: str, value: str, traceback: str = "") -> Line:
    return {"type": "error", "name": name, "value": value, "traceback": traceback}
