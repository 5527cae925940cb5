"""The pool against a real daemon: limits, order, coalescing, killing, logs (SPEC 5.3-5.6)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import psutil

from tests.helpers.daemon import DaemonProc, log_time, wait_for


def intervals(record: Path) -> dict[str, list[float]]:
    """task id -> [start, end] from the lines jobs append to a shared file."""
    spans: dict[str, list[float]] = {}
    for line in record.read_text().splitlines():
        kind, _name, stamp, task_id = line.split()
        spans.setdefault(task_id, [0.0, 0.0])[0 if kind == "start" else 1] = float(stamp)
    return spans


def max_overlap(spans: list[list[float]]) -> int:
    events = sorted(
        [(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1])
    )
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


def wait_all_final(d: DaemonProc, ids: list[int], timeout: float = 60) -> list[dict[str, Any]]:
    final = {"completed", "failed", "cancelled"}
    return [d.wait_status(i, final, timeout) for i in ids]


def test_twelve_jobs_two_workers_priority_then_fifo(make_daemon, workdir):
    routes = {f"r{i}": f"r{i}" for i in range(12)}
    d = make_daemon({"alpha": {"routes": routes}})
    record = workdir / "record.txt"
    d.call("pause")
    priorities = [5, 1, 5, 9, 0, 1, 5, 3, 3, 9, 0, 5]
    ids = []
    for i, prio in enumerate(priorities):
        res = d.call(
            "submit",
            source="alpha",
            sync_type=f"r{i}",
            priority=prio,
            params={"sleep": "0.3", "record": str(record)},
        )
        ids.append(res["task"]["id"])
    d.call("resume")
    tasks = wait_all_final(d, ids)
    assert all(t["status"] == "completed" for t in tasks), tasks
    spans = intervals(record)
    assert len(spans) == 12
    assert max_overlap(list(spans.values())) <= 2
    started = sorted(tasks, key=lambda t: t["started_at"])
    expected = sorted(tasks, key=lambda t: (t["priority"], t["id"]))
    assert [t["id"] for t in started] == [t["id"] for t in expected]


def test_source_limit_and_same_route_never_overlap(make_daemon, workdir):
    d = make_daemon(
        {
            "beta": {"max_concurrent": 1, "routes": {"b1": "b1", "b2": "b2", "b3": "b3"}},
            "gamma": {"routes": {"g": "g"}},
        },
        daemon={"max_workers": 4},
    )
    beta, gamma = workdir / "beta.txt", workdir / "gamma.txt"
    ids = [
        d.call("submit", source="beta", sync_type=t, params={"sleep": "0.3", "record": str(beta)})[
            "task"
        ]["id"]
        for t in ("b1", "b2", "b3")
    ]
    # Same route, different params: three distinct tasks that must still run one at a time.
    ids += [
        d.call(
            "submit",
            source="gamma",
            sync_type="g",
            params={"sleep": "0.3", "record": str(gamma), "progress": str(n)},
        )["task"]["id"]
        for n in range(3)
    ]
    wait_all_final(d, ids)
    assert max_overlap(list(intervals(beta).values())) == 1
    assert max_overlap(list(intervals(gamma).values())) == 1


def test_fifty_concurrent_identical_submits_make_one_task(make_daemon):
    d = make_daemon()
    d.call("pause")
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def submit() -> None:
        res = d.call("submit", source="alpha", sync_type="a1", params={"sleep": "0"})
        with lock:
            results.append(res)

    threads = [threading.Thread(target=submit) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = {r["task"]["id"] for r in results}
    assert len(ids) == 1
    assert sum(not r["coalesced"] for r in results) == 1
    queued = d.call("list", status=["queued"])
    assert queued["total"] == 1


def test_coalesce_raises_priority_and_follow_up_rule(make_daemon):
    d = make_daemon()
    first = d.call("submit", source="alpha", sync_type="a1", params={"sleep": "30"}, priority=7)
    running = d.wait_status(first["task"]["id"], {"running"})
    follow = d.call("submit", source="alpha", sync_type="a1", params={"sleep": "30"}, priority=7)
    assert not follow["coalesced"] and follow["task"]["id"] != running["id"]
    again = d.call("submit", source="alpha", sync_type="a1", params={"sleep": "30"}, priority=2)
    assert again["coalesced"] and again["task"]["id"] == follow["task"]["id"]
    assert again["task"]["priority"] == 2
    dup = d.call(
        "submit", source="alpha", sync_type="a1", params={"sleep": "30"}, allow_duplicate=True
    )
    assert not dup["coalesced"] and dup["task"]["id"] not in (
        first["task"]["id"],
        follow["task"]["id"],
    )
    d.call("cancel", ids=[first["task"]["id"], follow["task"]["id"], dup["task"]["id"]])


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_cancel_running_kills_grandchildren(make_daemon, workdir):
    d = make_daemon()
    pidfile = workdir / "pids.txt"
    res = d.call(
        "submit",
        source="alpha",
        sync_type="a1",
        params={"sleep": "60", "grandchildren": "3", "pidfile": str(pidfile)},
    )
    tid = res["task"]["id"]
    wait_for(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 4, 15, "4 pids")
    pids = [int(p) for p in pidfile.read_text().split()]
    d.call("cancel", ids=[tid])
    task = d.wait_status(tid, {"cancelled"})
    assert task["status"] == "cancelled"
    wait_for(lambda: not _alive(pids), 10, "the whole tree to die")


def test_p1_child_trapping_sigterm_is_killed_at_grace_and_the_next_starts_at_once(
    make_daemon, workdir
):
    """RELIABILITY P1. Every time compared is one the daemon or the child wrote down at the
    moment (the daemon's log lines, the children's records), so a loaded machine delaying
    this test's polling cannot move them."""
    grace = 2.0
    # A heartbeat far longer than the bounds below: the next task can only start in time
    # if the freed slot starts it (event-driven), not a periodic pass of the loop.
    d = make_daemon(daemon={"max_workers": 1, "kill_grace_seconds": grace, "heartbeat_seconds": 30})
    record, terms = workdir / "record.txt", workdir / "terms.txt"
    trapper = d.call(
        "submit",
        source="alpha",
        sync_type="a1",
        params={"sleep": "60", "term-record": str(terms), "record": str(record)},
    )["task"]["id"]
    # The job installs its SIGTERM handler before it writes its start record.
    wait_for(lambda: record.exists() and record.read_text(), 10, "the trapping job to start")
    nxt = d.call("submit", source="alpha", sync_type="a2", params={"record": str(record)})
    nxt = nxt["task"]["id"]
    assert d.task(nxt)["status"] == "queued"  # the one slot is taken
    d.call("cancel", ids=[trapper])
    done = d.wait_status(trapper, {"cancelled"}, 15)
    assert done["exit_code"] == -9, done  # it died of the SIGKILL, not of the SIGTERM
    d.wait_status(nxt, {"completed"}, 10)
    log = d.stderr()
    cancelled = log_time(log, f"task {trapper}: killing (cancel)")
    killed = log_time(log, f"task {trapper}: still running")
    (sigterm,) = [float(x.split()[2]) for x in terms.read_text().splitlines()]
    lines = record.read_text().splitlines()  # "start <name> <time> <id>", then "end ..."
    starts = {x.split()[3]: float(x.split()[2]) for x in lines if x.startswith("start ")}
    # The SIGTERM reached the child as the cancel was handled (the log's ms resolution).
    assert cancelled - 0.01 <= sigterm <= cancelled + 1.0
    # SIGKILL at kill_grace ± 1 s after the cancel (the criterion's own tolerance).
    assert grace - 1.0 <= killed - cancelled <= grace + 1.0, killed - cancelled
    # The slot freed by the kill started the queued task, its process running, within 1 s.
    assert 0.0 <= starts[str(nxt)] - killed < 1.0, starts[str(nxt)] - killed


