"""What the store's write tests share: a task to enqueue, a call in a thread of its own, a
count of the WAL's flushes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from syncd.core.models import NewTask
from syncd.store.facade import Store

DEADLINE = 20.0


def new(route: str = "r", **kw: Any) -> NewTask:
    fields: dict[str, Any] = {"sync_type": route, "argv": ["true"], "params": {}}
    fields.update(kw)
    return NewTask(source="s", route=route, priority=5, trigger="manual", **fields)


def in_thread(fn: Callable[[], Any], out: dict[str, Any], key: str) -> threading.Thread:
    def run() -> None:
        try:
            out[key] = fn()
        except BaseException as exc:
            out[key] = exc

    t = threading.Thread(target=run)
    t.start()
    return t


def wait_until(cond: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def counting_flushes(store: Store) -> list[int]:
    """Let the store's WAL flushes through, each recorded in the list returned."""
    flushes: list[int] = []
    real = store._wal_sync.flush

    def flush(fd: int) -> None:
        flushes.append(fd)
        real(fd)

    store._wal_sync.flush = flush  # type: ignore[method-assign]
    return flushes
