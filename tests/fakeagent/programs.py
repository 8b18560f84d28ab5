"""The programs a fake capsule can run, and a small shell for `cmd` command lines.

Enough for orchestration tests: `echo`, `printf`, `cat` (stdin or files), `sleep`, `true`,
`false`, `exit N`, file commands (`mkdir -p`, `touch`, `rm -r`, `ls`, `test -f/-d/-e`,
`chmod`, `chown`), users (`id -u`, `useradd`, `whoami`), `pwd`, `env`, `stty size`, `nohup`,
`setsid`, `apt-get` (a no-op), and `sh`/`bash` (`-c SCRIPT`, or reading commands from stdin:
a terminal's shell).
The shell runs `;`, `&&`, `||` and `&` lists with `>`, `>>`, `2>&1` and `<` redirections and
`$NAME` expansion; an unknown command is `not found` (127), as in a real shell. Tests add their
own programs to `FakeHostAgent.programs`.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .errors import Refused
from .files import FileTree
from .processes import FakeProcess

DEV_NULL = "/dev/null"


@dataclass
class Run:
    """One command's view of its process: arguments, where its output goes, its stdin."""

    proc: FakeProcess
    argv: list[str]
    out: Callable[[bytes], None]
    err: Callable[[bytes], None]
    stdin: str | None = None  # a file to read instead of the process's stdin

    @property
    def files(self) -> FileTree:
        return self.proc.files

    def path(self, path: str) -> str:
        return _resolve(self.proc, path)

    def fail(self, message: str, status: int = 1) -> int:
        self.err(f"{self.argv[0]}: {message}\n".encode())
        return status

    async def read(self) -> bytes | None:
        if self.stdin is None:
            return await self.proc.read()
        if self.stdin == DEV_NULL:
            return None
        data, self.stdin = self.files.read(self.stdin), DEV_NULL
        return data


Program = Callable[[Run], Awaitable[int]]


async def _true(run: Run) -> int:
    return 0


async def _false(run: Run) -> int:
    return 1


async def _exit(run: Run) -> int:
    return int(run.argv[1]) if len(run.argv) > 1 else 0


async def _echo(run: Run) -> int:
    args = run.argv[1:]
    newline = not (args and args[0] == "-n")
    text = " ".join(args[0 if newline else 1 :])
    run.out((text + ("\n" if newline else "")).encode())
    return 0


async def _printf(run: Run) -> int:
    fmt = run.argv[1].replace("\\n", "\n") if len(run.argv) > 1 else ""
    args = iter(run.argv[2:])
    run.out(re.sub("%s", lambda _m: next(args, ""), fmt).encode())
    return 0


async def _cat(run: Run) -> int:
    if len(run.argv) == 1:
        while (data := await run.read()) is not None:
            run.out(data)
        return 0
    for name in run.argv[1:]:
        try:
            run.out(run.files.read(run.path(name)))
        except Refused as e:
            return run.fail(e.message)
    return 0


async def _sleep(run: Run) -> int:
    await asyncio.sleep(float(run.argv[1]) if len(run.argv) > 1 else 0)
    return 0


def _operands(run: Run) -> list[str]:
    return [a for a in run.argv[1:] if not a.startswith("-")]


async def _mkdir(run: Run) -> int:
    for name in _operands(run):
        try:
            run.files.make_dirs(run.path(name), run.proc.spec.user)
        except Refused as e:
            return run.fail(e.message)
    return 0


async def _touch(run: Run) -> int:
    for name in _operands(run):
        path = run.path(name)
        if path not in run.files.nodes:
            try:
                run.files.write(path, b"", run.proc.spec.user)
            except Refused as e:
                return run.fail(e.message)
    return 0


async def _rm(run: Run) -> int:
    force = any(a.startswith("-") and "f" in a for a in run.argv[1:])
    for name in _operands(run):
        try:
            run.files.remove(run.path(name))
        except Refused as e:
            if not force:
                return run.fail(e.message)
    return 0


