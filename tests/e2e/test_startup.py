"""How `syncd` refuses to start: bad config, unusable database, a second daemon (exit 78 / 1)."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.helpers.daemon import REPO


def run_syncd(args: list[str], env_extra: dict[str, str] | None = None, timeout: float = 10):
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return proc, time.monotonic() - t0


def test_corrupt_database_exits_78_with_one_line(make_daemon):
    d = make_daemon(start=False)
    d.state_dir.mkdir()
    db = d.state_dir / "syncd.db"
    db.write_bytes(b"this is not a database" * 400)
    proc, elapsed = run_syncd(["--config", str(d.config)])
    assert proc.returncode == 78, proc.stderr
    assert elapsed < 2.5
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert str(db) in last


def test_config_error_exits_78_naming_the_key(make_daemon):
    d = make_daemon(daemon={"max_workers": 0}, start=False)
    proc, _ = run_syncd(["--config", str(d.config)])
    assert proc.returncode == 78
    assert "daemon.max_workers" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_second_daemon_on_same_state_dir_refuses(make_daemon):
    d = make_daemon()
    proc, _ = run_syncd(["--config", str(d.config)])
    assert proc.returncode == 1
    assert "already" in proc.stderr and "Traceback" not in proc.stderr
    assert d.call("ping")["pid"] == d.proc.pid
    assert d.socket.exists()


def test_sigterm_exits_zero(make_daemon):
    d = make_daemon()
    assert d.stop() == 0
    assert not d.socket.exists()
