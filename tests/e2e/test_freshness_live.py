"""`syncctl freshness` against a real daemon: a route that never completed is stale and
`--check` exits 1; once a run completes it is fresh and `--check` exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.daemon import REPO


def syncctl(*args: str, socket: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from syncd.ctl.main import main; main()", *args, "--socket",
         str(socket)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def test_freshness_check_exit_codes_follow_the_last_success(make_daemon):
    d = make_daemon(
        {"alpha": {"routes": {"a1": {"command": "a1", "freshness_minutes": 60}, "a2": "a2"}}}
    )
    stale = syncctl("freshness", "--check", socket=d.socket)
    assert stale.returncode == 1
    assert stale.stdout == "STALE alpha.a1: never completed (target 1h 00m)\n"

    failed = d.call("submit", source="alpha", sync_type="a1", params={"exit": "3"})["task"]
    d.wait_status(failed["id"], {"failed"})
    assert syncctl("freshness", "--check", socket=d.socket).returncode == 1

    done = d.call("submit", source="alpha", sync_type="a1")["task"]
    finished = d.wait_status(done["id"], {"completed"})
    fresh = syncctl("freshness", "--check", socket=d.socket)
    assert (fresh.returncode, fresh.stdout) == (0, "fresh: all 1 route(s) with a target\n")

    doc = json.loads(syncctl("freshness", "--json", "--all", socket=d.socket).stdout)
    rows = {r["sync_type"]: r for r in doc["routes"]}
    assert rows["a1"]["last_success"] == {
        "task_id": done["id"],
        "started_at": finished["started_at"],
        "finished_at": finished["finished_at"],
    }
    assert rows["a1"]["stale"] is False and rows["a1"]["target_minutes"] == 60
    assert rows["a2"] == {
        "source": "alpha", "sync_type": "a2", "target_minutes": None,
        "last_success": None, "age_seconds": None, "stale": False,
    }  # fmt: skip
    table = syncctl("freshness", socket=d.socket)
    assert table.returncode == 0
    assert table.stdout.splitlines()[1].startswith("alpha.a1  1h 00m")
