"""The scheduler driven by a FakeClock over a real Store: fire counts, overlap, catch-up, clock
jumps (RELIABILITY T1, T2), DST in the scheduler (T3, T4), pause/resume and restarts."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from syncd.config.model import Schedule
from syncd.core.clock import FakeClock, iso, parse_iso
from syncd.core.errors import SyncdError
from syncd.core.models import ErrorCode, NewTask, Overlap, Status
from syncd.schedule.scheduler import Scheduler, latest_slot
from syncd.store.facade import Store

UTC = timezone.utc
T0 = datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC)  # 30 s after the */2 slot 12:00
HOUR = 3600.0


def sched(name: str = "crm-contacts", cron: str = "*/2 * * * *", **kw: Any) -> Schedule:
    return Schedule(name=name, cron=cron, source="crm", sync_type="contacts", **kw)


class FakePool:
    """Records fires at the clock's wall time; `active` is what active_task reports."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.fired: list[datetime] = []
        self.cancelled: list[int] = []
        self.active: tuple[int, str] | None = None
        self.fail: SyncdError | None = None
        self.next_id = 100
        self.how = "queued"  # how a fire's task goes in: "queued", "started", "coalesced"

    def submit_for_schedule(
        self, schedule: Schedule, last_fire: str | None = None
    ) -> tuple[int, str]:
        if self.fail is not None:
            raise self.fail
        self.fired.append(self.clock.now())
        self.next_id += 1
        return self.next_id, self.how

    def active_task(self, schedule: Schedule) -> tuple[int, str] | None:
        return self.active

    def cancel_task(self, task_id: int) -> None:
        self.cancelled.append(task_id)


class StorePool:
    """The daemon's adapter in miniature: real enqueue, so the store's coalescing applies."""

    def __init__(self, store: Store):
        self.store = store
        self.cancelled: list[int] = []

    def submit_for_schedule(self, s: Schedule, last_fire: str | None = None) -> tuple[int, str]:
        new = NewTask(
            s.source, s.sync_type, s.sync_type, ["true"], dict(s.params), 5, f"schedule:{s.name}"
        )
        state = None if last_fire is None else (s.name, {"last_fire": last_fire})
        [(task, coalesced)] = self.store.enqueue_many([(new, False)], schedule_state=state)
        return task.id, "coalesced" if coalesced else "queued"

    def active_task(self, s: Schedule) -> tuple[int, str] | None:
        task = self.store.active_for(s.source, s.sync_type, dict(s.params))
        return None if task is None else (task.id, task.status.value)

    def cancel_task(self, task_id: int) -> None:
        self.cancelled.append(task_id)
        self.store.transition(task_id, Status.RUNNING, Status.CANCELLED)

    def start_running(self, s: Schedule) -> int:
        task_id, _ = self.submit_for_schedule(s)
        assert self.store.transition(task_id, Status.QUEUED, Status.RUNNING) is not None
        return task_id


@pytest.fixture
def pool(clock: FakeClock) -> FakePool:
    return FakePool(clock)


def start(store: Store, pool: Any, clock: FakeClock, *schedules: Schedule) -> Scheduler:
    s = Scheduler(schedules or (sched(),), store, pool, clock)
    s.reconcile()
    return s


def run_for(s: Scheduler, clock: FakeClock, seconds: float) -> None:
    """Tick every 10-30 s of fake time, like a loop woken by other events too."""
    end = clock.now() + timedelta(seconds=seconds)
    steps = [10, 30, 20, 17, 23]
    i = 0
    while clock.now() < end:
        clock.advance(steps[i % len(steps)])
        i += 1
        s.tick()


def follow_ticks(s: Scheduler, clock: FakeClock, until: datetime) -> None:
    """The daemon's loop: sleep exactly what tick() asks for."""
    while clock.now() < until:
        wait = s.tick()
        assert 0 <= wait <= 60
        clock.advance(max(wait, 0.001))


def outcome(store: Store, name: str = "crm-contacts") -> dict[str, Any]:
    state = store.get_schedule_state(name)
    assert state is not None and state["last_outcome"] is not None
    out: dict[str, Any] = state["last_outcome"]
    return out


