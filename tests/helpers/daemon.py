"""A real `syncd` process on a temporary state dir, real children, the real socket."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "tests" / "e2e" / "job.py"  # the job every test route runs
JOB_PARAMS = [
    "sleep",
    "exit",
    "record",
    "trap",
    "grandchildren",
    "busy",
    "progress",
    "output-bytes",
    "pidfile",
    "retry-after",
    "throttle",
    "gate",
    "term-record",
]


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def log_time(stderr: str, needle: str) -> float:
    """When the daemon logged the first line containing `needle`, in seconds since the
    epoch: its own clock, read back from the `%(asctime)s` (local time, ms) of the line."""
    for line in stderr.splitlines():
        if needle in line:
            stamp = line[:23]  # "2024-05-01 12:00:00,123"
            whole = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
            return whole + int(stamp[20:23]) / 1000
    raise AssertionError(f"the daemon never logged {needle!r}")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    return json.dumps(value)


def render_config(
    daemon: dict[str, Any],
    sources: dict[str, dict[str, Any]],
    defaults: dict[str, Any] | None = None,
    schedules: list[dict[str, Any]] | None = None,
) -> str:
    lines = ["[daemon]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in daemon.items()]
    lines.append("[defaults]")
    base = {
        "command_prefix": [sys.executable, str(JOB)],
        "timeout_minutes": 5,
        "allowed_params": JOB_PARAMS,
    }
    base.update(defaults or {})
    lines += [f"{k} = {toml_value(v)}" for k, v in base.items()]
    for name, src in sources.items():
        lines.append(f"[sources.{name}]")
        routes = src.get("routes", {})
        for k, v in src.items():
            if k != "routes":
                lines.append(f"{k} = {toml_value(v)}")
        lines.append(f"[sources.{name}.routes]")
        for rname, rvalue in routes.items():
            if isinstance(rvalue, dict):
                inner = ", ".join(f"{k} = {toml_value(v)}" for k, v in rvalue.items())
                lines.append(f"{rname} = {{ {inner} }}")
            else:
                lines.append(f"{rname} = {toml_value(rvalue)}")
    for sched in schedules or []:
        lines.append("[[schedules]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in sched.items()]
    return "\n".join(lines) + "\n"


class Conn:
    """A raw NDJSON connection (independent of syncctl's client)."""

    def __init__(self, path: Path, timeout: float = 30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""
        self.n = 0

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_reply(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        self.n += 1
        self.send_raw(json.dumps({"v": 1, "id": self.n, "op": op, "args": args}).encode() + b"\n")
        return self.read_reply()

    def call(self, op: str, **args: Any) -> Any:
        reply = self.request(op, **args)
        if not reply["ok"]:
            raise RuntimeError(f"{reply['error']['code']}: {reply['error']['message']}")
        return reply["result"]

    def close(self) -> None:
        self.sock.close()


class DaemonProc:
    def __init__(self, workdir: Path, config_text: str, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.config = workdir / "syncd.toml"
        self.config.write_text(config_text)
        self.socket = workdir / "syncd.sock"
        self.state_dir = workdir / "state"
        self.stderr_path = workdir / "daemon.stderr"
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc: subprocess.Popen[bytes] | None = None
        # Python run in the daemon's process before `syncd` starts: a test hook for what
        # has no setting (e.g. a longer Child.leftover_grace); empty for the real program.
        self.prelude = ""

    def start(self, wait: bool = True) -> DaemonProc:
        self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*self._program(), "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            env=self.env,
            cwd=self.workdir,
        )
        if wait:
            try:
                wait_for(self.ready, 20, "daemon to answer ping")
            except AssertionError as exc:
                if "timed out" not in str(exc):
                    raise
                raise AssertionError(f"{exc}; its stderr:\n{self.stderr()[-4000:]}") from None
        return self

    def _program(self) -> list[str]:
        if not self.prelude:
            return [sys.executable, "-m", "syncd"]
        run = "import runpy; runpy.run_module('syncd', run_name='__main__', alter_sys=True)"
        return [sys.executable, "-c", f"{self.prelude}\n{run}"]

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.stderr()}")
        try:
            conn = Conn(self.socket, timeout=2)
        except OSError:
            return False
        try:
            return bool(conn.call("ping"))
        except OSError:  # reset or timed out: a daemon that died while starting says why
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited {self.proc.returncode}:\n{self.stderr()}"
                ) from None
            return False
        finally:
            conn.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def conn(self) -> Conn:
        return Conn(self.socket)

    def call(self, op: str, **args: Any) -> Any:
        conn = self.conn()
        try:
            return conn.call(op, **args)
        finally:
            conn.close()

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        conn = self.conn()
        try:
            return conn.request(op, **args)
        finally:
            conn.close()

    def task(self, task_id: int) -> dict[str, Any]:
        task: dict[str, Any] = self.call("get", id=task_id)["task"]
        return task

    def wait_status(self, task_id: int, statuses: set[str], timeout: float = 20) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            task = self.task(task_id)
            return task if task["status"] in statuses else None

        result: dict[str, Any] = wait_for(check, timeout, f"task {task_id} in {statuses}")
        return result

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode


def daemon_settings(workdir: Path) -> dict[str, Any]:
    """The `[daemon]` table of a test daemon: quick heartbeats and kills, a local socket."""
    return {
        "max_workers": 2,
        "state_dir": "state",
        "socket": str(workdir / "syncd.sock"),
        "heartbeat_seconds": 0.2,
        "kill_grace_seconds": 1,
    }


@pytest.fixture
def workdir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes: keep the socket path short.
    path = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_daemon(workdir: Path) -> Iterator[Callable[..., DaemonProc]]:
    started: list[DaemonProc] = []

    def make(
        sources: dict[str, dict[str, Any]] | None = None,
        *,
        daemon: dict[str, Any] | None = None,
        defaults: dict[str, Any] | None = None,
        schedules: list[dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        start: bool = True,
    ) -> DaemonProc:
        settings = {**daemon_settings(workdir), **(daemon or {})}
        srcs = sources or {"alpha": {"routes": {"a1": "a1", "a2": "a2"}}}
        d = DaemonProc(workdir, render_config(settings, srcs, defaults, schedules), env)
        started.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)
        kill_orphaned_tasks(d.state_dir / "syncd.db")


def kill_orphaned_tasks(db: Path) -> None:
    """A daemon killed with SIGKILL leaves its tasks running: stop each task's group that is
    provably the one recorded (same pid, start time and boot), so no test's leftovers load
    the machine under the next one."""
    from syncd.pool.procs import ProcIdentity

    if not db.exists():
        return
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute(
                "SELECT pid, proc_starttime, boot_id FROM tasks"
                " WHERE status = 'running' AND pid IS NOT NULL"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return  # a test that corrupted the database on purpose
    for pid, starttime, boot in rows:
        if starttime and boot and ProcIdentity(pid, starttime, boot).is_alive():
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)


def syncctl_script(folder: Path) -> Path:
    """An executable `syncctl` running this checkout with this interpreter."""
    path = folder / "syncctl"
    path.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from syncd.ctl.main import main\nmain()\n"
    )
    path.chmod(0o755)
    return path
