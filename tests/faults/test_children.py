"""Child-process faults through a real daemon (RELIABILITY 2.2), where tests/e2e/test_pool.py
and tests/test_runner.py do not already pin them end to end: P2 (cancel, timeout and stale
leave no process of the group: /proc pgid scan), P3 (a setsid grandchild is swept), P4, P6,
P7 (1 GB flood: capped log, bounded RSS, ping p99), P8, P9 (retries follow policy), P10.
P1 and P5 are in test_pool.py / test_runner.py; P11's clock is in test_time.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers.system import (
    DaemonProc,
    PingProbe,
    alive,
    assert_responsive,
    group_scan,
    read_json_lines,
    rss_bytes,
    script_route,
    wait_for,
    write_script,
)


def pids_from(path: Path, count: int) -> list[int]:
    def ready() -> list[int] | None:
        if not path.exists():
            return None
        pids = [int(x) for x in path.read_text().split()]
        return pids if len(pids) >= count else None

    result: list[int] = wait_for(ready, 20, f"{count} pids in {path.name}")
    return result


def full_log(d: DaemonProc, task_id: int) -> str:
    """The whole log text, read in the op's 1 MiB pieces by output offset."""
    out, offset = "", 0
    while True:
        reply = d.call("logs", id=task_id, offset=offset)
        if not reply["text"]:
            return out
        out, offset = out + reply["text"], reply["size"]


def assert_group_gone(leader: int, pids: list[int]) -> None:
    wait_for(lambda: not group_scan(leader), 10, f"process group {leader} to be empty")
    wait_for(lambda: not [p for p in pids if alive(p)], 10, f"all of {pids} to be gone")


@pytest.mark.parametrize("how", ["cancel", "timeout", "stale"])
def test_p2_five_grandchildren_none_survives(make_daemon, workdir, how):
    d = make_daemon(
        {"alpha": {"routes": {"a1": "a1", "tmo": {"command": "tmo", "timeout_minutes": 0.03}}}},
        daemon={"stale_minutes": 0.06},
    )
    pidfile = workdir / "pids"
    task = d.call(
        "submit",
        source="alpha",
        sync_type="tmo" if how == "timeout" else "a1",
        params={"grandchildren": 5, "sleep": 60, "pidfile": str(pidfile)},
    )["task"]
    pids = pids_from(pidfile, 6)
    leader = pids[0]
    assert len(group_scan(leader)) >= 6  # the group really has the leader and 5 grandchildren
    if how == "cancel":
        d.call("cancel", ids=[task["id"]])
    final = d.wait_status(task["id"], {"cancelled", "failed", "completed"}, 30)
    expected = {
        "cancel": ("cancelled", "cancelled"),
        "timeout": ("failed", "timeout after 0.03 min"),
        "stale": ("failed", "stale: no progress for 0.06 min"),
    }[how]
    assert (final["status"], final["error"]) == expected, final
    assert_group_gone(leader, pids)
    assert_responsive(d)


SETSID = """
import subprocess, sys, time
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                       start_new_session=True, stdout=subprocess.DEVNULL)
with open(sys.argv[1], "w") as f:
    f.write(f"{kid.pid}\\n")
print("escaped kid started", flush=True)
time.sleep(600)
"""


def test_p3_setsid_grandchild_is_swept_on_cancel(make_daemon, workdir):
    script = write_script(workdir, "setsid_job.py", SETSID)
    route = script_route(script)
    route["argv"] = [*route["argv"], str(workdir / "escaped")]
    d = make_daemon({"alpha": {"routes": {"esc": route}}})
    task = d.call("submit", source="alpha", sync_type="esc")["task"]
    (kid,) = pids_from(workdir / "escaped", 1)
    leader = d.wait_status(task["id"], {"running"})["pid"]
    wait_for(lambda: d.task(task["id"])["pid"], 10, "the pid to be recorded")
    assert alive(kid) and kid not in group_scan(leader or d.task(task["id"])["pid"])
    d.call("cancel", ids=[task["id"]])
    assert d.wait_status(task["id"], {"cancelled", "failed"})["status"] == "cancelled"
    wait_for(lambda: not alive(kid), 10, f"the setsid grandchild {kid} to be killed")