# -- normal operation and overlap ---------------------------------------------------------
def test_every_two_minutes_for_an_hour_fires_30_times(store, pool, clock):
    s = start(store, pool, clock)
    run_for(s, clock, HOUR)
    assert len(pool.fired) == 30
    assert outcome(store)["kind"] == "queued"
    # each fire came at most 30 s after its slot, and no minute twice
    assert all(f.minute % 2 == 0 and f.second <= 30 for f in pool.fired)
    assert len({f.replace(second=0) for f in pool.fired}) == 30


def test_tick_returns_the_wait_to_the_next_slot_capped_at_60(store, pool, clock):
    s = start(store, pool, clock)
    assert s.tick() == 60.0  # next slot 12:02:00 is 90 s away
    clock.advance(60)
    assert s.tick() == pytest.approx(30.0)
    follow_ticks(s, clock, T0 + timedelta(seconds=HOUR))
    assert len(pool.fired) == 30
    assert all(f.second == 0 and f.microsecond == 0 for f in pool.fired)  # exactly on time


def test_skip_while_running_queues_nothing_and_records_skipped(store, pool, clock):
    pool.active = (7, "running")
    s = start(store, pool, clock)
    run_for(s, clock, HOUR)
    assert pool.fired == []
    assert outcome(store)["kind"] == "skipped"
    assert outcome(store)["task_id"] == 7
    assert s.describe()[0]["last_outcome"]["kind"] == "skipped"


def test_queue_while_running_goes_through_submit_with_at_most_one_follow_up(store, clock):
    pool = StorePool(store)
    schedule = sched(overlap=Overlap.QUEUE)
    running = pool.start_running(schedule)
    s = start(store, pool, clock, schedule)
    run_for(s, clock, HOUR)
    queued = store.tasks_with_status(Status.QUEUED)
    assert len(queued) == 1 and queued[0].id != running
    assert outcome(store)["kind"] == "coalesced"
    assert outcome(store)["task_id"] == queued[0].id


def test_replace_cancels_the_running_task_then_submits(store, pool, clock):
    pool.active = (7, "running")
    s = start(store, pool, clock, sched(overlap=Overlap.REPLACE))
    clock.advance(90)
    s.tick()
    assert pool.cancelled == [7]
    assert len(pool.fired) == 1
    assert outcome(store)["kind"] == "queued"


def test_replace_with_the_real_store_leaves_one_queued_task(store, clock):
    pool = StorePool(store)
    schedule = sched(overlap=Overlap.REPLACE)
    running = pool.start_running(schedule)
    s = start(store, pool, clock, schedule)
    run_for(s, clock, HOUR)
    assert pool.cancelled == [running]  # later fires find only the queued one: coalesced
    task = store.get(running)
    assert task is not None and task.status is Status.CANCELLED
    assert len(store.tasks_with_status(Status.QUEUED)) == 1


def test_a_queued_task_is_not_cancelled_by_replace(store, pool, clock):
    pool.active = (7, "queued")
    s = start(store, pool, clock, sched(overlap=Overlap.REPLACE))
    clock.advance(90)
    s.tick()
    assert pool.cancelled == []
    assert len(pool.fired) == 1


# -- downtime, clock jumps, deadlines -----------------------------------------------------
@pytest.mark.parametrize("catch_up, fires", [(True, 1), (False, 0)])
def test_downtime_of_three_hours(store, pool, clock, catch_up, fires):
    schedule = sched(catch_up=catch_up)
    s = start(store, pool, clock, schedule)
    run_for(s, clock, 600)
    before = len(pool.fired)
    clock.advance(3 * HOUR)  # the daemon is down
    s = start(store, pool, clock, schedule)  # restart on the same store
    s.tick()
    assert len(pool.fired) - before == fires
    latest = latest_due(clock.now())
    assert s.describe()[0]["last_fire"] == iso(latest)
    assert outcome(store)["slot"] == iso(latest)
    assert outcome(store)["kind"] == ("queued" if catch_up else "missed")
    # the next slot is a normal fire again
    clock.set_wall(latest + timedelta(minutes=2, seconds=5))
    s.tick()
    assert len(pool.fired) - before == fires + 1
    assert outcome(store)["slot"] == iso(latest + timedelta(minutes=2))


