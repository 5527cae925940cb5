"""A one-shot gate: closed until opened once, then open for good. A bare lock, because a
`threading.Event` (a Condition and two locks, in Python) per write or per task was a
measurable share of one; every hand-off between two threads on the hot path uses it."""

from __future__ import annotations

import _thread


class Latch:
    __slots__ = ("_lock", "_open")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self._open = False

    def open(self) -> None:
        """Let every waiter through, now and later (a second call does nothing)."""
        if not self._open:
            self._open = True
            self._lock.release()

    def is_open(self) -> bool:
        return self._open

    def wait(self, timeout: float | None = None) -> bool:
        """Block until open (True) or `timeout` seconds pass (False)."""
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        self._lock.release()
        return True
