"""Issue 11, part B, units: pool settings under one lock, exceptions after a spawn, a worker
thread that cannot start, the leader's exit status against a late kill. A real store and
real children, no daemon around them; interleavings are forced with events, never sleeps."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from syncd.core.events import EventBus
from syncd.core.models import Status, Task
from syncd.pool.dispatcher import Dispatcher
from syncd.pool.sources import CLOSED, HALF_OPEN
from syncd.pool.supervise import KILL_CANCEL, KILL_TIMEOUT
from syncd.service import tasks as tasks_module
from syncd.service.tasks import TaskService
from tests.helpers import pool
from tests.helpers.pool import make
from tests.helpers.procs import Impostor, pause, record_killpg

DEADLINE = 20.0


def submit(d: Dispatcher, sync_type: str) -> Task:
    return pool.submit(d, sync_type)[0]


def wait_until(predicate: Any, what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def final(d: Dispatcher, task_id: int) -> Task:
    def done() -> Task | None:
        task = d.store.get(task_id)
        return task if task is not None and task.status is not Status.RUNNING else None

    result: Task = wait_until(done, f"task {task_id} to end")
    wait_until(lambda: task_id not in d.running, f"task {task_id} to leave the pool")
    return result


# -- item 10: pause and max-workers: store and memory under one lock -----------------------
@pytest.mark.parametrize("setting", ["max_workers", "paused"])
def test_racing_setting_changes_leave_store_and_memory_agreeing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    d = make(tmp_path)
    first_written, release = threading.Event(), threading.Event()
    real = d.store.set_setting
    calls = {"n": 0}

    def set_setting(name: str, value: str | None) -> None:
        real(name, value)
        calls["n"] += 1
        if calls["n"] == 1:  # the first caller stalls between its store write and memory
            first_written.set()
            release.wait(DEADLINE)

    monkeypatch.setattr(d.store, "set_setting", set_setting)
    if setting == "max_workers":
        first, second = (lambda: d.set_max_workers(1)), (lambda: d.set_max_workers(7))
    else:
        first, second = (lambda: d.set_paused(True)), (lambda: d.set_paused(False))
    a = threading.Thread(target=first)
    a.start()
    assert first_written.wait(DEADLINE)
    b = threading.Thread(target=second)
    b.start()
    b.join(1.5)  # today the second call completes here; with the lock it waits for the first
    release.set()
    a.join(DEADLINE)
    b.join(DEADLINE)
    assert not a.is_alive() and not b.is_alive()
    if setting == "max_workers":
        stored = d.store.get_setting("max_workers")
        assert stored is not None and int(stored) == d.max_workers
    else:
        assert (d.store.get_setting("paused") == "1") == d.paused


# -- item 8: a clean exit is a completion --------------------------------------------------
LEAVES = """
import os, subprocess, sys, time
ready = sys.argv[1] + "/trapped"
kid = subprocess.Popen(
    [sys.executable, "-c", "import signal, sys, time;"
     " signal.signal(signal.SIGTERM, signal.SIG_IGN);"
     " open(sys.argv[1], 'w').close(); time.sleep(600)", ready],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while not os.path.exists(ready):
    time.sleep(0.01)
open(sys.argv[1] + "/kid", "w").write(str(kid.pid))
"""


def leader_is_zombie(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw.rpartition(b")")[2].split()[0] == b"Z"


@pytest.mark.parametrize("how", ["cancel", "timeout", "shutdown"])
def test_leader_exit_0_wins_over_a_kill_during_the_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    script = tmp_path / "leaves.py"
    script.write_text(LEAVES)
    route = f'leaves = {{ argv = ["{sys.executable}", "{script}", "{tmp_path}"] }}'
    d = make(tmp_path, route, kill_grace_seconds=0.5, on_shutdown='"requeue"')
    # The leftover window stays open until the kill's own SIGKILL ends it.
    monkeypatch.setattr("syncd.pool.runner.Child.leftover_grace", 120.0)
    task = submit(d, "leaves")
    assert d.tick() == [task.id]
    rt = d.running[task.id]
    wait_until(lambda: rt.child is not None, "the spawn")
    assert rt.child is not None
    leader = rt.child.pid
    wait_until(lambda: leader_is_zombie(leader), "the leader to exit (its leftover trapped)")
    if how == "shutdown":
        d.stop(DEADLINE)
    else:
        reason = KILL_CANCEL if how == "cancel" else KILL_TIMEOUT
        assert d.kill(task.id, reason, "timeout after 1 min")
    done = final(d, task.id)
    assert (done.status, done.exit_code, done.error) == (Status.COMPLETED, 0, None)
    kid = int((tmp_path / "kid").read_text())
    wait_until(lambda: not Path(f"/proc/{kid}").exists() or leader_is_zombie(kid), "kid gone")
    assert d.store.tasks_with_status(Status.QUEUED) == []  # nothing requeued or retried


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_p5_a_late_cancel_or_timeout_spares_the_recycled_group_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """RELIABILITY P5 through the pool: the task's leader exited and was reaped (its group
    empty) but its end is not recorded yet, and its number now leads another program's
    group. A cancel or a timeout arriving then sends no killpg to that number and no signal
    to that group (a real process took the number over), and the task ends `completed`."""
    d = make(tmp_path, kill_grace_seconds=0.05)
    reaped, release = threading.Event(), threading.Event()
    real_finish = d._finish

    def held_finish(rt: Any, outcome: Any) -> Any:  # between the reap and the record
        reaped.set()
        assert release.wait(DEADLINE)
        return real_finish(rt, outcome)

    monkeypatch.setattr(d, "_finish", held_finish)
    task = submit(d, "ok")
    assert d.tick() == [task.id]
    assert reaped.wait(DEADLINE)
    rt = d.running[task.id]
    assert rt.child is not None and rt.child.exited  # reaped: its number is free
    impostor = Impostor(rt.child.pid, tmp_path)
    try:
        killpgs = record_killpg(monkeypatch)
        reason = KILL_CANCEL if how == "cancel" else KILL_TIMEOUT
        assert d.kill(task.id, reason, "timeout after 1 min")
        pause(0.5)  # ten times the grace: a SIGKILL escalation would have fired by now
        assert killpgs == []
        assert impostor.signals() == ""
        assert impostor.intact()
        release.set()
        done = final(d, task.id)
        assert (done.status, done.exit_code) == (Status.COMPLETED, 0)
    finally:
        release.set()
        impostor.kill()


# -- item 9: exceptions after a spawn, a worker thread that cannot start, no lock held ------
SLEEPER = f'sleeper = {{ argv = ["{sys.executable}", "-c", "import time; time.sleep(600)"] }}'


def test_an_exception_after_the_spawn_kills_the_child_before_the_task_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make(tmp_path, SLEEPER, kill_grace_seconds=0.5)
    seen: dict[str, int] = {}
    real = d.store.set_running_fields

    def broken(task_id: int, **fields: Any) -> bool:
        seen["pid"] = fields["pid"]
        raise RuntimeError("a bug after the spawn")

    monkeypatch.setattr(d.store, "set_running_fields", broken)
    task = submit(d, "sleeper")
    assert d.tick() == [task.id]
    done = final(d, task.id)
    assert done.status is Status.FAILED and "internal error" in (done.error or "")
    pid = seen["pid"]
    # Recorded only once the child is gone (reaped by its supervisor: no /proc entry).
    assert not Path(f"/proc/{pid}").exists() or leader_is_zombie(pid)
    assert real  # the real method is untouched


def no_task_threads(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make every task's worker thread fail to start; returns the real Thread.start."""
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name.startswith("task-"):
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    return real_start


