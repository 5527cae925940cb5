"""Source protection units on a fake clock and a real store: the rate window, the breaker's
transitions, throttle and pause, state reloaded as a restart would, the one eligibility rule
(slots), the deferral chain and its bound, and the pick at depth."""

from __future__ import annotations

import os
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType

import pytest

from syncd.config.load import loads_config
from syncd.config.model import Breaker, ConfigError, Rate, Source
from syncd.config.routing import RouteTable
from syncd.core.clock import FakeClock, iso
from syncd.core.errors import StoreError
from syncd.core.events import EventBus
from syncd.core.models import ErrorCode, NewTask, Status, Task
from syncd.pool import slots
from syncd.pool.dispatcher import Dispatcher
from syncd.pool.policy import Outcome, exit_outcome
from syncd.pool.sources import Sources
from syncd.store import sources as rows
from syncd.store.facade import Store
from syncd.store.requests import Ending, Pick

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=timezone.utc)


def config(rate: Rate | None = None, breaker: Breaker | None = None) -> dict[str, Source]:
    return {"crm": Source("crm", None, None, MappingProxyType({}), rate, breaker)}


def guard(store: Store, clock: FakeClock, srcs: dict[str, Source], bus: EventBus) -> Sources:
    return Sources(store, clock, bus, srcs.get)


def task(task_id: int, source: str = "crm", route: str = "a", **kw: object) -> Task:
    fields = {"argv": ["x"], "params": {}, "priority": 5, "status": Status.QUEUED}
    fields.update(kw)
    return Task(id=task_id, source=source, sync_type=route, route=route, trigger="manual",
                **fields)  # type: ignore[arg-type]  # fmt: skip


def reasons(s: Sources, clock: FakeClock, running: list[Task] | None = None) -> list[str]:
    return [b.reason for b in s.hold("crm", clock.now(), running or [])]


def test_the_rate_window_counts_starts_in_any_window_and_survives_a_restart(
    store: Store, clock: FakeClock
) -> None:
    srcs = config(rate=Rate(2, "minute"))
    s = guard(store, clock, srcs, EventBus())
    s.started(task(1), clock.now())
    clock.advance(20)
    s.started(task(2), clock.now())
    held = s.hold("crm", clock.now(), [])
    assert [b.reason for b in held] == ["rate_limited"]
    assert held[0].until == T0 + timedelta(minutes=1)  # the first start leaves the window
    assert s.next_change(clock.now()) == T0 + timedelta(minutes=1)
    clock.advance(39.9)
    assert reasons(s, clock) == ["rate_limited"]
    # A restart reads the same window back (once committed: in the daemon each start is
    # written in the transaction that claims the task).
    store.sync()
    again = guard(store, clock, srcs, EventBus())
    assert reasons(again, clock) == ["rate_limited"]
    clock.advance(0.1)  # exactly a minute after the first start: it no longer counts
    assert reasons(again, clock) == []
    again.started(task(3), clock.now())
    assert [b.until for b in again.hold("crm", clock.now(), [])] == [T0 + timedelta(seconds=80)]
    assert len(again.window("crm", clock.now())) == 2


