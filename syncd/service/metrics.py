"""The daemon's metrics: counters and histograms kept in memory since start, fed by the
dispatcher's task events, the scheduler's fires and recovery; plus a 24 h series of
throughput and queue depth for the dashboard's charts.

Labels come only from the config (source, route, schedule name), never from params, so the
number of series is bounded by the config. Everything here is plain data: the `metrics`
op adds the gauges read from the pool and the store, and the clients render the exposition.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from syncd.core.clock import Clock, iso, parse_iso
from syncd.core.models import FINAL, FINAL_NAMES, SourceRoute, Status, Task

# Sync runs last seconds to hours; queue waits from nothing to a night.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
WAIT_BUCKETS = (0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0)
SERIES_BUCKET_SECONDS = 900  # 15 min: 96 bars in 24 h
SERIES_SPAN_SECONDS = 24 * 3600
QUEUE_SAMPLE_SECONDS = 60.0

HELP = {
    "syncd_tasks_finished_total": "Tasks that reached a final status since the daemon started.",
    "syncd_task_duration_seconds": "Run time of finished tasks that were started.",
    "syncd_task_queue_wait_seconds": "Time from submission to start.",
    "syncd_schedule_fires_total": "Schedule fires by outcome since the daemon started.",
    "syncd_schedule_lag_seconds": "How late the last fire of a schedule was after its slot.",
    "syncd_tasks_lost_total": "Running tasks found without their daemon (crash, fix-stuck).",
    "syncd_stale_kills_total": "Tasks killed for making no progress.",
    "syncd_timeouts_total": "Tasks killed for running past their timeout.",
}


@dataclass
class Histogram:
    """Cumulative-bucket histogram of one label set (Prometheus' shape)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += value
        self.count += 1

    def to_dict(self) -> dict[str, Any]:
        running, buckets = 0, []
        for bound, n in zip(self.bounds, self.counts, strict=True):
            running += n
            buckets.append([bound, running])
        return {"buckets": buckets, "sum": round(self.total, 6), "count": self.count}


@dataclass
class Bucket:
    """One bar of the 24 h series: finishes by status and the deepest queue sampled."""

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    deferred: int = 0
    queued: int | None = None


def _seconds_between(start: str | None, end: str | None) -> float | None:
    a, b = parse_iso(start), parse_iso(end)
    if a is None or b is None:
        return None
    return max(0.0, (b - a).total_seconds())


class Metrics:
    """Thread-safe: observed from worker threads, the loop and the server at once."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self._lock = threading.Lock()
        self.finished: Counter[tuple[str, str, str]] = Counter()
        self.duration: dict[str, Histogram] = {}
        self.wait: dict[str, Histogram] = {}
        self.fires: Counter[tuple[str, str]] = Counter()
        self.lag: dict[str, float] = {}
        self.lost = 0
        self.stale_kills = 0
        self.timeouts = 0
        self._series: dict[int, Bucket] = {}

    # -- feeding ----------------------------------------------------------------------------
    def observe_task(self, task: Task) -> None:
        """A task changed (the dispatcher's task event): a start or an end is counted."""
        if task.status is Status.RUNNING:
            wait = _seconds_between(task.submitted_at, task.started_at)
            if wait is not None:
                with self._lock:
                    self._hist(self.wait, task.source, WAIT_BUCKETS).observe(wait)
            return
        if task.status not in FINAL:
            return
        duration = _seconds_between(task.started_at, task.finished_at)
        error = task.error or ""
        with self._lock:
            self.finished[(task.source, task.route, task.status.value)] += 1
            if duration is not None:
                self._hist(self.duration, task.source, DURATION_BUCKETS).observe(duration)
            if error.startswith("stale"):
                self.stale_kills += 1
            elif error.startswith("timeout"):
                self.timeouts += 1
            bucket = self._bucket(parse_iso(task.finished_at) or self.clock.now())
            setattr(bucket, task.status.value, getattr(bucket, task.status.value) + 1)

    def observe_bulk_end(
        self, tasks: Sequence[SourceRoute], status: Status, finished_at: str
    ) -> None:
        """Queued tasks a bulk cancel ended (never started: no duration to observe)."""
        by_route = Counter((t.source, t.route) for t in tasks)
        with self._lock:
            for (source, route), count in by_route.items():
                self.finished[(source, route, status.value)] += count
            bucket = self._bucket(parse_iso(finished_at) or self.clock.now())
            setattr(bucket, status.value, getattr(bucket, status.value) + len(tasks))

    def observe_fire(self, schedule: str, outcome: str, lag_seconds: float | None) -> None:
        with self._lock:
            self.fires[(schedule, outcome)] += 1
            if lag_seconds is not None:
                self.lag[schedule] = max(0.0, lag_seconds)

    def observe_lost(self, count: int) -> None:
        with self._lock:
            self.lost += count

    def sample_queue(self, queued: int) -> None:
        """The queue depth now; a bar keeps the deepest sample of its quarter hour."""
        with self._lock:
            bucket = self._bucket(self.clock.now())
            bucket.queued = queued if bucket.queued is None else max(bucket.queued, queued)

    def seed_series(self, rows: Iterable[tuple[int, str, int]]) -> None:
        """Finishes from before this start (store.finished_counts), so the throughput chart
        survives a restart; queue depth has no such record and starts empty."""
        with self._lock:
            for start, status, n in rows:
                if status in FINAL_NAMES:
                    bucket = self._series.setdefault(start, Bucket())
                    setattr(bucket, status, getattr(bucket, status) + n)
            self._trim(self.clock.now())

    # -- reading ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Counters and histograms as the `metrics` op's families (gauges are added there)."""
        with self._lock:
            counters = {
                "syncd_tasks_finished_total": [
                    {"labels": {"source": s, "sync_type": r, "status": st}, "value": n}
                    for (s, r, st), n in sorted(self.finished.items())
                ],
                "syncd_schedule_fires_total": [
                    {"labels": {"schedule": name, "outcome": outcome}, "value": n}
                    for (name, outcome), n in sorted(self.fires.items())
                ],
                "syncd_tasks_lost_total": [{"labels": {}, "value": self.lost}],
                "syncd_stale_kills_total": [{"labels": {}, "value": self.stale_kills}],
                "syncd_timeouts_total": [{"labels": {}, "value": self.timeouts}],
            }
            histograms = {
                "syncd_task_duration_seconds": _hist_samples(self.duration),
                "syncd_task_queue_wait_seconds": _hist_samples(self.wait),
            }
            lag = [
                {"labels": {"schedule": name}, "value": round(v, 3)}
                for name, v in sorted(self.lag.items())
            ]
        return {
            "counters": {name: _family(name, s) for name, s in counters.items()},
            "gauges": {"syncd_schedule_lag_seconds": _family("syncd_schedule_lag_seconds", lag)},
            "histograms": {name: _family(name, s) for name, s in histograms.items()},
        }

    def series(self) -> dict[str, Any]:
        """The last 24 h in quarter hours, oldest first; a bar nobody sampled has queued null."""
        now = self.clock.now()
        end = _floor(now)
        first = end - SERIES_SPAN_SECONDS + SERIES_BUCKET_SECONDS
        with self._lock:
            self._trim(now)
            rows = []
            for start in range(first, end + 1, SERIES_BUCKET_SECONDS):
                b = self._series.get(start) or Bucket()
                rows.append(
                    {
                        "start": iso(datetime.fromtimestamp(start, timezone.utc)),
                        "completed": b.completed,
                        "failed": b.failed,
                        "cancelled": b.cancelled,
                        "deferred": b.deferred,
                        "queued": b.queued,
                    }
                )
        return {"bucket_seconds": SERIES_BUCKET_SECONDS, "buckets": rows}

    # -- internals --------------------------------------------------------------------------
    @staticmethod
    def _hist(table: dict[str, Histogram], key: str, bounds: tuple[float, ...]) -> Histogram:
        hist = table.get(key)
        if hist is None:
            hist = table[key] = Histogram(bounds)
        return hist

    def _bucket(self, when: datetime) -> Bucket:
        start = _floor(when)
        bucket = self._series.get(start)
        if bucket is None:
            bucket = self._series[start] = Bucket()
            self._trim(when)
        return bucket

    def _trim(self, now: datetime) -> None:
        oldest = _floor(now - timedelta(seconds=SERIES_SPAN_SECONDS))
        for start in [s for s in self._series if s <= oldest]:
            del self._series[start]


def _floor(when: datetime) -> int:
    t = int(when.timestamp())
    return t - t % SERIES_BUCKET_SECONDS


def _hist_samples(table: dict[str, Histogram]) -> list[dict[str, Any]]:
    return [{"labels": {"source": s}, **h.to_dict()} for s, h in sorted(table.items())]


def _family(name: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"help": HELP.get(name, name), "samples": samples}