def latest_due(now: datetime) -> datetime:
    """The last */2 slot at or before now."""
    return now.replace(minute=now.minute - now.minute % 2, second=0, microsecond=0)


def test_backwards_wall_jump_fires_no_slot_twice(store, pool, clock):
    s = start(store, pool, clock)
    run_for(s, clock, 600)
    assert len(pool.fired) == 5
    last = parse_iso(s.describe()[0]["last_fire"])
    clock.set_wall(clock.now() - timedelta(hours=1))
    run_for(s, clock, HOUR - 40)  # until just before the old last_fire comes around again
    assert clock.now() < last
    assert len(pool.fired) == 5
    run_for(s, clock, 1200)
    assert len(pool.fired) == 5 + 9
    assert len({f.replace(second=0) for f in pool.fired}) == len(pool.fired)


@pytest.mark.parametrize("catch_up, fires", [(True, 1), (False, 0)])
def test_forward_wall_jump_behaves_like_downtime(store, pool, clock, catch_up, fires):
    s = start(store, pool, clock, sched(catch_up=catch_up))
    run_for(s, clock, 600)
    clock.set_wall(clock.now() + timedelta(hours=3))
    s.tick()
    assert len(pool.fired) == 5 + fires
    clock.advance(120)
    s.tick()
    assert len(pool.fired) == 5 + fires + 1


@pytest.mark.parametrize("late, fires", [(80, 1), (90, 1), (91, 0), (105, 0)])
def test_one_slot_more_than_90s_late_is_a_catch_up(store, pool, clock, late, fires):
    s = start(store, pool, clock, sched(catch_up=False))
    clock.set_wall(utc(2026, 1, 5, 12, 2) + timedelta(seconds=late))  # only 12:02 is due
    s.tick()
    assert len(pool.fired) == fires
    assert outcome(store)["kind"] == ("queued" if fires else "missed")
    assert outcome(store)["slot"] == iso(utc(2026, 1, 5, 12, 2))


def test_starting_deadline_turns_a_late_fire_into_missed(store, pool, clock):
    schedule = sched(starting_deadline_seconds=60)
    s = start(store, pool, clock, schedule)
    clock.advance(3 * HOUR)  # catch-up for 15:00, 30 s after it: within the deadline
    s.tick()
    assert len(pool.fired) == 1
    clock.advance(3 * HOUR + 60)  # catch-up for 18:00, 90 s after it: missed
    s.tick()
    assert len(pool.fired) == 1
    assert outcome(store)["kind"] == "missed"
    assert "starting_deadline_seconds" in outcome(store)["reason"]
    # a single slot 75 s late: normal (under 90 s) but past the deadline
    nxt = parse_iso(s.next_fire(schedule.name))
    assert nxt is not None
    clock.set_wall(nxt + timedelta(seconds=75))
    s.tick()
    assert len(pool.fired) == 1 and outcome(store)["kind"] == "missed"
    clock.set_wall(nxt + timedelta(minutes=2, seconds=30))
    s.tick()
    assert len(pool.fired) == 2


def test_latest_slot_after_a_year_of_downtime_is_cheap():
    from syncd.cron import CronExpr

    expr = CronExpr.parse("* * * * *")
    known = datetime(2025, 1, 1, 0, 1, tzinfo=UTC)
    now = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert latest_slot(expr, UTC, known, now) == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    expr = CronExpr.parse("* 3 1 * *")  # a burst of slots a month before now
    now = datetime(2026, 2, 20, tzinfo=UTC)
    assert latest_slot(expr, UTC, known, now) == datetime(2026, 2, 1, 3, 59, tzinfo=UTC)


# -- errors ----------------------------------------------------------------------------------
def test_a_failing_submit_is_recorded_as_missed_and_never_raises(store, pool, clock):
    pool.fail = SyncdError(ErrorCode.UNKNOWN_ROUTE, "no route contacts for crm")
    s = start(store, pool, clock)
    clock.advance(100)
    s.tick()
    assert outcome(store)["kind"] == "missed"
    assert outcome(store)["error"].startswith("unknown_route")
    assert s.describe()[0]["last_outcome"]["error"].startswith("unknown_route")
    pool.fail = None
    clock.advance(120)
    s.tick()
    assert len(pool.fired) == 1  # the failed slot is not retried; the next one fires


