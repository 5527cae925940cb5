"""Startup recovery on a real store and real processes: who gets killed (only a provably
own process), how long it takes with several hung groups (one shared grace period), and
what each lost task becomes (failed, requeued at the front, within the poison-pill cap)."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from syncd.core.clock import iso
from syncd.core.models import NewTask, Status, Task
from syncd.pool import reconcile
from syncd.pool.procs import KillResult, boot_id, proc_starttime
from syncd.store.facade import Store

T0 = datetime(2025, 9, 29, 15, 30, 45, tzinfo=timezone.utc)
POLICY = reconcile.Policy(kill_grace=1.0, max_lost_requeues=3)
# Ignores SIGTERM, says so, then waits to be SIGKILLed: the slowest kind of left-over.
STUBBORN = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)


@pytest.fixture
def spawn() -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start(code: str = STUBBORN) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def running_task(store: Store, pid: int | None = None, **identity: Any) -> Task:
    """A task claimed and spawned by a (now gone) previous instance."""
    new = NewTask(
        source="alpha",
        sync_type="a1",
        route="a1",
        argv=["job", "a1"],
        params={},
        priority=5,
        trigger="manual",
    )
    task, _ = store.enqueue(new, allow_duplicate=True)
    assert store.transition(task.id, Status.QUEUED, Status.RUNNING, started_at=iso(T0))
    if pid is not None:
        fields = {"proc_starttime": proc_starttime(pid), "boot_id": boot_id(), **identity}
        assert store.set_running_fields(task.id, pid=pid, **fields)
    found = store.get(task.id)
    assert found is not None
    return found


def gone(proc: subprocess.Popen[str]) -> bool:
    return proc.poll() is not None  # reaped by us: signalled to death, not a zombie


def test_hung_groups_are_killed_together_in_one_grace_period(store, spawn):
    procs = [spawn() for _ in range(3)]
    tasks = [running_task(store, p.pid) for p in procs]
    t0 = time.monotonic()
    killed = reconcile.kill_left_overs(tasks, grace=2.0).killed
    took = time.monotonic() - t0
    assert sorted(killed) == sorted(t.id for t in tasks)
    for proc in procs:
        proc.wait(5)
        assert proc.returncode == -signal.SIGKILL  # TERM was ignored, KILL came after grace
    assert 1.9 <= took < 5.0, f"{took:.2f}s: not one shared grace (serial would take 6 s)"


@pytest.mark.parametrize(
    "wrong", [{"proc_starttime": 1}, {"boot_id": "00000000-0000-4000-8000-000000000000"}]
)
def test_a_recycled_pid_or_another_boot_is_never_signalled(store, spawn, wrong):
    stranger = spawn("print('ready', flush=True); import time; time.sleep(600)")
    task = running_task(store, stranger.pid, **wrong)
    assert reconcile.kill_left_overs([task], grace=0.2).killed == []
    with pytest.raises(subprocess.TimeoutExpired):  # a signal, had one been sent, kills it
        stranger.wait(0.3)


def test_lost_task_fails_and_is_requeued_at_the_front(store, clock):
    older = store.enqueue(
        NewTask("alpha", "a2", "a2", ["job"], {}, 5, "manual"), allow_duplicate=True
    )[0]
    task = running_task(store)  # no identity: died between claim and spawn
    assert reconcile.reconcile_lost(store, clock, POLICY) == [task.id]
    lost = store.get(task.id)
    assert lost is not None and lost.status is Status.FAILED
    assert lost.error == reconcile.LOST_ON_RESTART
    queue = store.tasks_with_status(Status.QUEUED)
    assert [t.trigger for t in queue] == [f"requeue:{task.id}", "manual"]
    assert queue[0].internal["lost_count"] == 1 and queue[1].id == older.id
    # Running it again finds nothing: the follow-up exists once.
    assert reconcile.reconcile_lost(store, clock, POLICY) == []
    assert len(store.tasks_with_status(Status.QUEUED)) == 2


def test_poison_pill_chain_stops_after_the_cap(store, clock):
    policy = dataclasses.replace(POLICY, max_lost_requeues=2)
    first = running_task(store)
    errors = []
    for _ in range(3):
        (lost_id,) = reconcile.reconcile_lost(store, clock, policy)
        errors.append(store.get(lost_id).error)  # type: ignore[union-attr]
        follow = store.next_queued(iso(clock.now()) or "")
        if follow is None:
            break
        store.transition(follow.id, Status.QUEUED, Status.RUNNING)
    assert errors == [reconcile.LOST_ON_RESTART] * 2 + ["lost 3 times, not requeued"]
    assert store.tasks_with_status(Status.QUEUED) == []
    assert store.get(first.id).status is Status.FAILED  # type: ignore[union-attr]


def test_orphans_are_reported_as_without_a_live_process(store, clock):
    task = running_task(store)
    assert reconcile.reconcile_orphans(store, clock, [task], POLICY) == [task.id]
    assert store.get(task.id).error == reconcile.LOST_NO_PROCESS  # type: ignore[union-attr]


def test_a_task_that_finished_meanwhile_is_left_alone(store, clock):
    task = running_task(store)
    store.finish(task.id, Status.COMPLETED, finished_at=iso(T0) or "", exit_code=0, error=None)
    assert reconcile.reconcile_one(store, clock, task, "lost", 3) is None
    assert store.get(task.id).status is Status.COMPLETED  # type: ignore[union-attr]
    assert store.tasks_with_status(Status.QUEUED) == []


def test_a_task_whose_process_outlives_sigkill_is_failed_not_requeued(
    store, clock, spawn, monkeypatch
):
    """Requeueing it would start a second copy beside the one still alive (the overlap the
    pool exists to prevent): it fails with the survivor named, and nothing is queued."""
    proc = spawn()
    task = running_task(store, proc.pid)
    seen: list[int] = []

    def stuck(identity, grace):
        seen.append(identity.pid)
        return KillResult(sent=True, survivors=(identity.pid,))

    monkeypatch.setattr(reconcile, "kill_identified_group", stuck)
    assert reconcile.reconcile_lost(store, clock, POLICY) == [task.id]
    assert seen == [proc.pid]
    lost = store.get(task.id)
    assert lost is not None and lost.status is Status.FAILED
    assert lost.error == (
        f"{reconcile.LOST_ON_RESTART}; not requeued: process {proc.pid} survived SIGKILL"
        " and may still run"
    )
    assert store.tasks_with_status(Status.QUEUED) == []