def test_the_breaker_opens_half_opens_with_one_probe_closes_and_opens_again(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    srcs = config(breaker=Breaker(3, 10))
    bus = EventBus()
    sub = bus.subscribe(["source"])
    s = guard(store, clock, srcs, bus)
    for i in (1, 2):
        s.finished(task(i), Status.FAILED, clock.now())
    s.finished(task(3), Status.COMPLETED, clock.now())  # a success resets the count
    for i in (4, 5):
        s.finished(task(i), Status.FAILED, clock.now())
    for status in (Status.CANCELLED, Status.DEFERRED):  # neither counts
        s.finished(task(6), status, clock.now())
    s.finished(task(7), Status.FAILED, clock.now(), counts=False)  # a shutdown: no count
    assert s.word("crm", clock.now()) == "ok" and s.state("crm").failures == 2
    s.finished(task(8), Status.FAILED, clock.now())
    assert s.word("crm", clock.now()) == "open"
    assert "source crm opened: 3 consecutive failures, cooldown until 14:10:00 UTC" in caplog.text
    event = sub.get(0)
    assert event is not None and event["source"] == "crm" and event["breaker"] == "open"
    held = s.hold("crm", clock.now(), [])
    assert [(b.reason, b.until) for b in held] == [("source_open", T0 + timedelta(minutes=10))]

    # A restart in the middle of the cooldown keeps it (once committed: the breaker's
    # state is queued under the sources' lock, and the task's finish commits it).
    store.sync()
    s = guard(store, clock, srcs, bus)
    clock.advance(599)
    assert reasons(s, clock) == ["source_open"]
    clock.advance(1)
    assert reasons(s, clock) == [] and s.word("crm", clock.now()) == "half_open"
    probe = task(9, status=Status.RUNNING)
    s.started(probe, clock.now())
    assert reasons(s, clock, [probe]) == ["source_open"]  # one probe at a time
    s.finished(probe, Status.FAILED, clock.now())
    assert s.word("crm", clock.now()) == "open"
    assert s.state("crm").breaker_reason == "probe task 9 failed"
    assert s.state("crm").cooldown_until == clock.now() + timedelta(minutes=10)
    clock.advance(600)
    s.started(task(10), clock.now())
    s.finished(task(10), Status.CANCELLED, clock.now())  # a cancelled probe proves nothing
    assert s.word("crm", clock.now()) == "half_open" and s.state("crm").probe is None
    s.started(task(11), clock.now())
    s.finished(task(11), Status.COMPLETED, clock.now())
    assert s.word("crm", clock.now()) == "ok"
    assert "source crm closed: probe task 11 succeeded" in caplog.text


def test_throttle_pause_and_reset(store: Store, clock: FakeClock) -> None:
    s = guard(store, clock, config(breaker=Breaker(1, 5)), EventBus())
    s.throttle("crm", 30, "HTTP 429", clock.now())
    s.throttle("crm", 10, "shorter", clock.now())  # never shortens
    held = s.hold("crm", clock.now(), [])
    assert [(b.reason, b.until) for b in held] == [("source_throttled", T0 + timedelta(seconds=30))]
    assert "HTTP 429" in held[0].message
    assert s.next_change(clock.now()) == T0 + timedelta(seconds=30)
    clock.advance(31)  # past, and not looked at yet (no pick): no deadline in the past
    assert s.next_change(clock.now()) is None
    clock.advance(-31)
    s.pause("crm", 60, "ops")
    s.finished(task(1), Status.FAILED, clock.now())
    assert reasons(s, clock) == ["source_paused", "source_open", "source_throttled"]
    s.reset("crm", "ops")  # breaker and throttle, not the pause
    assert reasons(s, clock) == ["source_paused"]
    clock.advance(60)
    assert reasons(s, clock) == [] and s.word("crm", clock.now()) == "ok"
    s.pause("crm", None, "ops")
    clock.advance(86400)
    assert reasons(s, clock) == ["source_paused"]
    assert guard(store, clock, config(), EventBus()).word("crm", clock.now()) == "paused"
    s.resume("crm", "ops")
    assert reasons(s, clock) == []


def view(clock: FakeClock, running: list[Task], **kw: object) -> slots.View:
    limits = {"crm": 1}
    args: dict[str, object] = {"now": clock.now(), "paused": False, "max_workers": 2,
                               "running": running, "limit": limits.get}  # fmt: skip
    args.update(kw)
    return slots.View(**args)  # type: ignore[arg-type]


def test_every_reason_is_listed_in_order_and_the_pick_agrees(clock: FakeClock) -> None:
    busy = [task(1, route="a", status=Status.RUNNING), task(2, "erp", status=Status.RUNNING)]
    later = iso(clock.now() + timedelta(minutes=5))
    waiting = task(3, route="a", not_before=later)
    rate = slots.Blocker("rate_limited", "out of rate", (), clock.now() + timedelta(minutes=1))
    v = view(clock, busy, paused=True, holds={"crm": [rate]})
    found = [(b.reason, b.blocking) for b in slots.blockers(v, waiting)]
    assert found == [
        ("paused", ()), ("rate_limited", ()), ("source_limit", (1,)), ("not_before", ()),
        ("route_running", (1,)), ("pool_full", (1, 2)),
    ]  # fmt: skip
    assert slots.pick(v) is None
    free = view(clock, busy[:1], holds={"crm": [rate]})
    pick = slots.pick(free)
    assert pick is not None and set(pick.exclude_sources) == {"crm"}
    assert set(pick.exclude_routes) == {("crm", "a")}
    other = task(4, "erp")
    assert slots.blockers(free, other) == []  # what the pick lets through, explain lets too
    assert slots.pick(view(clock, [], holds={"hr": [rate]})).exclude_sources == {"hr"}  # type: ignore[union-attr]


def queue(store: Store, source: str, n: int, priority: int = 5, batch: int = 5000) -> None:
    new = NewTask(source, "a", "a", ["x"], {}, priority, "manual")
    for start in range(0, n, batch):
        store.enqueue_many([(new, True)] * min(batch, n - start))


def pick_cost(store: Store, pick: Pick) -> tuple[int | None, int]:
    """The id picked and the SQLite VM steps it took (counted by a progress handler)."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    with store._hold("test") as conn:
        conn.set_progress_handler(count, 10)
        try:
            found = pick.choose(conn)
        finally:
            conn.set_progress_handler(None, 0)
    return found, steps[0]


def test_a_deep_queue_of_a_held_source_is_not_walked_by_the_pick(
    store: Store, clock: FakeClock
) -> None:
    queue(store, "crm", 1000)
    other = store.enqueue(NewTask("erp", "b", "b", ["x"], {}, 5, "manual"))[0]
    pick = Pick(iso(clock.now()), {"crm"}, ())
    found, small = pick_cost(store, pick)
    assert found == other.id
    queue(store, "crm", 40_000, priority=0)  # all of them ahead of erp's task
    found, large = pick_cost(store, pick)
    assert found == other.id
    assert large <= small + 5  # the same handful of index seeks, not 40x the rows
    with store._hold("plan") as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT priority, queue_order, id FROM tasks INDEXED BY"
            " tasks_source_queue WHERE " + pick.where("erp")[0] + " ORDER BY priority,"
            " queue_order, id LIMIT 1",
            pick.where("erp")[1],
        ).fetchall()
    assert any("SEARCH tasks USING" in row[3] and "(source=?)" in row[3] for row in plan), plan
    assert not any("TEMP B-TREE" in row[3] for row in plan), plan


def dispatcher(tmp_path: Path, clock: FakeClock, max_deferrals: int) -> Dispatcher:
    text = f"""
[daemon]
state_dir = "{tmp_path / "state"}"
socket = "{tmp_path / "s.sock"}"
[sources.crm.routes]
a = {{ argv = ["{sys.executable}"], max_deferrals = {max_deferrals}, retries = 2 }}
"""
    cfg = loads_config(text, base_dir=tmp_path, env={"PATH": os.environ["PATH"]})
    store = Store.open(cfg.daemon.state_dir / "syncd.db", clock)
    routes = RouteTable.from_config(cfg)
    return Dispatcher(store=store, routes=routes, settings=cfg.daemon, clock=clock,
                      events=EventBus())  # fmt: skip


def test_the_deferral_chain_is_bounded_and_spends_no_retry(
    tmp_path: Path, clock: FakeClock
) -> None:
    d = dispatcher(tmp_path, clock, max_deferrals=2)
    current = d.store.enqueue(NewTask("crm", "a", "a", ["x"], {}, 5, "manual"))[0]
    seen = []
    for _ in range(3):
        claimed = d.store.transition(current.id, Status.QUEUED, Status.RUNNING)
        assert claimed is not None
        with d.cond:
            rt = d._admit(claimed)
        assert d._finish(rt, Outcome(Status.DEFERRED, 75, "retry after 30s: busy", 30.0)) is None
        done = d.store.get(current.id)
        assert done is not None
        seen.append((done.status, done.error))
        follow = [t for t in d.store.tasks_with_status(Status.QUEUED)]
        if done.status is Status.FAILED:
            assert follow == []  # no retry either, although the route has 2
            break
        (current,) = follow
        assert (current.trigger, current.attempt) == (f"defer:{done.id}", 1)
        assert current.not_before == iso(clock.now() + timedelta(seconds=30))
        clock.advance(30)
    assert seen == [
        (Status.DEFERRED, "retry after 30s: busy"),
        (Status.DEFERRED, "retry after 30s: busy"),
        (Status.FAILED, "deferred 2 times in a row, giving up (retry after 30s: busy)"),
    ]
    assert d.store.counts() == {"queued": 0, "running": 0}
    d.store.close()


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ('rate = "5/fortnight"', 'sources.crm.rate: expected "N/second|minute|hour|day", got'),
        ('rate = "0/minute"', "sources.crm.rate: '0/minute': N must be at least 1"),
        ("rate = 5", 'sources.crm.rate: expected "N/second|minute|hour|day", got 5 (integer)'),
        ("breaker = { failures = 5 }", "sources.crm.breaker: missing key 'cooldown_minutes'"),
        ("breaker = { failures = 0, cooldown_minutes = 1 }", "sources.crm.breaker.failures: 0"),
        ("breaker = { failures = 1, cooldown_minutes = 1, x = 1 }", "sources.crm.breaker.x: un"),
        (
            "breaker = { failures = 1, cooldown_minutes = 1e12 }",
            "sources.crm.breaker.cooldown_minutes: 1e+12 is out of range",
        ),
        ("max_deferrals = -1", "sources.crm.max_deferrals: -1 is out of range"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, lines: str, error: str) -> None:
    text = f'[sources.crm]\n{lines}\n[sources.crm.routes]\na = {{ argv = ["/bin/true"] }}\n'
    with pytest.raises(ConfigError) as info:
        loads_config(text, base_dir=tmp_path, env={})
    assert error in str(info.value)


def test_config_values(tmp_path: Path) -> None:
    text = """
[defaults]
max_deferrals = 3
[sources.crm]
rate = " 100 / hour "
breaker = { failures = 5, cooldown_minutes = 2.5 }
[sources.crm.routes]
a = { argv = ["/bin/true"] }
b = { argv = ["/bin/true"], max_deferrals = 0 }
"""
    src = loads_config(text, base_dir=tmp_path, env={}).sources["crm"]
    assert (src.rate, src.breaker) == (Rate(100, "hour"), Breaker(5, 2.5))
    assert src.rate is not None and src.rate.seconds == 3600 and str(src.rate) == "100/hour"
    assert (src.routes["a"].max_deferrals, src.routes["b"].max_deferrals) == (3, 0)


def test_a_breaker_removed_from_the_config_no_longer_holds(store: Store, clock: FakeClock) -> None:
    srcs = config(breaker=Breaker(1, 60))
    s = guard(store, clock, srcs, EventBus())
    s.finished(task(1), Status.FAILED, clock.now())
    assert reasons(s, clock) == ["source_open"]
    srcs["crm"] = config()["crm"]  # a reload without the breaker
    assert reasons(s, clock) == [] and s.word("crm", clock.now()) == "ok"


def test_exit_outcomes(tmp_path: Path) -> None:
    route = loads_config(
        '[sources.crm.routes]\na = { argv = ["/bin/true"], retry_backoff_seconds = 90 }\n',
        base_dir=tmp_path, env={},
    ).sources["crm"].routes["a"]  # fmt: skip
    assert exit_outcome(0, None, route) == Outcome(Status.COMPLETED, 0, None)
    assert exit_outcome(2, None, route) == Outcome(Status.FAILED, 2, "exit code 2")
    assert exit_outcome(-9, None, route) == Outcome(Status.FAILED, -9, "killed by SIGKILL")
    assert exit_outcome(75, None, route) == Outcome(
        Status.DEFERRED, 75, "retry after 90s: exit code 75", 90.0
    )
    asked = exit_outcome(0, (12.5, "HTTP 503"), route)  # the line decides, whatever the exit
    assert asked == Outcome(Status.DEFERRED, 0, "retry after 12.5s: HTTP 503", 12.5)
    assert exit_outcome(1, (5, None), route).error == "retry after 5s: no reason given"


def test_queued_per_source_counters_follow_every_change(store: Store, clock: FakeClock) -> None:
    queue(store, "crm", 7)
    queue(store, "erp", 3, batch=2)
    assert store.queued_by_source() == {"crm": 7, "erp": 3}
    crm = [t for t in store.tasks_with_status(Status.QUEUED) if t.source == "crm"]
    assert store.transition(crm[0].id, Status.QUEUED, Status.RUNNING) is not None
    store.cancel_queued([crm[1].id, crm[2].id], finished_at=iso(clock.now()))
    with store._write("test") as conn:  # as prune would (queued rows are never pruned)
        conn.execute("DELETE FROM tasks WHERE id = ?", (crm[3].id,))
    truth = dict(store._read("SELECT source, count(*) FROM tasks WHERE status = 'queued'"
                             " GROUP BY source"))  # fmt: skip
    assert store.queued_by_source() == truth == {"crm": 3, "erp": 3}


def test_a_reload_reports_a_changed_rate_or_breaker(tmp_path: Path) -> None:
    from syncd.config.diff import diff_configs

    base = '[sources.crm]\n{}\n[sources.crm.routes]\na = {{ argv = ["/bin/true"] }}\n'
    old = loads_config(base.format('rate = "5/minute"'), base_dir=tmp_path, env={})
    new = loads_config(base.format('rate = "6/minute"'), base_dir=tmp_path, env={})
    assert diff_configs(old, new)["changed"] == ["source crm"]
    again = loads_config(
        base.format('rate = "5/minute"\nbreaker = { failures = 2, cooldown_minutes = 1 }'),
        base_dir=tmp_path, env={},
    )  # fmt: skip
    assert diff_configs(old, again)["changed"] == ["source crm"]
    assert diff_configs(old, old)["changed"] == []


def test_an_operators_change_is_acknowledged_only_once_written(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`source pause` on a full disk: the operator is told it was not saved (it is in
    effect until a restart), never told it was when the write was lost."""
    s = guard(store, clock, config(), EventBus())
    real = rows.put_source_state_in

    def full(conn: sqlite3.Connection, name: str, state: dict[str, object]) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(rows, "put_source_state_in", full)
    with pytest.raises(StoreError) as err:
        s.pause("crm", None, "alice")
    assert err.value.code is ErrorCode.STORAGE_ERROR
    assert s.state("crm").paused  # in effect meanwhile
    assert "crm" not in store.source_states()
    monkeypatch.setattr(rows, "put_source_state_in", real)
    s.pause("crm", None, "alice")  # the operator's retry
    assert store.source_states()["crm"]["paused"] is True


def test_a_finish_writes_its_sources_state_as_it_is_when_it_commits(
    store: Store, clock: FakeClock
) -> None:
    """A finish's state row is taken when its transaction runs, not when the task ended:
    a change that committed in between (here a pause) is never put back."""
    s = guard(store, clock, config(breaker=Breaker(5, 60)), EventBus())
    queued = store.enqueue(NewTask("crm", "a", "a", ["x"], {}, 5, "manual"))[0]
    running = store.transition(queued.id, Status.QUEUED, Status.RUNNING, started_at=iso(T0))
    assert running is not None
    s.finished(running, Status.FAILED, clock.now())
    ending = Ending(
        Status.FAILED, iso(clock.now()) or "", 1, "exit 1",
        source_state=("crm", lambda: s.row("crm")),
    )  # fmt: skip
    s.pause("crm", None, "alice")  # committed before the finish's transaction runs
    done, _, _ = store.finish_and_claim(running.id, ending)
    assert done is not None
    saved = store.source_states()["crm"]
    assert (saved["paused"], saved["failures"]) == (True, 1)
