"""Storage faults against a real daemon (RELIABILITY 2.3): a full disk (S1), a database locked
by another process (S2), the WAL under a streaming `watch` (S3) and a read-only state dir
(S4). S1 and S4 use real mounts (a 2 MiB tmpfs, a read-only bind mount), not failpoints: CI
runs as root."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.helpers.system import (
    Conn,
    DaemonProc,
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


class WalWatcher(threading.Thread):
    """Samples `<db>-wal` every few ms: its largest size, its page size and the checkpoint
    sequence number of its header (offset 12), which SQLite increments each time it resets
    the WAL, i.e. starts writing it from the beginning again after a complete checkpoint."""

    def __init__(self, wal: Path):
        super().__init__(daemon=True)
        self.wal = wal
        self.max_size = 0
        self.page_size = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.halt = threading.Event()

    def resets(self) -> int:
        if self.first_seq is None or self.last_seq is None:
            return 0
        return self.last_seq - self.first_seq

    def sample(self) -> None:
        try:
            with open(self.wal, "rb") as f:
                header = f.read(32)
                self.max_size = max(self.max_size, os.fstat(f.fileno()).st_size)
        except FileNotFoundError:
            return
        if len(header) < 32 or header[:4] not in (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83"):
            return  # not yet written
        self.page_size = struct.unpack(">I", header[8:12])[0]
        seq = struct.unpack(">I", header[12:16])[0]
        if self.first_seq is None:
            self.first_seq = seq
        self.last_seq = seq

    def run(self) -> None:
        while not self.halt.wait(0.005):
            self.sample()


class Watch(threading.Thread):
    """A `watch` client that keeps reading its stream (a reader that stops is disconnected
    by design, K8), collecting the ids of the tasks it saw complete."""

    def __init__(self, d: DaemonProc):
        super().__init__(daemon=True)
        self.conn = Conn(d.socket, timeout=60)
        self.conn.send_raw(b'{"v":1,"id":"w","op":"watch"}\n')
        self.completed: set[int] = set()
        self.error: BaseException | None = None
        self.closing = threading.Event()

    def run(self) -> None:
        try:
            while True:
                reply = self.conn.read_reply()
                if not reply.get("ok") or not reply.get("more"):
                    raise AssertionError(f"the watch stream ended: {json.dumps(reply)[:500]}")
                event: dict[str, Any] = reply["result"] or {}
                if event.get("event") == "task" and event.get("status") == "completed":
                    self.completed.add(event["task"]["id"])
        except BaseException as exc:  # reported by the test, unless it closed the stream
            if not self.closing.is_set():
                self.error = exc


WAL_RESETS = 5  # each one follows >= wal_autocheckpoint (1000) pages written since the last


def test_s3_wal_stays_bounded_while_a_watch_streams(make_daemon):
    """S3: a `watch` client streams while short tasks run (each task writes its submit,
    claim, pid and finish: about ten pages). SQLite checkpoints the WAL once it passes 1000
    pages (wal_autocheckpoint, left at its default; syncd sets no journal_size_limit, so the
    file keeps its largest size) and resets it once the checkpoint is complete and no reader
    still uses the old frames. A reader holding a read transaction (a stream served from an
    open cursor) stops every reset, and the WAL grows with everything written, towards the
    soak's 64 MiB. The run goes on until the WAL was reset WAL_RESETS times (at least
    5 x 1000 pages, about 20 MiB, passed through it), and the file must never exceed twice
    the checkpoint threshold (7.8 MiB at 4 KiB pages): 1000 pages plus the largest
    transaction of the run (a submit_many of 200, or a group commit: far below 1000 pages).
    The run is sized by resets, not by a task count or a time, so a loaded machine (whose
    group commits write fewer pages per task) makes it longer, not weaker."""
    workers = 4  # one route never runs twice at once: one /bin/true route per worker
    routes = {f"t{i}": {"argv": ["/bin/true"]} for i in range(workers)}
    d = make_daemon({"alpha": {"routes": routes}}, daemon={"max_workers": workers})
    wal = WalWatcher(d.state_dir / "syncd.db-wal")
    wal.start()
    watch = Watch(d)
    watch.start()
    submitted: list[int] = []
    deadline = time.monotonic() + 90
    try:
        wait_for(lambda: wal.page_size, 10, "the WAL header")
        bound = 2 * 1000 * wal.page_size  # twice wal_autocheckpoint's default, in bytes
        while wal.resets() < WAL_RESETS:
            assert wal.max_size <= bound, f"WAL at {wal.max_size} bytes after {wal.resets()} resets"
            assert watch.error is None, watch.error
            assert time.monotonic() < deadline, (
                f"{len(submitted)} tasks, {wal.resets()} WAL resets in 90 s"
                f" (WAL at most {wal.max_size} bytes)"
            )
            items = [
                {"source": "alpha", "sync_type": f"t{i % workers}", "allow_duplicate": True}
                for i in range(200)
            ]
            submitted += [r["id"] for r in d.call("submit_many", items=items)["results"]]
            wait_for(lambda: d.call("status")["queued"] < 50, 60, "the queue to drain")
        wait_for(
            lambda: watch.completed >= set(submitted) or watch.error,
            60,
            "the watch to see every task complete",
        )
    finally:
        wal.halt.set()
        wal.join()
        wal.sample()  # the file keeps its largest size: a peak between samples counts too
        watch.closing.set()
        watch.conn.close()
    assert watch.error is None, watch.error  # the stream stayed open the whole run
    assert watch.completed >= set(submitted)
    assert wal.resets() >= WAL_RESETS
    assert 0 < wal.max_size <= bound, f"WAL reached {wal.max_size} bytes (bound {bound})"
    assert d.proc is not None and d.proc.poll() is None
    assert "Traceback" not in d.stderr()


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
