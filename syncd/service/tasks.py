"""The one way into and out of the queue. Every enqueue (a person's submit, a schedule's fire,
the web) and every cancel (one task, a cleared queue, a reset) goes through here: it resolves
the route, writes, publishes each task's event and wakes the pool. A write around it would go
unseen by `watch`, `top`, the web page and the metrics.

Once a write has committed, what follows (log lines, events, the wake-up) is best effort: a
caller is never told a committed change failed."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from syncd.core.clock import Clock, iso
from syncd.core.errors import SyncdError
from syncd.core.failpoints import failpoint
from syncd.core.models import ErrorCode, NewTask, Status, Task
from syncd.pool.dispatcher import Dispatcher, QueueClaims
from syncd.pool.supervise import KILL_CANCEL
from syncd.store.facade import Store

log = logging.getLogger(__name__)

BULK_BATCH = 1000  # tasks cancelled per transaction by a bulk cancel
WATCHED_BATCH = 200  # the same while someone watches: a batch's events fit a reader's buffer
DRAIN_SECONDS = 10.0  # a bulk cancel waits for its watchers this long in all, not per batch
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

    def submit(
        self,
        new: NewTask,
        *,
        allow_duplicate: bool = False,
        schedule_state: tuple[str, dict[str, Any]] | None = None,
    ) -> tuple[Task, bool]:
        """One submit; `schedule_state` is a schedule's state committed with its fire."""
        return self.submit_group([(new, allow_duplicate)], schedule_state=schedule_state)[0]

    def submit_group(
        self,
        items: list[Submission],
        *,
        schedule_state: tuple[str, dict[str, Any]] | None = None,
    ) -> list[tuple[Task, bool]]:
        """Submits committed together (pipelined on one connection), each logged and
        announced as its own."""
        claims = self.pool.claims_for_queue()
        results = self._enqueue(items, claims, schedule_state)
        try:
            started = claims.start()  # the task runs sooner; its start is told after these
            try:
                for (new, _), (task, coalesced) in zip(items, results, strict=True):
                    what = "coalesced" if coalesced else "queued"
                    log.info("task %d %s: %s.%s (%s)",
                             task.id, what, task.source, task.route, new.trigger)  # fmt: skip
                    self.pool.announce_task(task, wake=False)
            except Exception:
                log.exception("announcing %d committed submits failed", len(results))
        finally:
            claims.told()
        return [(started.get(task.id, task), coalesced) for task, coalesced in results]

    def submit_many(self, items: list[Submission]) -> list[tuple[Task, bool]]:
        """One request of many items (a bulk load): one summary line and one pool event
        instead of one per task, so a large batch does not flood the log or the watchers."""
        claims = self.pool.claims_for_queue()
        results = self._enqueue(items, claims)
        try:
            claims.start()
            new = sum(not coalesced for _, coalesced in results)
            log.info("submit_many: %d items, %d new", len(results), new)
            self.pool.announce_pool()
        finally:
            claims.told()
        return results

    def _enqueue(
        self,
        items: list[Submission],
        claims: QueueClaims,
        schedule_state: tuple[str, dict[str, Any]] | None = None,
    ) -> list[tuple[Task, bool]]:
        """Queue the items and, in the same transaction, claim what the free slots take.
        The claim there judged the pool under its lock with the new rows in view, as the
        loop's tick would (the pick is the same), so the loop is woken only if a new task
        waits for a time of its own."""
        try:
            results = self.store.enqueue_many(items, schedule_state=schedule_state, claim=claims)
        except BaseException:
            claims.undo()
            raise
        if any(task.not_before is not None for task, _ in results):
            self.pool.wake_for_queue()
        return results

    # -- cancel -----------------------------------------------------------------------------
    def cancel(self, ids: list[int]) -> tuple[list[int], list[dict[str, Any]]]:
        """Cancel queued tasks and kill running ones (they end `cancelled`); the others are
        skipped with their status. An unknown id refuses the whole request."""
        wanted = list(dict.fromkeys(ids))
        before = self.store.statuses(wanted)
        missing = set(wanted) - set(before)
        if missing:
            unknown = [i for i in wanted if i in missing]
            raise SyncdError(ErrorCode.UNKNOWN_TASK, f"no task {unknown[0]}", {"unknown": unknown})
        # The queued ones first, a batch per transaction (submits and finishes get the
        # store between batches), so none can start in the slot of a running one killed
        # here; one claimed meanwhile is running by the time the kills are sent, and killed.
        done: set[int] = set()
        start = 0
        paced_until = time.monotonic() + DRAIN_SECONDS
        while start < len(wanted):
            size = self._batch_size(paced_until)
            done.update(t.id for t in self._cancel_queued(wanted[start : start + size]))
            start += size
        killed = set(self._kill_running([i for i in wanted if i not in done]))
        cancelled = [i for i in wanted if i in killed or i in done]
        skipped = []
        for task_id in wanted:
            if task_id not in killed and task_id not in done:
                skipped.append({"id": task_id, "status": self._status_now(task_id, before)})
        return cancelled, skipped

    def _status_now(self, task_id: int, before: dict[int, str]) -> str | None:
        """A skipped task's status, read again after the commit; best effort: a failed read
        (a busy database) answers with the status read before, never with an error."""
        try:
            current = self.store.get(task_id)
        except Exception as exc:
            log.warning("task %d: status not re-read after a cancel: %s", task_id, exc)
            return before.get(task_id)
        return current.status.value if current else before.get(task_id)

    def cancel_one(self, task_id: int) -> bool:
        """Cancel a queued task at once, or kill a running one."""
        if self._kill_running([task_id]):
            return True
        return bool(self._cancel_queued([task_id]))

    def clear_queue(self, source: str | None = None) -> int:
        """Cancel every queued task (of one source); running tasks are left alone. Returns
        how many were cancelled."""
        return self._cancel_all_queued(source)

    def reset(self, *, force: bool) -> tuple[int, list[int]]:
        """Cancel every queued task; with `force` kill every running one too."""
        done = self._cancel_all_queued(None)
        killed: list[int] = []
        if force:
            with self.pool.cond:
                running = list(self.pool.running)
            killed = self._kill_running(running)
        return done, killed

    def _kill_running(self, ids: list[int]) -> list[int]:
        """Kill those of `ids` the pool is running; the cancel is committed first, so a
        crash before their end is recorded cannot requeue them (reconcile ends them
        `cancelled`). Returns the ids killed. Not under the pool's lock (the store's writer
        takes it for each claim): a task is admitted in the transaction that claims it, so
        one claimed before this call is already in `running`, and one that ends meanwhile
        is simply not killed."""
        with self.pool.cond:
            running = [i for i in ids if i in self.pool.running]
        if not running:
            return []
        marked = self.store.request_cancel(running)
        failpoint("cancel_after_persist")
        return [i for i in marked if self.pool.kill(i, KILL_CANCEL)]

    def set_priority(self, task_id: int, priority: int) -> Task:
        task = self.store.set_priority(task_id, priority)
        self._announce([task])
        return task

    def _cancel_all_queued(self, source: str | None) -> int:
        """What is queued now (of `source`), cancelled a batch per transaction: memory and
        the store lock are held for one batch at a time, at any queue depth. Each task is
        announced while someone watches (no rows are read back otherwise)."""
        up_to = self.store.max_id()
        total = 0
        paced_until = time.monotonic() + DRAIN_SECONDS
        while True:
            size = self._batch_size(paced_until)
            at = iso(self.clock.now()) or ""
            rows = self.store.cancel_queued_page(
                finished_at=at, limit=size, up_to_id=up_to, source=source
            )
            total += len(rows)
            ids = [row.id for row in rows]
            self.pool.announcer.bulk_ended(rows, Status.CANCELLED, at)  # counted, watched or not
            if ids and self.pool.events.subscriber_count:  # rows are read back only then
                try:
                    self._announce(self.store.tasks_by_id(ids), pool=False, counted=True)
                except Exception:  # committed: telling about it is best effort
                    log.exception("announcing %d cancelled tasks failed", len(ids))
            if len(ids) < size:
                break
        if total:
            log.info("%d queued tasks cancelled%s", total, f" (source {source})" if source else "")
            self._announce_pool()
        return total

    def _batch_size(self, paced_until: float) -> int:
        """The next batch of a bulk cancel: while someone watches, a small one, once the
        watchers have read most of the last (so none is cut off for falling behind) or the
        op's pacing time is spent: a watcher that reads slowly must not set the pace of an
        operator's cancel (it was up to DRAIN_SECONDS per batch, minutes for a deep queue);
        one that falls behind after that is cut off and reconnects."""
        if not self.pool.events.subscriber_count:
            return BULK_BATCH
        left = paced_until - time.monotonic()
        if left <= 0:
            return BULK_BATCH
        self.pool.events.wait_drained(0.25, left)
        return WATCHED_BATCH

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

    def _announce(self, tasks: list[Task], *, pool: bool = True, counted: bool = False) -> None:
        """Each task's event, then one pool event (not one per task: each costs a counts
        query while someone watches) and a wake-up; `pool=False` leaves those to the caller.
        `counted`: the metrics have these ends already (a bulk cancel counts every page)."""
        try:
            for task in tasks:
                self.pool.announce_task(task, wake=False, pool=False, observe=not counted)
        except Exception:
            log.exception("announcing %d committed changes failed", len(tasks))
        if tasks and pool:
            self._announce_pool()

    def _announce_pool(self) -> None:
        self.pool.announce_pool(wake=True)
