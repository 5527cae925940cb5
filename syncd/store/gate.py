"""Writes before reads at the store lock. Reads and writes share one connection, so one
lock; Python's lock is not fair, and a stream of reads (a local client looping `history`
with a large limit, on several connections) could keep a waiting write from ever taking
it: submits refused `busy`, finishes unrecorded. A read waits while a write waits; each
read is short, so a write waits for one read at most."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class WritesFirst:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0  # writes waiting for the store lock

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around a write's wait for the store lock."""
        with self._cond:
            self._waiting += 1
        try:
            yield
        finally:
            with self._cond:
                self._waiting -= 1
                if not self._waiting:
                    self._cond.notify_all()

    def let_writes_first(self, timeout: float) -> bool:
        """Before a read waits for the store lock: False if writes still wait after
        `timeout` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting, timeout)

    def waiting(self) -> int:
        with self._cond:
            return self._waiting
