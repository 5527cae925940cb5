"""Dispatcher units with a real store and real children, no daemon around them."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from syncd.config.load import loads_config
from syncd.config.routing import RouteTable
from syncd.core.clock import parse_iso
from syncd.core.errors import StoreError
from syncd.core.models import ErrorCode, Status
from syncd.pool.dispatcher import Dispatcher
from syncd.service.tasks import TaskService
from tests.helpers.pool import make, submit, wait_until


def test_a_final_write_that_fails_is_retried_until_it_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make(tmp_path)
    d.stopping = False
    failures = {"left": 2}

    def failing_first(real: Any) -> Any:
        def write(*args: Any, **kwargs: Any) -> Any:
            if failures["left"]:
                failures["left"] -= 1
                raise StoreError(ErrorCode.STORAGE_ERROR, "database or disk is full")
            return real(*args, **kwargs)

        return write

    # A finish is written alone, or with the next claim when a slot frees: both fail.
    monkeypatch.setattr(d.store, "finish", failing_first(d.store.finish))
    monkeypatch.setattr(d.store, "finish_and_claim", failing_first(d.store.finish_and_claim))
    monkeypatch.setattr("syncd.pool.dispatcher.PERSIST_RETRY_SECONDS", 0.05)
    task, _ = submit(d, "ok")
    assert d.tick() == [task.id]
    wait_until(lambda: not d.running)
    final = d.store.get(task.id)
    assert final is not None and final.status is Status.COMPLETED
    assert failures["left"] == 0
    d.store.close()


def test_stop_gives_up_a_failing_final_write_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make(tmp_path)

    def broken_finish(*args: Any, **kwargs: Any) -> Any:
        raise StoreError(ErrorCode.STORAGE_ERROR, "disk I/O error")

    monkeypatch.setattr(d.store, "finish", broken_finish)
    monkeypatch.setattr(d.store, "finish_and_claim", broken_finish)
    monkeypatch.setattr("syncd.pool.dispatcher.PERSIST_RETRY_SECONDS", 0.05)
    task, _ = submit(d, "ok")
    d.tick()
    wait_until(lambda: d.running[task.id].child is not None if task.id in d.running else True)
    t0 = time.monotonic()
    d.stop(timeout=5)
    assert time.monotonic() - t0 < 5
    assert not d.running
    # The row was never finished: the next start reconciles it as lost.
    row = d.store.get(task.id)
    assert row is not None and row.status is Status.RUNNING
    d.store.close()


def make_two_slots(tmp_path: Path) -> Dispatcher:
    """Two slots; routes ok and ok2 exit at once, slow takes a second."""
    d = make(tmp_path)
    cfg = loads_config(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"
socket = "{tmp_path / "s.sock"}"
max_workers = 2
[defaults]
allowed_params = []
[sources.src.routes]
ok = {{ argv = ["{sys.executable}", "-c", "pass"] }}
ok2 = {{ argv = ["{sys.executable}", "-c", "pass"] }}
slow = {{ argv = ["{sys.executable}", "-c", "import time; time.sleep(1)"] }}
""",
        base_dir=tmp_path,
        env={"PATH": os.environ["PATH"]},
    )
    d.update_config(RouteTable.from_config(cfg), cfg.daemon)
    return d


def completed(d: Dispatcher, task_id: int) -> bool:
    task = d.store.get(task_id)
    return task is not None and task.status is Status.COMPLETED


@pytest.mark.parametrize("where", ["loop tick", "worker that just finished"])
def test_a_claim_that_fails_midway_leaves_no_claimed_task_without_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Two slots free; the second claim raises (a busy database). The task claimed before
    it must still run: a claimed row without a thread would hold its slot for ever. A
    worker that just finished claims one task for its own thread and leaves the other free
    slot to the loop (it wakes it), so the second claim is always the loop's."""
    d = make_two_slots(tmp_path)
    woken: list[bool] = []
    if where == "worker that just finished":
        slow = submit(d, "slow")[0]
        assert d.tick() == [slow.id]  # alone; the two below are queued while it runs
        monkeypatch.setattr(d, "wake", lambda: woken.append(True))
    first = submit(d, "ok")[0]
    second = submit(d, "ok2")[0]
    real = d.store.claim_in
    failed = []

    def busy_once_on_second(*args: Any, **kwargs: Any) -> Any:
        claimed = real(*args, **kwargs)  # inside the claim's transaction
        if claimed is not None and claimed.id == second.id and not failed:
            failed.append(claimed.id)
            raise StoreError(ErrorCode.STORAGE_ERROR, "database is locked")
        return claimed

    monkeypatch.setattr(d.store, "claim_in", busy_once_on_second)
    if where == "worker that just finished":
        # The worker of `slow` claims the next task with its finish, and so on: the other
        # free slot is the loop's (woken), never a second claim inside the worker. The
        # finish whose claim failed was rolled back whole, undone in the pool and retried.
        wait_until(lambda: completed(d, first.id) and completed(d, second.id))
        assert woken and failed == [second.id]
        d.store.close()
        return
    with pytest.raises(StoreError):
        d.tick()
    # The failed claim is rolled back in the store and undone in the pool.
    assert second.id not in d.running
    again = d.store.get(second.id)
    assert again is not None and again.status is Status.QUEUED
    wait_until(lambda: completed(d, first.id))
    assert failed == [second.id]
    d.tick()  # the loop's retry
    wait_until(lambda: completed(d, second.id))
    d.store.close()


