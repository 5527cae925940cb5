"""In-process event fan-out for `watch` streams: publishers never block, a subscriber that
falls behind by more than its byte budget is dropped (its stream then ends)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Collection, Iterator
from typing import Any

EVENT_KINDS = ("task", "pool", "schedule", "config", "source")
MAX_BUFFERED_BYTES = 256 * 1024
IDLE_TICK_SECONDS = 0.5


class Subscription:
    """One `watch` reader: a bounded queue of events and a way to end it."""

    def __init__(self, bus: EventBus, kinds: Collection[str], max_bytes: int):
        self._bus = bus
        self.kinds = frozenset(kinds)
        self._max_bytes = max_bytes
        self._events: deque[tuple[dict[str, Any], int]] = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self.closed = False
        self.overflowed = False

    def offer(self, event: dict[str, Any], size: int) -> None:
        with self._cond:
            if self.closed:
                return
            if self._bytes + size > self._max_bytes:
                # A reader that does not read is cut off rather than buffered without bound.
                self.overflowed = True
                self.closed = True
            else:
                self._events.append((event, size))
                self._bytes += size
            self._cond.notify_all()

    def get(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None after `timeout` (or when closed and drained)."""
        with self._cond:
            if not self._events and not self.closed:
                self._cond.wait(timeout)
            if self._events:
                event, size = self._events.popleft()
                self._bytes -= size
                self._cond.notify_all()  # a paced publisher (wait_drained) may go on
                return event
            return None

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._bus.unsubscribe(self)

    def __iter__(self) -> Iterator[tuple[dict[str, Any], bool] | None]:
        return self.stream()

    def stream(self) -> Iterator[tuple[dict[str, Any], bool] | None]:
        """The server's Stream protocol: (event, more=True) pairs, None when idle."""
        while True:
            event = self.get(IDLE_TICK_SECONDS)
            if event is not None:
                yield event, True
            elif self.closed:
                return
            else:
                yield None


class EventBus:
    def __init__(self, max_bytes: int = MAX_BUFFERED_BYTES):
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._max_bytes = max_bytes

    def subscribe(self, kinds: Collection[str] | None = None) -> Subscription:
        sub = Subscription(self, kinds or EVENT_KINDS, self._max_bytes)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            subs = [s for s in self._subs if event["event"] in s.kinds]
        if not subs:
            return
        size = len(json.dumps(event, separators=(",", ":")))
        for sub in subs:
            sub.offer(event, size)

    def close_all(self) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.close()

    def wait_drained(self, fraction: float, timeout: float) -> None:
        """Until every subscriber's backlog is below `fraction` of its budget, or `timeout`:
        a bulk publisher paces itself to its readers instead of cutting them off."""
        deadline = time.monotonic() + timeout
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            with sub._cond:
                while not sub.closed and sub._bytes > sub._max_bytes * fraction:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    sub._cond.wait(left)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)
