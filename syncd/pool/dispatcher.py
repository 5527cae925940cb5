"""The pool: slot accounting (global, per source, per route), dispatch in priority/FIFO order,
one worker thread per running task, and the announcement of every task change it makes.

Dispatch is event-driven: submits, finishes and config changes notify `cond`; the daemon's
loop waits on it until the next deadline and calls `tick()`. A claim is decided inside the
store's write transaction (`_claim_in`, in the writer's thread) under `cond`, which is held
for that only: nobody may wait for the store while holding `cond`, or the writer, waiting
for `cond` inside its transaction, would never finish. Lock order: the store's lock, then
`cond`, then the sources' lock."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from syncd.config.model import DaemonSettings
from syncd.config.routing import RouteTable
from syncd.core import paths
from syncd.core.clock import Clock, iso, parse_iso
from syncd.core.errors import SyncdError
from syncd.core.events import EventBus
from syncd.core.failpoints import failpoint
from syncd.core.models import Status, Task
from syncd.pool import slots
from syncd.pool.announce import Announcer, BulkObserver
from syncd.pool.policy import Outcome, decide
from syncd.pool.running import RunningTask
from syncd.pool.sources import Sources, Start
from syncd.pool.supervise import (
    KILL_CANCEL,
    KILL_SHUTDOWN,
    run_child,
)
from syncd.pool.waker import Waker
from syncd.pool.workers import Workers
from syncd.store.facade import Store
from syncd.store.requests import Ending, Pick

log = logging.getLogger(__name__)


PERSIST_RETRY_SECONDS = 1.0
T = TypeVar("T")


@dataclass
class _Claim:
    """What a claim's transaction did to the pool, to undo if it is rolled back."""

    admitted: RunningTask | None = None  # the task claimed and given a slot
    finished: RunningTask | None = None  # the task whose finish freed the slot
    queue_empty: bool = False  # nothing was left queued to take the freed slot
    start: Start | None = None  # what the claim changed in its source's state

    def undo(self, pool: Dispatcher) -> None:
        """Caller holds `cond`."""
        if self.start is not None:  # else a probe that never ran holds its source for good
            pool.sources.unstarted(self.start)
            self.start = None
        if self.admitted is not None:
            pool.running.pop(self.admitted.task.id, None)
            self.admitted = None
            # Claims made meanwhile saw this slot taken, and stop() may wait for `running`
            # to empty: both must look again.
            pool._waker.wake_held()
        if self.finished is not None:
            pool.running[self.finished.task.id] = self.finished
            self.finished = None


class QueueClaims:
    """The claims made inside the transaction that queues work: while slots are free, the
    next tasks are claimed in that same transaction (the loop's claim after it was a second
    commit per task). Called with the connection inside the transaction; after the commit
    `start()` gives each admitted task its thread; if the transaction fails, `undo()`."""

    def __init__(self, pool: Dispatcher) -> None:
        self._pool = pool
        self._boxes: list[_Claim] = []

    def __call__(self, conn: sqlite3.Connection) -> None:
        self.undo()  # run again after a rolled-back batch: start from the pool as it was
        while True:
            box = _Claim()
            self._boxes.append(box)  # before the claim: a failure inside it is undone too
            if self._pool._claim_in(conn, None, box) is None:
                return

    def undo(self) -> None:
        with self._pool.cond:
            for box in self._boxes:
                box.undo(self._pool)
            self._boxes.clear()

    def start(self) -> dict[int, Task]:
        """After the commit, first thing: each claimed task goes to a parked thread (or to
        the loop, which starts one: starting a thread here, on the submitter's reply path,
        made every submit wait for it to be scheduled). Their starts are told only after
        `told()`: the caller tells of the queueing meanwhile. Returns their tasks (running)
        by id."""
        started = [box.admitted for box in self._boxes if box.admitted is not None]
        if started:
            for rt in started:
                rt.hold_telling()
            failpoint("after_claim")
            self._pool.hand_to_loop(started)
        return {rt.task.id: rt.task for rt in started}

    def told(self) -> None:
        """The queueing is told: the claimed tasks' starts may be."""
        for box in self._boxes:
            if box.admitted is not None:
                box.admitted.release_telling()