async def _ls(run: Run) -> int:
    for name in _operands(run) or ["."]:
        path = run.path(name)
        try:
            listing = run.files.list(path, 1, 1 << 30, "")
        except Refused as e:
            return run.fail(e.message, 2)
        run.out("".join(f"{e.name}\n" for e in listing.entries).encode())
    return 0


async def _test(run: Run) -> int:
    args = [a for a in run.argv[1:] if a != "]"]
    if len(args) != 2 or args[0] not in ("-e", "-f", "-d"):
        return 2
    node = run.files.nodes.get(run.path(args[1]))
    if node is None:
        return 1
    return 0 if args[0] == "-e" or (node.kind == "dir") == (args[0] == "-d") else 1


async def _exists(run: Run) -> int:
    """chmod, chown: nothing to change in memory, but the files must be there."""
    for name in _operands(run)[1:]:
        if run.path(name) not in run.files.nodes:
            return run.fail(f"cannot access '{name}': No such file or directory")
    return 0


async def _id(run: Run) -> int:
    names = _operands(run) or [run.proc.spec.user or "root"]
    if names[0] not in run.proc.users:
        return run.fail(f"'{names[0]}': no such user")
    uid = 0 if names[0] == "root" else 1000 + sorted(run.proc.users).index(names[0])
    run.out(f"{uid}\n".encode())
    return 0


async def _useradd(run: Run) -> int:
    name = run.argv[-1]
    if name in run.proc.users:
        return run.fail(f"user '{name}' already exists", 9)
    run.proc.users.add(name)
    run.files.make_dirs(f"/home/{name}", name)
    return 0


async def _whoami(run: Run) -> int:
    run.out(f"{run.proc.spec.user or 'root'}\n".encode())
    return 0


async def _pwd(run: Run) -> int:
    run.out(f"{run.proc.spec.cwd or '/'}\n".encode())
    return 0


async def _env(run: Run) -> int:
    run.out("".join(f"{k}={v}\n" for k, v in sorted(run.proc.spec.env.items())).encode())
    return 0


async def _stty(run: Run) -> int:
    if run.proc.size is None:
        return run.fail("'standard input': Inappropriate ioctl for device")
    cols, rows = run.proc.size
    run.out(f"{rows} {cols}\n".encode())
    return 0


async def _exec_rest(run: Run) -> int:
    """nohup, setsid: run the rest of the command line."""
    return await command(run.proc, run.argv[1:], run.out, run.err, run.stdin)


async def _sh(run: Run) -> int:
    args = run.argv[1:]
    if args and args[0] in ("-l", "--login"):  # a login shell (E2B's SDKs run `bash -l -c`)
        args = args[1:]
    if args and args[0] == "-c":
        return await script(run.proc, args[1] if len(args) > 1 else "", run.out, run.err)
    status = 0
    prompt = b"$ " if run.proc.spec.pty is not None else b""
    run.out(prompt)
    while (line := await run.proc.readline()) is not None:
        text = line.decode(errors="replace").strip()
        if text == "exit" or text.startswith("exit "):
            return int(text.split()[1]) if " " in text else status
        if text:
            status = await script(run.proc, text, run.out, run.err)
        run.out(prompt)
    return status


PROGRAMS: dict[str, Program] = {
    "true": _true,
    "false": _false,
    "exit": _exit,
    "echo": _echo,
    "printf": _printf,
    "cat": _cat,
    "sleep": _sleep,
    "mkdir": _mkdir,
    "touch": _touch,
    "rm": _rm,
    "ls": _ls,
    "test": _test,
    "[": _test,
    "chmod": _exists,
    "chown": _exists,
    "id": _id,
    "useradd": _useradd,
    "whoami": _whoami,
    "pwd": _pwd,
    "env": _env,
    "stty": _stty,
    "nohup": _exec_rest,
    "setsid": _exec_rest,
    "sh": _sh,
    "bash": _sh,
    # The base image's package manager, as template builds run it (update, clean): no-ops.
    "apt-get": _true,
}


