"""What syncctl shows of why tasks wait and how routes have run: `explain` with every
reason, the queue with its reasons, `history --summary` per route, and `show` with the route
rule that chose it. Pure functions, unit tested like the rest of the rendering."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from syncd.ctl.render import (
    Row,
    cell,
    duration,
    parse_time,
    since,
    sync_name,
    table,
    task_detail,
    when,
)

FROM_RUNS = {"route_running", "source_limit", "pool_full"}  # estimated from run durations


def explain_full(task_id: int, r: Row, now: datetime) -> str:
    """`explain`: every reason, what blocks it, the start labelled as an estimate, any note."""
    lines = [f"task {task_id}: {r.get('reason')}: {r.get('message')}"]
    if r.get("blocking"):
        lines.append(f"  blocked by: {cell(r['blocking'])}")
    for more in (r.get("reasons") or [])[1:]:  # every other reason holding it back
        lines.append(f"  and {more.get('reason')}: {more.get('message')}")
        if more.get("blocking"):
            lines.append(f"    blocked by: {cell(more['blocking'])}")
    start = r.get("estimated_start")
    if start:
        left = since(start, now)
        rel = "now" if left is None or left > -1 else f"in about {duration(-left)}"
        words = {x.get("reason") for x in r.get("reasons") or [{"reason": r.get("reason")}]}
        basis = "the median of recent runs" if words & FROM_RUNS else "when the hold lifts"
        lines.append(f"  estimated start: {when(start)} ({rel}; an estimate from {basis})")
    if r.get("note"):
        lines.append(f"  note: {r['note']}")
    return "\n".join(lines)


def queued_table(r: Row, now: datetime) -> str:
    """`list-tasks --queued`: dispatch order, with the one-word reason each task waits."""
    tasks = r.get("tasks") or []
    if not tasks:
        return "no tasks"
    rows = [
        (
            t["id"],
            t.get("priority"),
            sync_name(t),
            t.get("trigger"),
            duration(since(t.get("submitted_at"), now)),
            t.get("reason"),
        )
        for t in tasks
    ]
    text = table(["ID", "PRI", "SYNC", "TRIGGER", "WAITING", "WHY"], rows)
    more = int(r.get("total") or len(tasks)) - len(tasks)
    return text + (f"\n({more} more not shown)" if more > 0 else "")


def run_seconds(t: Row) -> float | None:
    start, end = parse_time(t.get("started_at")), parse_time(t.get("finished_at"))
    return max(0.0, (end - start).total_seconds()) if start and end else None


def nearest_rank(values: Sequence[float], p: int) -> float | None:
    """The p-th percentile by the nearest-rank rule (an observed value, never interpolated)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-p * len(ordered) // 100))  # ceil(p/100 * n) in integers
    return ordered[min(rank, len(ordered)) - 1]


def history_summary(tasks: Sequence[Row]) -> list[dict[str, Any]]:
    """Per route (source.route): runs, failures, p50/p95 duration of runs that started,
    and the last success. Cancelled tasks count as runs but not as failures."""
    groups: dict[str, list[Row]] = {}
    for t in tasks:
        groups.setdefault(f"{t.get('source')}.{t.get('route')}", []).append(t)
    out = []
    for name in sorted(groups):
        rows = groups[name]
        took = [s for s in (run_seconds(t) for t in rows) if s is not None]
        ok = [t.get("finished_at") for t in rows if t.get("status") == "completed"]
        out.append(
            {
                "route": name,
                "runs": len(rows),
                "failures": sum(1 for t in rows if t.get("status") == "failed"),
                "p50_seconds": nearest_rank(took, 50),
                "p95_seconds": nearest_rank(took, 95),
                "last_success": max((x for x in ok if x), default=None),
            }
        )
    return out


def summary_table(summary: Sequence[Row]) -> str:
    if not summary:
        return "no finished runs"
    rows = [
        (
            s["route"],
            s["runs"],
            s["failures"],
            duration(s.get("p50_seconds")),
            duration(s.get("p95_seconds")),
            when(s.get("last_success")) if s.get("last_success") else "never",
        )
        for s in summary
    ]
    return table(["ROUTE", "RUNS", "FAILED", "P50", "P95", "LAST SUCCESS"], rows)


def task_show(task: Row, followed_by: Row | None = None) -> str:
    """`show`: every field (task_detail), the route line saying which rule chose it: the
    stored sync type is normalised, so it names its own route exactly when they are equal;
    then the task its end queued (retry, requeue, defer), if any."""
    lines = task_detail(task).splitlines()
    exact = task.get("route") == task.get("sync_type")
    why = "exact" if exact else f"fallback: no route for {task.get('sync_type')!r}"
    lines = [f"{line} ({why})" if line.split()[:1] == ["route"] else line for line in lines]
    if followed_by is not None:
        kind = str(followed_by.get("trigger") or "").partition(":")[0]
        lines.append(f"followed by: task {followed_by['id']} ({kind}, {followed_by['status']})")
    return "\n".join(lines)
