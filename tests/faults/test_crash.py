"""RELIABILITY 2.1 against a real `syncd` process: kill -9 and restart (R1, R3, R4, R5),
failpoints (R6), the poison pill (R7), SIGTERM (R8), a corrupt database (R11), a second
instance (R12) and a stale socket file (R13)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from syncd.pool.procs import boot_id, proc_starttime
from tests.helpers.crash import (
    SLEEPER,
    db_connect,
    kill9,
    pid_alive,
    quick_check,
    start_and_first_reply,
    submit,
    wait_exit,
    wait_running_with_pid,
)
from tests.helpers.daemon import REPO, Conn, DaemonProc, wait_for

LOST = "lost: daemon restarted"
ALL = ["queued", "running", "completed", "failed", "cancelled"]


def by_id(tasks: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {t["id"]: t for t in tasks}


def queued(d: DaemonProc) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = d.call("list", status=["queued"], limit=10000)["tasks"]
    return tasks


# -- R1 ------------------------------------------------------------------------------------
def test_r1_kill9_with_running_and_1000_queued(make_daemon):
    d = make_daemon(daemon={"kill_grace_seconds": 10})
    running = [submit(d, "a1", **SLEEPER), submit(d, "a2", **SLEEPER)]
    pids = [wait_running_with_pid(d, t["id"])["pid"] for t in running]
    d.call("pause")  # persisted: the restarted daemon keeps the queue as it is
    items = [
        {"source": "alpha", "sync_type": "a1", "params": {"sleep": i}, "priority": i % 10}
        for i in range(1000)
    ]
    results = d.call("submit_many", items=items)["results"]
    assert not any(r["coalesced"] for r in results)
    before = [(t["id"], t["priority"]) for t in queued(d)]
    assert len(before) == 1000
    max_before = max(t["id"] for t in db_like(d))

    kill9(d)
    assert all(pid_alive(p) for p in pids), "the task processes outlive a kill -9"

    reply, elapsed = start_and_first_reply(d, "list", status=ALL, limit=10000)
    assert reply["ok"], reply
    assert elapsed < 5.0, f"first reply {elapsed:.1f}s after start"
    tasks = by_id(reply["result"]["tasks"])
    # Already reconciled in the very first reply: the socket only accepts afterwards.
    for t in running:
        assert tasks[t["id"]]["status"] == "failed"
        assert tasks[t["id"]]["error"] == LOST
    requeues = {t["trigger"]: t for t in tasks.values() if t["trigger"].startswith("requeue:")}
    assert set(requeues) == {f"requeue:{t['id']}" for t in running}
    assert all(r["status"] == "queued" and r["id"] > max_before for r in requeues.values())
    assert not any(pid_alive(p) for p in pids), "left-over task groups are killed"

    after = queued(d)
    originals = [(t["id"], t["priority"]) for t in after if not t["trigger"].startswith("requeue")]
    assert originals == before, "every queued row survives with its id, priority and order"
    # Requeued at the front of their priority (5, the route default).
    same_priority = [t for t in after if t["priority"] == running[0]["priority"]]
    assert {t["trigger"] for t in same_priority[:2]} == set(requeues)
    # The next new id is above every id ever handed out.
    new = submit(d, "a1", sleep=12345)
    assert new["id"] > max(t["id"] for t in tasks.values())


def db_like(d: DaemonProc) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = d.call("list", status=ALL, limit=10000)["tasks"]
    return tasks


# -- R3 / R4 -------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["recycled_pid", "rebooted"])
def test_r3_r4_foreign_process_is_never_signalled(make_daemon, stranger, case):
    d = make_daemon()
    task = submit(d, "a1", **SLEEPER)
    pid = wait_running_with_pid(d, task["id"])["pid"]
    d.call("pause")
    kill9(d)
    os.killpg(pid, signal.SIGKILL)  # the task's own process is gone...
    wait_for(lambda: not pid_alive(pid), 10, "task process gone")
    # ...and the stored identity now names an unrelated live process.
    true_start = proc_starttime(stranger.pid)
    assert true_start is not None
    if case == "recycled_pid":  # same pid (and pgid), another start time
        fields = (stranger.pid, true_start + 1000, boot_id())
    else:  # same pid and start time, but the row comes from another boot
        fields = (stranger.pid, true_start, "00000000-0000-4000-8000-000000000000")
    conn = db_connect(d)
    try:
        conn.execute(
            "UPDATE tasks SET pid = ?, proc_starttime = ?, boot_id = ? WHERE id = ?",
            (*fields, task["id"]),
        )
    finally:
        conn.close()

    d.start()
    reconciled = d.task(task["id"])
    assert reconciled["status"] == "failed" and reconciled["error"] == LOST
    assert [t["trigger"] for t in queued(d)] == [f"requeue:{task['id']}"]
    assert stranger.poll() is None and pid_alive(stranger.pid), "the stranger was signalled"


# -- R5 ------------------------------------------------------------------------------------
R5_ITERATIONS = int(os.environ.get("SYNCD_R5_ITERATIONS", "20"))


R5_BURST_CAP = 5000


def _burst(d: DaemonProc, round_no: int, acked: dict[int, str], cut_off: list[int]) -> None:
    """Submit on one connection until the daemon dies under it; record each acknowledged id.

    The burst is open-ended so the kill always lands inside it, however fast submits get
    (a fixed-size burst finished before a timed kill on faster machines)."""
    try:
        conn = Conn(d.socket, timeout=10)
    except OSError:
        return
    try:
        for k in range(R5_BURST_CAP):
            tag = f"{round_no}-{k}"
            reply = conn.request(
                "submit", source="alpha", sync_type="a1", params={"sleep": 0.3, "progress": tag}
            )
            if reply["ok"]:
                acked[reply["result"]["task"]["id"]] = tag
    except (OSError, ConnectionError, ValueError):
        cut_off.append(round_no)  # the daemon died mid-request: that one was not acknowledged
    finally:
        conn.close()


def _acked_in_round(acked: dict[int, str], round_no: int) -> int:
    return sum(tag.startswith(f"{round_no}-") for tag in list(acked.values()))


def test_r5_random_kill9_during_submit_bursts(make_daemon):
    rng = random.Random(int(os.environ.get("SYNCD_R5_SEED", "5")))
    d = make_daemon()
    acked: dict[int, str] = {}
    cut_off: list[int] = []
    for round_no in range(R5_ITERATIONS):
        worker = threading.Thread(target=_burst, args=(d, round_no, acked, cut_off))
        worker.start()
        # The fault itself: kill at a random moment inside the burst, after a random number
        # of acknowledged submits and a random sub-request delay.
        wanted = rng.randint(1, 150)
        wait_for(lambda r=round_no, n=wanted: _acked_in_round(acked, r) >= n, 20, f"{wanted} acks")
        time.sleep(rng.uniform(0.0, 0.003))
        kill9(d)
        worker.join(15)
        assert not worker.is_alive()
        assert quick_check(d) == "ok"
        d.start()
        tasks = by_id(db_like(d))
        missing = sorted(set(acked) - set(tasks))
        assert not missing, f"round {round_no}: acknowledged submits lost: {missing[:10]}"
        for task_id, tag in acked.items():
            assert tasks[task_id]["params"]["progress"] == tag
        for t in tasks.values():  # unacknowledged ones are whole rows or nothing
            tag = t["params"]["progress"]
            assert {f"--progress={tag}", "--sleep=0.3"} <= set(t["argv"]), t
        _no_running_without_process(d)
    d.stop()
    assert quick_check(d) == "ok"
    # Every kill landed mid-burst: the connection broke under a request in every round.
    assert cut_off == list(range(R5_ITERATIONS)), f"bursts the kill missed: {cut_off}"


def _no_running_without_process(d: DaemonProc) -> None:
    """Every `running` row gets a live process (a just-claimed one is given time to spawn)."""

    def settled() -> bool:
        rows = d.call("list", status=["running"], limit=100)["tasks"]
        return all(t["pid"] and pid_alive(t["pid"]) for t in rows)

    wait_for(settled, 10, "every running row to have a live process")


# -- R6 ------------------------------------------------------------------------------------
def _crash_with(make_daemon, failpoint: str, **daemon: Any) -> DaemonProc:
    d = make_daemon(
        sources={"alpha": {"routes": {"a1": "a1", "r1": {"command": "r1", "retries": 1}}}},
        daemon=daemon,
        env={"SYNCD_FAILPOINT": failpoint},
    )
    return d


def _restart_clean(d: DaemonProc) -> None:
    d.env.pop("SYNCD_FAILPOINT", None)
    d.start()


@pytest.mark.parametrize(
    ("failpoint", "sync_type", "exit_code", "outcome"),
    [
        ("finish_before_commit", "a1", 0, "lost"),
        ("finish_after_commit", "a1", 0, "completed"),
        ("finish_before_commit", "r1", 3, "lost"),  # the crash lands mid-retry-enqueue
        ("finish_after_commit", "r1", 3, "retried"),
    ],
)
def test_r6_crash_around_finish_is_exactly_one_outcome(
    make_daemon, failpoint, sync_type, exit_code, outcome
):
    d = _crash_with(make_daemon, failpoint)
    task = submit(d, sync_type, exit=exit_code)
    assert wait_exit(d) == 99
    _restart_clean(d)
    final = d.wait_status(task["id"], {"completed", "failed"})
    rows = db_like(d)
    followers = [t for t in rows if t["trigger"].endswith(f":{task['id']}")]
    if outcome == "lost":
        assert final["status"] == "failed" and final["error"] == LOST
        assert [t["trigger"] for t in followers] == [f"requeue:{task['id']}"]
    elif outcome == "completed":
        assert final["status"] == "completed" and final["exit_code"] == 0
        assert followers == []
    else:
        assert final["status"] == "failed" and final["exit_code"] == exit_code
        assert [t["trigger"] for t in followers] == [f"retry:{task['id']}"]
    # A second restart changes nothing: the follow-up exists once.
    d.stop()
    d.start()
    again = [t for t in db_like(d) if t["trigger"].endswith(f":{task['id']}")]
    assert [t["id"] for t in again] == [t["id"] for t in followers]


def test_r6_crash_after_commit_before_reply(make_daemon):
    d = _crash_with(make_daemon, "enqueue_after_commit", max_workers=1)
    d.call("pause")
    conn = d.conn()
    with pytest.raises((ConnectionError, OSError)):
        conn.request("submit", source="alpha", sync_type="a1", params={"sleep": 1})
    conn.close()
    assert wait_exit(d) == 99
    _restart_clean(d)
    # The client never got its id; the task is there, and `get` finds it.
    (task,) = db_like(d)
    assert d.task(task["id"])["status"] == "queued"
    assert task["params"] == {"sleep": 1}


# -- R7 ------------------------------------------------------------------------------------
def _crashed_or_settled(d: DaemonProc) -> str | None:
    assert d.proc is not None
    if d.proc.poll() is not None:
        return "crashed"
    try:
        tasks = db_like(d)
    except (OSError, ConnectionError, RuntimeError):
        return None
    if any(t["status"] == "queued" or t["status"] == "running" for t in tasks):
        return None  # a requeue is waiting to start (and to crash it)
    return "settled" if d.proc.poll() is None else "crashed"


def test_r7_poison_pill_stops_after_max_lost_requeues(make_daemon):
    d = _crash_with(make_daemon, "after_claim", max_lost_requeues=3)
    d.call("pause")
    first = submit(d, "a1", sleep=1)
    d.call("resume")
    crashes = 1
    assert wait_exit(d) == 99
    for _ in range(5):  # restart it as systemd would, up to 5 times
        d.start(wait=False)
        if wait_for(lambda: _crashed_or_settled(d), 30, "crash or final loss") == "settled":
            break
        assert wait_exit(d) == 99, d.stderr()
        crashes += 1
    assert crashes == 4, f"crashed {crashes} times:\n{d.stderr()}"
    chain = [t for t in db_like(d) if t["source"] == "alpha"]
    chain.sort(key=lambda t: t["id"])
    assert chain[0]["id"] == first["id"]
    assert [t["status"] for t in chain] == ["failed"] * 4
    assert [t["error"] for t in chain] == [LOST] * 3 + ["lost 4 times, not requeued"]
    assert [t["trigger"] for t in chain[1:]] == [f"requeue:{t['id']}" for t in chain[:3]]
    assert d.call("ping")["pid"] == d.proc.pid  # it stays up


# -- R8 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("on_shutdown", ["requeue", "fail"])
def test_r8_sigterm_with_running_tasks(make_daemon, workdir, on_shutdown):
    record = str(workdir / "record")
    d = make_daemon(daemon={"kill_grace_seconds": 2, "on_shutdown": on_shutdown})
    stubborn = submit(d, "a1", sleep=600, trap=True, record=record)  # ignores SIGTERM
    plain = submit(d, "a2", sleep=600, record=record)
    for t in (stubborn, plain):
        wait_running_with_pid(d, t["id"])
    older = d.call(
        "submit", source="alpha", sync_type="a1", params={"sleep": 0.1, "record": record}
    )["task"]  # same priority, queued before the requeues exist
    assert older["status"] == "queued"
    d.call("pause")
    t0 = time.monotonic()
    code = d.stop(signal.SIGTERM, timeout=30)
    took = time.monotonic() - t0
    assert code == 0, d.stderr()
    assert took < 2 + 5, f"stop took {took:.1f}s"
    assert "Traceback" not in d.stderr()

    d.start()
    for t in (stubborn, plain):
        final = d.task(t["id"])
        assert final["status"] == "failed" and final["error"] == "interrupted by shutdown"
    order = [t["trigger"] for t in queued(d)]
    if on_shutdown == "fail":
        assert order == ["manual"]
        return
    assert sorted(order[:2]) == sorted(f"requeue:{t['id']}" for t in (stubborn, plain))
    assert order[2:] == ["manual"]
    d.call("config_set", max_workers=1)
    d.call("resume")
    # One slot: what starts first is a requeued task, not the older queued one.
    started = wait_for(lambda: d.call("list", status=["running"])["tasks"], 20, "a start")
    assert started[0]["trigger"].startswith("requeue:")
    assert d.task(older["id"])["status"] == "queued"


# -- R11 -----------------------------------------------------------------------------------
def _run_syncd(config: Path, timeout: float = 10) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("NOTIFY_SOCKET", None)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return proc, time.monotonic() - t0


def _corrupt_header(db: Path) -> None:
    with open(db, "r+b") as f:
        f.write(b"\x00" * 16)


def _corrupt_page2(db: Path) -> None:
    with open(db, "r+b") as f:
        page_size = int.from_bytes(f.read(18)[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        f.seek(page_size)  # byte 0 of page 2: its page type (or first pointer-map entry)
        byte = f.read(1)[0]
        f.seek(page_size)
        f.write(bytes([byte ^ 0xFF]))


@pytest.mark.parametrize("corrupt", [_corrupt_header, _corrupt_page2], ids=["header", "page2"])
def test_r11_corrupt_database_exits_78(make_daemon, corrupt):
    d = make_daemon()
    d.call("pause")
    items = [{"source": "alpha", "sync_type": "a1", "params": {"sleep": i}} for i in range(300)]
    d.call("submit_many", items=items)
    assert d.stop() == 0
    db = d.state_dir / "syncd.db"
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    corrupt(db)
    proc, took = _run_syncd(d.config)
    assert proc.returncode == 78, proc.stderr
    assert took < 2.0 + 1.0, f"took {took:.1f}s"  # 2 s budget plus interpreter start-up
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert str(db) in last
    assert "quick_check" in last or "not a database" in last, last
    assert ".recover" in last and "backup" in last, last  # the recovery hint


# -- R12 / R13 -----------------------------------------------------------------------------
def test_r12_second_instance_refuses_and_leaves_the_first_alone(make_daemon):
    d = make_daemon()
    inode = d.socket.stat().st_ino
    proc, _ = _run_syncd(d.config)
    assert proc.returncode == 1, proc.stderr
    assert "already runs on state dir" in proc.stderr and "Traceback" not in proc.stderr
    assert d.socket.stat().st_ino == inode, "the socket file was replaced"
    assert d.call("ping")["pid"] == d.proc.pid
    assert submit(d, "a1", sleep=0.1)["id"] == 1
    assert d.stop() == 0


def test_r12_live_daemon_on_the_socket_path_is_never_displaced(make_daemon, workdir):
    d = make_daemon()
    inode = d.socket.stat().st_ino
    other = workdir / "other.toml"
    other.write_text(d.config.read_text().replace('state_dir = "state"', 'state_dir = "state2"'))
    proc, _ = _run_syncd(other)
    assert proc.returncode == 1, proc.stderr
    assert "already answers" in proc.stderr
    assert d.socket.stat().st_ino == inode
    assert d.call("ping")["pid"] == d.proc.pid


def test_r13_stale_socket_file_is_replaced(make_daemon):
    d = make_daemon(start=False)
    abandoned = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abandoned.bind(str(d.socket))  # bound, never listening, then dropped: a crashed daemon
    abandoned.close()
    d.start()  # the stale file's inode number may be reused: the log is the witness
    assert d.call("ping")["pid"] == d.proc.pid
    assert "replacing stale socket" in d.stderr()


# -- R16: a daemon stop during the leftovers of a leader that exited 0 ------------------------
LEAVES = """
import os, signal, subprocess, sys, time
folder = sys.argv[1]
open(folder + "/runs", "a").write("run\\n")
kid = subprocess.Popen(
    [sys.executable, "-c", "import signal, sys, time;"
     " signal.signal(signal.SIGTERM, signal.SIG_IGN);"
     " open(sys.argv[1], 'w').close(); time.sleep(600)", folder + "/trapped"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while not os.path.exists(folder + "/trapped"):
    time.sleep(0.01)
open(folder + "/kid", "w").write(str(kid.pid))
"""


def test_r16_a_stop_while_the_leftovers_of_an_exit_0_are_stopped_completes_the_task(
    make_daemon, workdir
):
    """The leader exits 0 leaving a member that ignores SIGTERM; while the daemon stops
    that member, the daemon itself is told to stop (SIGTERM), with on_shutdown = requeue.
    The task is `completed` with exit code 0, before and after a restart; nothing is
    requeued and the job ran once."""
    script = workdir / "leaves.py"
    script.write_text(LEAVES)
    route = {"argv": [sys.executable, str(script), str(workdir)]}
    d = make_daemon(
        {"alpha": {"routes": {"leaves": route}}},
        daemon={"kill_grace_seconds": 1, "on_shutdown": "requeue"},
        start=False,
    )
    # Leftovers get 1 s before their SIGKILL; 60 s here, so the stop surely lands inside
    # that window (it then ends when the stop's own kill, after kill_grace, ends it).
    d.prelude = "from syncd.pool.runner import Child; Child.leftover_grace = 60.0"
    d.start()
    tid = d.call("submit", source="alpha", sync_type="leaves")["task"]["id"]
    wait_for(
        lambda: f"task {tid}: leader exited; stopping the rest" in d.stderr(),
        15,
        "the leader to exit and its trapped member to be stopped",
    )
    kid = int((workdir / "kid").read_text())
    assert pid_alive(kid)
    kid_proc = psutil.Process(kid)  # its identity: a failure below must not leave it behind
    try:
        assert d.stop(signal.SIGTERM) == 0
        log = d.stderr()
        assert f"task {tid}: killing (shutdown)" in log  # the stop did reach the task
        assert f"task {tid}: exited (exit code 0) before it was killed" in log
        wait_for(lambda: not pid_alive(kid), 10, "the trapped member to be gone")
        d.start()
        task = d.task(tid)
        assert (task["status"], task["exit_code"], task["error"]) == ("completed", 0, None)
        assert task["attempt"] == 1
        assert d.call("list", status=["queued", "running"])["tasks"] == []
        assert (workdir / "runs").read_text() == "run\n"  # not run again after the restart
    finally:
        with contextlib.suppress(psutil.Error):
            if kid_proc.is_running():  # the same process, never a recycled pid
                kid_proc.kill()