def test_unusable_schedule_never_fires_and_does_not_break_the_others(store, pool, clock):
    bad = sched("bad", timezone="Mars/Olympus")
    s = start(store, pool, clock, bad, sched())
    run_for(s, clock, 600)
    assert len(pool.fired) == 5
    assert s.next_fire("bad") is None


# -- DST in the scheduler ------------------------------------------------------------------
def fires_between(store, start_at: datetime, until: datetime, schedule: Schedule):
    clock = FakeClock(start_at)
    pool = FakePool(clock)
    s = Scheduler([schedule], store, pool, clock)
    s.reconcile()
    follow_ticks(s, clock, until)
    return pool.fired


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


@pytest.mark.parametrize(
    "cron, tz, start_at, expected",
    [
        # T3: spring forward, 02:30 does not exist: once, at 03:00 CEST
        ("30 2 * * *", BERLIN, utc(2026, 3, 28, 12), utc(2026, 3, 29, 1)),
        # T4: fall back, 02:30 happens twice: once, at the first one (CEST)
        ("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), utc(2026, 10, 25, 0, 30)),
        ("30 2 * * *", NEW_YORK, utc(2026, 3, 7, 12), utc(2026, 3, 8, 7)),  # 03:00 EDT
        ("30 1 * * *", NEW_YORK, utc(2026, 10, 31, 12), utc(2026, 11, 1, 5, 30)),  # 01:30 EDT
    ],
)
def test_fixed_time_job_fires_once_on_dst_days(store, cron, tz, start_at, expected):
    until = start_at + timedelta(hours=36)  # the transition day and no other fire
    assert fires_between(store, start_at, until, sched(cron=cron, timezone=tz)) == [expected]


@pytest.mark.parametrize(
    "tz, local_day_start, hours",
    [
        (BERLIN, utc(2026, 3, 28, 23), 23),  # 29 March local: 23 real hours
        (BERLIN, utc(2026, 10, 24, 22), 25),  # 25 October local: 25 real hours
        (NEW_YORK, utc(2026, 3, 8, 5), 23),
        (NEW_YORK, utc(2026, 11, 1, 4), 25),
    ],
)
def test_step_job_runs_on_elapsed_time_through_dst(store, tz, local_day_start, hours):
    start_at = local_day_start - timedelta(seconds=1)
    until = local_day_start + timedelta(hours=hours) - timedelta(seconds=1)
    fired = fires_between(store, start_at, until, sched(cron="*/30 * * * *", timezone=tz))
    assert len(fired) == hours * 2
    assert fired[0] == local_day_start
    gaps = {b - a for a, b in itertools.pairwise(fired)}
    assert gaps == {timedelta(minutes=30)}


# -- state: first sight, reconcile, pause/resume, run_now, describe -----------------------
def test_a_new_schedule_has_missed_nothing(store, pool):
    clock = FakeClock(utc(2026, 1, 5, 12, 0))  # exactly on a slot
    s = start(store, pool, clock)
    s.tick()
    assert pool.fired == []
    assert s.describe()[0]["last_fire"] == iso(clock.now())
    assert s.next_fire("crm-contacts") == iso(utc(2026, 1, 5, 12, 2))


def test_reconcile_deletes_removed_schedules_but_keeps_reserved_rows(store, pool, clock):
    store.put_schedule_state("@maintenance", last_fire=iso(T0))
    s = start(store, pool, clock, sched("a"), sched("b"))
    assert store.schedule_state_names() == ["@maintenance", "a", "b"]
    s.update([sched("a"), sched("c")])
    assert store.schedule_state_names() == ["@maintenance", "a", "c"]
    assert [r["name"] for r in s.describe()] == ["a", "c"]


def test_a_changed_cron_on_reload_starts_from_now(store, pool, clock):
    s = start(store, pool, clock, sched(cron="0 3 * * *"))
    clock.advance(HOUR)
    s.update([sched(cron="*/2 * * * *")])
    s.tick()
    assert pool.fired == []  # no catch-up of slots the old cron never had
    clock.advance(120)
    s.tick()
    assert len(pool.fired) == 1


def test_disabled_schedule_never_fires_and_enabling_it_catches_nothing_up(store, pool, clock):
    off = sched(enabled=False)
    s = start(store, pool, clock, off)
    run_for(s, clock, HOUR)
    assert pool.fired == []
    row = s.describe()[0]
    assert row["enabled"] is False and row["next_fire"] is None
    s.update([replace(off, enabled=True)])
    s.tick()
    assert pool.fired == []
    run_for(s, clock, 240)
    assert len(pool.fired) == 2


def test_pause_persists_across_a_restart(store, pool, clock):
    s = start(store, pool, clock)
    row = s.pause("crm-contacts")
    assert row["paused"] is True and row["next_fire"] is None
    s = start(store, pool, clock)  # restart
    assert s.describe()[0]["paused"] is True
    run_for(s, clock, 600)
    assert pool.fired == []


@pytest.mark.parametrize("from_now, fires", [(True, 0), (False, 1)])
def test_resume_catch_up(store, pool, clock, from_now, fires):
    s = start(store, pool, clock)
    s.pause("crm-contacts")
    run_for(s, clock, HOUR)
    row = s.resume("crm-contacts", from_now=from_now)
    assert row["paused"] is False
    s.tick()
    s.tick()
    assert len(pool.fired) == fires
    clock.advance(120)
    s.tick()
    assert len(pool.fired) == fires + 1


def test_run_now_honours_overlap_and_does_not_move_last_fire(store, pool, clock):
    s = start(store, pool, clock)
    last = s.describe()[0]["last_fire"]
    pool.active = (7, "running")
    out = s.run_now("crm-contacts")
    assert (out.kind, out.task_id, out.slot) == ("skipped", 7, None)
    assert pool.fired == []
    pool.active = None
    out = s.run_now("crm-contacts")
    assert out.kind == "queued" and out.task_id == pool.next_id
    assert out.to_dict() == {"kind": "queued", "task_id": pool.next_id, "at": iso(T0), "slot": None}
    assert s.describe()[0]["last_fire"] == last
    assert outcome(store)["kind"] == "queued"
    with pytest.raises(SyncdError) as err:
        s.run_now("nope")
    assert err.value.code is ErrorCode.UNKNOWN_SCHEDULE


def test_a_fire_whose_task_took_a_free_slot_says_it_started(store, pool, clock):
    s = start(store, pool, clock)
    pool.how = "started"
    out = s.run_now("crm-contacts")
    assert (out.kind, out.started) == ("queued", True)
    assert out.to_dict()["started"] is True
    assert outcome(store)["started"] is True  # persisted: `syncctl schedules` says it too
    assert s.describe()[0]["last_outcome"]["started"] is True
    pool.how = "coalesced"
    out = s.run_now("crm-contacts")
    assert (out.kind, out.started) == ("coalesced", False)
    assert "started" not in out.to_dict()


def test_run_now_reports_a_failing_submit(store, pool, clock):
    s = start(store, pool, clock)
    pool.fail = SyncdError(ErrorCode.UNKNOWN_ROUTE, "gone")
    with pytest.raises(SyncdError) as err:
        s.run_now("crm-contacts")
    assert err.value.code is ErrorCode.UNKNOWN_ROUTE
    assert outcome(store)["kind"] == "missed"


def test_unknown_names_are_refused(store, pool, clock):
    s = start(store, pool, clock)
    for call in (s.pause, s.resume, s.next_fire):
        with pytest.raises(SyncdError) as err:
            call("nope")
        assert err.value.code is ErrorCode.UNKNOWN_SCHEDULE


def test_describe_shape(store, pool, clock):
    s = start(store, pool, clock, sched(priority=3, params={"full": True}))
    assert s.describe()[0]["last_outcome"] is None
    clock.advance(90)
    s.tick()
    (row,) = s.describe()
    assert row == {
        "name": "crm-contacts",
        "cron": "*/2 * * * *",
        "timezone": "UTC",
        "source": "crm",
        "sync_type": "contacts",
        "priority": 3,
        "overlap": "skip",
        "catch_up": True,
        "enabled": True,
        "paused": False,
        "next_fire": iso(utc(2026, 1, 5, 12, 4)),
        "last_fire": iso(utc(2026, 1, 5, 12, 2)),
        "last_outcome": {"kind": "queued", "task_id": pool.next_id, "at": iso(clock.now())},
    }


# -- a fire and its last_fire commit together; a busy loop is not downtime -----------------
class Crash(BaseException):
    """The process dies here (not an error anything may catch)."""


def test_a_crash_right_after_a_fire_never_fires_its_slot_again(store, clock, monkeypatch):
    """The task and the slot's last_fire are one transaction: a crash right after the
    enqueue commit (before any separate state write) cannot leave the task queued and the
    slot unfired, which the restart would fire again."""
    pool = StorePool(store)
    s = start(store, pool, clock, sched(overlap=Overlap.QUEUE))
    clock.advance(90)  # the 12:02 slot is due

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    monkeypatch.setattr(store, "put_schedule_state", crash)
    with pytest.raises(Crash):
        s.tick()
    monkeypatch.undo()
    fired = [t for t in store.tasks_with_status(Status.QUEUED)]
    assert [t.trigger for t in fired] == ["schedule:crm-contacts"]
    state = store.get_schedule_state("crm-contacts")
    assert state is not None and state["last_fire"] == iso(utc(2026, 1, 5, 12, 2))
    store.transition(fired[0].id, Status.QUEUED, Status.RUNNING)  # no coalescing to hide it
    s = start(store, pool, clock, sched(overlap=Overlap.QUEUE))  # the restart
    s.tick()
    assert len(store.tasks_with_status(Status.QUEUED)) == 0
    assert len(store.tasks_with_status(Status.RUNNING)) == 1


@pytest.mark.parametrize("busy", [100, 200, 330])
def test_a_fire_late_only_because_the_loop_was_busy_is_not_missed(store, pool, clock, busy):
    """Wall and monotonic time advance together (the loop was busy, e.g. 200 s on one
    step): the slots that fell due meanwhile fire once, even with catch_up = false."""
    s = start(store, pool, clock, sched(catch_up=False))
    s.tick()  # 12:00:30, nothing due
    clock.advance(busy)  # the next tick comes late: 12:02 (and maybe 12:04) is due
    s.tick()
    assert len(pool.fired) == 1, outcome(store)
    assert outcome(store)["kind"] == "queued"
    latest = latest_due(clock.now())
    assert outcome(store)["slot"] == iso(latest)
    clock.advance(120)
    s.tick()
    assert len(pool.fired) == 2  # and the next slot is normal


def test_downtime_in_one_process_is_still_told_from_a_busy_loop(store, pool, clock):
    """Only the monotonic clock tells a busy loop from a stopped one: a wall jump (or a
    suspended machine) still counts as a catch-up, and catch_up = false misses it."""
    s = start(store, pool, clock, sched(catch_up=False))
    s.tick()
    clock.set_wall(clock.now() + timedelta(seconds=200))  # the monotonic clock stood still
    s.tick()
    assert pool.fired == []
    assert outcome(store)["kind"] == "missed"


def test_a_reload_after_a_failed_save_does_not_fire_the_slot_again(store, pool, clock, monkeypatch):
    """12:02 is skipped (its sync still runs) while the disk is full: the slot's state is
    not saved. A reload must not read the older state back and fire 12:02 after all."""
    s = start(store, pool, clock)
    pool.active = (7, "running")

    def full(*args: Any, **kwargs: Any) -> None:
        raise SyncdError(ErrorCode.STORAGE_ERROR, "database or disk is full")

    monkeypatch.setattr(store, "put_schedule_state", full)
    clock.advance(90)  # 12:02 is due: skipped, state not saved
    s.tick()
    assert pool.fired == [] and s.describe()[0]["last_outcome"]["kind"] == "skipped"
    monkeypatch.undo()
    pool.active = None
    clock.advance(10)
    s.update([sched()])  # SIGHUP
    s.tick()
    assert pool.fired == []  # 12:02 was handled once already
    state = store.get_schedule_state("crm-contacts")
    assert state is not None and state["last_fire"] == iso(utc(2026, 1, 5, 12, 2))  # saved now
    assert state["last_outcome"]["kind"] == "skipped"
    clock.advance(120)  # 12:04 fires as usual
    s.tick()
    assert len(pool.fired) == 1
