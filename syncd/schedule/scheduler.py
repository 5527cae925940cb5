"""Cron schedules: decide which slots are due and hand each fire to the pool.

The scheduler never enqueues by itself: a fire goes through `SchedulePool`, the daemon's one
submit path, so limits, coalescing and history apply to schedules as to manual requests.

Rules:

* `last_fire` (persisted, UTC) is the cron SLOT last handled, not the wall time of handling.
  The due slots are those in (last_fire, now]. A backwards wall-clock jump therefore fires
  nothing until the clock passes last_fire again: no slot ever fires twice.
* Exactly one due slot at most 90 s late is a normal fire. So are the slots that fell due
  since the previous tick of this process while wall and monotonic time advanced together
  (the loop was only busy): the latest of them fires once, whatever `catch_up` says.
  Anything else (several due slots or one later than 90 s after downtime, a forward jump,
  a resumed pause) is a catch-up: with
  `catch_up = true` it fires ONCE, for the latest due slot; with `false` nothing is queued
  and a `missed` outcome says why. Either way last_fire becomes the latest due slot, so the
  next slot is normal. Counting stops at 2 and the latest slot is found by searching back
  from now, so a year of downtime costs a few dozen cron steps.
* `starting_deadline_seconds`: a fire later than that after its slot is `missed`.
* Overlap: `skip` records `skipped` when the sync is queued or running; `queue` submits
  (coalescing may answer `coalesced`); `replace` cancels a RUNNING task, then submits.
* Disabled schedules consume their slots silently (enabling one later catches up nothing
  but real downtime); paused ones do not, so `resume()` catches up once and
  `resume(from_now=True)` does not. `run_now` fires a paused or disabled schedule too: it
  is an operator's explicit request.
* A changed cron or timezone on reload starts from now, as a new schedule does.
* Every fire's outcome is persisted (`last_outcome`) and logged on one INFO line; errors
  (a route gone after a reload, a full disk) become `missed` with `error` and never raise
  out of `tick()`.
* DST: every slot comes from `CronExpr.next_after` in the schedule's zone (cron.py has
  Vixie's rules), so slots are strictly increasing UTC instants.

State names starting with `@` are reserved (maintenance keeps `@maintenance` there) and are
never deleted by `reconcile`; schedule names (`[a-z0-9_.-]+`) cannot start with `@`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from syncd.config.model import Schedule
from syncd.core.clock import Clock, iso, parse_iso
from syncd.core.errors import SyncdError
from syncd.core.models import ErrorCode, Overlap
from syncd.cron import CronExpr
from syncd.store.facade import Store

log = logging.getLogger(__name__)

LATE_TOLERANCE = timedelta(seconds=90)
MAX_WAIT = 60.0  # the daemon recomputes from the wall clock at least this often
RESERVED_PREFIX = "@"


class SchedulePool(Protocol):
    def submit_for_schedule(
        self, schedule: Schedule, last_fire: str | None = None
    ) -> tuple[int, str]:
        """Queue the schedule's task; `last_fire` (the slot) commits in the same
        transaction, so a crash can never keep the task and lose the slot. Returns the
        task's id and how it went in: "queued", "started" (it took a free slot in that
        same commit) or "coalesced"."""

    def active_task(self, schedule: Schedule) -> tuple[int, str] | None: ...

    def cancel_task(self, task_id: int) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What one fire did. `reason` explains a skip or a miss; `error` is a failed submit."""

    kind: str  # "queued" | "coalesced" | "skipped" | "missed"
    task_id: int | None
    at: str  # ISO UTC wall time of the fire
    slot: str | None  # ISO UTC cron slot it was for; None for `schedule run`
    reason: str | None = None
    error: str | None = None
    started: bool = False  # queued into a free slot: it was running when the fire returned

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "task_id": self.task_id,
            "at": self.at,
            "slot": self.slot,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        if self.error is not None:
            out["error"] = self.error
        if self.started:
            out["started"] = True
        return out


@dataclass(frozen=True)
class Due:
    """The latest due slot and whether reaching it is a catch-up rather than a normal fire."""

    slot: datetime
    catch_up: bool


def due_slot(expr: CronExpr, tz: tzinfo, last: datetime, now: datetime) -> Due | None:
    """Classify the slots in (last, now]; None when there is none."""
    first = expr.next_after(last, tz)
    if first > now:
        return None
    second = expr.next_after(first, tz)
    if second > now:
        return Due(first, now - first > LATE_TOLERANCE)
    return Due(latest_slot(expr, tz, second, now), True)


