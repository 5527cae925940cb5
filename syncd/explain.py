"""Why a queued task is not running, in words and as data (syncctl explain)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from syncd.clock import iso, parse_iso
from syncd.models import Status, Task

if TYPE_CHECKING:
    from syncd.daemon import Daemon


def explain(d: Daemon, task: Task) -> dict[str, Any]:
    disp = d.dispatcher
    now = d.clock.now()
    with disp.cond:
        running = [rt.task for rt in disp.running.values()]
        paused = disp.paused
    max_workers = disp.max_workers

    def answer(reason: str, message: str, blocking: list[int]) -> dict[str, Any]:
        return {
            "reason": reason,
            "message": message,
            "blocking": blocking,
            "estimated_start": None,
        }

    if task.status is not Status.QUEUED:
        return answer("none", f"task {task.id} is {task.status.value}, not queued", [])
    if paused:
        return answer("paused", "dispatch is paused (syncctl resume to start it again)", [])
    nb: datetime | None = parse_iso(task.not_before)
    if nb is not None and nb > now:
        out = answer("not_before", f"waits for its retry backoff until {task.not_before}", [])
        out["estimated_start"] = iso(nb)
        return out
    same = [t.id for t in running if (t.source, t.route) == (task.source, task.route)]
    if same:
        return answer(
            "route_running",
            f"the same sync {task.source}.{task.route} is running as task {same[0]}",
            same,
        )
    source = disp.routes.source(task.source)
    if source is not None and source.max_concurrent is not None:
        mine = [t.id for t in running if t.source == task.source]
        if len(mine) >= source.max_concurrent:
            return answer(
                "source_limit",
                f"source {task.source} is at its limit of {source.max_concurrent} "
                f"(tasks {', '.join(map(str, mine))})",
                mine,
            )
    if len(running) >= max_workers:
        ids = sorted(t.id for t in running)
        return answer(
            "pool_full",
            f"all {max_workers} slots are taken (tasks {', '.join(map(str, ids))})",
            ids,
        )
    return answer("none", "nothing blocks it; it starts at the next dispatch", [])
