"""The per-source protection state as rows (pause, throttle, breaker, rate window): one row
per source that ever had any, read once at start and written at every change."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from syncd.store.db import StoreBase

SOURCE_COLUMNS = (
    "paused", "paused_until", "pause_reason", "throttled_until", "throttle_reason", "breaker",
    "failures", "cooldown_until", "breaker_reason", "probe", "starts", "last_success",
    "last_failure",
)  # fmt: skip


class SourceRows(StoreBase):
    """Reads and writes of `source_state`; `starts` (the rate window) is a list of times."""

    def source_states(self) -> dict[str, dict[str, Any]]:
        cols = ", ".join(SOURCE_COLUMNS)
        out: dict[str, dict[str, Any]] = {}
        for row in self._read(f"SELECT name, {cols} FROM source_state"):
            values = dict(zip(SOURCE_COLUMNS, row[1:], strict=True))
            values["paused"] = bool(values["paused"])
            values["starts"] = json.loads(values["starts"] or "[]")
            out[row[0]] = values
        return out

    def post_source_state(self, name: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Queue a source's state row without waiting (it commits with the next transaction
        or within POST_GATHER_SECONDS; inside the writer's transaction it joins it): the
        pool's locks are never held while waiting for the store. The row is `snapshot()`
        taken when the write runs, so a save that commits late never puts back an older
        state over a newer one."""
        self._writer.post("source_state", lambda conn: put_source_state_in(conn, name, snapshot()))

    def put_source_state(self, name: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Write a source's state row now, durably (an operator's change is acknowledged only
        then); a failure raises."""
        self._group("source_state", lambda conn: put_source_state_in(conn, name, snapshot()))


_UPSERT = (
    f"INSERT INTO source_state (name, {', '.join(SOURCE_COLUMNS)})"
    f" VALUES (?, {', '.join('?' for _ in SOURCE_COLUMNS)}) ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in SOURCE_COLUMNS)
)  # built once: every task's finish runs it


def put_source_state_in(conn: sqlite3.Connection, name: str, state: dict[str, Any]) -> None:
    """The upsert, inside the caller's transaction (a task's finish carries its source's)."""
    values = dict(state)
    values["paused"] = int(bool(values["paused"]))
    values["starts"] = json.dumps(values["starts"])
    conn.execute(_UPSERT, (name, *(values[c] for c in SOURCE_COLUMNS)))
