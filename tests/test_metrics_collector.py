"""The daemon's metrics collector and the store counters it reads (units, fake clock)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from syncd.core.clock import FakeClock, iso
from syncd.core.models import Status, Task
from syncd.ctl.metrics import exposition
from syncd.service.metrics import Metrics
from syncd.store import migrations
from syncd.store.facade import NewTask, Store

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def task(status: Status, **kw: object) -> Task:
    base = Task(
        id=1, source="crm", sync_type="contacts", route="contacts", argv=["x"],
        params={"since": "<script>"}, priority=5, status=status, trigger="manual",
        submitted_at=iso(T0), started_at=iso(T0 + timedelta(seconds=30)),
        finished_at=iso(T0 + timedelta(seconds=100)),
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def new(source: str) -> NewTask:
    return NewTask(source=source, sync_type="a", route="a", argv=["x"], params={},
                   priority=5, trigger="manual")  # fmt: skip


def test_starts_and_ends_feed_counters_histograms_and_the_series() -> None:
    clock = FakeClock(T0 + timedelta(minutes=5))
    m = Metrics(clock)
    m.observe_task(task(Status.RUNNING, finished_at=None))
    m.observe_task(task(Status.COMPLETED))
    m.observe_task(task(Status.FAILED, error="stale: no progress for 30 min"))
    m.observe_task(task(Status.FAILED, error="timeout after 120 min"))
    m.observe_task(task(Status.CANCELLED, started_at=None))  # cancelled while queued
    m.observe_task(task(Status.QUEUED))  # a submit: nothing to count
    m.observe_fire("nightly", "skipped", 2.5)
    m.observe_lost(2)
    snap = m.snapshot()
    finished = {
        tuple(s["labels"].values()): s["value"]
        for s in snap["counters"]["syncd_tasks_finished_total"]["samples"]
    }
    assert finished == {
        ("crm", "contacts", "completed"): 1,
        ("crm", "contacts", "failed"): 2,
        ("crm", "contacts", "cancelled"): 1,
    }
    assert snap["counters"]["syncd_stale_kills_total"]["samples"][0]["value"] == 1
    assert snap["counters"]["syncd_timeouts_total"]["samples"][0]["value"] == 1
    assert snap["counters"]["syncd_tasks_lost_total"]["samples"][0]["value"] == 2
    (duration,) = snap["histograms"]["syncd_task_duration_seconds"]["samples"]
    assert duration["count"] == 3 and duration["sum"] == 210.0  # the cancelled one never ran
    assert dict(map(tuple, duration["buckets"]))[60.0] == 0
    assert dict(map(tuple, duration["buckets"]))[120.0] == 3
    (wait,) = snap["histograms"]["syncd_task_queue_wait_seconds"]["samples"]
    assert wait["count"] == 1 and wait["sum"] == 30.0
    assert snap["gauges"]["syncd_schedule_lag_seconds"]["samples"] == [
        {"labels": {"schedule": "nightly"}, "value": 2.5}
    ]
    bars = m.series()["buckets"]
    assert len(bars) == 96 and bars[-1]["start"] == iso(T0)
    assert (bars[-1]["completed"], bars[-1]["failed"], bars[-1]["cancelled"]) == (1, 2, 1)


def test_series_keeps_24_hours_and_the_deepest_queue_sample() -> None:
    clock = FakeClock(T0)
    m = Metrics(clock)
    m.sample_queue(10)
    m.sample_queue(40)
    m.sample_queue(5)
    assert m.series()["buckets"][-1]["queued"] == 40
    clock.advance(3600)
    clock.set_wall(T0 + timedelta(hours=1))
    bars = m.series()["buckets"]
    assert bars[-5]["queued"] == 40 and bars[-1]["queued"] is None
    clock.set_wall(T0 + timedelta(hours=25))
    assert all(b["queued"] is None for b in m.series()["buckets"])
    assert m._series == {}  # trimmed, not only hidden


def test_exposition_is_valid_prometheus_text() -> None:
    m = Metrics(FakeClock(T0))
    m.observe_task(task(Status.COMPLETED))
    text = exposition(m.snapshot()).decode()
    names = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert names["syncd_tasks_finished"] == "counter"
    assert names["syncd_task_duration_seconds"] == "histogram"
    assert names["syncd_schedule_lag_seconds"] == "gauge"
    assert "<script>" not in text  # params never become labels


def test_queued_per_source_counters_follow_every_change(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.db", FakeClock(T0))
    try:
        a = [store.enqueue(new("crm"), allow_duplicate=True)[0] for _ in range(3)]
        store.enqueue_many([(new("erp"), True), (new("erp"), True)])
        assert store.queued_by_source() == {"crm": 3, "erp": 2}
        store.transition(a[0].id, Status.QUEUED, Status.RUNNING)
        store.cancel_queued([a[1].id], finished_at=iso(T0))
        assert store.queued_by_source() == {"crm": 1, "erp": 2}
        store._conn.execute("DELETE FROM tasks WHERE source = 'erp'")
        assert store.queued_by_source() == {"crm": 1}
    finally:
        store.close()


def test_migration_counts_the_queue_already_there(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrations.migrate(conn, target=1)
    conn.executemany(
        "INSERT INTO tasks (source, sync_type, route, argv, params, priority, status,"
        """ "trigger", submitted_at, queue_order) VALUES (?, 'a', 'a', '[]', '{}', 5, ?,"""
        " 'manual', '2026-01-01T00:00:00Z', 1)",
        [("crm", "queued"), ("crm", "queued"), ("crm", "completed"), ("erp", "queued")],
    )
    conn.close()
    store = Store.open(path, FakeClock(T0))
    try:
        assert store.queued_by_source() == {"crm": 2, "erp": 1}
    finally:
        store.close()


def test_a_deferred_end_is_counted_and_charted() -> None:
    clock = FakeClock(T0 + timedelta(minutes=5))
    m = Metrics(clock)
    m.observe_task(task(Status.DEFERRED))
    finished = m.snapshot()["counters"]["syncd_tasks_finished_total"]["samples"]
    assert [(s["labels"]["status"], s["value"]) for s in finished] == [("deferred", 1)]
    buckets = m.series()["buckets"]
    assert sum(b["deferred"] for b in buckets) == 1
    assert sum(b["completed"] + b["failed"] + b["cancelled"] for b in buckets) == 0
