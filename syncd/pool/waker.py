"""Waking the dispatch loop without waiting for its lock. The dispatcher's condition is
taken by the store's writer for each claim (inside a transaction) and by every reader of
the pool, so a caller that woke the loop inline could wait behind them; instead, when the
lock is taken, the wake is handed to a small thread that notifies as soon as it is free."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

IDLE_SECONDS = 5.0  # the thread ends after this long without a wake to deliver


class Waker:
    """notify_all() on `cond` now if its lock is free, else soon from a helper thread
    (started when first needed, ended when idle): the caller never blocks.

    A wake is also remembered until the loop takes it (`take`, under `cond`, just before it
    would wait): a notify while the loop is busy elsewhere reaches no waiter, and the loop
    would then sleep until its next deadline with the work (a claimed task to start) left
    undone."""

    def __init__(self, cond: threading.Condition, idle: float = IDLE_SECONDS) -> None:
        self._cond = cond
        self._idle = idle
        self._asked = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending = False  # a wake the loop has not taken yet

    def take(self) -> bool:
        """Was the loop woken since it last asked? Clears it. Caller holds `cond`."""
        pending, self._pending = self._pending, False
        return pending

    def wake_held(self) -> None:
        """wake() for a caller that holds `cond`."""
        self._pending = True
        self._cond.notify_all()

    def wake(self) -> None:
        """Never raises: callers wake the loop right after a commit, and an exception
        there stranded the tasks that commit had claimed. If the helper cannot start (no
        threads left), the wake stays pending and the loop takes it at its next turn."""
        self._pending = True  # before the notify: a loop about to wait sees one or the other
        if self._cond.acquire(blocking=False):
            try:
                self._cond.notify_all()
            finally:
                self._cond.release()
            return
        self._asked.set()
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="dispatch-waker", daemon=True)
                try:
                    thread.start()
                except RuntimeError as exc:  # can't start new thread
                    log.warning("cannot start the dispatch-waker thread (%s); the loop "
                                "takes the wake at its next turn", exc)  # fmt: skip
                    return
                self._thread = thread

    def _run(self) -> None:
        while True:
            if not self._asked.wait(self._idle):
                with self._lock:
                    if not self._asked.is_set():  # a wake() after this sees no thread
                        self._thread = None
                        return
                continue
            self._asked.clear()  # a wake() from now on is delivered by the next round
            with self._cond:
                self._cond.notify_all()
