"""Issue 11, crash windows against a real `syncd`: a cancel acknowledged before a crash is
never undone (R14), and a child whose pid was never recorded is still found and killed on
restart (R15). Each run of the job is recorded to a file: the oracle is "one run"."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.crash import kill9, pid_alive, submit, wait_exit, wait_running_with_pid
from tests.helpers.daemon import DaemonProc, wait_for

ALL = ["queued", "running", "completed", "failed", "cancelled"]


def tasks(d: DaemonProc) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = d.call("list", status=ALL, limit=1000)["tasks"]
    return found


def runs(record: Path) -> list[str]:
    """The task ids of the job's starts, in order."""
    if not record.exists():
        return []
    return [line.split()[3] for line in record.read_text().splitlines() if line.startswith("start")]


def settled(d: DaemonProc) -> bool:
    return not [t for t in tasks(d) if t["status"] in ("queued", "running")]


# -- R14 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("window", ["failpoint", "kill9_in_grace"])
def test_r14_an_acknowledged_cancel_survives_a_crash(make_daemon, workdir, window):
    record, pidfile = workdir / "runs.txt", workdir / "pids.txt"
    env = {"SYNCD_FAILPOINT": "cancel_after_persist"} if window == "failpoint" else {}
    # The job ignores SIGTERM and the grace is long: its end cannot be recorded before
    # the kill -9 that follows the acknowledged cancel.
    d = make_daemon(daemon={"kill_grace_seconds": 4}, env=env)
    task = submit(d, "a1", sleep=600, trap=True, record=str(record), pidfile=str(pidfile))
    wait_running_with_pid(d, task["id"])
    wait_for(lambda: runs(record), 20, "the job to start")
    pid = int(pidfile.read_text().split()[0])
    if window == "failpoint":
        with pytest.raises((ConnectionError, OSError, ValueError)):
            d.call("cancel", ids=[task["id"]])
        assert wait_exit(d) == 99
        d.env.pop("SYNCD_FAILPOINT")
    else:
        assert d.call("cancel", ids=[task["id"]])["cancelled"] == [task["id"]]
        kill9(d)
    d.start()
    assert not pid_alive(pid), "the cancelled task's process outlived the restart"
    final = d.task(task["id"])
    assert (final["status"], final["error"]) == ("cancelled", "cancelled")
    wait_for(lambda: settled(d), 20, "nothing left to run")
    assert [t["trigger"] for t in tasks(d) if t["trigger"] != "manual"] == []
    assert runs(record) == [str(task["id"])]


def test_r14_reset_state_force_survives_a_crash(make_daemon, workdir):
    record = workdir / "runs.txt"
    d = make_daemon(daemon={"kill_grace_seconds": 4})
    task = submit(d, "a1", sleep=600, trap=True, record=str(record))
    wait_running_with_pid(d, task["id"])
    wait_for(lambda: runs(record), 20, "the job to start")
    assert d.call("reset_state", force=True)["killed"] == [task["id"]]
    kill9(d)
    d.start()
    assert d.task(task["id"])["status"] == "cancelled"
    wait_for(lambda: settled(d), 20, "nothing left to run")
    assert len(tasks(d)) == 1 and len(runs(record)) == 1


# -- R15 -----------------------------------------------------------------------------------
def test_r15_a_child_whose_pid_was_never_recorded_is_killed_on_restart(make_daemon, workdir):
    record, pidfile = workdir / "runs.txt", workdir / "pids.txt"
    d = make_daemon(env={"SYNCD_FAILPOINT": "error:set_running_fields"})
    task = submit(d, "a1", sleep=600, record=str(record), pidfile=str(pidfile))
    wait_for(lambda: runs(record), 20, "the job to start")
    orphan = int(pidfile.read_text().split()[0])
    try:
        check_r15(d, task, orphan, record)
    finally:  # a failure must not leave the orphan running under the next test
        if pid_alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def check_r15(d: DaemonProc, task: dict[str, Any], orphan: int, record: Path) -> None:
    wait_for(lambda: "not recorded" in d.stderr(), 20, "the failed pid write to be logged")
    row = d.task(task["id"])
    assert row["status"] == "running" and row["pid"] is None
    kill9(d)
    assert pid_alive(orphan)
    d.env.pop("SYNCD_FAILPOINT")
    d.start()  # reconciliation is done before the socket answers
    assert not pid_alive(orphan), "the unrecorded child survived the restart"
    lost = d.task(task["id"])
    assert lost["status"] == "failed" and lost["error"] == "lost: daemon restarted"
    (requeue,) = [t for t in tasks(d) if t["trigger"] == f"requeue:{task['id']}"]
    d.wait_status(requeue["id"], {"running"})
    wait_for(lambda: len(runs(record)) == 2, 20, "the requeued run to start")
    # Two starts in all, and the first process was dead before the second began.
    assert runs(record) == [str(task["id"]), str(requeue["id"])]
    d.call("cancel", ids=[requeue["id"]])
