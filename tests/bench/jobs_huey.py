"""The bench's Huey app (imported by the bench and by `huey_consumer`): SqliteHuey on the
file named by BENCH_HUEY_DB, with Huey's defaults otherwise (fsync=None leaves SQLite's
synchronous=FULL, so each enqueue is a commit with fsync, as in syncd)."""

from __future__ import annotations

import os
import subprocess
import time

from huey import SqliteHuey

huey = SqliteHuey("bench", filename=os.environ.get("BENCH_HUEY_DB", "/tmp/bench-huey.db"))


@huey.task()
def run_true(_: int = 0) -> tuple[float, float]:
    """The job every runner runs: /bin/true in a child; returns its own (start, finish)."""
    t0 = time.time()
    subprocess.run(["/bin/true"], check=True)
    return t0, time.time()
