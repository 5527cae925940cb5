"""R9 on the machine that runs the suite: a power loss cannot be simulated here (README,
"R9 — power loss" does it on a VM), but what makes it harmless can be watched. Every
acknowledgement of a submit, and every start of a task's process, must come after an fsync
of the WAL that started after the commit's frames were written: then the acknowledged row,
and the claim of a task that runs, are on disk whatever the kernel had not written yet
(a process running for a claim a power loss took back would run again after the reboot).
strace shows the daemon's own system calls, in order."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.strace import Call, Tracer, calls

SUBMITS = 30


def is_ack(call: Call) -> bool:
    """A successful reply on the control socket (strace shows its first bytes, escaped)."""
    if call.name not in ("sendto", "sendmsg", "write"):
        return False
    return "socket:" in call.path and '{\\"id\\":' in call.text and '\\"ok\\":true' in call.text


def is_spawn(call: Call) -> bool:
    """The daemon forking a task's process (a new thread is a clone too, with CLONE_THREAD)."""
    return call.name in ("clone", "clone3", "vfork", "fork") and "CLONE_THREAD" not in call.text


def check_synced_before(trace: list[Call], wal: str, event: Callable[[Call], bool]) -> int:
    """For each call `event` picks: the last WAL write before it, then an fsync of the WAL
    that started after that write ended and ended before the call began."""
    checked = 0
    for i, call in enumerate(trace):
        if not event(call):
            continue
        before = trace[:i]
        writes = [c for c in before if c.path == wal and c.name.startswith("pwrite")]
        assert writes, f"no WAL write before: {call.text}"
        last_write = max(c.end for c in writes)
        syncs = [
            c
            for c in before
            if c.path == wal
            and c.name in ("fdatasync", "fsync")
            and c.start >= last_write
            and c.end <= call.start
        ]
        assert syncs, f"before the WAL was synced: {call.text}"
        checked += 1
    return checked


def test_r9_no_submit_is_acknowledged_before_its_commit_is_on_disk(
    make_daemon: Any, workdir: Path
) -> None:
    routes = {f"r{i}": "a1" for i in range(SUBMITS)}
    d = make_daemon({"alpha": {"routes": routes}})
    d.call("pause")  # only the submits write: nothing runs, nothing else commits
    assert d.proc is not None
    tracer = Tracer(d.proc.pid, "pwrite64,pwritev,write,fdatasync,fsync,sendto,sendmsg",
                    workdir / "strace.out")  # fmt: skip
    conn = d.conn()
    replies = [conn.request("submit", source="alpha", sync_type=f"r{i}") for i in range(SUBMITS)]
    trace = calls(tracer.stop())
    assert all(r["ok"] and not r["result"]["coalesced"] for r in replies), replies
    wal = str((d.state_dir / "syncd.db-wal").resolve())
    assert check_synced_before(trace, wal, is_ack) == SUBMITS
    ids = {r["result"]["task"]["id"] for r in replies}
    assert len(ids) == SUBMITS
    assert json.dumps(sorted(ids)) == json.dumps(sorted(t["id"] for t in d.call("list")["tasks"]))


def test_r9_no_task_starts_before_its_claim_is_on_disk(make_daemon: Any, workdir: Path) -> None:
    """Each task is claimed alone (submitted while paused, then resumed, and done before the
    next), so no write of this boot only (a pid, a heartbeat: not synced, on purpose) can
    land between a claim's sync and its spawn and blur which write the sync must follow."""
    d = make_daemon(daemon={"max_workers": 1, "heartbeat_seconds": 30})
    assert d.proc is not None
    tracer = Tracer(d.proc.pid, "pwrite64,pwritev,fdatasync,fsync,clone,clone3,vfork,fork",
                    workdir / "strace.out")  # fmt: skip
    for sync_type in ("a1", "a2", "a1"):
        d.call("pause")
        task_id = d.call("submit", source="alpha", sync_type=sync_type)["task"]["id"]
        d.call("resume")
        assert d.wait_status(task_id, {"completed"})["status"] == "completed"
    trace = calls(tracer.stop())
    wal = str((d.state_dir / "syncd.db-wal").resolve())
    assert check_synced_before(trace, wal, is_spawn) == 3


def test_a_failed_flush_refuses_the_write_and_stops_the_daemon_for_a_restart(
    make_daemon: Any,
) -> None:
    """The disk fails an fsync (SYNCD_FAILPOINT=error:wal_flush, once the store exists): the
    submit gets storage_error, the daemon stops with 74 (EX_IOERR: systemd restarts it)
    instead of going on refusing everything while its health check says ok, and the restart
    recovers from the file."""
    first = make_daemon()
    assert first.stop() == 0
    failing = make_daemon(env={"SYNCD_FAILPOINT": "error:wal_flush"})
    reply = failing.request("submit", source="alpha", sync_type="a1")
    assert reply["error"]["code"] == "storage_error", reply
    assert "could not flush" in reply["error"]["message"]
    assert failing.proc is not None
    assert failing.proc.wait(30) == 74
    log = failing.stderr()
    assert "CRITICAL syncd.daemon.app: stopping: the database can no longer be written" in log
    assert "Traceback" not in log
    assert (failing.state_dir / "syncd.db-wal").exists()  # left for recovery, not checkpointed
    again = make_daemon()
    assert again.call("ping")
    listed = again.call("list")["tasks"]
    assert all(t["status"] in {"queued", "running", "completed", "failed"} for t in listed)


def test_a_failed_flush_while_starting_exits_74_with_one_line(make_daemon: Any) -> None:
    d = make_daemon(env={"SYNCD_FAILPOINT": "error:wal_flush"}, start=False)
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(30) == 74
    last = d.stderr().strip().splitlines()[-1]
    assert last.startswith("syncd: database: could not flush committed writes to disk"), last
    assert "Traceback" not in d.stderr()
