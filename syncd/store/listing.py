"""The `list` view's order as SQL: running, then queued in dispatch order, then finished,
each block paged by a keyset cursor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syncd.core.models import FINAL, Status, Task
from syncd.store.rows import (
    FINISHED,
    FINISHED_INDEX,
    HISTORY_ORDER,
    QUEUE_INDEX,
    QUEUE_ORDER,
    RUNNING,
    marks,
)


@dataclass(frozen=True)
class Group:
    """One block of the `list` order: running (0), queued (1), finished (2)."""

    rank: int
    where: str
    params: tuple[Any, ...]
    order: str
    counter: str | None  # the task_counts row that counts this group exactly, if any
    index: str | None = None  # pinned index for the rows query

    def after(self, cursor: Task) -> tuple[str, list[Any]]:
        """Keyset condition: rows of this group that come after `cursor`."""
        if self.rank == 0:
            return "id > ?", [cursor.id]
        if self.rank == 1:
            return "(priority, queue_order, id) > (?, ?, ?)", [
                cursor.priority, cursor.internal["queue_order"], cursor.id,
            ]  # fmt: skip
        return "(finished_at, id) < (?, ?)", [cursor.finished_at, cursor.id]


def rank(status: Status) -> int:
    return {Status.RUNNING: 0, Status.QUEUED: 1}.get(status, 2)


def list_groups(
    statuses: set[Status], source: str | None, finished_since: str | None
) -> list[Group]:
    extra, params = ("", ()) if source is None else (" AND source = ?", (source,))
    groups = []
    if Status.RUNNING in statuses:
        counter = "running" if source is None else None
        groups.append(Group(0, RUNNING + extra, params, "ORDER BY id", counter))
    if Status.QUEUED in statuses:
        counter = "queued" if source is None else None
        groups.append(
            Group(1, "status = 'queued'" + extra, params, QUEUE_ORDER, counter, QUEUE_INDEX)
        )
    final = sorted(s.value for s in statuses if s in FINAL)
    if final:
        where = f"status IN ({marks(len(final))}) AND {FINISHED}" + extra
        values: tuple[Any, ...] = (*final, *params)
        if finished_since is not None:
            where, values = where + " AND finished_at >= ?", (*values, finished_since)
        groups.append(Group(2, where, values, HISTORY_ORDER, None, FINISHED_INDEX))
    return groups
