"""Long maintenance never starves dispatch (RELIABILITY R18, issue 11 item 13): a prune of
200,000 finished rows runs on its own thread, reads its plan and checks integrity on
connections of its own and deletes in short transactions, so tasks keep starting with their
usual gap while it runs. The rows are seeded straight into the database (no daemon running)."""

from __future__ import annotations

import itertools
import sqlite3
import time
from datetime import datetime, timedelta, timezone

from syncd.core.clock import iso, parse_iso
from tests.helpers.system import (
    DaemonProc,
    wait_for,
)

ROWS = 200_000
TASKS = 40
MAX_GAP = 1.0  # seconds from one task's end to the next one's start (usually a few ms)


def seed_history(d: DaemonProc, rows: int) -> None:
    """`rows` completed tasks finished a year ago, and a `prune_at` slot already due."""
    year_ago = iso(datetime.now(timezone.utc) - timedelta(days=365))
    due = iso(datetime.now(timezone.utc) - timedelta(minutes=5))
    conn = sqlite3.connect(d.state_dir / "syncd.db", isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?)"
            " INSERT INTO tasks (source, sync_type, route, argv, params, priority, status,"
            ' "trigger", submitted_at, started_at, finished_at, exit_code, queue_order)'
            " SELECT 'alpha', 'a2', 'a2', '[\"true\"]', '{}', 5, 'completed', 'manual',"
            " ?, ?, ?, 0, i FROM k",
            (rows, year_ago, year_ago, year_ago),
        )
        conn.execute(
            "INSERT INTO schedule_state (name, last_fire) VALUES ('@maintenance', ?)"
            " ON CONFLICT (name) DO UPDATE SET last_fire = excluded.last_fire",
            (due,),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_r18_a_prune_of_200k_rows_leaves_dispatch_its_usual_gap(make_daemon):
    d = make_daemon(daemon={"max_workers": 1, "prune_at": "* * * * *", "history_days": 1})
    assert d.stop() == 0
    seed_history(d, ROWS)

    d.start()  # the prune starts at once: its slot is due
    item = {"source": "alpha", "sync_type": "a1", "params": {"sleep": 0.05}}
    ids: list[int] = []
    done_during_prune = 0
    deadline = time.monotonic() + 120
    # Keep two tasks queued until the prune has finished: dispatch runs all along it.
    while "prune: deleted" not in d.stderr():
        assert time.monotonic() < deadline, "the prune did not finish:\n" + d.stderr()[-3000:]
        status = d.call("status")
        if status["queued"] < 2:
            ids.append(d.call("submit", **item, allow_duplicate=True)["task"]["id"])
        time.sleep(0.02)
        done_during_prune = len(ids) - status["queued"] - status["active"]
    assert "prune: deleted 199997 tasks" in d.stderr() and "integrity ok" in d.stderr()
    tasks = wait_for(
        lambda: (lambda ts: ts if all(t["status"] == "completed" for t in ts) else None)(
            [d.task(i) for i in ids]
        ),
        60,
        "the tasks to complete",
    )
    assert done_during_prune >= 3, f"only {done_during_prune} tasks ran during the prune"
    # One slot, so the tasks ran one after another: each gap is from an end to the next start.
    spans = sorted((parse_iso(t["started_at"]), parse_iso(t["finished_at"])) for t in tasks)
    gaps = [(b[0] - a[1]).total_seconds() for a, b in itertools.pairwise(spans)]  # type: ignore[operator]
    assert max(gaps) < MAX_GAP, f"largest gap {max(gaps):.2f} s; gaps {sorted(gaps)[-5:]}"
