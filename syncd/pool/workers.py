"""The threads that run tasks. A thread whose task chain ended parks for a while instead of
ending, and the next claimed task is handed to it: a lock released, where starting a thread
meant waiting for the new thread to be scheduled (too slow for a submit's reply path, so
the loop had to be woken for it: a turn per submitted task)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from syncd.core.latch import Latch

T = TypeVar("T")
PARK_SECONDS = 60.0  # an idle thread ends after this long without a task


class _Parked(Generic[T]):
    """One parked thread's mailbox: the item (None: end) and the latch that hands it over."""

    __slots__ = ("given", "item")

    def __init__(self) -> None:
        self.given = Latch()
        self.item: T | None = None

    def give(self, item: T | None) -> None:
        self.item = item
        self.given.open()


class Workers(Generic[T]):
    """Runs `run(item)` on a thread of its own, reusing a parked one when there is one. At
    most `max_parked()` threads park at a time; the rest end when their chain does."""

    def __init__(
        self,
        run: Callable[[T], None],
        max_parked: Callable[[], int],
        *,
        name: Callable[[T], str],
        park_seconds: float = PARK_SECONDS,
    ) -> None:
        self._run = run
        self._max_parked = max_parked
        self._name = name
        self._park_seconds = park_seconds
        self._lock = threading.Lock()  # never held while waiting for anything
        self._parked: list[_Parked[T]] = []
        self._stopped = False

    def hand_off(self, item: T) -> bool:
        """Give `item` to a parked thread; False if none is parked (nothing was started)."""
        with self._lock:
            if not self._parked:
                return False
            slot = self._parked.pop()
        slot.give(item)
        return True

    def launch(self, item: T) -> None:
        """Run `item` on a parked thread, or on a new one (whose start may raise)."""
        if self.hand_off(item):
            return
        thread = threading.Thread(target=self._serve, args=(item,), name=self._name(item))
        thread.daemon = True
        thread.start()

    def parked(self) -> int:
        with self._lock:
            return len(self._parked)

    def trim(self) -> None:
        """End the parked threads beyond `max_parked()` (it was lowered): they would
        otherwise wait out their park time for nothing."""
        with self._lock:
            extra = max(0, len(self._parked) - self._max_parked())
            ending, self._parked = self._parked[:extra], self._parked[extra:]
        for slot in ending:
            slot.give(None)

    def stop(self) -> None:
        """Parked threads end; threads running a chain end with it."""
        with self._lock:
            self._stopped = True
            parked, self._parked = self._parked, []
        for slot in parked:
            slot.give(None)

    def _serve(self, item: T | None) -> None:
        while item is not None:
            self._run(item)
            item = self._park()

    def _park(self) -> T | None:
        """Wait up to park_seconds for the next item; None: end the thread."""
        slot: _Parked[T] = _Parked()
        with self._lock:
            if self._stopped or len(self._parked) >= self._max_parked():
                return None
            self._parked.append(slot)
        if slot.given.wait(self._park_seconds):
            return slot.item
        with self._lock:
            if slot in self._parked:  # nobody took it: end
                self._parked.remove(slot)
                return None
        slot.given.wait()  # taken just as the wait timed out: its item is on the way
        return slot.item
