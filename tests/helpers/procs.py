"""Process checks independent of the code under test (psutil), and polling with a deadline."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest


def wait_until(pred: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll `pred` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def pause(seconds: float) -> None:
    """Let time pass when the point is that nothing happens meanwhile."""
    threading.Event().wait(seconds)


def live(pid: int) -> bool:
    """Exists and is not a zombie (zombies hold nothing but a pid)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def live_in_group(pgid: int) -> list[int]:
    """An independent pgid scan with psutil (the code under test scans /proc itself)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return found


def read_pids(path: Path, count: int) -> list[int]:
    wait_until(
        lambda: path.exists() and len(path.read_text().split()) >= count, what=f"{path.name}"
    )
    return [int(x) for x in path.read_text().split()[:count]]


# A process group that takes over a number: a session leader and one forked member, both
# recording any SIGTERM (SIGKILL cannot be recorded: the test checks they are still alive).
_IMPOSTOR = """
import os, signal, sys, time
record, ready = sys.argv[1], sys.argv[2]
signal.signal(signal.SIGTERM, lambda *_: open(record, "a").write(f"{os.getpid()} TERM\\n"))
os.fork()
open(ready, "a").write(f"{os.getpid()}\\n")
time.sleep(120)
"""


class Impostor:
    """Another program's process group whose number is `pid`: the kernel is made to hand
    out that pid again (root writes /proc/sys/kernel/ns_last_pid, as CRIU does; retried
    while other forks on the machine take the number first)."""

    def __init__(self, pid: int, folder: Path) -> None:
        if os.geteuid() != 0:
            pytest.fail("taking over a pid number needs root (CI runs as root)")
        self.record = folder / f"impostor-{pid}.signals"
        ready = folder / f"impostor-{pid}.ready"
        argv = [sys.executable, "-c", _IMPOSTOR, str(self.record), str(ready)]
        for _ in range(200):
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(pid - 1))
            proc = subprocess.Popen(argv, start_new_session=True)
            if proc.pid == pid:
                break
            proc.kill()
            proc.wait()
        else:
            pytest.fail(f"could not take over pid {pid}")
        self.proc = proc
        self.pids = read_pids(ready, 2)
        assert os.getpgid(pid) == pid and all(os.getpgid(p) == pid for p in self.pids)

    def signals(self) -> str:
        return self.record.read_text() if self.record.exists() else ""

    def intact(self) -> bool:
        return all(live(p) for p in self.pids)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def record_killpg(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Let os.killpg through, each call recorded (group, signal) in the list returned."""
    killpgs: list[tuple[int, int]] = []
    real_killpg = os.killpg

    def killpg(pgid: int, sig: int) -> None:
        killpgs.append((pgid, sig))
        real_killpg(pgid, sig)

    monkeypatch.setattr(os, "killpg", killpg)
    return killpgs
