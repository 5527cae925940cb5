"""Asking a route's command prefix what it can run, before anything is scheduled on it.

For a `manage.py` prefix that is `<prefix> help --commands`, run as a task would be (the
route's cwd, the environment with its env_file and env, no shell, stdin /dev/null, its own
process group) with a timeout. The answer is either the set of commands or the reason there
is none: a probe that cannot run must not pass for a command that is missing, or the other
way round. The reporting (which route, which key path) is the caller's."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from syncd.config.commands import manage_py_split
from syncd.config.model import Route
from syncd.pool.envfile import SpawnError, build_env
from syncd.pool.runner import _spawn_message

PROBE_TIMEOUT_SECONDS = 60.0
MAX_OUTPUT_BYTES = 1 << 20  # a command list is a few KiB; more means it is not one
COMMAND_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# What `manage.py help --commands` lists when the project's settings did not load (Django
# 3.2 to 5.2): Django then says nothing about it, so the probe has to notice.
DJANGO_CORE_COMMANDS = frozenset({
    "check", "compilemessages", "createcachetable", "dbshell", "diffsettings", "dumpdata",
    "flush", "inspectdb", "loaddata", "makemessages", "makemigrations", "migrate",
    "optimizemigration", "runserver", "sendtestemail", "shell", "showmigrations", "sqlflush",
    "sqlmigrate", "sqlsequencereset", "squashmigrations", "startapp", "startproject", "test",
    "testserver",
})  # fmt: skip


@dataclass(frozen=True)
class ProbeKey:
    """One distinct question: routes that agree on all of this get the same answer."""

    prefix: tuple[str, ...]  # the argv through manage.py
    cwd: Path | None
    env: tuple[tuple[str, str], ...]
    env_file: Path | None

    @classmethod
    def of(cls, route: Route) -> tuple[ProbeKey, str] | None:
        """(the question for this route, the command it needs), or None for a route that
        runs no management command."""
        split = manage_py_split(route.argv)
        if split is None:
            return None
        prefix, command = split
        env = tuple(sorted(route.env.items()))
        return cls(prefix, route.cwd, env, route.env_file), command

    @property
    def argv(self) -> list[str]:
        return [*self.prefix, "help", "--commands"]


@dataclass(frozen=True)
class Listing:
    """The commands a prefix listed, or why it could not answer (`error`)."""

    commands: frozenset[str] = frozenset()
    error: str | None = None

    @property
    def core_only(self) -> bool:
        """Only Django's own commands: the project's settings did not load."""
        return self.error is None and self.commands <= DJANGO_CORE_COMMANDS


def list_commands(
    key: ProbeKey, base_env: Mapping[str, str], timeout: float = PROBE_TIMEOUT_SECONDS
) -> Listing:
    """Run `<prefix> help --commands` once and read its answer."""
    try:
        env = build_env(base_env, key.env_file, dict(key.env), {})
    except SpawnError as exc:
        return Listing(error=str(exc))
    if key.cwd is not None and not key.cwd.is_dir():
        return Listing(error=f"working directory '{key.cwd}' not found")
    try:
        proc = subprocess.Popen(
            key.argv,
            cwd=key.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return Listing(error=f"cannot start: {_spawn_message(exc, key.argv, key.cwd)}")
    out, err, problem = _collect(proc, timeout)
    if problem is not None:
        return Listing(error=problem)
    if proc.returncode != 0:
        return Listing(error=f"{_exit_text(proc.returncode)}{_last_line(err)}")
    words = out.decode("utf-8", "replace").split("\n")
    names = [w.strip() for w in words if w.strip()]
    bad = [n for n in names if not COMMAND_RE.fullmatch(n)]
    if not names or bad:
        shown = f"{bad[0][:80]!r}" if bad else "nothing"
        return Listing(error=f"its output is not a list of commands (it printed {shown})")
    return Listing(commands=frozenset(names))


def _collect(proc: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes, str | None]:
    """stdout and stderr until both close, within `timeout` and MAX_OUTPUT_BYTES; past
    either, the whole process group is killed and the problem returned."""
    assert proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()
    buffers = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    deadline = time.monotonic() + timeout
    problem = None
    with selectors.DefaultSelector() as sel:
        for stream in (proc.stdout, proc.stderr):
            sel.register(stream, selectors.EVENT_READ)
        while sel.get_map() and problem is None:
            left = deadline - time.monotonic()
            if left <= 0:
                problem = f"timed out after {timeout:g} s"
                break
            for sel_key, _ in sel.select(left):
                chunk = os.read(sel_key.fd, 65536)
                if not chunk:
                    sel.unregister(sel_key.fileobj)
                    continue
                buffers[sel_key.fd] += chunk
                if len(out) + len(err) > MAX_OUTPUT_BYTES:
                    problem = f"printed more than {MAX_OUTPUT_BYTES} bytes"
    if problem is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # unreaped until wait(): the group is ours
    proc.stdout.close()
    proc.stderr.close()
    proc.wait()
    return bytes(out), bytes(err), problem


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited {code}"


def _last_line(err: bytes) -> str:
    """The last line of stderr (a traceback's last line names the error), or nothing."""
    lines = [ln.strip() for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
    return f": {lines[-1][:200]}" if lines else ""


def executable_problem(route: Route, base_env: Mapping[str, str]) -> str | None:
    """Why the route's argv[0] would not exec, looked up as a spawn would (PATH from the
    environment the task gets, env_file included; a path relative to the route's cwd)."""
    argv0 = route.argv[0]
    if "/" in argv0:
        exe = Path(argv0)
        if not exe.is_absolute():
            exe = (route.cwd or Path.cwd()) / exe
        if not exe.is_file():
            return f"executable '{exe}' not found"
        if not os.access(exe, os.X_OK):
            return f"'{exe}' is not executable"
        return None
    try:
        env = build_env(base_env, route.env_file, route.env, {})
    except SpawnError as exc:
        return str(exc)
    if shutil.which(argv0, path=env.get("PATH") or os.defpath) is None:
        return f"executable {argv0!r} not found in PATH"
    return None