def test_timeout_and_stale_fail_with_their_message(make_daemon):
    d = make_daemon(
        {
            "alpha": {
                "routes": {
                    "slow": {"command": "slow", "timeout_minutes": 0.03},
                    "quiet": "quiet",
                    "busy": "busy",
                }
            }
        },
        daemon={"stale_minutes": 0.025, "heartbeat_seconds": 0.2, "kill_grace_seconds": 1},
        defaults={"timeout_minutes": 5},
    )
    slow = d.call("submit", source="alpha", sync_type="slow", params={"busy": "60"})["task"]["id"]
    quiet = d.call("submit", source="alpha", sync_type="quiet", params={"sleep": "60"})["task"][
        "id"
    ]
    t_slow = d.wait_status(slow, {"failed"}, 20)
    assert t_slow["error"] == "timeout after 0.03 min"
    t_quiet = d.wait_status(quiet, {"failed"}, 20)
    assert t_quiet["error"] == "stale: no progress for 0.025 min"
    # A silent process that burns CPU is making progress: not stale.
    busy = d.call("submit", source="alpha", sync_type="busy", params={"busy": "3"})["task"]["id"]
    assert d.wait_status(busy, {"completed", "failed"}, 20)["status"] == "completed"


def test_logs_capped_head_and_tail_and_progress_visible(make_daemon):
    d = make_daemon(daemon={"log_max_bytes": 65536})
    tid = d.call(
        "submit",
        source="alpha",
        sync_type="a1",
        params={"output-bytes": str(2 * 1024 * 1024), "progress": "fetched 120/400", "sleep": "2"},
    )["task"]["id"]
    d.wait_status(tid, {"running"})
    verbose = wait_for(
        lambda: (lambda s: s if s["active_tasks"] and s["active_tasks"][0]["progress"] else None)(
            d.call("status", verbose=True)
        ),
        10,
        "progress in status --verbose",
    )
    assert verbose["active_tasks"][0]["progress"] == "fetched 120/400"
    assert "rss_bytes" in verbose["active_tasks"][0]
    task = d.wait_status(tid, {"completed"}, 30)
    assert task["progress"] == "fetched 120/400"
    logs = d.call("logs", id=tid)
    assert (d.state_dir / "logs" / f"{tid}.log").stat().st_size <= 65536 + 256
    assert "FIRST-LINE" in logs["text"] and "LAST-LINE" in logs["text"]
    assert logs["truncated"] is True