def latest_slot(expr: CronExpr, tz: tzinfo, known: datetime, now: datetime) -> datetime:
    """The last slot <= now, given a due slot `known`. Windows back from now double until
    one holds a slot; the previous window was empty, so the walk forward stays short."""
    width = timedelta(minutes=2)
    while True:
        low = now - width
        if low <= known:
            slot = known
        else:
            slot = expr.next_after(low, tz)
            if slot > now:
                width *= 2
                continue
        while True:
            following = expr.next_after(slot, tz)
            if following > now:
                return slot
            slot = following


@dataclass
class _State:
    last_fire: datetime | None = None
    paused: bool = False
    paused_at: str | None = None
    outcome: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Entry:
    schedule: Schedule
    expr: CronExpr | None  # None: the config let through something unusable; it never fires
    tz: tzinfo | None


def _compile(schedule: Schedule) -> _Entry:
    try:
        return _Entry(schedule, CronExpr.parse(schedule.cron), ZoneInfo(schedule.timezone))
    except Exception as exc:  # config validation should have caught it
        log.error("schedule %s: unusable (%s); it will not fire", schedule.name, exc)
        return _Entry(schedule, None, None)


class Scheduler:
    """Per-schedule state in memory (source of truth: the store's schedule_state rows).
    One lock: `tick` runs on the daemon loop, the operator ops on server threads."""

    def __init__(
        self,
        schedules: Sequence[Schedule],
        store: Store,
        pool: SchedulePool,
        clock: Clock,
        on_fire: Callable[[str, str, float | None], None] | None = None,
    ):
        self._on_fire = on_fire  # (schedule, outcome kind, seconds late after its slot)
        self._store = store
        self._pool = pool
        self._clock = clock
        self._lock = threading.RLock()
        self._entries = {s.name: _compile(s) for s in schedules}
        self._states: dict[str, _State] = {}
        self._last_tick: tuple[datetime, float] | None = None  # (wall, monotonic)

    # -- configuration ---------------------------------------------------------------------
    def reconcile(self) -> None:
        """Match stored state by name: new schedules start from now, removed ones lose theirs."""
        with self._lock:
            now = self._clock.now()
            for name in self._store.schedule_state_names():
                if name not in self._entries and not name.startswith(RESERVED_PREFIX):
                    self._store.delete_schedule_state(name)
                    self._states.pop(name, None)
                    log.info("schedule %s: removed from the config, state deleted", name)
            for name in self._entries:
                row = self._store.get_schedule_state(name)
                last = parse_iso(row["last_fire"]) if row else None
                outcome = row["last_outcome"] if row else None
                known = self._states.get(name)  # a reload: this process's state
                if known and known.last_fire and (last is None or known.last_fire > last):
                    # A save of it failed (a full disk): the store is behind. Reloading it
                    # would fire the slots since again; keep ours and try the save again.
                    last, outcome = known.last_fire, known.outcome
                    self._persist(name, last_fire=iso(last), last_outcome=outcome)
                if last is None:
                    self._store.put_schedule_state(name, last_fire=iso(now))
                    last = now
                    log.info("schedule %s: new, first slot after %s", name, iso(now))
                self._states[name] = _State(
                    last_fire=last,
                    paused=bool(row and row["paused"]),
                    paused_at=row["paused_at"] if row else None,
                    outcome=outcome,
                )

    def update(self, schedules: Sequence[Schedule]) -> None:
        """After a reload: new definitions, then reconcile. A changed cron or timezone
        starts from now (its old slots were never this schedule's)."""
        with self._lock:
            now = self._clock.now()
            old = self._entries
            self._entries = {s.name: _compile(s) for s in schedules}
            for name, entry in self._entries.items():
                before = old.get(name)
                state = self._states.get(name)
                if before is None or state is None or state.last_fire is None:
                    continue
                timing = (entry.schedule.cron, entry.schedule.timezone)
                if timing != (before.schedule.cron, before.schedule.timezone):
                    if state.last_fire < now:
                        state.last_fire = now
                        self._store.put_schedule_state(name, last_fire=iso(now))
                    log.info("schedule %s: timing changed, first slot after %s", name, iso(now))
            self.reconcile()

    # -- the loop --------------------------------------------------------------------------
    def tick(self) -> float:
        """Fire every due schedule; seconds until the next due fire (at most MAX_WAIT)."""
        with self._lock:
            now = self._clock.now()
            steady_since = self._steady_since(now)
            wait = MAX_WAIT
            for entry in list(self._entries.values()):
                try:
                    upcoming = self._tick_one(entry, now, steady_since)
                except Exception:
                    log.exception("schedule %s: tick failed", entry.schedule.name)
                    continue
                if upcoming is not None:
                    wait = min(wait, max(0.0, (upcoming - now).total_seconds()))
            return wait

    def _steady_since(self, now: datetime) -> datetime | None:
        """The previous tick's wall time if both clocks advanced alike since (the loop was
        busy or asleep on purpose, not down, and the wall clock did not jump); else None."""
        mono = self._clock.monotonic()
        last, self._last_tick = self._last_tick, (now, mono)
        if last is None:
            return None
        drift = (now - last[0]).total_seconds() - (mono - last[1])
        return last[0] if abs(drift) <= LATE_TOLERANCE.total_seconds() else None

    def _tick_one(
        self, entry: _Entry, now: datetime, steady_since: datetime | None = None
    ) -> datetime | None:
        s = entry.schedule
        state = self._states.setdefault(s.name, _State())
        if entry.expr is None or entry.tz is None or state.paused:
            return None
        if state.last_fire is None:  # tick before reconcile: nothing missed
            state.last_fire = now
            self._persist(s.name, last_fire=iso(now))
        pending = due_slot(entry.expr, entry.tz, state.last_fire, now)
        if (
            pending is not None
            and pending.catch_up
            and steady_since is not None
            and entry.expr.next_after(state.last_fire, entry.tz) > steady_since
        ):  # every due slot came after the last tick of a running loop: late, not missed
            pending = Due(pending.slot, False)
        if pending is not None:
            if not s.enabled:
                state.last_fire = pending.slot
                self._persist(s.name, last_fire=iso(pending.slot))
            elif pending.catch_up and not s.catch_up:
                reason = f"catch_up is off: slots up to {iso(pending.slot)} not fired"
                outcome = Outcome("missed", None, _at(now), iso(pending.slot), reason=reason)
                self._record(s, outcome, pending.slot)
            else:
                self._fire(entry, now, pending.slot)
        if not s.enabled:
            return None
        return entry.expr.next_after(max(state.last_fire, now), entry.tz)

    def _fire(
        self, entry: _Entry, now: datetime, slot: datetime | None
    ) -> tuple[Outcome, SyncdError | None]:
        """Apply the deadline and overlap rules, submit, record; a failure is returned."""
        s = entry.schedule
        at, slot_text = _at(now), iso(slot)
        failure: SyncdError | None = None
        deadline = s.starting_deadline_seconds
        late = 0.0 if slot is None else (now - slot).total_seconds()
        if deadline is not None and late > deadline:
            late_by = f"{late:.0f}s after its slot, over starting_deadline_seconds {deadline:g}"
            outcome = Outcome("missed", None, at, slot_text, reason=late_by)
        else:
            try:
                kind, task_id, reason = self._submit(s, slot_text)
                started = kind == "started"
                kind = "queued" if started else kind
                outcome = Outcome(kind, task_id, at, slot_text, reason=reason, started=started)
            except SyncdError as exc:
                failure = exc
            except Exception as exc:
                log.exception("schedule %s: fire failed", s.name)
                failure = SyncdError(ErrorCode.INTERNAL, f"fire failed: {exc!r}")
            if failure is not None:
                error = f"{failure.code.value}: {failure.message}"
                outcome = Outcome("missed", None, at, slot_text, error=error)
        self._record(s, outcome, slot)
        return outcome, failure

    def _submit(self, s: Schedule, slot: str | None) -> tuple[str, int | None, str | None]:
        reason = None
        if s.overlap is Overlap.SKIP:
            active = self._pool.active_task(s)
            if active is not None:
                return "skipped", active[0], f"task {active[0]} is {active[1]}"
        elif s.overlap is Overlap.REPLACE:
            active = self._pool.active_task(s)
            if active is not None and active[1] == "running":
                self._pool.cancel_task(active[0])
                reason = f"replaced running task {active[0]}"
        task_id, how = self._pool.submit_for_schedule(s, slot)
        return how, task_id, reason

    def _record(self, s: Schedule, outcome: Outcome, slot: datetime | None) -> None:
        """Memory first (never fire a slot twice in this process), then the store."""
        state = self._states.setdefault(s.name, _State())
        state.outcome = outcome.to_dict()
        fields: dict[str, Any] = {"last_outcome": state.outcome}
        if slot is not None:
            state.last_fire = slot
            fields["last_fire"] = iso(slot)
        self._persist(s.name, **fields)
        if self._on_fire is not None:
            lag = None if slot is None else (self._clock.now() - slot).total_seconds()
            self._on_fire(s.name, outcome.kind, lag)
        why = outcome.error or outcome.reason
        log.info(
            "schedule %s: %s%s (slot %s)%s",
            s.name,
            outcome.kind,
            "" if outcome.task_id is None else f" task {outcome.task_id}",
            outcome.slot or "manual run",
            f": {why}" if why else "",
        )

    def _persist(self, name: str, **fields: Any) -> None:
        try:
            self._store.put_schedule_state(name, **fields)
        except SyncdError as exc:
            log.warning("schedule %s: state not saved: %s", name, exc.message)

    # -- operator ops ----------------------------------------------------------------------
    def run_now(self, name: str) -> Outcome:
        """`schedule run`: fire now under the overlap rule, last_fire unchanged. A failed
        submit is recorded as `missed` and its error raised, so the operator sees it."""
        with self._lock:
            entry = self._entry(name)
            outcome, failure = self._fire(entry, self._clock.now(), None)
            if failure is not None:
                raise failure
            return outcome

    def pause(self, name: str) -> dict[str, Any]:
        with self._lock:
            entry = self._entry(name)
            state = self._states.setdefault(name, _State())
            if not state.paused:
                paused_at = _at(self._clock.now())
                self._store.put_schedule_state(name, paused=True, paused_at=paused_at)
                state.paused, state.paused_at = True, paused_at
                log.info("schedule %s: paused", name)
            return self._row(entry, self._clock.now())

    def resume(self, name: str, from_now: bool = False) -> dict[str, Any]:
        """from_now: skip the paused period; otherwise it is caught up once (catch_up rules)."""
        with self._lock:
            entry = self._entry(name)
            state = self._states.setdefault(name, _State())
            now = self._clock.now()
            fields: dict[str, Any] = {"paused": False, "paused_at": None}
            new_last = state.last_fire
            if from_now and (new_last is None or new_last < now):
                new_last = now
                fields["last_fire"] = iso(now)
            self._store.put_schedule_state(name, **fields)
            state.paused, state.paused_at, state.last_fire = False, None, new_last
            log.info("schedule %s: resumed%s", name, " from now" if from_now else "")
            return self._row(entry, now)

    def describe(self) -> list[dict[str, Any]]:
        """The `schedules` op rows."""
        with self._lock:
            now = self._clock.now()
            return [self._row(e, now) for e in self._entries.values()]

    def next_fire(self, name: str) -> str | None:
        with self._lock:
            return self._next_fire(self._entry(name), self._clock.now())

    # -- helpers ---------------------------------------------------------------------------
    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise SyncdError(
                ErrorCode.UNKNOWN_SCHEDULE,
                f"unknown schedule {name!r}",
                {"known": sorted(self._entries)},
            )
        return entry

    def _next_fire(self, entry: _Entry, now: datetime) -> str | None:
        """The slot the scheduler will fire next: a due one if pending, else the first ahead."""
        s = entry.schedule
        state = self._states.get(s.name, _State())
        if entry.expr is None or entry.tz is None or not s.enabled or state.paused:
            return None
        last = state.last_fire or now
        pending = due_slot(entry.expr, entry.tz, last, now)
        if pending is not None and (s.catch_up or not pending.catch_up):
            return iso(pending.slot)
        return iso(entry.expr.next_after(max(last, now), entry.tz))

    def _row(self, entry: _Entry, now: datetime) -> dict[str, Any]:
        s = entry.schedule
        state = self._states.get(s.name, _State())
        outcome = None
        if state.outcome is not None:
            keep = ("kind", "task_id", "at", "reason", "error", "started")
            outcome = {k: state.outcome.get(k) for k in keep if k in state.outcome}
            for key in ("kind", "task_id", "at"):
                outcome.setdefault(key, None)
        return {
            "name": s.name,
            "cron": s.cron,
            "timezone": s.timezone,
            "source": s.source,
            "sync_type": s.sync_type,
            "priority": s.priority,
            "overlap": s.overlap.value,
            "catch_up": s.catch_up,
            "enabled": s.enabled,
            "paused": state.paused,
            "next_fire": self._next_fire(entry, now),
            "last_fire": iso(state.last_fire),
            "last_outcome": outcome,
        }


def _at(now: datetime) -> str:
    return iso(now) or ""
