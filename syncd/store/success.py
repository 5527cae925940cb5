"""The last successes: the last completed task of a route (how fresh its data is) and of a
route with given params (the watermark its next run starts from), plus recording the argv
a watermark route actually runs. Each lookup is one seek in a partial index of completed
rows, never a scan of the history."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from syncd.store.db import StoreBase
from syncd.store.rows import canonical_params

# The last completed task of each (source, route) of a JSON list: a correlated subquery per
# key, each one backwards seek in the partial index (its WHERE spelt as the index's).
LAST_SUCCESS_PER_ROUTE = (
    "SELECT k.s, k.r, t.id, t.started_at, t.finished_at"
    " FROM (SELECT json_extract(value, '$[0]') AS s, json_extract(value, '$[1]') AS r"
    " FROM json_each(?)) AS k"
    " LEFT JOIN tasks AS t ON t.id = (SELECT l.id FROM tasks AS l INDEXED BY tasks_last_success"
    " WHERE l.status = 'completed' AND l.source = k.s AND l.route = k.r"
    " ORDER BY l.started_at DESC, l.id DESC LIMIT 1)"
)
LAST_SUCCESS_WITH_PARAMS = (
    "SELECT id, started_at, finished_at FROM tasks INDEXED BY tasks_watermark"
    " WHERE status = 'completed' AND source = ? AND route = ? AND params = ?"
    " ORDER BY started_at DESC, id DESC LIMIT 1"
)


@dataclass(frozen=True)
class Success:
    """The last completed task of a route (or of a route with given params)."""

    task_id: int
    started_at: str
    finished_at: str | None

    def to_dict(self) -> dict[str, Any]:
        """As the ops show it (`freshness`, `resolve`'s watermark)."""
        return {
            "task_id": self.task_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class Successes(StoreBase):
    """The queries above, on the store's one connection."""

    def last_successes(self, routes: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Success]:
        """The last completed task (latest start) of each (source, route) that has one: one
        statement, one seek in tasks_last_success per route, whatever the history holds."""
        found: dict[tuple[str, str], Success] = {}
        for start in range(0, len(routes), 500):
            chunk = [list(key) for key in routes[start : start + 500]]
            for source, route, task_id, started, finished in self._read(
                LAST_SUCCESS_PER_ROUTE, (json.dumps(chunk),)
            ):
                if task_id is not None:
                    found[(source, route)] = Success(task_id, started, finished)
        return found

    def last_success(self, source: str, route: str, params: dict[str, Any]) -> Success | None:
        """The last completed task of this sync with exactly these params (a watermark)."""
        rows = self._read(LAST_SUCCESS_WITH_PARAMS, (source, route, canonical_params(params)))
        return Success(*rows[0]) if rows else None

    def record_spawn_argv(self, task_id: int, argv: list[str], template: list[str]) -> bool:
        """A running task's argv as it is about to run (watermarks filled in), keeping the
        argv it was queued with for its follow-ups; False if it is not running."""
        with self._write("argv") as conn:
            cur = conn.execute(
                "UPDATE tasks SET argv = ?, argv_template = ? WHERE id = ? AND status = 'running'",
                (json.dumps(argv), json.dumps(template), task_id),
            )
        return cur.rowcount > 0
