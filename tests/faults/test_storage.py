"""Storage faults against a real daemon (RELIABILITY 2.3): a full disk (S1), a database locked
by another process (S2) and a read-only state dir (S4). S1 and S4 use real mounts (a 2 MiB
tmpfs, a read-only bind mount), not failpoints: CI runs as root."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.system import (
    assert_responsive,
    fill_disk,
    read_only_bind,
    script_route,
    tmpfs,
    wait_for,
    write_script,
)

# Prints a numbered line every 20 ms until <dir>/stop exists, then "END" and exit 0.
WRITER = """
import os, sys, time
stop = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stop")
n = 0
while not os.path.exists(stop):
    n += 1
    print(f"line {n:06d} " + "w" * 200, flush=True)
    time.sleep(0.02)
print("END", flush=True)
"""


def quick_check(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return "\n".join(r[0] for r in conn.execute("PRAGMA quick_check"))
    finally:
        conn.close()


def test_s1_full_disk_refuses_submits_and_recovers(make_daemon, workdir):
    write_script(workdir, "writer.py", WRITER)
    with tmpfs(workdir / "state", "2m"):
        d = make_daemon(
            {"alpha": {"routes": {"a1": "a1", "writer": script_route(workdir / "writer.py")}}},
            daemon={"max_workers": 1},
        )
        writer = d.call("submit", source="alpha", sync_type="writer")["task"]["id"]
        d.wait_status(writer, {"running"})
        wait_for(lambda: "line 000010" in d.call("logs", id=writer)["text"], what="output")

        fill_disk(workdir / "state" / "filler")
        acked: list[int] = []
        refused = None
        for n in range(300):  # the WAL may hold a few free frames: submit until it is full
            reply = d.request("submit", source="alpha", sync_type="a1", params={"exit": n})
            if not reply["ok"]:
                refused = reply["error"]
                break
            acked.append(reply["result"]["task"]["id"])
        assert refused is not None, "no submit failed on a full disk"
        assert refused["code"] == "storage_error", refused
        # Still alive and answering; reads work; the running task is still running.
        assert_responsive(d, tries=5)
        assert d.task(writer)["status"] == "running"
        time.sleep(0.5)  # output written now is dropped: let some of it be lost
        assert d.proc is not None and d.proc.poll() is None

        (workdir / "state" / "filler").unlink()
        ok = d.call("submit", source="alpha", sync_type="a1", params={"exit": 0})
        assert not ok["coalesced"]
        wait_for(  # the log retries its writes: output after the gap is kept again
            lambda: "line " in d.call("logs", id=writer)["text"].partition("bytes omitted]")[2],
            20,
            "output to be logged again after the gap",
        )
        (workdir / "stop").touch()
        done = d.wait_status(writer, {"completed", "failed"}, timeout=30)
        assert done["status"] == "completed", done
        text = d.call("logs", id=writer)["text"]
        assert "bytes omitted]" in text, "dropped output carries no marker"
        assert text.rstrip().endswith("END")
        for task_id in [*acked, ok["task"]["id"]]:  # every acknowledged submit exists
            assert d.task(task_id)["source"] == "alpha"
        wait_for(
            lambda: all(d.task(i)["status"] == "completed" for i in [*acked, ok["task"]["id"]]),
            60,
            "the acknowledged tasks to run once space is back",
        )
        assert quick_check(d.state_dir / "syncd.db") == "ok"
        assert "Traceback" not in d.stderr()
        d.stop()


def _hold_lock(db: Path, seconds: float) -> subprocess.Popen[bytes]:
    """An external `sqlite3`-style writer holding BEGIN IMMEDIATE for `seconds`."""
    script = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "c.execute('COMMIT')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(db), str(seconds)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"locked"
    return proc


def _hold_lock_cli(db: Path, seconds: float) -> subprocess.Popen[bytes]:
    """The sqlite3 CLI holding BEGIN IMMEDIATE; falls back to Python's module without it.
    The CLI touches a marker file once it holds the lock (`.bail on`: no lock, no marker)."""
    cli = shutil.which("sqlite3")
    if cli is None:
        return _hold_lock(db, seconds)
    marker = db.with_name("locked.marker")
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [cli, "-bail", str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    script = (
        f".timeout 10000\nBEGIN IMMEDIATE;\n.shell touch {marker}\n"
        f".shell sleep {seconds}\nCOMMIT;\n"
    )
    proc.stdin.write(script.encode())
    proc.stdin.close()
    wait_for(marker.exists, 10, "the external sqlite3 to hold the write lock")
    marker.unlink()
    return proc


def test_s2_short_lock_waits_long_lock_answers_busy(make_daemon):
    d = make_daemon(daemon={"max_workers": 1})
    db = d.state_dir / "syncd.db"

    # 3 s: within busy_timeout (5 s): the write waits and succeeds.
    holder = _hold_lock_cli(db, 3)
    start = time.monotonic()
    reply = d.request("submit", source="alpha", sync_type="a1", params={"sleep": 0.1})
    waited = time.monotonic() - start
    assert reply["ok"], reply
    assert waited > 1.0, f"the submit did not wait for the lock ({waited:.2f} s)"
    holder.wait(15)
    d.wait_status(reply["result"]["task"]["id"], {"completed"})

    # 8 s on an idle daemon: the submit waits busy_timeout (5 s), then answers `busy` and
    # is not acknowledged.
    holder = _hold_lock_cli(db, 8)
    assert_responsive(d)  # ping needs no write lock
    start = time.monotonic()
    reply = d.request("submit", source="alpha", sync_type="a1", params={"exit": 1})
    waited = time.monotonic() - start
    assert not reply["ok"] and reply["error"]["code"] == "busy", reply
    assert 4.0 < waited < 7.5, f"busy after {waited:.2f} s, expected ~5 s (busy_timeout)"
    holder.wait(15)
    listed = d.call("list", status=["queued", "running", "completed", "failed"], limit=100)
    assert all(t["params"] != {"exit": 1} for t in listed["tasks"]), "a refused submit exists"

    # 8 s while a task finishes and another waits: the finish and the dispatch hit `busy`,
    # the dispatcher retries, nothing is lost and both complete.
    running = d.call("submit", source="alpha", sync_type="a1", params={"sleep": 1.5})["task"]["id"]
    queued = d.call("submit", source="alpha", sync_type="a2")["task"]["id"]
    d.wait_status(running, {"running"})
    holder = _hold_lock_cli(db, 8)
    holder.wait(15)
    assert d.wait_status(running, {"completed", "failed"}, 30)["status"] == "completed"
    assert d.wait_status(queued, {"completed", "failed"}, 30)["status"] == "completed"
    print(d.stderr())
    assert "database is busy" in d.stderr()
    tasks = {t["id"] for t in d.call("list", status=["completed"], limit=100)["tasks"]}
    assert {running, queued} <= tasks
    assert d.proc is not None and d.proc.poll() is None
    assert "Traceback" not in d.stderr()
    assert quick_check(db) == "ok"


def test_s4_read_only_state_dir_exits_78_with_one_line(make_daemon, workdir):
    d = make_daemon()
    assert d.stop() == 0
    d.stderr_path.write_text("")
    with read_only_bind(d.state_dir):
        start = time.monotonic()
        d.start(wait=False)
        assert d.proc is not None
        code = d.proc.wait(10)
        took = time.monotonic() - start
        d.stop()
    assert code == 78, d.stderr()
    assert took < 5
    lines = [line for line in d.stderr().splitlines() if line.strip()]
    assert "Traceback" not in d.stderr()
    last = lines[-1]
    assert last.startswith("syncd: ") and str(d.state_dir) in last, last
    assert "read-only" in last.lower() or "readonly" in last.lower(), last


def test_s4_fresh_read_only_state_dir_exits_78(make_daemon, workdir):
    state = workdir / "state"
    state.mkdir()
    d = make_daemon(start=False)
    with read_only_bind(state):
        d.start(wait=False)
        assert d.proc is not None
        code = d.proc.wait(10)
        d.stop()
    assert code == 78, d.stderr()
    last = d.stderr().strip().splitlines()[-1]
    assert last.startswith("syncd: ") and str(state) in last, last
    assert "Traceback" not in d.stderr()
