"""Heartbeats, progress, stale and timeout decisions for running tasks.

Progress = new output, or CPU time or I/O of the process tree grew. All durations are on the
monotonic clock, so wall-clock jumps cannot make a task stale or time it out."""

from __future__ import annotations

import logging

from syncd.core.clock import Clock, iso
from syncd.pool.dispatcher import Dispatcher
from syncd.pool.running import RunningTask
from syncd.pool.supervise import KILL_STALE, KILL_TIMEOUT

log = logging.getLogger(__name__)


def _fmt_minutes(value: float) -> str:
    return f"{value:g} min"


class Monitor:
    def __init__(self, dispatcher: Dispatcher, clock: Clock):
        self.dispatcher = dispatcher
        self.clock = clock

    def tick(self) -> None:
        """Sample every running task, write one heartbeat transaction, kill stale/timed-out ones."""
        d = self.dispatcher
        with d.cond:
            running = list(d.running.values())
        if not running:
            return
        now_mono = self.clock.monotonic()
        now_iso = iso(self.clock.now()) or ""
        beats: list[tuple[int, str, str | None]] = []
        for rt in running:
            child = rt.child
            if child is None or rt.kill_reason is not None:
                continue
            self._observe(rt, now_mono)
            beats.append((rt.task.id, now_iso, child.log.progress))
            d.apply_throttle(rt)  # a 429 seen mid-run holds the source back now, not at exit
            self._judge(rt, now_mono)
        if beats:
            try:
                d.store.heartbeat(beats)
            except Exception as exc:  # a full disk must not stop supervision
                log.warning("heartbeat not written: %s", exc)

    def _observe(self, rt: RunningTask, now_mono: float) -> None:
        child = rt.child
        assert child is not None
        try:
            sample = child.sample()
        except Exception:  # the tree may vanish between listing and reading
            return
        output = child.log.bytes_written
        if (
            output > rt.last_output
            or sample.cpu_seconds > rt.last_cpu + 0.01
            or sample.io_bytes > rt.last_io
        ):
            rt.last_progress_mono = now_mono
        rt.last_output = output
        rt.last_cpu = max(rt.last_cpu, sample.cpu_seconds)
        rt.last_io = max(rt.last_io, sample.io_bytes)

    def _judge(self, rt: RunningTask, now_mono: float) -> None:
        d = self.dispatcher
        settings = d.settings
        if rt.route is not None:
            timeout_s = rt.route.timeout_minutes * 60
            if now_mono - rt.started_mono > timeout_s:
                detail = f"timeout after {_fmt_minutes(rt.route.timeout_minutes)}"
                d.kill(rt.task.id, KILL_TIMEOUT, detail)
                return
        stale_s = settings.stale_minutes * 60
        if now_mono - rt.last_progress_mono > stale_s:
            detail = f"stale: no progress for {_fmt_minutes(settings.stale_minutes)}"
            d.kill(rt.task.id, KILL_STALE, detail)

    def fix_stuck(self, minutes: float) -> list[int]:
        """Run stale detection now with another threshold (syncctl fix-stuck)."""
        d = self.dispatcher
        now_mono = self.clock.monotonic()
        failed: list[int] = []
        with d.cond:
            running = list(d.running.values())
        for rt in running:
            if rt.child is not None:
                self._observe(rt, now_mono)
            if now_mono - rt.last_progress_mono > minutes * 60:
                d.kill(rt.task.id, KILL_STALE, f"stale: no progress for {_fmt_minutes(minutes)}")
                failed.append(rt.task.id)
        return failed
