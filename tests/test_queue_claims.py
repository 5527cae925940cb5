"""A submit that finds a slot free claims the next task inside its own transaction: one
commit for the queueing and the claim (the loop's claim after it was a second fsync per
task); the loop gives the claimed task its thread (here the test's `tick()` is the loop).
Real store, real dispatcher, real children; no daemon around them."""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.core.errors import StoreError
from syncd.core.models import ErrorCode, Status
from syncd.pool.dispatcher import Dispatcher
from syncd.pool.sources import HALF_OPEN
from syncd.store.facade import Store
from tests.helpers.pool import make, submit, wait_until

WAIT = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.01)"


@pytest.fixture(autouse=True)
def _open_gate_at_the_end(tmp_path: Path) -> Iterator[None]:
    """A failing test must not leave its gated children behind."""
    yield
    (tmp_path / "gate").touch()


def gated_pool(tmp_path: Path, workers: int) -> tuple[Dispatcher, Path]:
    """Route `gated` runs until the gate file exists; `ok` exits at once."""
    gate = tmp_path / "gate"
    route = f"gated = {{ argv = [{sys.executable!r}, '-c', {WAIT!r}, {str(gate)!r}] }}"
    return make(tmp_path, route.replace("'", '"'), max_workers=workers), gate


def count_commits(store: Store) -> list[int]:
    commits = [0]
    real = store._writer.commit

    def commit(conn: Any) -> None:
        commits[0] += 1
        real(conn)

    store._writer.commit = commit  # type: ignore[method-assign]
    return commits


def final(d: Dispatcher, task_id: int) -> Status:
    def status() -> Status:
        task = d.store.get(task_id)
        assert task is not None
        return task.status

    wait_until(lambda: status() not in (Status.QUEUED, Status.RUNNING), what=f"task {task_id}")
    return status()


def test_a_submit_with_a_free_slot_starts_its_task_in_its_own_commit(tmp_path: Path) -> None:
    d, gate = gated_pool(tmp_path, workers=1)
    commits = count_commits(d.store)
    task, coalesced = submit(d, "gated", start=True)
    assert not coalesced
    assert task.status is Status.RUNNING and task.started_at is not None  # the reply says so
    assert commits[0] == 1  # queued and claimed in one transaction
    stored = d.store.get(task.id)
    assert stored is not None and stored.status is Status.RUNNING
    with d.cond:
        assert list(d.running) == [task.id]
    assert d.tick() == [task.id]  # the loop starts its thread; no second claim, no commit
    assert commits[0] == 1
    gate.touch()
    assert final(d, task.id) is Status.COMPLETED


def test_a_submit_into_a_full_or_paused_pool_only_queues(tmp_path: Path) -> None:
    d, gate = gated_pool(tmp_path, workers=1)
    first, _ = submit(d, "gated", start=True)
    assert first.status is Status.RUNNING
    assert d.tick() == [first.id]
    second, _ = submit(d, "ok", start=True)  # the one slot is taken
    assert d.tick() == []
    assert second.status is Status.QUEUED
    gate.touch()
    assert final(d, first.id) is Status.COMPLETED
    assert final(d, second.id) is Status.COMPLETED  # claimed by the finish of `first`
    d.set_paused(True)
    third, _ = submit(d, "ok", start=True)
    assert third.status is Status.QUEUED
    with d.cond:
        assert d.running == {}
    d.set_paused(False)
    assert d.tick() == [third.id]
    assert final(d, third.id) is Status.COMPLETED


