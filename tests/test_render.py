"""syncd.ctl.render: the human formats of syncctl, the monitor block character for character."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from syncd.ctl import render, waiting
from tests.helpers.rows import STATUS, task

NOW = datetime(2025, 9, 29, 15, 30, 45, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (59.9, "59s"),
        (60, "1m 00s"),
        (135, "2m 15s"),
        (3599, "59m 59s"),
        (3600, "1h 00m"),
        (3720, "1h 02m"),
        (86399, "23h 59m"),
        (90000, "1d 01h"),
        (-5, "0s"),
        (None, "-"),
    ],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert render.duration(seconds) == text


def test_mib_and_percent() -> None:
    assert render.mib(50 * 1024 * 1024) == "50.0 MiB"
    assert render.mib(1536 * 1024) == "1.5 MiB"
    assert render.mib(None) == "-"
    assert render.percent(12.46) == "12%"


def test_when_is_local_time_to_the_second() -> None:
    assert render.when("2025-09-29T15:30:45.123456Z") == "2025-09-29 15:30:45 UTC"
    assert render.when("2025-09-29T17:30:45+02:00") == "2025-09-29 15:30:45 UTC"
    assert render.when(None) == "-"
    assert render.when("garbage") == "-"


def test_table_aligns_columns_without_trailing_blanks() -> None:
    out = render.table(["ID", "SYNC", "NOTE"], [(1, "a.b", None), (1234, "hubspot.contacts", "")])
    assert out.splitlines() == [
        "ID    SYNC              NOTE",
        "1     a.b               -",
        "1234  hubspot.contacts",
    ]


def test_monitor_block_is_the_old_format_exactly() -> None:
    status = dict(STATUS, queued=3)
    status["queued_tasks"] = [
        task(813, "five9", "contacts"),
        task(814, "hubspot", "deals"),
        task(815, "genius", "leads", priority=3),
    ]
    assert render.monitor_block(status, NOW) == (
        "[2025-09-29 15:30:45] Worker Pool Status:\n"
        "  Max Workers: 2\n"
        "  Active: 1 tasks\n"
        "  Queued: 3 tasks\n"
        "\n"
        "Active Tasks:\n"
        "  - Task 812: genius.all (running for 2m 15s)\n"
        "\n"
        "Queued Tasks:\n"
        "  - Task 813: five9.contacts (priority: 5)\n"
        "  - Task 814: hubspot.deals (priority: 5)\n"
        "  - Task 815: genius.leads (priority: 3)"
    )


def test_monitor_block_idle_pool_and_elapsed_from_started_at() -> None:
    idle = {"max_workers": 4, "active": 0, "queued": 0, "active_tasks": [], "queued_tasks": []}
    assert render.monitor_block(idle, NOW) == (
        "[2025-09-29 15:30:45] Worker Pool Status:\n"
        "  Max Workers: 4\n"
        "  Active: 0 tasks\n"
        "  Queued: 0 tasks"
    )
    running = task(9, "a", "b", status="running", started_at="2025-09-29T14:28:45Z")
    busy = dict(idle, active=1, active_tasks=[running])
    assert "  - Task 9: a.b (running for 1h 02m)" in render.monitor_block(busy, NOW)


def test_monitor_block_says_how_many_queued_are_not_listed() -> None:
    status = dict(STATUS, queued=60)
    assert render.monitor_block(status, NOW).endswith("(priority: 3)\n  ... and 58 more")


def test_status_block_verbose() -> None:
    out = render.status_block(STATUS, NOW)
    lines = out.splitlines()
    assert lines[:7] == [
        "State:        available",
        "Max workers:  2",
        "Active:       1",
        "Queued:       2",
        "Available:    1",
        "Utilization:  50%",
        "Paused:       no",
    ]
    assert "Active tasks:" in lines and "Queued tasks:" in lines
    row = next(line for line in lines if line.strip().startswith("812"))
    assert row.split() == ["812", "genius.all", "2m", "15s", "12%", "50.0", "MiB", "page", "3/10"]
    assert any(line.split()[:4] == ["814", "hubspot.deals", "3", "30m"] for line in lines)


def test_status_block_verbose_idle_says_none() -> None:
    idle = dict(STATUS, active=0, queued=0, active_tasks=[], queued_tasks=[])
    assert render.status_block(idle, NOW).endswith(
        "\n\nActive tasks:\n  none\n\nQueued tasks:\n  none"
    )


def test_status_block_plain_and_paused() -> None:
    plain = {k: v for k, v in STATUS.items() if not k.endswith("_tasks")}
    out = render.status_block(dict(plain, paused=True, state="overloaded", utilization=1), NOW)
    assert out.splitlines()[0] == "State:        overloaded (paused)"
    assert "Utilization:  100%" in out and "Paused:       yes" in out
    assert "tasks:" not in out


def test_task_detail_shows_every_field() -> None:
    t = task(5, "hubspot", "deals", route="all", params={"full": True}, error="boom")
    lines = render.task_detail(t).splitlines()
    keys = [line.split()[0] for line in lines]
    assert sorted(keys) == sorted(t) and len(keys) == len(t)  # every field, once
    assert keys[:5] == ["id", "source", "sync_type", "route", "status"]
    assert "status          queued" in lines
    assert "error           boom" in lines
    assert "argv            python manage.py sync_hubspot_deals" in lines
    assert "params          full=yes" in lines
    assert "submitted_at    2025-09-29 15:00:00 UTC" in lines
    assert "started_at      -" in lines


def test_sync_name_shows_the_fallback_route() -> None:
    assert render.sync_name(task(1, "hubspot", "deals")) == "hubspot.deals"
    assert render.sync_name(task(1, "hubspot", "deals", route="all")) == (
        "hubspot.deals (route all)"
    )


def test_task_table_and_list_text() -> None:
    done = task(
        3,
        "a",
        "b",
        status="failed",
        started_at="2025-09-29T15:00:00Z",
        finished_at="2025-09-29T15:02:15Z",
        exit_code=2,
        error="exit 2",
    )
    out = render.list_text({"tasks": [done], "total": 5}, NOW)
    head, row, more = out.splitlines()
    assert head.split() == [
        *("ID", "STATUS", "PRI", "SYNC", "TRIGGER", "SUBMITTED", "TOOK", "EXIT", "NOTE"),
    ]
    assert row.split() == [
        *("3", "failed", "5", "a.b", "manual", "2025-09-29", "15:00:00", "UTC", "2m", "15s", "2"),
        *("exit", "2"),
    ]
    assert more == "(4 more not shown)"
    assert render.list_text({"tasks": [], "total": 0}, NOW) == "no tasks"


def test_routes_resolve_schedules_config_explain() -> None:
    routes = {
        "sources": [
            {
                "name": "hubspot",
                "fallback": "all",
                "max_concurrent": 1,
                "routes": [
                    {
                        "sync_type": "all",
                        "argv": ["python", "manage.py", "sync_hubspot_all"],
                        "cwd": "/srv",
                        "timeout_minutes": 120,
                        "priority": 5,
                        "retries": 0,
                        "allowed_params": ["full", "since"],
                    }
                ],
            }
        ]
    }
    out = render.routes_text(routes)
    assert out.splitlines()[0] == "hubspot  (fallback: all, max_concurrent: 1)"
    assert "python manage.py sync_hubspot_all" in out and "full, since" in out

    res = {
        "source": "hubspot",
        "sync_type": "deals",
        "route": "all",
        "rule": "fallback",
        "argv": ["python", "manage.py", "sync_hubspot_all", "--since=x; rm -rf /"],
        "cwd": "/srv",
        "timeout_minutes": 120,
        "priority": 5,
        "max_concurrent": 1,
    }
    out = render.resolve_text(res)
    assert out.splitlines()[0] == "hubspot.deals -> route all (fallback: no route for 'deals')"
    assert "python manage.py sync_hubspot_all '--since=x; rm -rf /'" in out

    sched = {
        "schedules": [
            {
                "name": "hs",
                "cron": "*/2 * * * *",
                "timezone": "UTC",
                "source": "hubspot",
                "sync_type": "contacts",
                "overlap": "skip",
                "enabled": True,
                "paused": False,
                "next_fire": "2025-09-29T15:32:00Z",
                "last_fire": None,
                "last_outcome": {"kind": "queued", "task_id": 4, "at": "2025-09-29T15:30:00Z"},
            }
        ]
    }
    row = render.schedules_table(sched).splitlines()[1].split()
    assert row[0] == "hs" and "hubspot.contacts" in row
    assert row[-4:] == ["queued", "task", "4", "yes"]

    cfg = {"settings": {"max_workers": {"value": 4, "origin": "runtime"}}}
    assert render.config_table(cfg).splitlines()[1].split() == ["max_workers", "4", "runtime"]

    exp = {
        "reason": "pool_full",
        "message": "all 2 slots busy",
        "blocking": [1, 2],
        "estimated_start": "2025-09-29T16:00:00Z",
    }
    now = datetime(2025, 9, 29, 15, 57, 45, tzinfo=timezone.utc)
    assert waiting.explain_full(9, exp, now).splitlines() == [
        "task 9: pool_full: all 2 slots busy",
        "  blocked by: 1, 2",
        "  estimated start: 2025-09-29 16:00:00 UTC"
        " (in about 2m 15s; an estimate from the median of recent runs)",
    ]


def test_detail_lines_print_each_config_problem() -> None:
    details = {
        "problems": [
            {"path": "sources.a.routes.b", "message": "executable 'x' not found"},
            "schedules[0] (s).cron: bad minute",
        ],
        "sync_types": ["all", "contacts"],
    }
    assert render.detail_lines(details) == [
        "  sources.a.routes.b: executable 'x' not found",
        "  schedules[0] (s).cron: bad minute",
        "  sync_types: all, contacts",
    ]
    assert render.detail_lines(None) == []


def test_fill_and_small_texts() -> None:
    assert render.fill("cancelled {cancelled}; killed: {killed}", {"cancelled": 3, "killed": []})
    assert render.fill("{a} {b} {missing}", {"a": [1, 2], "b": None}) == "1, 2 - -"
    assert render.task_line({"id": 1, "status": "failed", "exit_code": 3, "error": "x"}) == (
        "task 1: failed (exit 3): x"
    )
    assert render.cancel_text({"cancelled": [1], "skipped": [{"id": 2, "status": "completed"}]})
    assert render.reload_text({"applied": True, "changes": {"added": ["a"]}}, False) == (
        "config reloaded: added 1 (a)"
    )
    r = {"applied": False, "changes": {"added": [], "removed": [], "changed": []}}
    assert render.reload_text(r, True) == "would change: added 0, removed 0, changed 0"
    ping = {"version": "1", "pid": 4, "uptime_seconds": 7260, "started_at": "2025-09-29T13:29Z"}
    assert render.ping_text(ping) == "syncd 1, pid 4, up 2h 01m (since 2025-09-29 13:29:00 UTC)"


def test_times_are_shown_in_local_time_with_the_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert render.when("2025-09-29T15:00:00Z") == "2025-09-29 11:00:00 EDT"
        assert render.when("2025-12-01T15:00:00Z") == "2025-12-01 10:00:00 EST"
        assert render.when(None) == "-"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_explain_lists_every_reason_and_sources_are_rendered() -> None:
    exp = {
        "reason": "source_paused",
        "message": "source crm is paused (syncctl source resume crm)",
        "blocking": [],
        "reasons": [
            {"reason": "source_paused", "message": "source crm is paused (...)", "blocking": []},
            {"reason": "source_limit", "message": "source crm is at its limit of 1 (task 3)",
             "blocking": [3]},
        ],
        "estimated_start": "2025-09-29T16:00:00Z",
    }  # fmt: skip
    now = datetime(2025, 9, 29, 15, 57, 45, tzinfo=timezone.utc)
    assert waiting.explain_full(9, exp, now).splitlines()[1:] == [
        "  and source_limit: source crm is at its limit of 1 (task 3)",
        "    blocked by: 3",
        "  estimated start: 2025-09-29 16:00:00 UTC"
        " (in about 2m 15s; an estimate from the median of recent runs)",
    ]
    timed = {**exp, "reasons": exp["reasons"][:1]}  # type: ignore[index]
    assert waiting.explain_full(9, timed, now).endswith("an estimate from when the hold lifts)")
    row = {
        "name": "crm", "state": "open", "max_concurrent": 1, "rate": "10/minute",
        "starts_in_window": 4, "breaker": {"failures": 5, "cooldown_minutes": 10},
        "consecutive_failures": 5, "running": 0, "queued": 12,
        "until": "2025-09-29T16:10:00Z", "reason": "5 consecutive failures",
        "last_success": None, "last_failure": "2025-09-29T16:00:00Z",
    }  # fmt: skip
    lines = render.sources_table({"sources": [row]}).splitlines()
    assert lines[0].split()[:8] == ["SOURCE", "STATE", "MAX", "RATE", "FAILS", "RUNNING",
                                    "QUEUED", "UNTIL"]  # fmt: skip
    assert lines[1].split()[:9] == ["crm", "open", "1", "4", "of", "10/minute", "5/5", "0", "12"]
    held = {"sources": [{k: row[k] for k in ("name", "state", "until", "reason")}]}
    block = render.status_block({"state": "available", **held}, now)
    assert block.endswith(
        "Sources held back:\n  crm: open until 2025-09-29 16:10:00 UTC (5 consecutive failures)"
    )
    assert "Sources Held Back:\n  - crm: open" in render.monitor_block(held, now)