class Dispatcher:
    def __init__(
        self,
        *,
        store: Store,
        routes: RouteTable,
        settings: DaemonSettings,
        clock: Clock,
        events: EventBus,
        base_env: Mapping[str, str] | None = None,
        on_task: Callable[[Task], None] | None = None,
        on_bulk_end: BulkObserver | None = None,
    ):
        self.store = store
        self.routes = routes
        self.settings = settings
        self.clock = clock
        self.events = events
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.announcer = Announcer(events, store, clock, on_task, on_bulk_end)
        self.cond = threading.Condition()
        self._waker = Waker(self.cond)
        # Orders the store's and memory's copy of a setting (never `cond`: the store's writer
        # takes `cond` for each claim, so nobody may wait for the store while holding it).
        self._settings_lock = threading.Lock()
        self.running: dict[int, RunningTask] = {}
        self._to_launch: deque[RunningTask] = deque()  # claimed by a submit: the loop starts
        self.workers: Workers[RunningTask] = Workers(
            self._work, lambda: self.max_workers, name=lambda rt: f"task-{rt.task.id}"
        )
        self.stopping = False
        self.paused = store.get_setting("paused") == "1"
        # The runtime max_workers override, read once: every dispatch consults it, and only
        # set_max_workers changes it (a SQLite read per tick was a measurable share of one).
        override = store.get_setting("max_workers")
        self._max_workers_override = int(override) if override else None
        self.store_id = store.store_id()  # in every child's environment (reconcile finds it)
        self.log_dir = paths.log_dir(settings.state_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.sources = Sources(store, clock, events, lambda name: self.routes.source(name))

    # -- settings ---------------------------------------------------------------------------
    @property
    def max_workers(self) -> int:
        override = self._max_workers_override
        return override if override is not None else self.settings.max_workers

    def set_max_workers(self, value: int | None) -> None:
        """Persisted runtime override; None returns to file/env. Lowering never kills.
        The store and memory change under one lock: racing calls cannot leave them apart."""
        with self._settings_lock:
            self.store.set_setting("max_workers", None if value is None else str(value))
            with self.cond:
                self._max_workers_override = value
        self.workers.trim()  # lowered: threads parked beyond it end now
        self._changed("pool")

    def set_paused(self, paused: bool) -> None:
        with self._settings_lock:  # store and memory together, as for max_workers
            self.store.set_setting("paused", "1" if paused else None)
            with self.cond:
                self.paused = paused
        self._changed("pool")

    def update_config(self, routes: RouteTable, settings: DaemonSettings) -> None:
        with self.cond:
            self.routes = routes
            self.settings = settings
        self._changed("config")

    def kill(self, task_id: int, reason: str, detail: str | None = None) -> bool:
        with self.cond:
            rt = self.running.get(task_id)
            if rt is None:
                return False
            self._kill(rt, reason, detail)
            return True

    def _kill(self, rt: RunningTask, reason: str, detail: str | None = None) -> None:
        if reason == KILL_CANCEL:  # acknowledged to the client: it wins over any other reason
            rt.cancel_requested = True
        if rt.kill_reason is None:
            rt.kill_reason = reason
            rt.kill_detail = detail
            log.info("task %d: killing (%s)", rt.task.id, detail or reason)
        if rt.child is not None:
            rt.child.terminate(self.settings.kill_grace_seconds)

    # -- dispatch ---------------------------------------------------------------------------
    def wake(self) -> None:
        """Wake the loop; never waits for `cond` (the writer takes it for each claim), so
        a submit is answered without waiting for anyone's pick."""
        self._waker.wake()

    def woken(self) -> bool:
        """Was the loop woken since it last asked (it must not wait then)? Caller holds
        `cond`, the loop just before it would wait."""
        return self._waker.take()

    def hand_to_loop(self, claimed: list[RunningTask]) -> None:
        """Tasks claimed (committed, admitted) outside the loop: each goes to a parked
        worker thread, or else to the loop, which starts a thread for it (starting one
        here would make the caller, a submit's reply, wait for it to be scheduled). When
        stopping, the caller starts them itself: the loop may be gone, and stop() waits
        for every admitted task's end."""
        for rt in claimed:
            if self.stopping or not self.workers.hand_off(rt):
                self._to_launch.append(rt)
        if self.stopping:
            self.launch_handed()
        elif self._to_launch:
            self.wake()

    def launch_handed(self) -> list[int]:
        """Give every task handed to the loop its thread (each exactly once, whoever calls)."""
        started: list[int] = []
        while True:
            try:
                rt = self._to_launch.popleft()
            except IndexError:
                return started
            self._launch(rt)
            started.append(rt.task.id)

    def tick(self) -> list[int]:
        """Start queued tasks while slots are free, each on a thread of its own; returns
        the ids started (first those a submit claimed). Each claim is its own (group)
        transaction; a failing one raises, and every task claimed before it already has its
        thread."""
        started = self.launch_handed()
        while True:
            with self.cond:
                pick = self._pick()
            if pick is None:  # paused, stopping, full: no store round trip
                break
            rt = self._claim_one()
            if rt is None:
                break
            started.append(rt.task.id)
            self._launch(rt)
        return started

    def claims_for_queue(self) -> QueueClaims:
        """Claims to make inside a transaction that queues work (see QueueClaims)."""
        return QueueClaims(self)

    def _claim_one(self) -> RunningTask | None:
        box = _Claim()
        try:
            claimed = self.store.claim(lambda conn: self._claim_in(conn, None, box))
        except BaseException:
            with self.cond:
                box.undo(self)
            raise
        if claimed is None:
            return None
        failpoint("after_claim")  # crash tests: a task whose start kills the daemon
        return box.admitted

    def _claim_in(
        self, conn: sqlite3.Connection, finishing: int | None, box: _Claim
    ) -> Task | None:
        """Inside the store's write transaction (the writer's thread): the task `finishing`
        leaves its slot, and the next task is picked, claimed and admitted, all under
        `cond`, which is held for this only and never across the commit. A pick made later
        in the same transaction sees this one's claim. If the transaction is rolled back,
        the caller undoes the admission (`box`)."""
        with self.cond:
            box.undo(self)  # run again after a rolled-back batch: start from the pool as it was
            pick = self._pick(finishing=finishing)
            # Started at the instant the pick judged (a hold that ended just then, a
            # cooldown say, never shows a start before its end).
            claimed = None if pick is None else self.store.claim_in(conn, pick, pick.now)
            if finishing is not None:
                box.finished = self.running.pop(finishing, None)
                nothing_left = pick is not None and claimed is None
                box.queue_empty = nothing_left and self.store.queued_in(conn) == 0
            if claimed is not None:
                at = parse_iso(claimed.started_at) or self.clock.now()
                box.start = self.sources.started(claimed, at)
                box.admitted = self._admit(claimed)
            return claimed

    def view(self, finishing: int | None = None) -> slots.View:
        """The pool as the eligibility rule sees it (the task `finishing` no longer counts).
        Caller holds `cond`."""
        running = [rt.task for rt in self.running.values() if rt.task.id != finishing]
        now = self.clock.now()
        return slots.View(
            now=now,
            paused=self.paused,
            max_workers=self.max_workers,
            running=running,
            limit=self._limit,
            holds=self.sources.holds(now, running),
            stopping=self.stopping,
        )

    def _limit(self, source: str) -> int | None:
        src = self.routes.source(source)
        return src.max_concurrent if src is not None else None

    def _pick(self, finishing: int | None = None) -> Pick | None:
        """What the next claim may take; None when no task may start. Caller holds `cond`."""
        if self.paused or self.stopping:  # the cheap common refusals, before building a view
            return None
        if len(self.running) - (finishing in self.running) >= self.max_workers:
            return None  # every slot taken: a wake-up while all run costs no view
        return slots.pick(self.view(finishing))

    def _admit(self, claimed: Task) -> RunningTask:
        """Give a claimed task its slot (caller holds `cond`, inside the claim's transaction)."""
        route = self.routes.route(claimed.source, claimed.route)
        mono = self.clock.monotonic()
        rt = RunningTask(task=claimed, route=route, started_mono=mono, last_progress_mono=mono)
        self.running[claimed.id] = rt
        return rt

    def _announce_start(self, rt: RunningTask) -> None:
        """Log and publish a start. Never raises: the task is admitted and must get its
        thread whatever happens to the telling (a busy counts query behind a pool event)."""
        task = rt.task
        log.info("task %d started: %s.%s (%s)", task.id, task.source, task.route, task.trigger)
        try:
            self.announce_task(task, wake=False)  # whoever claimed it is the one awake
            self.sources.announce_probe(task)
        except Exception:
            log.exception("task %d: announcing its start failed", task.id)

    def _launch(self, rt: RunningTask) -> None:
        """Give a claimed task its worker thread (a parked one, or a new one). A thread
        that cannot start must not keep the slot: the task is recorded failed and leaves
        the pool."""
        try:
            self.workers.launch(rt)
        except Exception as exc:
            log.error("task %d: cannot start its worker thread: %s", rt.task.id, exc)
            with self.cond:
                self.running.pop(rt.task.id, None)
                self._waker.wake_held()
            self.sources.never_ran(rt.task)
            error = f"internal error in syncd: cannot start a worker thread ({exc})"
            try:
                done, _ = self.store.finish(
                    rt.task.id, Status.FAILED, finished_at=iso(self.clock.now()) or "",
                    exit_code=None, error=error,
                )  # fmt: skip
            except SyncdError as err:  # the row stays running: fix-stuck or a restart
                log.error("task %d: recording its failure failed: %s", rt.task.id, err.message)
                return
            if done is not None:
                self.announce_task(done, wake=False)

    def next_deadline(self) -> float | None:
        """Seconds until a queued task's not_before passes or a source's hold lifts (None:
        nothing is waiting on time)."""

        now = self.clock.now()
        times = [t for t in (parse_iso(self.store.next_not_before()),
                             self.sources.next_change(now)) if t is not None]  # fmt: skip
        if not times:
            return None
        return max(0.0, (min(times) - now).total_seconds())

    # -- one task ---------------------------------------------------------------------------
    def _work(self, first: RunningTask) -> None:
        """Run a task, then, while queued tasks fit in the slot it freed, the next one in
        this same thread: the slot-free -> next-start gap is one transaction (the finish and
        the next claim share it), with no wake-up of the loop thread and no thread to start."""
        # Told in this thread (not on the path of whoever claimed it), once it is spawned.
        first.untold = lambda: self._announce_start(first)
        rt: RunningTask | None = first
        while rt is not None:
            me = threading.current_thread()
            me.name, rt.thread = f"task-{rt.task.id}", me
            current = rt
            try:
                outcome = self._run_child(current)
            except Exception:  # a bug must not leave the row running and the slot taken
                log.exception("task %d: internal error in its worker", current.task.id)
                outcome = Outcome(Status.FAILED, None, "internal error in syncd (see daemon log)")
            current.tell()  # not spawned (a spawn error, a kill before it): told now
            try:
                rt = self._finish(current, outcome)
            except Exception:  # the row stays running (reconciled at the next start)
                log.exception("task %d: recording its end failed", current.task.id)
                with self.cond:
                    self.running.pop(current.task.id, None)
                    self._waker.wake_held()  # the loop refills the slot
                rt = None

    def _run_child(self, rt: RunningTask) -> Outcome:
        return run_child(self, rt)

    def persist(self, what: str, write: Callable[[], T], gave_up: T) -> T:
        return self._persist(what, write, gave_up)

    def _finish(self, rt: RunningTask, outcome: Outcome) -> RunningTask | None:
        """Record how the task ended, claim the next task for the freed slot in the same
        transaction and return it for the caller's thread to run (other free slots, if
        any, get threads of their own)."""
        task = rt.task
        now = self.clock.now()
        if rt.cancel_requested and outcome.status is not Status.COMPLETED:
            # The client was told "cancelled" (and a restart would say so): a kill already
            # under way (a timeout, a shutdown) or an exit of its own just before the cancel
            # must not end it failed with a retry, or deferred, behind the client's back.
            why = None if outcome.error in (None, "cancelled") else outcome.error
            outcome = Outcome(Status.CANCELLED, outcome.exit_code,
                              "cancelled" + (f" ({why})" if why else ""))  # fmt: skip
        decision = decide(
            task,
            rt.route,
            outcome,
            now,
            shutdown=rt.kill_reason == KILL_SHUTDOWN,
            requeue_on_shutdown=self.settings.on_shutdown.value == "requeue",
            deferrals=lambda: self.store.deferral_depth(task),
        )
        status, code = decision.status, outcome.exit_code
        outcome = Outcome(status, code, decision.error)
        progress = rt.child.log.progress if rt.child is not None else None
        self.apply_throttle(rt)
        self.sources.finished(task, status, now, counts=decision.counts)
        source_state = (task.source, lambda: self.sources.row(task.source))  # as it commits
        ending = Ending(status, iso(now) or "", code, decision.error, decision.retry,
                        decision.requeue, progress, decision.defer, source_state)  # fmt: skip
        box = _Claim()

        def write() -> tuple[Task | None, Task | None]:
            try:
                done, follow, _ = self.store.finish_and_claim(
                    task.id, ending, claim=lambda conn: self._claim_in(conn, task.id, box)
                )
            except BaseException:
                with self.cond:
                    box.undo(self)
                raise
            return done, follow

        gave_up: tuple[Task | None, Task | None] = (None, None)
        done, follow = self._persist(f"task {task.id} {status.value}", write, gave_up)
        admitted = [box.admitted] if box.admitted is not None else []
        if admitted:
            failpoint("after_claim")
        with self.cond:
            self.running.pop(task.id, None)
            # stop() waits for every end to be recorded; the loop must look again when the
            # freed slot stayed empty while tasks are queued (held back: a deadline to
            # compute) or a failure moved a breaker. A slot refilled by a success, or left
            # empty by one with nothing queued, changes nothing it waits for, and waking it
            # there cost a loop turn (an empty claim transaction and a store read) per task.
            held_back = not admitted and not box.queue_empty
            if self.stopping or held_back or status is not Status.COMPLETED:
                self._waker.wake_held()

        def tell() -> None:  # the end is committed: telling must not strand the task claimed
            try:
                self._announce_finish(rt, outcome, done, follow)
            except Exception:
                log.exception("task %d: announcing its end failed", task.id)
            if admitted:
                self._announce_start(admitted[0])

        if not admitted:  # nothing fitted the freed slot, so nothing fits any other
            tell()
            return None
        admitted[0].untold = tell  # told once the next task's process is spawned
        # Other free slots (max_workers raised meanwhile, or idle while this one ran) are
        # the loop's to fill: this thread goes straight on to start the task it claimed
        # (a pick here was a store read behind the next commit on every task's path).
        if len(self.running) < self.max_workers:
            self.wake()
        return admitted[0]

    def apply_throttle(self, rt: RunningTask) -> None:
        """A `::throttle SECONDS [reason]` line not applied yet holds the whole source back."""
        log_ = rt.child.log if rt.child is not None else None
        with self.cond:  # the monitor and the task's own thread both apply
            if log_ is None or log_.throttle is None or log_.throttles == rt.throttles_applied:
                return
            rt.throttles_applied = log_.throttles
            seconds, reason = log_.throttle
        why = f"task {rt.task.id}: {reason}" if reason else f"task {rt.task.id}"
        self.sources.throttle(rt.task.source, seconds, why, self.clock.now())
        self.wake()  # the deadline changed

    def _announce_finish(
        self, rt: RunningTask, outcome: Outcome, done: Task | None, follow: Task | None
    ) -> None:
        task = rt.task
        duration = self.clock.monotonic() - rt.started_mono
        log.info(
            "task %d finished: %s.%s %s in %.1fs%s",
            task.id,
            task.source,
            task.route,
            outcome.status.value,
            duration,
            f" ({outcome.error})" if outcome.error else "",
        )
        if follow is not None:
            log.info(
                "task %d queued: %s (%s)", follow.id, follow.trigger, follow.not_before or "now"
            )
        if done is not None:
            self.announce_task(done, wake=False)
        if follow is not None:  # a new deadline (a retry's not_before) for the loop
            self.announce_task(follow)

    def _persist(self, what: str, write: Callable[[], T], gave_up: T) -> T:
        """A final write that must not be lost to a full disk or a foreign lock: retry every
        second until it lands. On shutdown it gives up (the row stays `running`, and the next
        start reconciles it as lost), so a dead disk cannot hang the stop."""
        while True:
            try:
                return write()
            except SyncdError as exc:
                if self.stopping:
                    log.error("%s not recorded (%s); reconciled at next start", what, exc.message)
                    return gave_up
                log.warning("%s not recorded yet (%s); retrying", what, exc.message)
            with self.cond:
                self.cond.wait(PERSIST_RETRY_SECONDS)

    # -- shutdown ---------------------------------------------------------------------------
    def stop(self, timeout: float) -> bool:
        """Stop dispatching, kill every running task and wait until each one's end is
        recorded (a task leaves `running` only after its final write), so the store can be
        closed after the workers' last writes. Waits on the tasks, not on threads: a task
        claimed by a finishing worker has no thread of its own yet. False on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            self.stopping = True
            for rt in list(self.running.values()):
                self._kill(rt, KILL_SHUTDOWN)
        self.workers.stop()  # parked threads end; tasks not started yet get new ones
        self.launch_handed()  # claimed by a submit, not started yet: their ends are recorded
        with self.cond:
            while self.running:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error(
                        "stop: %d task(s) not recorded after %.0f s: %s (reconciled at next start)",
                        len(self.running),
                        timeout,
                        ", ".join(map(str, sorted(self.running))),
                    )
                    return False
                self.cond.wait(left)
        return True

    # -- events -----------------------------------------------------------------------------
    def wake_for_queue(self) -> None:
        """New queued work: wake the loop, unless paused (resume wakes it)."""
        if not self.paused:
            self.wake()

    def announce_task(
        self, task: Task, *, wake: bool = True, pool: bool = True, observe: bool = True
    ) -> None:
        """Publish a task's new state (and, with `pool`, the pool's counts); best effort.
        `observe` False: the metrics have counted this change already."""
        self.announcer.task(task, observe=observe)
        if pool:
            self.announce_pool(wake=wake)
        elif wake:
            self.wake()

    def announce_pool(self, *, wake: bool = False) -> None:
        self._changed("pool", wake=wake)

    def _changed(self, kind: str, *, wake: bool = True) -> None:
        self.announcer.changed(kind, running=len(self.running))
        if wake:
            self.wake()
