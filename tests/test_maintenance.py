"""Maintenance (SPEC 5.8, last bullet) on a real Store: the per-route floors, log files of
deleted tasks only, dry runs, and the `prune_at` bookkeeping driven by a FakeClock."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from syncd.core.clock import FakeClock, iso, parse_iso
from syncd.core.models import NewTask, Status
from syncd.schedule.maintenance import STATE_NAME, Maintenance
from syncd.store.facade import Store
from tests.helpers.daemon import wait_for

UTC = timezone.utc
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


def maintenance(store: Store, clock: FakeClock, log_dir: Path) -> Maintenance:
    return Maintenance(store, clock, prune_at="30 3 * * *", history_days=30, log_dir=log_dir)


def finished(
    store: Store,
    clock: FakeClock,
    log_dir: Path | None,
    route: str,
    status: Status,
    days_ago: float,
) -> int:
    """A task of `route` that ended `days_ago`, with a log file unless log_dir is None."""
    task, coalesced = store.enqueue(NewTask("crm", route, route, ["true"], {}, 5, "manual"))
    assert not coalesced
    ended = iso(clock.now() - timedelta(days=days_ago))
    assert store.transition(task.id, Status.QUEUED, Status.RUNNING, started_at=ended)
    assert store.transition(task.id, Status.RUNNING, status, finished_at=ended)
    if log_dir is not None:
        (log_dir / f"{task.id}.log").write_text(f"output of {task.id}\n")
    return task.id


@pytest.fixture
def history(store: Store, clock: FakeClock, log_dir: Path) -> dict[str, list[int]]:
    """Old and recent tasks over three routes; which ones a prune must delete."""

    def make(route: str, status: Status, days_ago: float, logged: bool = True) -> int:
        return finished(store, clock, log_dir if logged else None, route, status, days_ago)

    done, failed, cancelled = Status.COMPLETED, Status.FAILED, Status.CANCELLED
    a_done = [make("a", done, d) for d in (45, 44, 43, 42, 41)]  # oldest first
    a_failed = [make("a", failed, d) for d in (50, 40)]
    a_cancelled = make("a", cancelled, 35)
    b_done = make("b", done, 60)  # the only completed run of b: the floor keeps it
    c_old = [make("c", done, 90), make("c", done, 80, logged=False)]
    c_recent = [make("c", done, d) for d in (3, 2, 1)]  # three newer ones: floor is met
    running, _ = store.enqueue(NewTask("crm", "d", "d", ["true"], {}, 5, "manual"))
    store.transition(running.id, Status.QUEUED, Status.RUNNING)
    deleted = [*a_done[:2], a_failed[0], a_cancelled, *c_old]
    kept = [*a_done[2:], a_failed[1], b_done, *c_recent, running.id]
    return {"deleted": sorted(deleted), "kept": kept, "floor": [*a_done[2:], a_failed[1], b_done]}


def test_prune_keeps_the_per_route_floor(store, clock, log_dir, history):
    result = maintenance(store, clock, log_dir).prune()
    assert sorted(result.ids) == history["deleted"]
    assert result.deleted == len(history["deleted"])
    assert result.kept == len(history["floor"])
    assert result.integrity == "ok"
    assert all(store.get(i) is None for i in history["deleted"])
    assert all(store.get(i) is not None for i in history["kept"])


def test_prune_deletes_the_log_files_of_deleted_tasks_only(store, clock, log_dir, history):
    result = maintenance(store, clock, log_dir).prune()
    remaining = sorted(int(p.stem) for p in log_dir.glob("*.log"))
    logged_kept = sorted(i for i in history["kept"] if (log_dir / f"{i}.log").exists())
    assert remaining == logged_kept
    assert len(logged_kept) == len(history["kept"]) - 1  # the running task has no log here
    assert not set(remaining) & set(result.ids)
    assert result.freed_bytes >= sum(len(f"output of {i}\n") for i in result.ids) - 20


def test_logs_left_by_a_crash_mid_prune_go_at_the_next_prune(
    store, clock, log_dir, history, monkeypatch
):
    m = maintenance(store, clock, log_dir)
    crashed = m._remove_logs
    monkeypatch.setattr(m, "_remove_logs", lambda ids: 0)  # rows deleted, then the crash
    first = m.prune()
    monkeypatch.setattr(m, "_remove_logs", crashed)
    orphans = [i for i in first.ids if (log_dir / f"{i}.log").exists()]
    assert orphans and first.deleted == len(history["deleted"])
    tail = log_dir / f"{orphans[0]}.log.tail"  # segments of a log that was being capped
    tail.mkdir()
    (tail / "00000000000000000000").write_bytes(b"x" * 100)
    future = log_dir / f"{store.max_id() + 1}.log"  # not handed out yet: not ours to judge
    future.write_text("?")
    stranger = log_dir / "notes.txt"
    stranger.write_text("an operator's file")
    second = m.prune()
    assert second.deleted == 0
    assert not any((log_dir / f"{i}.log").exists() for i in first.ids)
    assert not tail.exists()
    assert future.exists() and stranger.exists()
    kept_logs = sorted(int(p.name.split(".")[0]) for p in log_dir.glob("*.log"))
    logged_kept = [i for i in history["kept"] if (log_dir / f"{i}.log").exists()]
    assert kept_logs == sorted([*logged_kept, store.max_id() + 1])
    assert second.freed_bytes >= 100 + sum(len(f"output of {i}\n") for i in orphans)


def test_dry_run_deletes_nothing(store, clock, log_dir, history):
    files_before = sorted(log_dir.iterdir())
    m = maintenance(store, clock, log_dir)
    dry = m.prune(dry_run=True)
    assert sorted(dry.ids) == history["deleted"]
    assert dry.integrity.startswith("not checked")
    assert sorted(log_dir.iterdir()) == files_before
    assert all(store.get(i) is not None for i in history["deleted"])
    real = m.prune()
    assert (real.deleted, real.kept, sorted(real.ids)) == (dry.deleted, dry.kept, sorted(dry.ids))


def test_an_integrity_failure_is_logged_at_error(store, clock, log_dir, monkeypatch, caplog):
    monkeypatch.setattr(store, "integrity_check", lambda: "*** in database main ***\nPage 5")
    with caplog.at_level(logging.ERROR, logger="syncd.schedule.maintenance"):
        result = maintenance(store, clock, log_dir).prune()
    assert result.integrity.startswith("***")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "INTEGRITY CHECK FAILED" in errors[0].getMessage()


def follow_ticks(m: Maintenance, clock: FakeClock, until: datetime) -> None:
    while clock.now() < until:
        wait = m.tick()
        assert 0 <= wait <= 60
        clock.advance(max(wait, 0.001))


def test_tick_prunes_at_prune_at(store, clock, log_dir):
    old = finished(store, clock, log_dir, "a", Status.FAILED, 40)
    older = finished(store, clock, log_dir, "a", Status.FAILED, 41)  # floor keeps `old`
    m = maintenance(store, clock, log_dir)
    follow_ticks(m, clock, datetime(2026, 1, 6, 3, 29, 59, tzinfo=UTC))
    assert store.get(older) is not None  # the first start missed nothing; not due yet
    follow_ticks(m, clock, datetime(2026, 1, 6, 3, 30, 1, tzinfo=UTC))
    assert store.get(older) is None and store.get(old) is not None
    assert not (log_dir / f"{older}.log").exists()
    state = store.get_schedule_state(STATE_NAME)
    assert state is not None and state["last_fire"] == iso(datetime(2026, 1, 6, 3, 30, tzinfo=UTC))


def test_tick_catches_up_once_after_downtime_and_never_twice(store, clock, log_dir, monkeypatch):
    m = maintenance(store, clock, log_dir)
    assert m.tick() == 60.0
    clock.advance(3 * 86400)  # down for three days
    m = maintenance(store, clock, log_dir)  # restart
    runs: list[bool] = []
    real_prune = m.prune
    monkeypatch.setattr(m, "prune", lambda dry_run=False: runs.append(dry_run) or real_prune())
    m.tick()
    m.tick()
    assert runs == [False]
    state = store.get_schedule_state(STATE_NAME)
    assert state is not None
    assert parse_iso(state["last_fire"]) == datetime(2026, 1, 8, 3, 30, tzinfo=UTC)
    clock.set_wall(clock.now() - timedelta(days=1))  # backwards: nothing runs again
    follow_ticks(m, clock, clock.now() + timedelta(hours=2))
    assert runs == [False]


def test_a_failing_prune_does_not_break_the_tick(store, clock, log_dir, monkeypatch, caplog):
    m = maintenance(store, clock, log_dir)
    m.tick()

    def boom(dry_run: bool = False) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(m, "prune", boom)
    clock.set_wall(datetime(2026, 1, 6, 3, 30, 5, tzinfo=UTC))
    assert 0 < m.tick() <= 60
    assert "maintenance failed" in caplog.text
    state = store.get_schedule_state(STATE_NAME)
    assert state is not None and state["last_fire"] == iso(datetime(2026, 1, 6, 3, 30, tzinfo=UTC))


def test_a_failed_step_leaves_the_others_running(store, clock, log_dir, history, monkeypatch):
    """The vacuum fails: the rows and logs are gone all the same and the integrity check
    still runs (tick records the slot whatever prune does)."""
    from syncd.core.errors import StoreError
    from syncd.core.models import ErrorCode

    def boom() -> int:
        raise StoreError(ErrorCode.BUSY, "database is busy")

    monkeypatch.setattr(store, "incremental_vacuum", boom)
    result = maintenance(store, clock, log_dir).prune()
    assert sorted(result.ids) == sorted(history["deleted"])
    assert result.integrity == "ok"


def test_the_integrity_check_does_not_hold_the_store_lock(store):
    """It reads the whole file on a read-only connection of its own: a writer holding the
    store lock does not keep it waiting (and it keeps no writer waiting)."""
    with store._lock:  # e.g. dispatch in the middle of a write
        done: list[str] = []
        thread = threading.Thread(target=lambda: done.append(store.integrity_check()))
        thread.start()
        thread.join(10)
    assert done == ["ok"]


def test_maintenance_runs_on_its_own_thread_until_stopped(store, clock, log_dir):
    m = maintenance(store, clock, log_dir)
    m.start()
    wait_for(lambda: store.get_schedule_state(STATE_NAME) is not None, 10, "a first tick")
    names = [t.name for t in threading.enumerate()]
    assert "maintenance" in names
    m.stop()
    assert "maintenance" not in [t.name for t in threading.enumerate()]


def test_prune_keeps_the_last_success_of_every_params_set_of_a_watermark_route(
    store, clock, log_dir
):
    """Tenant a's only success is older than history_days while tenant b runs daily: the
    floor per route is met by b, but a's next run takes its watermark from its own last
    success, so that row stays (a route without watermarks keeps only the floor)."""

    def run(route: str, tenant: str, days_ago: float, watermark: bool = True) -> int:
        params = {"tenant": tenant}
        new = NewTask("crm", route, route, ["sync", "{last_success_started_at}"], params, 5,
                      "manual")  # fmt: skip
        task, _ = store.enqueue(new, allow_duplicate=True)
        ended = iso(clock.now() - timedelta(days=days_ago))
        assert store.transition(task.id, Status.QUEUED, Status.RUNNING, started_at=ended)
        if watermark:  # as a spawn records it
            assert store.record_spawn_argv(task.id, ["sync", ended or ""], new.argv)
        assert store.transition(task.id, Status.RUNNING, Status.COMPLETED, finished_at=ended)
        return task.id

    a_older, a_last = run("wm", "a", 41), run("wm", "a", 40)
    b = [run("wm", "b", d) for d in (3, 2, 1)]
    plain_a = run("plain", "a", 40, watermark=False)
    plain_b = [run("plain", "b", d, watermark=False) for d in (3, 2, 1)]
    result = maintenance(store, clock, log_dir).prune()
    assert sorted(result.ids) == sorted([a_older, plain_a])
    assert store.last_success("crm", "wm", {"tenant": "a"}) is not None
    assert store.last_success("crm", "wm", {"tenant": "a"}).task_id == a_last
    assert all(store.get(i) is not None for i in [a_last, *b, *plain_b])