def program_of(proc: FakeProcess, name: str) -> Program | None:
    program: Program | None = proc.programs.get(posixpath.basename(name))
    return program


async def command(
    proc: FakeProcess,
    argv: list[str],
    out: Callable[[bytes], None],
    err: Callable[[bytes], None],
    stdin: str | None = None,
) -> int:
    if not argv:
        return 0
    program = program_of(proc, argv[0])
    if program is None:
        err(f"sh: 1: {argv[0]}: not found\n".encode())
        return 127
    return await program(Run(proc, argv, out, err, stdin))


_OPERATORS = (";", "&&", "||", "&")
_VAR = re.compile(r"\$(\w+|\{\w+\})")


def _expand(word: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1).strip("{}"), ""), word)


def _split(line: str) -> list[tuple[list[str], str]]:
    """`a && b || c & d` as [(words, the operator after them), ...]."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    commands: list[tuple[list[str], str]] = []
    words: list[str] = []
    for token in lexer:
        if token in _OPERATORS:
            commands.append((words, token))
            words = []
        else:
            words.append(token)
    if words:
        commands.append((words, ";"))
    return commands


async def script(
    proc: FakeProcess, line: str, out: Callable[[bytes], None], err: Callable[[bytes], None]
) -> int:
    status = 0
    previous = ";"
    for words, operator in _split(line):
        runs = previous in (";", "&") or (previous == "&&") == (status == 0)
        previous = operator
        if not runs:
            continue
        argv, c_out, c_err, stdin = _redirect(proc, words, out, err)
        if operator == "&":
            proc.spawn(command(proc, argv, c_out, c_err, stdin))
            status = 0
        else:
            status = await command(proc, argv, c_out, c_err, stdin)
    return status


def _redirect(
    proc: FakeProcess,
    words: list[str],
    out: Callable[[bytes], None],
    err: Callable[[bytes], None],
) -> tuple[list[str], Callable[[bytes], None], Callable[[bytes], None], str | None]:
    argv: list[str] = []
    stdin: str | None = None
    i = 0
    while i < len(words):
        word = words[i]
        fd = 1
        if word == "2" and i + 1 < len(words) and words[i + 1].startswith(">"):
            fd, i = 2, i + 1
            word = words[i]
        target = words[i + 1] if i + 1 < len(words) else ""
        if word in (">", ">>"):
            sink = _sink(proc, target, append=word == ">>")
            out, err = (sink, err) if fd == 1 else (out, sink)
            i += 2
        elif word == ">&" and target in ("1", "2"):
            out, err = (err, err) if (fd, target) == (1, "2") else (out, out)
            i += 2
        elif word == "<":
            stdin = _resolve(proc, target)
            i += 2
        else:
            argv.append(_expand(word, proc.spec.env))
            i += 1
    return argv, out, err, stdin


def _resolve(proc: FakeProcess, path: str) -> str:
    """A path a command names: relative ones start at its working directory, else at home."""
    if path and not path.startswith("/") and proc.spec.cwd:
        path = posixpath.join(proc.spec.cwd, path)
    return FileTree.resolve(path, proc.spec.user)


def _sink(proc: FakeProcess, target: str, *, append: bool) -> Callable[[bytes], None]:
    path = _resolve(proc, target)
    if path == DEV_NULL:
        return lambda data: None
    if not append:
        proc.files.write(path, b"", proc.spec.user)
    return lambda data: proc.files.append(path, data, proc.spec.user)


async def main(proc: FakeProcess) -> int:
    """What a process runs: its command line through the shell, or its argv directly."""
    return await command(proc, proc.spec.argv, _out(proc, "stdout"), _out(proc, "stderr"))


def _out(proc: FakeProcess, kind: str) -> Callable[[bytes], None]:
    return lambda data: proc.emit(kind, data)
