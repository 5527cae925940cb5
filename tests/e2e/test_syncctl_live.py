"""syncctl as a whole process against a real daemon: exit codes 0/1/2/3, --json, --wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.daemon import REPO


def syncctl(*args: str, socket: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", "from syncd.ctl.main import main; main()"]
    if socket is not None:
        cmd += ["--socket", str(socket)]
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_exit_codes_against_a_real_daemon(make_daemon, workdir):
    d = make_daemon()
    ok = syncctl("status", "--json", socket=d.socket)
    assert ok.returncode == 0
    assert set(json.loads(ok.stdout)) >= {"max_workers", "active", "queued", "state"}
    refused = syncctl("submit", "nosuchsource", socket=d.socket)
    assert refused.returncode == 1
    assert "unknown_source" in refused.stderr and "alpha" in refused.stderr
    usage = syncctl("priority", "notanumber", socket=d.socket)
    assert usage.returncode == 2
    gone = syncctl("status", socket=workdir / "nothing.sock")
    assert gone.returncode == 3
    assert str(workdir / "nothing.sock") in gone.stderr
    assert "Traceback" not in refused.stderr + usage.stderr + gone.stderr


def test_submit_wait_exit_status_follows_the_task(make_daemon):
    d = make_daemon()
    good = syncctl("submit", "alpha", "a1", "--param", "sleep=0.2", "--wait", socket=d.socket)
    assert good.returncode == 0, good.stderr
    bad = syncctl("submit", "alpha", "a2", "--param", "exit=4", "--wait", socket=d.socket)
    assert bad.returncode == 1


def test_monitor_block_with_a_running_task(make_daemon):
    d = make_daemon()
    tid = d.call("submit", source="alpha", sync_type="a1", params={"sleep": "30"})["task"]["id"]
    d.wait_status(tid, {"running"})
    out = syncctl("monitor", socket=d.socket)
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].endswith("] Worker Pool Status:")
    assert "  Max Workers: 2" in lines and "  Active: 1 tasks" in lines
    assert any(line.startswith(f"  - Task {tid}: alpha.a1 (running for ") for line in lines)
    d.call("cancel", ids=[tid])