def test_progress_reaches_every_reader_before_the_next_heartbeat(make_daemon, workdir):
    """Issue 11.11: a task prints its progress, then works silently for less than a
    heartbeat. The losing interleaving is forced: no heartbeat can run while it works (one
    per 10 min), so only the line itself can carry the progress to `show` and `list` while
    the task runs; and the finish keeps it for `history`."""
    d = make_daemon(daemon={"heartbeat_seconds": 600})
    gate = workdir / "gate"
    tid = d.call(
        "submit",
        source="alpha",
        sync_type="a1",
        params={"progress": "3/10", "gate": str(gate)},
    )["task"]["id"]
    seen = wait_for(
        lambda: (lambda t: t if t["progress"] else None)(d.task(tid)), 10, "progress in show"
    )
    assert seen["status"] == "running" and seen["progress"] == "3/10"
    listed = {t["id"]: t for t in d.call("list")["tasks"]}
    assert listed[tid]["progress"] == "3/10"
    gate.touch()
    assert d.wait_status(tid, {"completed"}, 20)["progress"] == "3/10"
    assert [t["progress"] for t in d.call("history")["tasks"] if t["id"] == tid] == ["3/10"]


def test_retry_creates_new_row_with_backoff(make_daemon):
    d = make_daemon(defaults={"retries": 1, "retry_backoff_seconds": 0.5})
    tid = d.call("submit", source="alpha", sync_type="a1", params={"exit": "3"})["task"]["id"]
    failed = d.wait_status(tid, {"failed"})
    assert failed["exit_code"] == 3 and failed["error"] == "exit code 3"
    retry = wait_for(
        lambda: [t for t in d.call("history", trigger=f"retry:{tid}")["tasks"]], 15, "the retry"
    )[0]
    assert retry["attempt"] == 2 and retry["status"] == "failed"
    assert retry["not_before"] is not None
    # `get` (syncctl show) names the task that followed, and the retry names none.
    assert d.call("get", id=tid)["followed_by"]["id"] == retry["id"]
    assert d.call("get", id=retry["id"])["followed_by"] is None
    # The retry's own failure does not retry again (retries = 1).
    assert not d.call("history", trigger=f"retry:{retry['id']}")["tasks"]


