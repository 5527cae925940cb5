"""Crash-safety harness: the e2e fixtures (a real `syncd` on a temp state dir) plus what
fault tests need on top: kill -9 and restart, the first reply of a fresh instance, direct
looks into the database while no daemon runs, and process liveness that ignores zombies."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemon import Conn, DaemonProc, wait_for

SLEEPER = {"sleep": 600}  # params of a job that runs until it is killed


def pid_alive(pid: int) -> bool:
    """A live process (a zombie is dead: it only holds a pid until its parent reaps it)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    state = raw.rpartition(b")")[2].split()[0]
    return state not in (b"Z", b"X")


def kill9(d: DaemonProc) -> None:
    """SIGKILL the daemon (its task processes live on: they run in sessions of their own)."""
    assert d.proc is not None
    code = d.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL, f"daemon had already exited {code}:\n{d.stderr()}"


def start_and_first_reply(
    d: DaemonProc, op: str, timeout: float = 20.0, **args: Any
) -> tuple[dict[str, Any], float]:
    """Start the daemon and return the first reply it gives to `op`, and the seconds from
    the process start to that reply. Nothing else talks to the daemon before it."""
    t0 = time.monotonic()
    d.start(wait=False)
    assert d.proc is not None

    def attempt() -> dict[str, Any] | None:
        if d.proc is not None and d.proc.poll() is not None:
            raise AssertionError(f"daemon exited {d.proc.returncode}:\n{d.stderr()}")
        try:
            conn = Conn(d.socket, timeout=10)
        except OSError:
            return None
        try:
            return conn.request(op, **args)
        finally:
            conn.close()

    reply: dict[str, Any] = wait_for(attempt, timeout, f"first reply to {op}")
    return reply, time.monotonic() - t0


def db_connect(d: DaemonProc) -> sqlite3.Connection:
    """The daemon's database, opened directly (only while no daemon runs)."""
    conn = sqlite3.connect(d.state_dir / "syncd.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def db_tasks(d: DaemonProc) -> list[dict[str, Any]]:
    conn = db_connect(d)
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM tasks ORDER BY id")]
    finally:
        conn.close()


def quick_check(d: DaemonProc) -> str:
    conn = db_connect(d)
    try:
        return "\n".join(r[0] for r in conn.execute("PRAGMA quick_check"))
    finally:
        conn.close()


def submit(d: DaemonProc, sync_type: str = "a1", **params: Any) -> dict[str, Any]:
    task: dict[str, Any] = d.call("submit", source="alpha", sync_type=sync_type, params=params)[
        "task"
    ]
    return task


def wait_running_with_pid(d: DaemonProc, task_id: int, timeout: float = 20) -> dict[str, Any]:
    """Running, and its process identity recorded (what reconciliation will look at)."""

    def check() -> dict[str, Any] | None:
        task = d.task(task_id)
        return task if task["status"] == "running" and task["pid"] else None

    result: dict[str, Any] = wait_for(check, timeout, f"task {task_id} running with a pid")
    return result


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process in a session (and process group) of its own: reconciliation
    must never signal it, even when a stored pid or pgid names it."""
    proc = subprocess.Popen(["sleep", "999"], start_new_session=True)
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def wait_exit(d: DaemonProc, timeout: float = 20) -> int:
    """Wait for a daemon that is expected to die by itself (a failpoint); its exit code."""
    assert d.proc is not None
    try:
        code = d.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"daemon did not crash:\n{d.stderr()}") from None
    d._stderr.close()
    return code