HOLDER = """
import subprocess, sys
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # keeps stdout
with open(sys.argv[1], "w") as f:
    f.write(f"{kid.pid}\\n")
print("leader done", flush=True)
sys.exit(0)
"""


def test_p4_leader_exits_while_grandchild_holds_stdout(make_daemon, workdir):
    script = write_script(workdir, "holder.py", HOLDER)
    route = script_route(script)
    route["argv"] = [*route["argv"], str(workdir / "holder.pid")]
    d = make_daemon({"alpha": {"routes": {"hold": route}}})
    start = time.monotonic()
    task = d.call("submit", source="alpha", sync_type="hold")["task"]
    # The grandchild sleeps 600 s with the output open: a runner that waited for EOF would
    # hang here. The bound is the escalation path's worst case (about 10 s: leftover grace,
    # SIGKILL wait, drain waits), not a speed target; the daemon log says which steps fired.
    final = d.wait_status(task["id"], {"completed", "failed", "cancelled"}, 30)
    took = time.monotonic() - start
    assert final["status"] == "completed" and final["exit_code"] == 0, final
    assert took < 30, f"the task took {took:.1f} s to complete:\n{d.stderr()}"
    (kid,) = pids_from(workdir / "holder.pid", 1)
    wait_for(lambda: not alive(kid), 10, "the grandchild holding stdout to be stopped")
    assert "leader done" in d.call("logs", id=task["id"])["text"]


INSPECT = """
import json, os, sys
fds = []
for fd in range(1024):
    try:
        os.fstat(fd)
    except OSError:
        continue
    fds.append(fd)
info = {
    "fds": fds,
    "stdin": os.readlink("/proc/self/fd/0"),
    "syncd": {k: v for k, v in os.environ.items() if k.startswith("SYNCD_")},
    "secret": os.environ.get("SENTINEL_SECRET"),
    "route_env": os.environ.get("ROUTE_ONLY"),
}
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(info) + "\\n")
print("inspected", flush=True)
"""


def test_p6_child_sees_only_std_fds_its_env_and_env_file_secret(make_daemon, workdir):
    script = write_script(workdir, "peek_child.py", INSPECT)
    secret = "sentinel-p6-7f3a9c"
    (workdir / "secrets.env").write_text(f"SENTINEL_SECRET={secret}\n")
    route = script_route(script, env_file=str(workdir / "secrets.env"), env={"ROUTE_ONLY": "1"})
    route["argv"] = [*route["argv"], str(workdir / "inspect.json")]
    d = make_daemon({"alpha": {"routes": {"look": route}}})
    task = d.call("submit", source="alpha", sync_type="look")["task"]
    assert d.wait_status(task["id"], {"completed", "failed"})["status"] == "completed"
    (info,) = read_json_lines(workdir / "inspect.json")
    assert info["fds"] == [0, 1, 2], "the child inherited more than stdin/stdout/stderr"
    assert info["stdin"] == "/dev/null"
    store_id = info["syncd"].pop("SYNCD_STORE_ID")  # marks the database's tasks (reconcile)
    assert len(store_id) == 16 and int(store_id, 16) >= 0
    assert info["syncd"] == {
        "SYNCD_TASK_ID": str(task["id"]),
        "SYNCD_SOURCE": "alpha",
        "SYNCD_SYNC_TYPE": "look",
        "SYNCD_ATTEMPT": "1",
    }
    assert info["secret"] == secret and info["route_env"] == "1"
    assert secret not in d.stderr()