def test_a_worker_thread_that_cannot_start_frees_its_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make(tmp_path, SLEEPER)
    no_task_threads(monkeypatch)
    task = submit(d, "sleeper")
    d.tick()
    assert task.id not in d.running
    done = d.store.get(task.id)
    assert done is not None and done.status is Status.FAILED
    assert "worker thread" in (done.error or "")


def test_a_probe_whose_worker_thread_cannot_start_lets_another_task_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    breaker = "[sources.src]\nbreaker = { failures = 1, cooldown_minutes = 1 }\n"
    d = make(tmp_path, f"{SLEEPER}\n{breaker}")
    d.sources.state("src").breaker = HALF_OPEN
    real_start = no_task_threads(monkeypatch)
    task = submit(d, "sleeper")
    d.tick()
    state = d.sources.state("src")
    assert (state.breaker, state.probe, state.failures) == (HALF_OPEN, None, 0)
    monkeypatch.setattr(threading.Thread, "start", real_start)
    ok = submit(d, "ok")
    assert d.tick() == [ok.id]
    pool.wait_until(lambda: d.sources.state("src").breaker == CLOSED, what="the probe to close it")
    failed = d.store.get(task.id)
    assert failed is not None and failed.status is Status.FAILED
    assert d.stop(timeout=20)


