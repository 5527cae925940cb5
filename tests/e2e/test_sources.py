"""Source protection end to end: a real daemon, real children that fail, defer, throttle;
the breaker's cycle, deferrals and their bound, throttles, and state kept across kill -9."""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from syncd.core.clock import parse_iso
from tests.helpers.daemon import DaemonProc, wait_for


def submit(d: DaemonProc, source: str, route: str, **params: Any) -> int:
    r = d.call("submit", source=source, sync_type=route, params=params, allow_duplicate=True)
    task_id: int = r["task"]["id"]
    return task_id


def source_row(d: DaemonProc, name: str) -> dict[str, Any]:
    rows = d.call("sources")["sources"]
    return next(r for r in rows if r["name"] == name)


def wait_state(d: DaemonProc, name: str, state: str, timeout: float = 20) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        row = source_row(d, name)
        return row if row["state"] == state else None

    found: dict[str, Any] = wait_for(check, timeout, f"source {name} {state}")
    return found


def at(text: str | None) -> datetime:
    when = parse_iso(text)
    assert when is not None
    return when


def started_not_before(task: dict[str, Any], when: str | None) -> None:
    start, limit = parse_iso(task["started_at"]), parse_iso(when)
    assert start is not None and limit is not None
    assert start >= limit, (task["started_at"], when)


BREAKER = {"failures": 2, "cooldown_minutes": 0.1}  # 6 s: room for the checks under load


def test_breaker_opens_half_opens_closes_and_opens_again(
    make_daemon: Callable[..., DaemonProc],
) -> None:
    d = make_daemon(
        {"crm": {"breaker": BREAKER, "routes": {"a": "a"}},
         "erp": {"routes": {"b": "b"}}},
        daemon={"max_workers": 1},
    )  # fmt: skip
    for _ in range(2):
        d.wait_status(submit(d, "crm", "a", exit="1"), {"failed"})
    row = wait_state(d, "crm", "open")
    assert row["reason"] == "2 consecutive failures" and row["consecutive_failures"] == 2
    assert "source crm opened: 2 consecutive failures, cooldown until" in d.stderr()
    assert d.call("status")["sources"] == [
        {"name": "crm", "state": "open", "until": row["until"], "reason": row["reason"]}
    ]

    # Open: its tasks wait (explain says why and until when), other sources' tasks run.
    probe = submit(d, "crm", "a", exit="1")
    r = d.call("explain", id=probe)
    assert r["reason"] == "source_open" and r["estimated_start"] == row["until"]
    other = submit(d, "erp", "b")
    d.wait_status(other, {"completed"})
    # After the cooldown exactly one task (the probe) starts; its failure opens it again.
    follower = submit(d, "crm", "a")
    failed = d.wait_status(probe, {"failed"})
    started_not_before(failed, row["until"])
    again = wait_state(d, "crm", "open")
    assert again["reason"] == f"probe task {probe} failed"
    assert at(again["until"]) > at(row["until"])
    assert d.task(follower)["status"] == "queued"
    # The next probe succeeds: the breaker closes.
    done = d.wait_status(follower, {"completed"})
    started_not_before(done, again["until"])
    closed = wait_state(d, "crm", "ok")
    assert closed["consecutive_failures"] == 0 and closed["last_success"] is not None
    log = d.stderr()
    assert "source crm half-open: cooldown over, one task may start" in log
    assert f"source crm closed: probe task {follower} succeeded" in log


def test_deferrals_queue_a_follow_up_without_spending_a_retry_until_the_bound(
    make_daemon: Callable[..., DaemonProc],
) -> None:
    d = make_daemon(
        {"crm": {"routes": {"a": {"command": "a", "retries": 3, "max_deferrals": 2,
                                  "retry_backoff_seconds": 0.3}}}},
    )  # fmt: skip
    # `::retry-after SECONDS reason`: deferred, its follow-up not before finish + SECONDS.
    first = submit(d, "crm", "a", **{"retry-after": "0.5 rate limit hit"})
    t = d.wait_status(first, {"deferred"})
    assert t["error"] == "retry after 0.5s: rate limit hit" and t["attempt"] == 1
    chain = [t]
    for _ in range(2):
        follow = wait_for(
            lambda: (
                d.call("history", trigger=f"defer:{chain[-1]['id']}")["tasks"]
                or [
                    x for x in d.call("list")["tasks"] if x["trigger"] == f"defer:{chain[-1]['id']}"
                ]
            ),
            20,
            "the follow-up",
        )[0]
        assert follow["attempt"] == 1  # no retry spent
        chain.append(d.wait_status(follow["id"], {"deferred", "failed"}))
    first_follow = chain[1]
    assert at(first_follow["not_before"]) == at(t["finished_at"]) + timedelta(seconds=0.5)
    assert [x["status"] for x in chain] == ["deferred", "deferred", "failed"]
    gave_up = "deferred 2 times in a row, giving up (retry after 0.5s: rate limit hit)"
    assert chain[-1]["error"] == gave_up
    assert not [x for x in d.call("list")["tasks"] if x["status"] == "queued"]  # and no retry

    # Exit 75 defers after the route's retry_backoff_seconds; history filters know `deferred`.
    t75 = d.wait_status(submit(d, "crm", "a", exit="75"), {"deferred"})
    assert t75["exit_code"] == 75 and t75["error"] == "retry after 0.3s: exit code 75"
    deferred = d.call("history", status=["deferred"])["tasks"]
    assert {x["id"] for x in deferred} >= {first, t75["id"]}
    assert source_row(d, "crm")["consecutive_failures"] == 0  # deferrals are not failures


