"""Template build recipes: one step per line, parsed into typed steps before anything runs.

    RUN <shell command>      run with /bin/sh -c as the current user, in the current directory
    RUN --timeout=<d> <cmd>  the same, cut off after the duration (Go syntax: 90s, 5m, 1h30m);
                             without it a step may run for the build's step limit
    START <shell command>    start the command in the background (detached, as the current user,
                             in the current directory) and go on; with a healthcheck the template
                             is a snapshot holding it running
    ENV <KEY>=<value>        (or `ENV KEY value`) set for later steps and kept in the template
    COPY <src> <dst>         copy a file or directory of the uploaded archive to an absolute path,
                             owned by the current user
    USER <name>              create the user (home, passwordless sudo) and run later steps as it;
                             the last USER is the template's default user
    WORKDIR <path>           mkdir -p the absolute path; later steps run there

Blank lines and lines starting with `#` are ignored. Errors name the line.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from ..errors import BadRequest

DEFAULT_USER = "wrenn-user"
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_STEPS = 200
MAX_LINE = 8192
# A RUN step's own timeout is at most the build's step limit (jobs/build_steps.py).
MAX_RUN_TIMEOUT_SEC = 1800.0
_DURATION_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h)")
_UNIT_SEC = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0
}  # fmt: skip


@dataclass(frozen=True)
class Run:
    command: str
    # Platform steps (apt update/clean) run as root whatever the current user.
    as_root: bool = False
    # `RUN --timeout=`: seconds the step may take (None: the build's step limit).
    timeout_sec: float | None = None


@dataclass(frozen=True)
class Start:
    command: str


@dataclass(frozen=True)
class Env:
    key: str
    value: str


@dataclass(frozen=True)
class Copy:
    src: str  # normalized, relative to the archive root ("." for all of it)
    dst: str  # absolute


@dataclass(frozen=True)
class User:
    name: str


@dataclass(frozen=True)
class Workdir:
    path: str


Step = Run | Start | Env | Copy | User | Workdir


def describe(step: Step) -> str:
    """The step as a recipe line (for logs)."""
    match step:
        case Run(command, _, None):
            return f"RUN {command}"
        case Run(command, _, timeout):
            return f"RUN --timeout={timeout:g}s {command}"
        case Start(command):
            return f"START {command}"
        case Env(key, value):
            return f"ENV {key}={value}"
        case Copy(src, dst):
            return f"COPY {src} {dst}"
        case User(name):
            return f"USER {name}"
        case Workdir(path):
            return f"WORKDIR {path}"


def _absolute(path: str, what: str, n: int) -> str:
    if not path.startswith("/") or "\0" in path:
        raise BadRequest(f"line {n}: {what} must be an absolute path")
    return posixpath.normpath(path)


def archive_path(path: str) -> str | None:
    """A normalized path inside an archive, or None if it would leave it (absolute, `..`)."""
    if not path or "\0" in path or path.startswith("/"):
        return None
    normalized = posixpath.normpath(path)
    if normalized == ".." or normalized.startswith("../"):
        return None
    return normalized


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (`300ms`, `90s`, `5m`, `1h30m`, `1.5h`); ValueError if it is
    not one."""
    parts = _DURATION_RE.findall(text)
    if not text or "".join(parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    total = 0.0
    for part in parts:
        number = part.rstrip("nuµμmsh")
        total += float(number) * _UNIT_SEC[part[len(number) :]]
    return total


def _run(rest: str, n: int) -> Run:
    timeout: float | None = None
    if rest.startswith("--timeout="):
        flag, _, rest = rest.partition(" ")
        rest = rest.strip()
        value = flag.removeprefix("--timeout=")
        try:
            timeout = parse_duration(value)
        except ValueError:
            raise BadRequest(
                f"line {n}: RUN --timeout needs a duration such as 90s, 5m or 1h30m, "
                f"not {value[:40]!r}"
            ) from None
        if not 0 < timeout <= MAX_RUN_TIMEOUT_SEC:
            raise BadRequest(
                f"line {n}: RUN --timeout must be more than 0 and at most "
                f"{MAX_RUN_TIMEOUT_SEC / 60:.0f}m"
            )
    if not rest:
        raise BadRequest(f"line {n}: RUN needs a command")
    return Run(rest, timeout_sec=timeout)


def _step(keyword: str, rest: str, n: int) -> Step:
    match keyword:
        case "RUN":
            return _run(rest, n)
        case "START":
            if not rest:
                raise BadRequest(f"line {n}: START needs a command")
            return Start(rest)
        case "ENV":
            key, sep, value = rest.partition("=")
            if not sep:
                key, _, value = rest.partition(" ")
            key, value = key.strip(), value.strip()
            if not _ENV_KEY_RE.fullmatch(key):
                raise BadRequest(f"line {n}: ENV needs KEY=value with a valid variable name")
            return Env(key, value)
        case "COPY":
            parts = rest.split()
            if len(parts) != 2:
                raise BadRequest(f"line {n}: COPY needs a source and a destination")
            src = archive_path(parts[0])
            if src is None:
                raise BadRequest(f"line {n}: COPY source must stay inside the archive")
            return Copy(src, _absolute(parts[1], "COPY destination", n))
        case "USER":
            if not _USER_RE.fullmatch(rest):
                raise BadRequest(f"line {n}: USER needs a user name (lowercase, up to 32)")
            return User(rest)
        case "WORKDIR":
            return Workdir(_absolute(rest, "WORKDIR", n))
    raise BadRequest(
        f"line {n}: unknown instruction {keyword!r} (RUN, START, ENV, COPY, USER, WORKDIR)"
    )


def parse(lines: list[str]) -> list[Step]:
    steps: list[Step] = []
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > MAX_LINE:
            raise BadRequest(f"line {n}: longer than {MAX_LINE} characters")
        keyword, _, rest = line.partition(" ")
        steps.append(_step(keyword.upper(), rest.strip(), n))
    if len(steps) > MAX_STEPS:
        raise BadRequest(f"a recipe has at most {MAX_STEPS} steps")
    return steps


def plan(steps: list[Step], *, skip_pre_post: bool) -> list[Step]:
    """The steps a build runs: the default user first, apt's update and clean around the
    recipe unless skipped."""
    pre: list[Step] = []
    post: list[Step] = []
    if not skip_pre_post:
        pre.append(Run("apt-get update -q", as_root=True))
        post.append(Run("apt-get clean", as_root=True))
    return [*pre, User(DEFAULT_USER), *steps, *post]


@dataclass(frozen=True)
class Healthcheck:
    """A build's healthcheck: `[--interval=<d>] [--timeout=<d>] [--start-period=<d>]
    [--retries=<n>] <command>` (the Go system's syntax; a plain command takes the defaults).
    Failures within the start period do not count; retries 0 means until the build's limit."""

    command: str
    interval_sec: float = 1.0
    timeout_sec: float = 10.0
    start_period_sec: float = 0.0
    retries: int = 0


_HEALTHCHECK_FLAGS = {"--interval", "--timeout", "--start-period", "--retries"}
MAX_HEALTHCHECK_SEC = 600.0


def parse_healthcheck(text: str) -> Healthcheck:
    words = text.strip().split(" ")
    values: dict[str, str] = {}
    while words and words[0].startswith("--"):
        flag, sep, value = words.pop(0).partition("=")
        if flag not in _HEALTHCHECK_FLAGS or not sep:
            raise BadRequest(
                f"healthcheck: unknown flag {flag[:40]!r} (--interval=, --timeout=, "
                "--start-period=, --retries=)"
            )
        values[flag] = value
        while words and not words[0]:
            words.pop(0)
    command = " ".join(words).strip()
    if not command:
        raise BadRequest("healthcheck: a command is needed after the flags")
    durations: dict[str, float] = {}
    for flag in ("--interval", "--timeout", "--start-period"):
        if flag in values:
            try:
                durations[flag] = parse_duration(values[flag])
            except ValueError:
                raise BadRequest(f"healthcheck: {flag} needs a duration such as 5s") from None
            if durations[flag] > MAX_HEALTHCHECK_SEC:
                raise BadRequest(f"healthcheck: {flag} is at most {MAX_HEALTHCHECK_SEC:.0f}s")
    retries = values.get("--retries", "0")
    if not retries.isdigit() or int(retries) > 1000:
        raise BadRequest("healthcheck: --retries needs a whole number (at most 1000)")
    defaults = Healthcheck(command)
    return Healthcheck(
        command,
        interval_sec=durations.get("--interval", defaults.interval_sec),
        timeout_sec=max(durations.get("--timeout", defaults.timeout_sec), 1.0),
        start_period_sec=durations.get("--start-period", 0.0),
        retries=int(retries),
    )


def total_steps(
    lines: list[str], *, skip_pre_post: bool, start_cmd: str | None, healthcheck: str | None
) -> int:
    """Steps a build reports progress over: the plan, start, healthcheck, the template."""
    planned = plan(parse(lines), skip_pre_post=skip_pre_post)
    if healthcheck:
        parse_healthcheck(healthcheck)
    return len(planned) + bool(start_cmd) + bool(healthcheck) + 1