def test_a_submit_fills_every_free_slot_in_queue_order(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    routes = "".join(
        f"{name} = {{ argv = [{sys.executable!r}, '-c', {WAIT!r}, {str(gate)!r}] }}\n"
        for name in ("gated", "gated2")
    )
    d = make(tmp_path, routes.replace("'", '"'), max_workers=2)
    held = [submit(d, "gated")[0], submit(d, "gated2")[0]]  # queued, not started (no tick)
    assert all(t.status is Status.QUEUED for t in held)
    commits = count_commits(d.store)
    newest, _ = submit(d, "ok", start=True)
    assert commits[0] == 1  # the new row and two claims, one commit
    assert newest.status is Status.QUEUED  # the older ones first: the queue's order
    for task in held:
        stored = d.store.get(task.id)
        assert stored is not None and stored.status is Status.RUNNING
    assert d.tick() == [held[0].id, held[1].id]
    gate.touch()
    assert {final(d, t.id) for t in [*held, newest]} == {Status.COMPLETED}


def test_a_claim_that_fails_inside_the_submit_undoes_the_submit_and_the_admission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, gate = gated_pool(tmp_path, workers=2)
    real = d.store.claim_in

    def claim_then_fail(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)  # the row is claimed and the task admitted, then it breaks
        raise StoreError(ErrorCode.STORAGE_ERROR, "database or disk is full")

    monkeypatch.setattr(d.store, "claim_in", claim_then_fail)
    with pytest.raises(StoreError, match="disk is full"):
        submit(d, "gated", start=True)
    with d.cond:
        assert d.running == {}  # the admission was undone with the transaction
    assert d.store.counts().get("queued", 0) == 0  # and nothing was queued: the client retries
    assert d.store.tasks_with_status(Status.RUNNING) == []
    monkeypatch.setattr(d.store, "claim_in", real)
    task, _ = submit(d, "gated", start=True)
    assert task.status is Status.RUNNING
    assert d.tick() == [task.id]
    gate.touch()
    assert final(d, task.id) is Status.COMPLETED


@pytest.mark.parametrize(
    "protection",
    ["breaker = { failures = 1, cooldown_minutes = 1 }", 'rate = "1/hour"'],
    ids=["half-open probe", "rate window"],
)
def test_a_claim_whose_commit_fails_takes_back_what_it_did_to_its_source(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    protection: str,
) -> None:
    """The claim made the task the half-open source's probe, or counted it in the rate
    window, then its commit failed: the task never started, so neither may stay (a probe
    that never runs held its source until a restart; a phantom start used up the hour)."""
    caplog.set_level(logging.INFO, logger="syncd.pool.sources")
    d = make(tmp_path, f"[sources.src]\n{protection}\n", max_workers=2)
    if "breaker" in protection:
        d.sources.state("src").breaker = HALF_OPEN
    real = d.store._writer.commit
    fail = [True]

    def commit(conn: Any) -> None:
        if fail.pop() if fail else False:
            raise sqlite3.OperationalError("database or disk is full")
        real(conn)

    monkeypatch.setattr(d.store._writer, "commit", commit)
    with d.cond:
        d.woken()  # forget earlier wakes: the undo's own is asserted below
    with pytest.raises(StoreError, match="full"):
        submit(d, "ok", start=True)
    state = d.sources.state("src")
    assert (state.probe, state.starts) == (None, [])
    said = [r.getMessage() for r in caplog.records if "probe" in r.getMessage()]
    assert said == []  # a probe is told only once its claim is on disk and it started
    with d.cond:
        assert d.running == {}
        assert d.woken()  # claims made meanwhile saw the slot taken: the loop looks again
    task, _ = submit(d, "ok", start=True)  # the client's retry
    assert task.status is Status.RUNNING
    assert len(d.sources.state("src").starts) == ("rate" in protection)
    assert d.tick() == [task.id]
    assert final(d, task.id) is Status.COMPLETED
    said = [r.getMessage() for r in caplog.records if "probe" in r.getMessage()]
    if "breaker" in protection:  # told after its start, before its end moved the breaker
        assert said == [f"source src half-open: task {task.id} is its probe",
                        f"source src closed: probe task {task.id} succeeded"], said  # fmt: skip
    assert d.stop(timeout=20)


def test_a_task_claimed_by_a_submit_during_a_stop_is_started_and_its_end_recorded(
    tmp_path: Path,
) -> None:
    """The loop may be gone: stop() starts what a submit handed it, and waits for its end
    (killed before it ran: interrupted by shutdown), so no claimed row stays running."""
    d, _ = gated_pool(tmp_path, workers=1)
    task, _ = submit(d, "gated", start=True)
    assert task.status is Status.RUNNING  # claimed and handed to the loop, which never ran
    assert d.stop(timeout=20)
    stored = d.store.get(task.id)
    assert stored is not None and stored.status is not Status.RUNNING
    assert stored.error == "interrupted by shutdown"