def test_p7_one_gigabyte_flood(make_daemon):
    d = make_daemon(daemon={"log_max_bytes": 1 << 20})
    assert d.proc is not None
    base_rss = rss_bytes(d.proc.pid)
    peak = base_rss
    with PingProbe(d) as probe:
        task = d.call("submit", source="alpha", sync_type="a1", params={"output-bytes": 1 << 30})[
            "task"
        ]
        deadline = time.monotonic() + 120
        while d.task(task["id"])["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, "1 GB was not consumed within 120 s"
            peak = max(peak, rss_bytes(d.proc.pid))
            time.sleep(0.05)  # RSS sampling interval, not a wait for a condition
    final = d.task(task["id"])
    assert final["status"] == "completed", final
    growth = peak - base_rss
    assert growth < 50 << 20, f"daemon RSS grew by {growth >> 20} MiB"
    assert not probe.errors, probe.errors[:3]
    p99 = probe.p99()
    assert p99 < 0.100, f"ping p99 {p99 * 1000:.0f} ms over {len(probe.latencies)} pings"
    log = d.call("logs", id=task["id"])
    assert log["truncated"] is True
    assert log["text"].startswith("job a1 starting\nFIRST-LINE\n")
    assert log["text"].rstrip().endswith("job a1 done")
    assert "bytes omitted]" in log["text"]
    size = (d.state_dir / "logs" / f"{task['id']}.log").stat().st_size
    assert size < (1 << 20) + 4096, f"log is {size} bytes for a 1 MiB cap"


BINARY = """
import sys
out = sys.stdout.buffer
out.write(bytes(range(256)) * 64 + b"\\n")
out.write(b"::progress " + b"y" * (1 << 20) + b"\\n")
out.write(b"after \\xff\\xfe tail\\n")
out.flush()
"""


def test_p8_binary_output_and_a_megabyte_progress_line(make_daemon, workdir):
    script = write_script(workdir, "binary.py", BINARY)
    d = make_daemon({"alpha": {"routes": {"bin": script_route(script)}}})
    task = d.call("submit", source="alpha", sync_type="bin")["task"]
    final = d.wait_status(task["id"], {"completed", "failed"})
    assert final["status"] == "completed", final
    assert final["progress"] and set(final["progress"]) == {"y"}
    assert len(final["progress"].encode()) <= 4096
    text = full_log(d, task["id"])
    assert "\ufffd" in text and "after \ufffd\ufffd tail" in text
    assert_responsive(d)


def test_p9_deleted_executable_fails_spawn_and_retries_by_policy(make_daemon, workdir):
    tool = write_script(workdir, "tool.py", "print('tool ran')\n")
    d = make_daemon(
        {
            "alpha": {
                "routes": {
                    "a1": "a1",
                    "tool": {"argv": [str(tool)], "retries": 1, "retry_backoff_seconds": 0.2},
                }
            }
        },
        daemon={"max_workers": 1},
    )
    tool.unlink()
    first = d.call("submit", source="alpha", sync_type="tool")["task"]["id"]
    failed = d.wait_status(first, {"failed", "completed"})
    assert failed["error"].startswith("spawn error: "), failed
    assert str(tool) in failed["error"]

    def retry_row() -> dict[str, object] | None:
        rows = d.call("list", status=["queued", "running", "failed"], limit=50)["tasks"]
        return next((t for t in rows if t["trigger"] == f"retry:{first}"), None)

    retry = wait_for(retry_row, 20, "the retry row")
    retried = d.wait_status(int(retry["id"]), {"failed", "completed"})
    assert retried["error"].startswith("spawn error: ") and retried["attempt"] == 2
    # retries = 1: no third attempt; and the slot is free for the next task.
    after = d.call("submit", source="alpha", sync_type="a1")["task"]["id"]
    assert d.wait_status(after, {"completed", "failed"})["status"] == "completed"
    rows = d.call("list", status=["queued", "running", "failed"], limit=50)["tasks"]
    assert not [t for t in rows if t["trigger"] == f"retry:{retry['id']}"]


def test_p10_busy_but_silent_is_not_stale_silent_is(make_daemon):
    d = make_daemon(daemon={"stale_minutes": 0.03})  # 1.8 s
    busy = d.call("submit", source="alpha", sync_type="a1", params={"busy": 4})["task"]["id"]
    idle = d.call("submit", source="alpha", sync_type="a2", params={"sleep": 60})["task"]["id"]
    silent = d.wait_status(idle, {"failed", "completed"})
    assert silent["error"] == "stale: no progress for 0.03 min", silent
    assert d.wait_status(busy, {"failed", "completed"})["status"] == "completed"
