"""Nothing committed is denied (RELIABILITY R17): once a submit, a cancel or a schedule's fire
has committed, whatever follows (events for a watcher, which read the store) is best effort,
so a busy database at that moment never turns the reply into an error. Real store and
dispatcher; every store read after the commit is made to fail."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from syncd.config.model import Schedule
from syncd.core.errors import StoreError
from syncd.core.models import ErrorCode, Overlap, Status
from syncd.daemon.app import SchedulePoolAdapter
from syncd.pool.dispatcher import Dispatcher
from syncd.schedule.scheduler import Scheduler
from syncd.service.tasks import TaskService
from tests.helpers.pool import make


class BusyAfterCommit:
    """Every store read fails with `busy` once `commit` (a store write) has returned."""

    def __init__(self, d: Dispatcher, commit: str, monkeypatch: pytest.MonkeyPatch):
        self.armed = False
        self.failed_reads = 0
        store = d.store
        real_read, real_commit = store._read, getattr(store, commit)

        def read(*args: Any, **kwargs: Any) -> Any:
            if self.armed:
                self.failed_reads += 1
                raise StoreError(ErrorCode.BUSY, "database is busy, try again (read)")
            return real_read(*args, **kwargs)

        def write(*args: Any, **kwargs: Any) -> Any:
            result = real_commit(*args, **kwargs)
            self.armed = True
            return result

        monkeypatch.setattr(store, "_read", read)
        monkeypatch.setattr(store, commit, write)


@pytest.fixture
def pool(tmp_path: Path) -> Any:
    d = make(tmp_path)
    d.paused = True  # nothing starts: the rows stay as the test made them
    watcher = d.events.subscribe()  # `watch` (syncctl top): every change now reads counts
    yield d
    watcher.close()
    d.store.close()


def service(d: Dispatcher) -> TaskService:
    return TaskService(d.store, d, d.clock)


def submission(tasks: TaskService, n: int) -> Any:
    return tasks.request("src", "ok", None, None, "manual", "test"), bool(n)


def test_a_committed_submit_is_answered_ok(pool, monkeypatch):
    tasks = service(pool)
    busy = BusyAfterCommit(pool, "enqueue_many", monkeypatch)
    task, coalesced = tasks.submit(submission(tasks, 0)[0])
    group = tasks.submit_group([submission(tasks, 1), submission(tasks, 1)])
    many = tasks.submit_many([submission(tasks, 1), submission(tasks, 1)])
    assert busy.failed_reads > 0  # the watcher's events did try to read
    busy.armed = False
    queued = [t.id for t in pool.store.tasks_with_status(Status.QUEUED)]
    assert queued == [task.id] + [t.id for t, _ in group] + [t.id for t, _ in many]
    assert not coalesced


def test_a_committed_cancel_is_answered_ok(pool, monkeypatch):
    tasks = service(pool)
    queued = tasks.submit(submission(tasks, 1)[0], allow_duplicate=True)[0]
    done = tasks.submit(submission(tasks, 1)[0], allow_duplicate=True)[0]
    pool.store.transition(done.id, Status.QUEUED, Status.RUNNING)
    pool.store.transition(done.id, Status.RUNNING, Status.COMPLETED)
    busy = BusyAfterCommit(pool, "cancel_queued", monkeypatch)
    cancelled, skipped = tasks.cancel([queued.id, done.id])
    assert busy.failed_reads > 0
    assert cancelled == [queued.id]
    assert skipped == [{"id": done.id, "status": "completed"}]
    busy.armed = False
    assert pool.store.get(queued.id).status is Status.CANCELLED


def test_a_fire_whose_task_was_queued_is_not_recorded_missed(pool, monkeypatch):
    tasks = service(pool)
    adapter = SchedulePoolAdapter(SimpleNamespace(tasks=tasks, store=pool.store))  # type: ignore[arg-type]
    schedule = Schedule(name="s", cron="* * * * *", source="src", sync_type="ok",
                        overlap=Overlap.QUEUE)  # fmt: skip
    scheduler = Scheduler([schedule], pool.store, adapter, pool.clock)
    busy = BusyAfterCommit(pool, "enqueue_many", monkeypatch)
    outcome = scheduler.run_now("s")
    assert busy.failed_reads > 0
    busy.armed = False
    assert outcome.kind == "queued" and outcome.task_id is not None
    assert pool.store.get(outcome.task_id).status is Status.QUEUED
    state = pool.store.get_schedule_state("s")
    assert state is not None and state["last_outcome"]["kind"] == "queued"