def test_a_throttle_holds_the_source_and_survives_kill_9(
    make_daemon: Callable[..., DaemonProc],
) -> None:
    d = make_daemon({"crm": {"routes": {"a": "a", "b": "b"}}, "erp": {"routes": {"c": "c"}}})
    first = submit(d, "crm", "a", throttle="600 HTTP 429 from /contacts", sleep="0.2")
    d.wait_status(first, {"completed"})
    row = wait_state(d, "crm", "throttled")
    assert row["reason"] == f"task {first}: HTTP 429 from /contacts"
    waiting = submit(d, "crm", "b")
    r = d.call("explain", id=waiting)
    assert r["reason"] == "source_throttled" and r["estimated_start"] == row["until"]
    d.wait_status(submit(d, "erp", "c"), {"completed"})  # another source is not held
    assert d.task(waiting)["status"] == "queued"

    d.stop(signal.SIGKILL)
    d.start()
    assert source_row(d, "crm")["until"] == row["until"]
    d.wait_status(submit(d, "erp", "c"), {"completed"})  # dispatch runs; crm still held
    assert d.task(waiting)["status"] == "queued"
    assert d.call("explain", id=waiting)["reason"] == "source_throttled"
    d.call("source_reset", name="crm")
    d.wait_status(waiting, {"completed"})


def test_an_open_breaker_survives_kill_9_and_a_manual_pause_holds_too(
    make_daemon: Callable[..., DaemonProc],
) -> None:
    srcs = {"crm": {"breaker": {"failures": 1, "cooldown_minutes": 30}, "routes": {"a": "a"}}}
    d = make_daemon(srcs)
    d.wait_status(submit(d, "crm", "a", exit="3"), {"failed"})
    row = wait_state(d, "crm", "open")
    waiting = submit(d, "crm", "a")
    d.stop(signal.SIGKILL)
    d.start()
    after = source_row(d, "crm")
    assert (after["state"], after["until"]) == ("open", row["until"])
    assert d.call("explain", id=waiting)["reason"] == "source_open"
    # Pause on top of the open breaker: explain names both; reset leaves the pause.
    d.call("source_pause", name="crm", seconds=600)
    assert source_row(d, "crm")["holds"] == ["source_paused", "source_open"]
    r = d.call("explain", id=waiting)
    assert [x["reason"] for x in r["reasons"]] == ["source_paused", "source_open"]
    d.call("source_reset", name="crm")
    assert d.call("explain", id=waiting)["reason"] == "source_paused"
    assert d.task(waiting)["status"] == "queued"
    d.call("source_resume", name="crm")
    d.wait_status(waiting, {"completed"})
    assert d.request("source_pause", name="nope")["error"]["code"] == "unknown_source"


def test_the_rate_window_holds_starts_and_survives_kill_9(
    make_daemon: Callable[..., DaemonProc],
) -> None:
    d = make_daemon({"crm": {"rate": "2/hour", "routes": {"a": "a", "b": "b", "c": "c"}}})
    ids = [submit(d, "crm", r) for r in ("a", "b", "c")]
    done = [d.wait_status(i, {"completed"}) for i in ids[:2]]
    row = source_row(d, "crm")
    assert (row["rate"], row["starts_in_window"]) == ("2/hour", 2)
    r = d.call("explain", id=ids[2])
    assert r["reason"] == "rate_limited"
    assert at(r["estimated_start"]) == at(done[0]["started_at"]) + timedelta(hours=1)
    d.stop(signal.SIGKILL)
    d.start()
    assert source_row(d, "crm")["starts_in_window"] == 2
    assert d.call("explain", id=ids[2])["reason"] == "rate_limited"
    assert d.task(ids[2])["status"] == "queued"


def test_syncctl_sources_and_source_commands(
    make_daemon: Callable[..., DaemonProc],
) -> None:
    from click.testing import CliRunner

    from syncd.ctl.main import main as syncctl

    d = make_daemon({"crm": {"rate": "5/minute", "max_concurrent": 2, "routes": {"a": "a"}}})

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(syncctl, [*args, "--socket", str(d.socket)])
        return result.exit_code, result.output

    code, out = run("source", "pause", "crm", "--for", "1h30m")
    assert code == 0 and out.startswith("source crm: paused until ") and "(paused by " in out
    row = source_row(d, "crm")
    assert at(row["until"]) - at(d.call("ping")["started_at"]) > timedelta(minutes=89)
    code, out = run("sources")
    header, line = out.splitlines()[:2]
    assert header.split()[:4] == ["SOURCE", "STATE", "MAX", "RATE"]
    assert line.split()[:6] == ["crm", "paused", "2", "0", "of", "5/minute"]
    assert run("status")[1].rstrip().endswith(")") and "crm: paused until" in run("status")[1]
    assert "Sources Held Back:" in run("monitor")[1]
    code, out = run("sources", "--json")
    assert code == 0 and '"state": "paused"' in out and '"queued": 0' in out
    assert run("source", "resume", "crm") == (0, "source crm: ok\n")
    assert run("source", "reset", "crm") == (0, "source crm: ok\n")
    code, out = run("source", "pause", "crm", "--for", "soon")
    assert code == 2 and "'soon' is not a duration" in out
    code, out = run("source", "pause", "nope")
    assert code == 1 and "unknown source 'nope' (known: crm)" in out
    assert "source crm paused until" in d.stderr() and "source crm resumed by" in d.stderr()
