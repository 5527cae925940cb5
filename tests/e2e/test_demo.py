"""`syncd demo` runs on a fresh install: a real daemon, the demo catalog, tasks that complete."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers.daemon import REPO


def syncd_command() -> list[str]:
    installed = Path(sys.executable).with_name("syncd")
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "syncd"]


def test_demo_runs_tasks_to_completion_and_cleans_up() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.run(
        [*syncd_command(), "demo", "--speed", "20"],
        stdin=subprocess.DEVNULL,  # not a terminal: the demo ends once the pool is idle
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "Worker Pool Status:" in out
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+/ ", out, re.M), out[:2000]
    assert "Max Workers: 2" in out
    summary = out.strip().splitlines()[-3:]
    text = "\n".join(summary).lower()
    assert "completed" in text, out[-2000:]
    assert "Traceback" not in proc.stderr