def test_spawn_error_frees_the_slot(make_daemon, workdir):
    tool = workdir / "tool.sh"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    d = make_daemon(
        {"alpha": {"routes": {"vanish": {"argv": [str(tool)]}, "a1": "a1"}}},
        daemon={"max_workers": 1},
    )
    os.unlink(tool)
    bad = d.call("submit", source="alpha", sync_type="vanish")["task"]["id"]
    task = d.wait_status(bad, {"failed"})
    assert task["error"].startswith("spawn error:")
    ok = d.call("submit", source="alpha", sync_type="a1", params={"sleep": "0"})["task"]["id"]
    d.wait_status(ok, {"completed"})


def test_max_workers_runtime_change_persists_and_resets(make_daemon):
    d = make_daemon()
    out = d.call("config_set", max_workers=5)
    assert out["settings"]["max_workers"] == {"value": 5, "origin": "runtime"}
    assert d.call("status")["max_workers"] == 5
    assert d.stop() == 0
    d.start()
    assert d.call("status")["max_workers"] == 5
    out = d.call("config_set", reset=True)
    assert out["settings"]["max_workers"]["origin"] == "file"
    assert d.call("status")["max_workers"] == 2


def test_status_json_keys(make_daemon):
    d = make_daemon()
    status = d.call("status")
    assert set(status) == {
        "max_workers",
        "active",
        "queued",
        "available",
        "utilization",
        "state",
        "paused",
        "sources",  # the sources held back (paused, throttled, open, half-open)
    }
    assert status["state"] == "available" and status["sources"] == []


def test_pipelined_submits_are_answered_in_order_one_by_one(make_daemon):
    """Submits sent back to back on one connection are committed as a group, yet each gets
    the reply a lone submit would: its own id, its own error, coalescing with the others."""
    d = make_daemon()
    d.call("pause")
    conn = d.conn()
    lines = []
    for i in range(20):
        args: dict[str, Any] = {"source": "alpha", "sync_type": "a1", "allow_duplicate": True}
        if i == 7:
            args = {"source": "nope"}
        if i in (10, 11):  # a twin pair: the second coalesces into the first
            args = {"source": "alpha", "sync_type": "a2", "params": {"sleep": "0"}}
        lines.append(json.dumps({"v": 1, "id": f"r{i}", "op": "submit", "args": args}))
    lines.insert(15, json.dumps({"v": 1, "id": "p", "op": "ping", "args": {}}))
    conn.send_raw(("\n".join(lines) + "\n").encode())
    replies = [conn.read_reply() for _ in lines]
    assert [r["id"] for r in replies] == [json.loads(line)["id"] for line in lines]
    assert replies[7]["ok"] is False and replies[7]["error"]["code"] == "unknown_source"
    assert replies[15]["result"]["pid"] == d.proc.pid
    ok = [r["result"] for r in replies if r["ok"] and r["id"] != "p"]
    assert len(ok) == 19
    twin_a, twin_b = replies[10]["result"], replies[11]["result"]
    assert (twin_a["coalesced"], twin_b["coalesced"]) == (False, True)
    assert twin_a["task"]["id"] == twin_b["task"]["id"]
    ids = {r["task"]["id"] for r in ok}
    assert len(ids) == 18  # 17 distinct a1 tasks (allow_duplicate) and the one a2 task
    listed = d.call("list", status=["queued"], limit=100)
    assert {t["id"] for t in listed["tasks"]} == ids
    conn.close()


def test_a_submit_with_a_free_slot_is_answered_running(make_daemon):
    """The submit claims its task in its own transaction (one commit, no loop turn): the
    reply already says running, and the task runs to its end."""
    d = make_daemon({"alpha": {"routes": {"r0": "r0"}}})
    res = d.call("submit", source="alpha", sync_type="r0", params={"sleep": "0"})
    assert res["task"]["status"] == "running" and res["task"]["started_at"]
    assert wait_all_final(d, [res["task"]["id"]])[0]["status"] == "completed"
    d.call("pause")
    queued = d.call("submit", source="alpha", sync_type="r0", params={"sleep": "0"})
    assert queued["task"]["status"] == "queued"
