"""Protection of the sources' APIs: per source a pause, a throttle, a circuit breaker and a
rate window, held in memory for the dispatcher and persisted at every change (a restart
resumes them as they were). Every change is logged, persisted and published.

Breaker: closed → open after `failures` failed attempts in a row (failed or timed out;
cancelled, deferred and shutdown interruptions do not count) → half-open once the cooldown
has passed (exactly one task, the probe, may start) → closed on its success, open again on
its failure. Only the probe's outcome moves a half-open breaker."""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from syncd.config.model import Source
from syncd.core.clock import Clock, iso, parse_iso
from syncd.core.errors import SyncdError
from syncd.core.events import EventBus
from syncd.core.models import Status, Task
from syncd.pool.slots import (
    RATE_LIMITED,
    SOURCE_OPEN,
    SOURCE_PAUSED,
    SOURCE_THROTTLED,
    Blocker,
)
from syncd.store.facade import Store

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


STATE_WORDS = ("ok", "paused", "throttled", "open", "half_open")  # a source's state, as shown


@dataclass(frozen=True)
class Start:
    """What `Sources.started` changed, for a claim rolled back with its transaction to take
    back: the start it added to the rate window, and whether it made the task the probe."""

    source: str
    task_id: int
    at: datetime | None
    probe: bool


@dataclass
class SourceState:
    """One source's protection state; datetimes are UTC wall time (they survive restarts)."""

    paused: bool = False
    paused_until: datetime | None = None  # None while paused: until resumed
    pause_reason: str | None = None
    throttled_until: datetime | None = None
    throttle_reason: str | None = None
    breaker: str = CLOSED
    failures: int = 0  # failed attempts in a row
    cooldown_until: datetime | None = None
    breaker_reason: str | None = None
    probe: int | None = None  # the half-open breaker's one task
    starts: list[datetime] = field(default_factory=list)  # the rate window, oldest first
    last_success: str | None = None
    last_failure: str | None = None

    def row(self) -> dict[str, Any]:
        return {
            "paused": self.paused, "paused_until": iso(self.paused_until),
            "pause_reason": self.pause_reason,
            "throttled_until": iso(self.throttled_until), "throttle_reason": self.throttle_reason,
            "breaker": self.breaker, "failures": self.failures,
            "cooldown_until": iso(self.cooldown_until), "breaker_reason": self.breaker_reason,
            "probe": self.probe, "starts": [iso(t) for t in self.starts],
            "last_success": self.last_success, "last_failure": self.last_failure,
        }  # fmt: skip

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SourceState:
        def when(key: str) -> datetime | None:
            return parse_iso(row.get(key))

        starts = [t for t in (parse_iso(s) for s in row.get("starts") or []) if t is not None]
        return cls(
            paused=bool(row.get("paused")), paused_until=when("paused_until"),
            pause_reason=row.get("pause_reason"),
            throttled_until=when("throttled_until"), throttle_reason=row.get("throttle_reason"),
            breaker=row.get("breaker") or CLOSED, failures=int(row.get("failures") or 0),
            cooldown_until=when("cooldown_until"), breaker_reason=row.get("breaker_reason"),
            probe=None,  # a probe of an earlier daemon was lost with it: another may start
            starts=starts, last_success=row.get("last_success"),
            last_failure=row.get("last_failure"),
        )  # fmt: skip


def hhmm(when: datetime) -> str:
    """The time of day in log lines (`cooldown until 14:32:05 UTC`)."""
    return when.strftime("%H:%M:%S UTC")


def stamp(when: datetime | None) -> str:
    """A full UTC time in messages an operator reads."""
    return "-" if when is None else when.strftime("%Y-%m-%d %H:%M:%S UTC")