def test_terminate_is_not_blocked_by_a_supervisor_waiting_for_its_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A supervision error sends the supervisor to reap a child that is still running:
    it must not hold the child's lock while it waits, since terminate() (called with the
    dispatcher's condition held) needs that lock to stop the child."""
    from syncd.pool import runner

    def broken(self: runner.Child) -> None:
        raise RuntimeError("supervision broke")

    monkeypatch.setattr(runner.Child, "_await_leader_exit", broken)
    req = runner.SpawnRequest(
        task_id=1,
        argv=[sys.executable, "-c", "import time; time.sleep(600)"],
        cwd=None,
        env=dict(os.environ),
        log_path=tmp_path / "1.log",
        log_max_bytes=1 << 20,
    )
    child = runner.Child.start(req)  # its supervisor thread hits the error at once
    wait_until(lambda: child._supervising, "the supervisor to start")
    done = threading.Event()

    def stop() -> None:
        child.terminate(0.5)
        done.set()

    threading.Thread(target=stop, daemon=True).start()
    try:
        assert done.wait(DEADLINE), "terminate() blocked on the child's lock"
        assert child.wait(DEADLINE) is not None
    finally:
        if not child.exited:
            os.kill(child.pid, 9)


# -- item 14: bulk cancels commit in batches; submits get in between ------------------------
def seed(d: Dispatcher, n: int) -> list[int]:
    service = TaskService(d.store, d, d.clock)
    new = service.request("src", "ok", None, None, "manual", "test")
    results = d.store.enqueue_many([(new, True)] * n)
    return [t.id for t, _ in results]


@pytest.mark.parametrize("how", ["cancel", "clear_queue", "reset"])
def test_a_bulk_cancel_commits_in_batches_and_a_submit_gets_in_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr("syncd.service.tasks.BULK_BATCH", 500, raising=False)
    d = make(tmp_path)
    d.paused = True  # nothing starts: the other client's submit would claim a free slot
    ids = seed(d, 3000)
    service = TaskService(d.store, d, d.clock)
    d.events = d.announcer.events = EventBus(max_bytes=1 << 30)  # room for every event
    sub = d.events.subscribe(["task"])  # a watcher: every cancelled task is announced
    commits: list[tuple[str, int]] = []
    submitted: list[int] = []

    def submit_now() -> None:  # another client, while the bulk cancel is under way
        new = service.request("src", "ok", {}, 1, "manual", "other")
        submitted.append(service.submit(new, allow_duplicate=True)[0].id)
        commits.append(("submit", 1))

    def recorded(real: Any, count: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            commits.append(("cancel", count(result)))
            if len(commits) == 1:  # after the first cancel commit, a submit must get in
                t = threading.Thread(target=submit_now)
                t.start()
                t.join(DEADLINE)
                assert submitted, "a submit waited for the whole bulk cancel"
            return result

        return call

    monkeypatch.setattr(d.store, "cancel_queued", recorded(d.store.cancel_queued, len))
    if hasattr(d.store, "cancel_queued_page"):
        page = recorded(d.store.cancel_queued_page, len)
        monkeypatch.setattr(d.store, "cancel_queued_page", page)
    if how == "cancel":
        cancelled, skipped = service.cancel(ids)
        assert len(cancelled) == 3000 and skipped == []
    elif how == "clear_queue":
        service.clear_queue()
    else:
        service.reset(force=False)
    kinds = [kind for kind, _ in commits]
    assert "submit" in kinds and "cancel" in kinds[kinds.index("submit") + 1 :]
    assert max(n for kind, n in commits if kind == "cancel") <= 500
    assert sum(n for kind, n in commits if kind == "cancel") == 3000
    assert d.store.counts()["queued"] == 1  # the submit that got in is left alone
    (task,) = d.store.tasks_with_status(Status.QUEUED)
    assert task.id == submitted[0]
    announced = set()
    while (event := sub.get(0)) is not None:
        if event["status"] == "cancelled":
            announced.add(event["task"]["id"])
    assert announced == set(ids)


# -- item 11 (part): a failing dispatch does not starve the heartbeat ----------------------
class _Every:
    """A loop part that wants to run again in `seconds` and counts its runs."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds, self.runs = seconds, 0
        self.watchdog_interval = seconds

    def tick(self) -> float:
        self.runs += 1
        return self.seconds

    def watchdog(self, status: str) -> None:
        self.runs += 1


def test_a_dispatch_that_keeps_failing_does_not_stop_heartbeats_or_the_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the store is busy for dispatch (a long write elsewhere), running tasks must
    still get their heartbeat (and so their progress line written) and systemd its ping."""
    from syncd.core.errors import StoreError
    from syncd.core.models import ErrorCode
    from syncd.daemon.app import Daemon
    from syncd.service.metrics import Metrics

    d = make(tmp_path, heartbeat_seconds=0.2)

    def busy() -> list[int]:
        raise StoreError(ErrorCode.BUSY, "database is busy, try again (read)")

    monkeypatch.setattr(d, "tick", busy)
    daemon = Daemon.__new__(Daemon)  # only what the loop uses
    monitor, notifier = _Every(), _Every()
    daemon.dispatcher, daemon.store, daemon.clock = d, d.store, d.clock
    daemon.monitor, daemon.notifier = monitor, notifier  # type: ignore[assignment]
    daemon.scheduler = daemon.maintenance = _Every()  # type: ignore[assignment]
    daemon.metrics = Metrics(d.clock)
    daemon._stop = threading.Event()
    loop = threading.Thread(target=daemon._loop, daemon=True)
    loop.start()
    try:
        wait_until(lambda: monitor.runs >= 2 and notifier.runs >= 1, "heartbeats while busy")
    finally:
        daemon._stop.set()
        d.wake()
        loop.join(DEADLINE)


# -- a cancel acknowledged while another kill is under way ---------------------------------
STUBBORN = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " open(sys.argv[1], 'w').close(); time.sleep(600)"
)