def test_cancelling_a_running_and_a_queued_task_never_starts_the_queued_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cancel A B` with A running and B next in the queue: A's slot frees while B is
    still being cancelled; B must end cancelled without ever starting."""
    d = make_two_slots(tmp_path)
    d.set_max_workers(1)
    a = submit(d, "slow")[0]
    assert d.tick() == [a.id]
    wait_until(lambda: a.id in d.running and d.running[a.id].child is not None)
    b = submit(d, "ok")[0]
    real = d.store.cancel_queued

    def slow_cancel(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)  # A is killed and gone by now: its slot is free
        return real(*args, **kwargs)

    monkeypatch.setattr(d.store, "cancel_queued", slow_cancel)
    assert TaskService(d.store, d, d.clock).cancel([a.id, b.id]) == ([a.id, b.id], [])
    wait_until(lambda: not d.running)
    final_a, final_b = d.store.get(a.id), d.store.get(b.id)
    assert final_a is not None and final_a.status is Status.CANCELLED
    assert final_b is not None and final_b.status is Status.CANCELLED
    assert final_b.started_at is None
    d.store.close()


def test_a_freed_slot_is_refilled_in_the_finishing_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slot, four queued: the loop claims the first (a commit of its own); each later
    claim shares the commit that finishes the task before it, in queue order."""
    d = make_two_slots(tmp_path)
    d.set_max_workers(1)
    calls: list[str] = []
    for name in ("claim", "transition", "finish", "finish_and_claim"):
        real = getattr(d.store, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(d.store, name, counted)
    d.set_paused(True)
    ids = [submit(d, route, allow_duplicate=True)[0].id for route in ("ok", "ok2", "ok", "ok2")]
    d.set_paused(False)
    assert d.tick() == [ids[0]]
    wait_until(lambda: all(completed(d, i) for i in ids))
    assert calls == ["claim", *["finish_and_claim"] * 4]
    tasks = [d.store.get(i) for i in ids]
    starts = [t.started_at for t in tasks if t is not None]
    ends = [t.finished_at for t in tasks if t is not None]
    assert starts == sorted(starts)  # queue order
    assert all(
        e is not None and s is not None and e <= s
        for e, s in zip(ends[:-1], starts[1:], strict=True)
    )
    d.store.close()


@pytest.mark.parametrize("claim", ["by the loop", "with a finish"])
def test_a_failing_announcement_does_not_strand_a_claimed_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claim: str
) -> None:
    """Someone watches events, and the counts query behind the pool event fails (a busy
    database) right after a task was claimed: by the loop's tick, or in the commit of the
    task before it. The claimed task must still run: its row is `running`, its slot taken."""
    d = make_two_slots(tmp_path)
    d.set_max_workers(1)
    watcher = d.events.subscribe()
    d.set_paused(True)
    first = submit(d, "ok")[0]
    second = submit(d, "ok2")[0]
    victim = first if claim == "by the loop" else second
    real_counts = d.store.counts
    failed: list[bool] = []

    def counts_busy_once_claimed() -> Any:
        row = d.store.get(victim.id)
        if not failed and row is not None and row.status is Status.RUNNING:
            failed.append(True)
            raise StoreError(ErrorCode.BUSY, "database is busy, try again (read)")
        return real_counts()

    monkeypatch.setattr(d.store, "counts", counts_busy_once_claimed)
    d.set_paused(False)
    assert d.tick() == [first.id]
    wait_until(lambda: completed(d, first.id) and completed(d, second.id))
    assert failed == [True]
    wait_until(lambda: not d.running)
    d.events.unsubscribe(watcher)
    d.store.close()


def test_wake_never_waits_for_the_lock_a_finishing_task_holds(tmp_path: Path) -> None:
    """A submit wakes the loop; the finishing task holding `cond` across its commit must
    not hold the submit's reply back (the wake is delivered once `cond` is free)."""
    import threading

    d = make(tmp_path)
    try:
        with d.cond:
            t = threading.Thread(target=d.wake)
            t.start()
            t.join(15)
            assert not t.is_alive()  # returned while this thread holds the lock
    finally:
        d.store.close()


class _TickingClock:
    """Every reading is a second later than the one before: any decision made on one
    reading and stamped with another shows."""

    def __init__(self, start: datetime) -> None:
        self.at = start

    def now(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at

    def monotonic(self) -> float:
        return self.at.timestamp()


def test_a_claim_is_stamped_with_the_instant_its_pick_judged(tmp_path: Path) -> None:
    """A source held back until T: the task may start at T, and its row must never say it
    started before T (the pick, inside the store's transaction, judges at one instant; the
    start time is that instant, not a reading taken before the transaction ran)."""
    d = make(tmp_path)
    clock = _TickingClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    d.clock = clock
    task, _ = submit(d, "ok")
    # Ends between two readings, so a start stamped with a reading taken before the pick's
    # shows as a start before the end.
    until = clock.at + timedelta(seconds=2.5)
    d.sources.throttle("src", 2.5, "test", clock.at)
    for _ in range(30):
        if d.tick():
            break
    claimed = d.store.get(task.id)
    assert claimed is not None and claimed.started_at is not None
    started = parse_iso(claimed.started_at)
    assert started is not None and started >= until, (started, until)
    wait_until(lambda: completed(d, task.id))
    d.store.close()


GATE_WAIT = (
    "import os, sys, time\\nend = time.time() + 60\\n"
    "while not os.path.exists(sys.argv[1]) and time.time() < end: time.sleep(0.01)"
)
GATED = 'gated = {{ argv = ["{py}", "-c", "' + GATE_WAIT + '", "{gate}"] }}\n'


@pytest.mark.parametrize("held_back", [False, True])
def test_a_success_leaving_its_slot_empty_wakes_the_loop_only_if_tasks_are_queued(
    tmp_path: Path, held_back: bool
) -> None:
    """With nothing queued, a freed slot gives the loop nothing to do (a turn was an empty
    claim transaction and a read per task); a task held back (its source paused) may have
    a deadline to compute, so then the loop is woken."""
    gate = tmp_path / "gate"
    d = make(tmp_path, GATED.format(py=sys.executable, gate=str(gate)))
    try:
        task = submit(d, "gated")[0]
        assert d.tick() == [task.id]
        if held_back:
            d.sources.pause("src", None, "test")
            submit(d, "ok")
        with d.cond:
            d.woken()  # forget the wakes so far: only the finish's counts
        gate.touch()
        # Its finish recorded and told, the thread parks: nothing to run next.
        wait_until(lambda: d.workers.parked() == 1)
        assert completed(d, task.id)
        with d.cond:
            assert d.woken() is held_back
    finally:
        gate.touch()
        d.store.close()


def test_a_chained_start_and_the_end_before_it_are_told_after_the_spawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Log lines, events and metrics of a start (and of the end its claim shared a commit
    with) are told once the process runs: off the path from the commit to the spawn."""
    from syncd.pool import supervise

    d = make(tmp_path, f'ok2 = {{ argv = ["{sys.executable}", "-c", "pass"] }}', max_workers=1)
    order: list[tuple[str, int, str]] = []
    d.announcer.on_task = lambda task: order.append(("told", task.id, task.status.value))
    real = supervise.start_child

    def spawn(task: Any, *args: Any, **kwargs: Any) -> Any:
        child = real(task, *args, **kwargs)
        order.append(("spawned", task.id, ""))
        return child

    monkeypatch.setattr(supervise, "start_child", spawn)
    try:
        first = submit(d, "ok")[0]
        second = submit(d, "ok2")[0]
        order.clear()  # the queued announcements
        assert d.tick() == [first.id]
        wait_until(lambda: completed(d, first.id) and completed(d, second.id))
        wait_until(lambda: ("told", second.id, "completed") in order)
        assert order == [
            ("spawned", first.id, ""),
            ("told", first.id, "running"),
            ("spawned", second.id, ""),
            ("told", first.id, "completed"),
            ("told", second.id, "running"),
            ("told", second.id, "completed"),
        ]
    finally:
        d.store.close()


def test_a_submitted_task_runs_before_its_queueing_is_told_but_is_told_started_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submit that claims a free slot hands the task to a parked thread before it tells
    of the queueing (the task runs sooner); watchers still see queued, then running."""
    import threading

    from syncd.pool import supervise

    d = make(tmp_path, f'ok2 = {{ argv = ["{sys.executable}", "-c", "pass"] }}')
    try:
        warm = submit(d, "ok")[0]
        assert d.tick() == [warm.id]
        wait_until(lambda: d.workers.parked() == 1 and completed(d, warm.id))
        told: list[tuple[int, str]] = []
        d.announcer.on_task = lambda task: told.append((task.id, task.status.value))
        spawned = threading.Event()
        real_spawn = supervise.start_child

        def spawn(*args: Any, **kwargs: Any) -> Any:
            child = real_spawn(*args, **kwargs)
            spawned.set()
            return child

        real_announce = d.announce_task

        def announce(task: Any, **kwargs: Any) -> None:
            if task.status is Status.QUEUED:  # the process is running before this is told
                assert spawned.wait(20)
            real_announce(task, **kwargs)

        monkeypatch.setattr(supervise, "start_child", spawn)
        monkeypatch.setattr(d, "announce_task", announce)
        task, _ = submit(d, "ok2", start=True)
        assert task.status is Status.RUNNING
        wait_until(lambda: (task.id, "completed") in told)
        assert told == [(task.id, "queued"), (task.id, "running"), (task.id, "completed")]
    finally:
        d.store.close()