class Sources:
    """The state of every source; safe from many threads (its lock is taken inside the
    dispatcher's, never the other way round)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        events: EventBus,
        config: Callable[[str], Source | None],
    ):
        self.store = store
        self.clock = clock
        self.events = events
        self.config = config
        self.lock = threading.RLock()
        self.states: dict[str, SourceState] = {
            name: SourceState.from_row(row) for name, row in store.source_states().items()
        }

    # -- reading --------------------------------------------------------------------------
    def state(self, name: str) -> SourceState:
        with self.lock:
            return self.states.setdefault(name, SourceState())

    def word(self, name: str, now: datetime) -> str:
        """One of STATE_WORDS: the first that applies."""
        with self.lock:
            st = self.states.get(name)
            if st is None:
                return "ok"
            self._expire(name, st, now)
            if st.paused:
                return "paused"
            if st.breaker != CLOSED:
                return st.breaker
            if st.throttled_until is not None:
                return "throttled"
            return "ok"

    def window(self, name: str, now: datetime) -> list[datetime]:
        """Starts of `name` inside its rate window (empty without a rate)."""
        src = self.config(name)
        if src is None or src.rate is None:
            return []
        with self.lock:
            st = self.states.get(name)
            if st is None:
                return []
            edge = now - timedelta(seconds=src.rate.seconds)
            old = bisect.bisect_right(st.starts, edge)  # oldest first: drop what left the window
            if old:
                del st.starts[:old]
            return st.starts

    def holds(self, now: datetime, running: Sequence[Task]) -> dict[str, list[Blocker]]:
        """The source-level blockers of every held source (the slots' `holds`)."""
        out: dict[str, list[Blocker]] = {}
        with self.lock:
            for name in list(self.states):
                found = self.hold(name, now, running)
                if found:
                    out[name] = found
        return out

    def hold(self, name: str, now: datetime, running: Sequence[Task]) -> list[Blocker]:
        with self.lock:
            st = self.states.get(name)
            if st is None:
                return []
            self._expire(name, st, now)
            out = []
            if st.paused:
                until = f" until {stamp(st.paused_until)}" if st.paused_until else ""
                text = f"source {name} is paused{until} (syncctl source resume {name})"
                out.append(Blocker(SOURCE_PAUSED, text, (), st.paused_until))
            if st.breaker == OPEN:
                text = (f"source {name} is open ({st.breaker_reason}); one task is tried after "
                        f"{stamp(st.cooldown_until)}")  # fmt: skip
                out.append(Blocker(SOURCE_OPEN, text, (), st.cooldown_until))
            elif st.breaker == HALF_OPEN and st.probe is not None:
                probe = (st.probe,) if any(t.id == st.probe for t in running) else ()
                text = f"source {name} is half-open: its probe task {st.probe} is running"
                out.append(Blocker(SOURCE_OPEN, text, probe))
            if st.throttled_until is not None:
                text = (f"source {name} is throttled until {stamp(st.throttled_until)}"
                        f" ({st.throttle_reason or 'no reason given'})")  # fmt: skip
                out.append(Blocker(SOURCE_THROTTLED, text, (), st.throttled_until))
            src = self.config(name)
            if src is not None and src.rate is not None:
                inside = self.window(name, now)
                if len(inside) >= src.rate.count:
                    free = inside[len(inside) - src.rate.count] + timedelta(
                        seconds=src.rate.seconds
                    )
                    text = (f"source {name} used its rate of {src.rate} ({len(inside)} starts);"
                            f" the next start is allowed at {stamp(free)}")  # fmt: skip
                    out.append(Blocker(RATE_LIMITED, text, (), free))
            return out

    def next_change(self, now: datetime) -> datetime | None:
        """The soonest future time a hold lifts by itself: when dispatch must look again."""
        with self.lock:
            times: list[datetime] = []
            for name, st in self.states.items():
                times += [t for t in (st.paused_until if st.paused else None,
                          st.throttled_until, st.cooldown_until if st.breaker == OPEN else None)
                          if t is not None]  # fmt: skip
                src = self.config(name)
                inside = self.window(name, now)
                if src is not None and src.rate is not None and len(inside) >= src.rate.count:
                    times.append(inside[len(inside) - src.rate.count]
                                 + timedelta(seconds=src.rate.seconds))  # fmt: skip
            # A hold already past is lifted at the next pick; it must not make the loop spin
            # while nothing picks (dispatch paused, pool full).
            future = [t for t in times if t > now]
            return min(future) if future else None

    # -- changes from the pool ------------------------------------------------------------
    def started(self, task: Task, now: datetime) -> Start | None:
        """A task of the source started: it counts in the rate window; on a half-open
        breaker it is the probe. Returns what changed (None: nothing), which `unstarted`
        takes back if the claim's transaction is rolled back."""
        src = self.config(task.source)
        with self.lock:
            st = self.states.get(task.source)
            rated = src is not None and src.rate is not None
            if not rated and (st is None or st.breaker != HALF_OPEN):
                return None
            st = self.state(task.source)
            if rated:
                assert src is not None and src.rate is not None
                inside = self.window(task.source, now)
                st.starts = [*self._trim(inside, src.rate.count - 1), now]  # a new list
            probe = st.breaker == HALF_OPEN and st.probe is None
            if probe:
                st.probe = task.id  # told once the claim is on disk: announce_probe
            self._save(task.source, st)
            return Start(task.source, task.id, now if rated else None, probe)

    def announce_probe(self, task: Task) -> None:
        """Tell that the task is its half-open source's probe, once its start is durable and
        told (said from inside the claim's transaction, it could be undone or lost)."""
        with self.lock:
            st = self.states.get(task.source)
            if st is not None and st.breaker == HALF_OPEN and st.probe == task.id:
                line = f"source {task.source} half-open: task {task.id} is its probe"
                self._tell(task.source, st, line)

    def unstarted(self, start: Start) -> None:
        """Take back a start whose claim was rolled back: the task is queued again, so it
        must neither hold the half-open source as its probe nor use up the rate window.
        Only what that start added goes (other claims may have changed the state since);
        the rolled-back transaction took its saved row with it."""
        with self.lock:
            st = self.states.get(start.source)
            if st is None:
                return
            if start.at is not None:
                st.starts = [t for t in st.starts if t is not start.at]
            if start.probe and st.probe == start.task_id:
                st.probe = None  # never told: announce_probe comes after the commit
                self._save(start.source, st)

    def never_ran(self, task: Task) -> None:
        """A claimed task that never started (its worker thread could not): it says nothing
        of its source, but a half-open source whose probe it was lets another task try
        (else held until a restart). Saved now: no finish carries the state row."""
        self.finished(task, Status.FAILED, self.clock.now(), counts=False)
        with self.lock:
            self._save(task.source, self.state(task.source))

    @staticmethod
    def _trim(starts: list[datetime], keep: int) -> list[datetime]:
        return starts[len(starts) - keep :] if keep > 0 else []

    def finished(self, task: Task, status: Status, now: datetime, *, counts: bool = True) -> None:
        """A task of the source ended: move the breaker. `counts` is False for endings that
        say nothing about the source (a shutdown interruption). The caller commits the
        state row (`row()`, taken as it commits) with the task's finish (a separate commit
        per task was a second fsync per task); a breaker that opens or closes is also saved
        at once."""
        src = self.config(task.source)
        breaker = src.breaker if src is not None else None
        with self.lock:
            st = self.state(task.source)
            name = task.source
            was_probe = st.probe == task.id
            if status is Status.COMPLETED:
                st.failures, st.last_success = 0, iso(now)
                if st.breaker == HALF_OPEN and was_probe:
                    st.breaker, st.probe, st.cooldown_until, st.breaker_reason = (
                        CLOSED, None, None, None)  # fmt: skip
                    self._changed(name, st, f"source {name} closed: probe task {task.id} succeeded")
            elif status is Status.FAILED and counts:
                st.failures += 1
                st.last_failure = iso(now)
                if breaker is not None and st.breaker == HALF_OPEN and was_probe:
                    self._open(name, st, breaker.cooldown_minutes, now,
                               f"probe task {task.id} failed")  # fmt: skip
                elif (
                    breaker is not None and st.breaker == CLOSED and st.failures >= breaker.failures
                ):
                    why = f"{st.failures} consecutive failures"
                    self._open(name, st, breaker.cooldown_minutes, now, why)
            elif was_probe:  # cancelled or deferred: the probe says nothing; another may try
                st.probe = None

    def _open(self, name: str, st: SourceState, minutes: float, now: datetime, why: str) -> None:
        st.breaker, st.probe, st.breaker_reason = OPEN, None, why
        st.cooldown_until = now + timedelta(minutes=minutes)
        self._changed(name, st, f"source {name} opened: {why}, cooldown until "
                      f"{hhmm(st.cooldown_until)}")  # fmt: skip

    def throttle(self, name: str, seconds: float, reason: str | None, now: datetime) -> None:
        """Hold the whole source back for `seconds` (never shortens a longer throttle)."""
        with self.lock:
            st = self.state(name)
            until = now + timedelta(seconds=seconds)
            if st.throttled_until is not None and st.throttled_until >= until:
                return
            st.throttled_until, st.throttle_reason = until, reason
            why = f" ({reason})" if reason else ""
            self._changed(name, st, f"source {name} throttled until {hhmm(until)}{why}")

    # -- operator -------------------------------------------------------------------------
    def pause(self, name: str, seconds: float | None, by: str) -> SourceState:
        now = self.clock.now()
        with self.lock:
            st = self.state(name)
            st.paused = True
            st.paused_until = None if seconds is None else now + timedelta(seconds=seconds)
            st.pause_reason = f"paused by {by}"
            until = f" until {hhmm(st.paused_until)}" if st.paused_until else ""
            self._changed(name, st, f"source {name} paused{until} by {by}")
        self._write_now(name)
        return st

    def resume(self, name: str, by: str) -> SourceState:
        with self.lock:
            st = self.state(name)
            st.paused, st.paused_until, st.pause_reason = False, None, None
            self._changed(name, st, f"source {name} resumed by {by}")
        self._write_now(name)
        return st

    def reset(self, name: str, by: str) -> SourceState:
        """Close the breaker and clear the throttle (a pause stays: resume ends it)."""
        with self.lock:
            st = self.state(name)
            st.breaker, st.failures, st.cooldown_until, st.breaker_reason, st.probe = (
                CLOSED, 0, None, None, None)  # fmt: skip
            st.throttled_until, st.throttle_reason = None, None
            self._changed(
                name, st, f"source {name} reset by {by}: breaker closed, throttle cleared"
            )
        self._write_now(name)
        return st

    # -- internals ------------------------------------------------------------------------
    def _expire(self, name: str, st: SourceState, now: datetime) -> None:
        """Holds whose time has come: a timed pause ends, a throttle ends, an open breaker
        turns half-open."""
        if st.paused and st.paused_until is not None and st.paused_until <= now:
            st.paused, st.paused_until, st.pause_reason = False, None, None
            self._changed(name, st, f"source {name} resumed: its pause ended")
        if st.throttled_until is not None and st.throttled_until <= now:
            st.throttled_until, st.throttle_reason = None, None
            self._changed(name, st, f"source {name} no longer throttled")
        if st.breaker != CLOSED and self._breaker_gone(name):
            st.breaker, st.failures, st.cooldown_until, st.probe = CLOSED, 0, None, None
            st.breaker_reason = None
            self._changed(name, st, f"source {name} closed: it has no breaker configured any more")
        if st.breaker == OPEN and st.cooldown_until is not None and st.cooldown_until <= now:
            st.breaker, st.probe = HALF_OPEN, None
            self._changed(name, st, f"source {name} half-open: cooldown over, one task may start")

    def _breaker_gone(self, name: str) -> bool:
        src = self.config(name)
        return src is None or src.breaker is None

    def _changed(self, name: str, st: SourceState, line: str) -> None:
        self._save(name, st)
        self._tell(name, st, line)

    def _tell(self, name: str, st: SourceState, line: str) -> None:
        """Log the line and publish the state to watchers; never raises."""
        log.info("%s", line)
        try:
            if self.events.subscriber_count:
                self.events.publish({"event": "source", "at": iso(self.clock.now()),
                                     "source": name, "message": line, **st.row()})  # fmt: skip
        except Exception:
            log.exception("publishing the state of source %s failed", name)

    def row(self, name: str) -> dict[str, Any]:
        """The source's state row as it is now (what a save writes when it commits)."""
        with self.lock:
            return self.state(name).row()

    def _save(self, name: str, st: SourceState) -> None:
        """Queue the row without waiting (called under `lock`, which the store's writer may
        need for a claim: waiting for the store here could deadlock). It commits with the
        next transaction or a task's finish, as the state is then; from inside a claim's
        transaction it joins it. A failure is logged, never raised: the pool goes on with
        the state in memory, and the next change writes it all again."""
        try:
            self.store.post_source_state(name, lambda: self.row(name))
        except Exception as exc:  # a closing store
            log.warning("source %s: state not saved: %s", name, exc)

    def _write_now(self, name: str) -> None:
        """An operator's change is acknowledged once durable: written now (never under
        `lock`), and a failure raised to the operator. The change stays in effect in
        memory; it is lost at a restart unless a later save lands."""
        try:
            self.store.put_source_state(name, lambda: self.row(name))
        except SyncdError as exc:
            log.warning("source %s: state not saved (in effect until a restart): %s",
                        name, exc.message)  # fmt: skip
            raise
