"""Process checks independent of the code under test (psutil), and polling with a deadline."""

from __future__ import annotations

import os
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