@pytest.mark.parametrize("first", [KILL_TIMEOUT, "exit 1"])
def test_a_cancel_acknowledged_during_another_kill_ends_cancelled_without_a_retry(
    tmp_path: Path, first: str
) -> None:
    """The client is told "cancelled" (and a crash then would end it so): a timeout kill
    still in its grace, or the task's own failing exit just before the cancel's kill
    lands, must not end it failed and queue its retry behind the client's back."""
    ready = tmp_path / "ready"
    if first == KILL_TIMEOUT:
        argv = [sys.executable, "-c", STUBBORN, str(ready)]
    else:  # exits 1 once told to go (the cancel comes first, then the exit)
        wait = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.01)"
        argv = [sys.executable, "-c", wait + "\nsys.exit(1)", str(ready)]
    route = f"job = {{ argv = {json.dumps(argv)}, retries = 2 }}"
    d = make(tmp_path, route, kill_grace_seconds=1.0)
    task = submit(d, "job")
    assert d.tick() == [task.id]
    rt = d.running[task.id]
    wait_until(lambda: rt.child is not None, "the spawn")
    if first == KILL_TIMEOUT:
        wait_until(ready.exists, "the child to ignore SIGTERM")
        assert d.kill(task.id, KILL_TIMEOUT, "timeout after 1 min")  # in its grace now
    else:
        with d.cond:  # the cancel is acknowledged, but its signal has not landed yet
            rt.cancel_requested = True
        ready.touch()
    if first == KILL_TIMEOUT:
        cancelled, skipped = TaskService(d.store, d, d.clock).cancel([task.id])
        assert (cancelled, skipped) == ([task.id], [])
    done = final(d, task.id)
    assert done.status is Status.CANCELLED, (done.status, done.error)
    assert done.error is not None and done.error.startswith("cancelled")
    assert d.store.tasks_with_status(Status.QUEUED) == []  # no retry
    assert d.stop(DEADLINE)


@pytest.mark.parametrize("how", ["cancel", "clear_queue"])
def test_a_watcher_that_never_reads_paces_a_bulk_cancel_for_ten_seconds_in_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A bulk cancel waits for its watchers to read each batch's events, but for
    DRAIN_SECONDS in all: it was that long per batch, so a slow read-only `watch` set the
    pace of an operator's clear-queue (minutes for a deep queue). Time is the fake's."""
    d = make(tmp_path)
    d.paused = True
    ids = seed(d, 3000)
    service = TaskService(d.store, d, d.clock)
    d.events.subscribe(["task"])  # a watcher that never reads
    now = [0.0]
    waits: list[float] = []
    monkeypatch.setattr(tasks_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))

    def never_drained(fraction: float, timeout: float) -> None:
        waits.append(timeout)
        now[0] += timeout  # the whole timeout: the watcher read nothing

    monkeypatch.setattr(d.events, "wait_drained", never_drained)
    batches: list[int] = []
    if how == "cancel":
        real = d.store.cancel_queued
        monkeypatch.setattr(
            d.store, "cancel_queued", lambda b, **kw: batches.append(len(b)) or real(b, **kw)
        )
        cancelled, _ = service.cancel(ids)
        assert len(cancelled) == 3000
    else:
        page = d.store.cancel_queued_page

        def counted(**kw: Any) -> list[int]:
            found = page(**kw)
            batches.append(len(found))
            return found

        monkeypatch.setattr(d.store, "cancel_queued_page", counted)
        assert service.clear_queue() == 3000
    assert sum(waits) <= tasks_module.DRAIN_SECONDS
    assert batches[0] == tasks_module.WATCHED_BATCH
    assert set(batches[1:-1]) == {tasks_module.BULK_BATCH}  # paced no more
    assert d.store.counts().get("queued", 0) == 0
