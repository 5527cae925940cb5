"""`explain` against a real daemon: each reason, the schedule-paused note, the estimate
(null without history, then from the median of recent runs), and the same one-word reason
in `list` (explain: true) and `syncctl list-tasks --queued`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from click.testing import CliRunner

from syncd.core.clock import parse_iso
from syncd.ctl.main import main as syncctl_main
from tests.helpers.daemon import DaemonProc, wait_for

LONG = {"sleep": "120"}


def submit(d: DaemonProc, source: str, sync_type: str, **params: Any) -> int:
    task_id: int = d.call("submit", source=source, sync_type=sync_type, params=params)["task"]["id"]
    return task_id


def syncctl(d: DaemonProc, *args: str) -> str:
    result = CliRunner().invoke(syncctl_main, [*args, "--socket", str(d.socket)])
    assert result.exit_code == 0, result.output
    return result.output


def test_each_reason(make_daemon: Callable[..., DaemonProc]) -> None:
    d = make_daemon(
        {
            "alpha": {
                "routes": {
                    "a1": "a1",
                    "a2": "a2",
                    "a3": {"command": "a3", "retries": 1, "retry_backoff_seconds": 300},
                }
            },
            "beta": {"max_concurrent": 1, "routes": {"b1": "b1", "b2": "b2"}},
        },
        daemon={"max_workers": 2},
    )
    # not_before: a failed run with a retry left queues its retry behind a backoff.
    first = submit(d, "alpha", "a3", exit="1")
    d.wait_status(first, {"failed"})
    retry = wait_for(lambda: d.call("list", status=["queued"])["tasks"], 10, "the retry")[0]
    r = d.call("explain", id=retry["id"])
    assert r["reason"] == "not_before" and r["estimated_start"] == retry["not_before"]
    d.call("cancel", ids=[retry["id"]])

    # A task that is not queued explains itself as such.
    r = d.call("explain", id=first)
    assert (r["reason"], r["estimated_start"]) == ("none", None)
    assert "failed, not queued" in r["message"]

    a1 = submit(d, "alpha", "a1", **LONG)
    b1 = submit(d, "beta", "b1", **LONG)
    d.wait_status(a1, {"running"})
    d.wait_status(b1, {"running"})
    follow = submit(d, "alpha", "a1", **LONG)  # the same sync queues behind the running one
    b2 = submit(d, "beta", "b2", **LONG)
    a2 = submit(d, "alpha", "a2", **LONG)
    expect = {
        follow: ("route_running", [a1]),
        b2: ("source_limit", [b1]),  # checked before the pool, as dispatch does
        a2: ("pool_full", sorted([a1, b1])),
    }
    for task_id, (reason, blocking) in expect.items():
        r = d.call("explain", id=task_id)
        assert (r["reason"], r["blocking"]) == (reason, blocking), r
        assert r["estimated_start"] is None  # no route has a completed run yet
        assert r["note"] is None

    rows = d.call("list", status=["queued"], explain=True)["tasks"]
    assert {t["id"]: t["reason"] for t in rows} == {k: v[0] for k, v in expect.items()}
    assert "reason" not in d.call("list", status=["queued"])["tasks"][0]  # only when asked
    running = d.call("list", status=["running"], explain=True)["tasks"]
    assert running and all("reason" not in t for t in running)

    out = syncctl(d, "list-tasks", "--queued").splitlines()
    assert out[0].split() == ["ID", "PRI", "SYNC", "TRIGGER", "WAITING", "WHY"]
    assert {int(line.split()[0]): line.split()[-1] for line in out[1:]} == {
        k: v[0] for k, v in expect.items()
    }

    d.call("pause")
    for task_id in expect:
        assert d.call("explain", id=task_id)["reason"] == "paused"
    assert "paused" in syncctl(d, "explain", str(a2))
    # Every reason is named, not only the first: a paused pool and a full source, with ids.
    r = d.call("explain", id=b2)
    assert [(x["reason"], x["blocking"]) for x in r["reasons"]] == [
        ("paused", []), ("source_limit", [b1]), ("pool_full", sorted([a1, b1])),
    ]  # fmt: skip
    assert (r["reason"], r["blocking"]) == ("paused", [])  # the first, as before
    out = syncctl(d, "explain", str(b2))
    assert f"  and source_limit: source beta is at its limit of 1 (task {b1})" in out


def test_a_task_of_a_paused_schedule_still_runs_and_explain_says_so(
    make_daemon: Callable[..., DaemonProc],
) -> None:
    d = make_daemon(
        schedules=[
            {"name": "yearly", "cron": "0 0 1 1 *", "source": "alpha", "sync_type": "a1"},
        ]
    )
    d.call("pause")
    task_id = d.call("schedule_run", name="yearly")["outcome"]["task_id"]
    assert d.call("explain", id=task_id)["note"] is None  # the schedule is not paused
    d.call("schedule_pause", name="yearly")
    r = d.call("explain", id=task_id)
    assert r["reason"] == "paused"
    assert "schedule yearly is paused" in r["note"] and "still runs" in r["note"]
    assert f"syncctl cancel {task_id}" in syncctl(d, "explain", str(task_id))
    d.call("resume")  # dispatch resumed: the schedule's pause does not hold its task back
    assert d.wait_status(task_id, {"completed"})["trigger"] == "schedule:yearly"


def seconds_between(a: str | None, b: str | None) -> float:
    start, end = parse_iso(a), parse_iso(b)
    assert start is not None and end is not None
    return (end - start).total_seconds()


def test_estimate_from_recent_runs(make_daemon: Callable[..., DaemonProc]) -> None:
    d = make_daemon(
        {"alpha": {"routes": {"a1": "a1", "a2": "a2", "a3": "a3"}}}, daemon={"max_workers": 1}
    )
    # Before any history: pool_full, no estimate (and the human output has no start line).
    running = submit(d, "alpha", "a1", **LONG)
    d.wait_status(running, {"running"})
    waiting = submit(d, "alpha", "a2")
    assert d.call("explain", id=waiting)["estimated_start"] is None
    assert "estimated start" not in syncctl(d, "explain", str(waiting))
    d.call("cancel", ids=[running, waiting])
    d.wait_status(running, {"cancelled"})

    # History: one short completed run of a1 and of a2.
    done = {}
    for route in ("a1", "a2"):
        task_id = submit(d, "alpha", route, sleep="0.3")
        done[route] = d.wait_status(task_id, {"completed"})
    d1, d2 = (seconds_between(t["started_at"], t["finished_at"]) for t in done.values())

    running = submit(d, "alpha", "a1", **LONG)
    d.wait_status(running, {"running"})
    ahead = submit(d, "alpha", "a2", **LONG)
    target = submit(d, "alpha", "a3")
    # Once the running a1 is past its median it is "due now": the estimate for the next
    # task is now, and the one behind waits the median of a2 (the task ahead) longer.
    wait_for(
        lambda: d.call("status", verbose=True)["active_tasks"][0]["elapsed_seconds"] > d1 + 0.2,
        10,
        "a1 past its median",
    )
    before = datetime.now(timezone.utc)
    r_ahead = d.call("explain", id=ahead)
    r_target = d.call("explain", id=target)
    after = datetime.now(timezone.utc)
    assert r_ahead["reason"] == r_target["reason"] == "pool_full"
    e_ahead, e_target = (
        parse_iso(r_ahead["estimated_start"]),
        parse_iso(r_target["estimated_start"]),
    )
    assert e_ahead is not None and e_target is not None
    assert before - timedelta(seconds=0.01) <= e_ahead <= after
    assert before + timedelta(seconds=d2 - 0.01) <= e_target <= after + timedelta(seconds=d2)

    out = syncctl(d, "explain", str(target))
    assert "estimated start:" in out and "an estimate from the median of recent runs" in out
