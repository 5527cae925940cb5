"""The one way into and out of the queue. Every enqueue (a person's submit, a schedule's fire,
the web) and every cancel (one task, a cleared queue, a reset) goes through here: it resolves
the route, writes, publishes each task's event and wakes the pool. A write around it would go
unseen by `watch`, `top`, the web page and the metrics.

Once a write has committed, what follows (log lines, events, the wake-up) is best effort: a
caller is never told a committed change failed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from syncd.core.clock import Clock, iso
from syncd.core.errors import SyncdError
from syncd.core.failpoints import failpoint
from syncd.core.models import ErrorCode, NewTask, Task
from syncd.pool.dispatcher import KILL_CANCEL, Dispatcher
from syncd.store.facade import Store

log = logging.getLogger(__name__)

Submission = tuple[NewTask, bool]  # the task and whether it may NOT coalesce (allow_duplicate)


class TaskService:
    def __init__(self, store: Store, pool: Dispatcher, clock: Clock):
        self.store = store
        self.pool = pool
        self.clock = clock

    # -- enqueue ----------------------------------------------------------------------------
    def request(
        self,
        source: str,
        sync_type: str | None,
        params: Mapping[str, Any] | None,
        priority: int | None,
        trigger: str,
        requested_by: str | None,
    ) -> NewTask:
        """Resolve a request to the task it would queue; unknown source, route or a
        disallowed param raise SyncdError before anything is written."""
        res = self.pool.routes.resolve(source, sync_type, params)
        return NewTask(
            source=res.source,
            sync_type=res.sync_type,
            route=res.route.sync_type,
            argv=list(res.argv),
            params=dict(res.params),
            priority=res.route.priority if priority is None else priority,
            trigger=trigger,
            requested_by=requested_by,
        )

    def submit(self, new: NewTask, *, allow_duplicate: bool = False) -> tuple[Task, bool]:
        return self.submit_group([(new, allow_duplicate)])[0]

    def submit_group(self, items: list[Submission]) -> list[tuple[Task, bool]]:
        """Submits committed together (pipelined on one connection), each logged and
        announced as its own."""
        results = self.store.enqueue_many(items)
        try:
            for (new, _), (task, coalesced) in zip(items, results, strict=True):
                what = "coalesced" if coalesced else "queued"
                log.info(
                    "task %d %s: %s.%s (%s)", task.id, what, task.source, task.route, new.trigger
                )
                self.pool.announce_task(task, wake=False)
        except Exception:
            log.exception("announcing %d committed submits failed", len(results))
        if results:
            self.pool.wake_for_queue()
        return results

    def submit_many(self, items: list[Submission]) -> list[tuple[Task, bool]]:
        """One request of many items (a bulk load): one summary line and one pool event
        instead of one per task, so a large batch does not flood the log or the watchers."""
        results = self.store.enqueue_many(items)
        new = sum(not coalesced for _, coalesced in results)
        log.info("submit_many: %d items, %d new", len(results), new)
        self.pool.announce_pool()
        self.pool.wake_for_queue()
        return results

    # -- cancel -----------------------------------------------------------------------------
    def cancel(self, ids: list[int]) -> tuple[list[int], list[dict[str, Any]]]:
        """Cancel queued tasks and kill running ones (they end `cancelled`); the others are
        skipped with their status. An unknown id refuses the whole request."""
        tasks = {i: self.store.get(i) for i in ids}
        unknown = [i for i, t in tasks.items() if t is None]
        if unknown:
            raise SyncdError(ErrorCode.UNKNOWN_TASK, f"no task {unknown[0]}", {"unknown": unknown})
        # Under the pool's lock throughout: no slot is refilled until every id is handled,
        # so a queued task named here cannot start in the slot of a running one killed here.
        # The queued ones are cancelled in one transaction, however many there are.
        with self.pool.cond:
            wanted = list(dict.fromkeys(ids))
            killed = set(self._kill_running(wanted))
            done = {t.id for t in self._cancel_queued([i for i in wanted if i not in killed])}
        cancelled = [i for i in wanted if i in killed or i in done]
        skipped = []
        for task_id in wanted:
            if task_id not in killed and task_id not in done:
                current = tasks[task_id] if task_id not in done else None
                current = self.store.get(task_id) or current
                status = current.status.value if current else None
                skipped.append({"id": task_id, "status": status})
        return cancelled, skipped

    def cancel_one(self, task_id: int) -> bool:
        """Cancel a queued task at once, or kill a running one."""
        with self.pool.cond:
            if self._kill_running([task_id]):
                return True
        return bool(self._cancel_queued([task_id]))

    def clear_queue(self, source: str | None = None) -> list[Task]:
        """Cancel every queued task (of one source); running tasks are left alone."""
        return self._cancel_queued(self.store.queued_ids(source))

    def reset(self, *, force: bool) -> tuple[list[Task], list[int]]:
        """Cancel every queued task; with `force` kill every running one too."""
        done = self._cancel_queued(self.store.queued_ids(None))
        killed: list[int] = []
        if force:
            with self.pool.cond:
                killed = self._kill_running(list(self.pool.running))
        return done, killed

    def _kill_running(self, ids: list[int]) -> list[int]:
        """Kill those of `ids` the pool is running (caller holds the pool's condition); the
        cancel is committed first, so a crash before their end is recorded cannot requeue
        them (reconcile ends them `cancelled`). Returns the ids killed."""
        running = [i for i in ids if i in self.pool.running]
        if not running:
            return []
        self.store.request_cancel(running)
        failpoint("cancel_after_persist")
        return [i for i in running if self.pool.kill(i, KILL_CANCEL)]

    def set_priority(self, task_id: int, priority: int) -> Task:
        task = self.store.set_priority(task_id, priority)
        self._announce([task])
        return task

    def _cancel_queued(self, ids: list[int]) -> list[Task]:
        if not ids:
            return []
        done = self.store.cancel_queued(ids, finished_at=iso(self.clock.now()))
        if len(done) == 1:
            log.info("task %d cancelled while queued", done[0].id)
        elif done:
            log.info("%d queued tasks cancelled", len(done))
        self._announce(done)
        return done

    def _announce(self, tasks: list[Task]) -> None:
        try:
            for task in tasks:
                self.pool.announce_task(task, wake=False)
        except Exception:
            log.exception("announcing %d committed changes failed", len(tasks))
        if tasks:
            self.pool.wake()
