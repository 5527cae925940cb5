"""What an operator sees of each source's protection: its limits, its use of them, and its
state (ok, paused, throttled, open, half_open) with until-when and why. Shared by the
`sources` op, `status` and the metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from syncd.core.clock import iso
from syncd.core.errors import SyncdError
from syncd.core.models import ErrorCode
from syncd.pool.sources import HALF_OPEN, OPEN, SourceState
from syncd.service.view import PoolView

Daemon = PoolView  # what the source views read


def known(d: Daemon, name: str) -> str:
    """The configured source `name` (normalised), or UNKNOWN_SOURCE."""
    wanted = name.strip().lower()
    if d.dispatcher.routes.source(wanted) is None:
        known_names = ", ".join(s.name for s in d.dispatcher.routes.sources()) or "none"
        raise SyncdError(
            ErrorCode.UNKNOWN_SOURCE, f"unknown source {name!r} (known: {known_names})",
            {"source": name},
        )  # fmt: skip
    return wanted


def until_and_why(state: str, st: SourceState) -> tuple[datetime | None, str | None]:
    if state == "paused":
        return st.paused_until, st.pause_reason
    if state == OPEN:
        return st.cooldown_until, st.breaker_reason
    if state == HALF_OPEN:
        probe = f"; probe task {st.probe} running" if st.probe is not None else ""
        return None, f"{st.breaker_reason or 'cooldown over'}{probe}"
    if state == "throttled":
        return st.throttled_until, st.throttle_reason
    return None, None


def describe(d: Daemon, *, queued: bool = True) -> list[dict[str, Any]]:
    """One row per configured source, by name: `state` is the first hold that applies,
    `holds` every reason word holding its tasks back now (the eligibility rule's). `queued`
    (from counters) is left out where only the states are wanted."""
    disp = d.dispatcher
    now = d.clock.now()
    with disp.cond:
        tasks = [rt.task for rt in disp.running.values()]
    running = [t.source for t in tasks]
    per_source = d.store.queued_by_source() if queued else {}
    rows = []
    for src in disp.routes.sources():
        name = src.name
        state = disp.sources.word(name, now)
        st = disp.sources.state(name)
        until, why = until_and_why(state, st)
        breaker = None
        if src.breaker is not None:
            breaker = {
                "failures": src.breaker.failures,
                "cooldown_minutes": src.breaker.cooldown_minutes,
            }
        row: dict[str, Any] = {
            "name": name,
            "max_concurrent": src.max_concurrent,
            "rate": str(src.rate) if src.rate is not None else None,
            "rate_window_seconds": src.rate.seconds if src.rate is not None else None,
            "starts_in_window": len(disp.sources.window(name, now)),
            "breaker": breaker,
            "consecutive_failures": st.failures,
            "running": running.count(name),
            "state": state,
            "until": iso(until),
            "reason": why,
            "holds": [b.reason for b in disp.sources.hold(name, now, tasks)],
            "last_success": st.last_success,
            "last_failure": st.last_failure,
        }
        if queued:
            row["queued"] = per_source.get(name, 0)
        rows.append(row)
    return rows


def held(d: Daemon) -> list[dict[str, Any]]:
    """The sources not `ok`, for `status` and `monitor`: name, state, until, reason."""
    keys = ("name", "state", "until", "reason")
    return [{k: r[k] for k in keys} for r in describe(d, queued=False) if r["state"] != "ok"]
