"""Telling the world what the pool did: a task event per change for `watch` (and so top
and the web page), a pool event with the counts, and every change to the metrics observer.
Everything here runs after a commit, so it is best effort: a failure is logged, never raised
into the caller of that commit."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from syncd.core.clock import Clock, iso
from syncd.core.events import EventBus
from syncd.core.models import SourceRoute, Status, Task
from syncd.store.facade import Store

log = logging.getLogger(__name__)


BulkObserver = Callable[[Sequence[SourceRoute], Status, str], None]


class Announcer:
    def __init__(
        self,
        events: EventBus,
        store: Store,
        clock: Clock,
        on_task: Callable[[Task], None] | None = None,
        on_bulk_end: BulkObserver | None = None,
    ):
        self.events = events
        self.store = store
        self.clock = clock
        self.on_task = on_task  # sees every task event, watched or not (the metrics)
        self.on_bulk_end = on_bulk_end  # the same for tasks a bulk cancel ended by the page

    def bulk_ended(self, tasks: Sequence[SourceRoute], status: Status, finished_at: str) -> None:
        """Tasks ended together, counted by (source, route) without reading their rows."""
        if self.on_bulk_end is not None and tasks:
            try:
                self.on_bulk_end(tasks, status, finished_at)
            except Exception:  # counting must never break a caller's commit
                log.exception("observer of %d ended tasks failed", len(tasks))

    def task(self, task: Task, *, observe: bool = True) -> None:
        if self.on_task is not None and observe:
            try:
                self.on_task(task)
            except Exception:  # counting must never break dispatch or a caller's commit
                log.exception("task %d: observer failed", task.id)
        try:
            if self.events.subscriber_count:  # nobody watching: build no event at all
                self.events.publish(
                    {
                        "event": "task",
                        "at": iso(self.clock.now()),
                        "task": task.to_dict(),
                        "status": task.status.value,
                    }
                )
        except Exception:
            log.exception("publishing the event of task %d failed", task.id)

    def changed(self, kind: str, *, running: int) -> None:
        """A `pool` event carries the counts (a counts() query: only paid while someone
        watches); other kinds (config, ...) only say when."""
        try:
            if kind == "pool" and self.events.subscriber_count:
                counts = self.store.counts()
                status = {"running": running, "queued": counts.get("queued", 0)}
                self.events.publish(
                    {"event": "pool", "at": iso(self.clock.now()), "status": status}
                )
            elif kind != "pool":
                self.events.publish({"event": kind, "at": iso(self.clock.now())})
        except Exception:
            log.exception("publishing a %s event failed", kind)
