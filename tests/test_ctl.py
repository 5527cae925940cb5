"""syncctl against a fake daemon: the request each command sends, its output, exit codes."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from syncd.control.ops.table import registry
from syncd.ctl import app as ctl
from syncd.ctl import pool as ctl_pool
from syncd.ctl.client import Client
from syncd.ctl.main import main as syncctl
from tests.helpers.fake_daemon import FakeDaemon, FakeError
from tests.helpers.rows import STATUS, task

T = task(812, "hubspot", "contacts", status="queued")
CANNED: dict[str, Any] = {
    "ping": {
        "version": "0.1.0",
        "pid": 42,
        "started_at": "2025-09-29T13:00:00Z",
        "uptime_seconds": 3725,
    },
    "status": STATUS,
    "list": {"tasks": [T], "total": 1},
    "get": {"task": T},
    "submit": {"task": T, "coalesced": False},
    "cancel": {"cancelled": [812], "skipped": [{"id": 9, "status": "completed"}]},
    "set_priority": {"task": dict(T, priority=1)},
    "history": {"tasks": [dict(T, status="completed", exit_code=0)]},
    "logs": {"text": "line 1\nline 2\n", "size": 14, "truncated": False},
    "routes": {"sources": []},
    "resolve": {
        "source": "hubspot",
        "sync_type": "contacts",
        "route": "contacts",
        "rule": "exact",
        "argv": ["python", "manage.py", "sync_hubspot_contacts", "--full"],
        "cwd": "/srv",
        "timeout_minutes": 120,
        "priority": 5,
        "max_concurrent": 1,
    },
    "schedules": {"schedules": []},
    "schedule_run": {"outcome": {"kind": "queued", "task_id": 812, "at": "2025-09-29T15:00Z"}},
    "schedule_pause": {"schedule": {"name": "hs", "paused": True, "next_fire": None}},
    "schedule_resume": {"schedule": {"name": "hs", "paused": False, "next_fire": "2025-09-29Z"}},
    "config_get": {"settings": {"max_workers": {"value": 2, "origin": "default"}}},
    "config_set": {"settings": {"max_workers": {"value": 4, "origin": "runtime"}}},
    "pause": {"paused": True},
    "resume": {"paused": False},
    "process_queue": {"started": [812]},
    "clear_queue": {"cancelled": 3},
    "fix_stuck": {"failed": [7], "reconciled": []},
    "reset_state": {"cancelled": 2, "killed": [5]},
    "reload": {
        "applied": True,
        "changes": {"added": ["a.b"], "removed": [], "changed": []},
        "affected_queued": [],
    },
    "explain": {
        "reason": "pool_full",
        "message": "all slots busy",
        "blocking": [811],
        "estimated_start": None,
    },
    "prune": {"deleted": 10, "kept": 4, "freed_bytes": 2048},
}


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    folder = Path(tempfile.mkdtemp(prefix="sctl-"))  # short: AF_UNIX paths are limited
    daemon = FakeDaemon(folder / "syncd.sock")
    daemon.results.update(CANNED)
    yield daemon
    daemon.close()
    shutil.rmtree(folder, ignore_errors=True)


def run(fake: FakeDaemon | None, *args: str, env: dict[str, str] | None = None) -> Result:
    argv = [*args, "--socket", str(fake.path)] if fake is not None else list(args)
    base = {"SYNCD_SOCKET": None, "SYNCD_CONFIG": None, "SYNCCTL_DEBUG": None}
    return CliRunner().invoke(syncctl, argv, env={**base, **(env or {})})


# -- the exact request of each command --------------------------------------------------------

REQUESTS = [
    (["ping"], "ping", {}),
    (["status"], "status", {"verbose": False}),
    (["status", "--verbose"], "status", {"verbose": True}),
    (["monitor"], "status", {"verbose": True}),
    (["submit", "hubspot"], "submit", {"source": "hubspot", "allow_duplicate": False}),
    (
        [
            *("submit", "hubspot", "contacts", "--priority", "3", "--param", "since=2025-01-01"),
            *("--param", "full", "--param", "note=a=b", "--allow-duplicate"),
        ],
        "submit",
        {
            "source": "hubspot",
            "sync_type": "contacts",
            "priority": 3,
            "params": {"since": "2025-01-01", "full": True, "note": "a=b"},
            "allow_duplicate": True,
        },
    ),
    (["list-tasks"], "list", {}),
    (["list-tasks", "--active"], "list", {"status": ["running"]}),
    (
        ["list-tasks", "--queued", "--source", "five9"],
        "list",
        {"status": ["queued"], "source": "five9", "explain": True},
    ),
    (
        ["list-tasks", "--finished"],
        "list",
        {"status": ["completed", "failed", "cancelled", "deferred"]},
    ),
    (["show", "812"], "get", {"id": 812}),
    (["cancel-task", "812", "9"], "cancel", {"ids": [812, 9]}),
    (["cancel", "812"], "cancel", {"ids": [812]}),
    (["priority", "812", "1"], "set_priority", {"id": 812, "priority": 1}),
    (["history"], "history", {}),
    (
        [
            *("history", "--source", "a", "--type", "b", "--status", "failed"),
            *("--status", "cancelled", "--since", "2025-09-29T10:00:00+02:00", "--limit", "5"),
        ],
        "history",
        {
            "source": "a",
            "sync_type": "b",
            "status": ["failed", "cancelled"],
            "since": "2025-09-29T08:00:00Z",
            "limit": 5,
        },
    ),
    (["logs", "812"], "logs", {"id": 812}),
    (["routes"], "routes", {}),
    (["routes", "hubspot"], "routes", {"source": "hubspot"}),
    (["resolve", "hubspot"], "resolve", {"source": "hubspot"}),
    (
        ["resolve", "hubspot", "contacts", "--param", "full"],
        "resolve",
        {"source": "hubspot", "sync_type": "contacts", "params": {"full": True}},
    ),
    (["schedules"], "schedules", {}),
    (["schedule", "run", "hs"], "schedule_run", {"name": "hs"}),
    (["schedule", "pause", "hs"], "schedule_pause", {"name": "hs"}),
    (["schedule", "resume", "hs"], "schedule_resume", {"name": "hs", "from_now": False}),
    (
        ["schedule", "resume", "hs", "--from-now"],
        "schedule_resume",
        {"name": "hs", "from_now": True},
    ),
    (["config"], "config_get", {}),
    (["config", "--max-workers", "4"], "config_set", {"max_workers": 4}),
    (["config", "--reset"], "config_set", {"reset": True}),
    (["pause"], "pause", {}),
    (["resume"], "resume", {}),
    (["explain", "813"], "explain", {"id": 813}),
    (["prune"], "prune", {"dry_run": False}),
    (["prune", "--dry-run"], "prune", {"dry_run": True}),
    (["process-queue"], "process_queue", {}),
    (["clear-queue"], "clear_queue", {}),
    (["clear-queue", "--source", "hubspot"], "clear_queue", {"source": "hubspot"}),
    (["fix-stuck"], "fix_stuck", {}),
    (["fix-stuck", "--minutes", "10"], "fix_stuck", {"minutes": 10.0}),
    (["reset-state"], "reset_state", {"force": False}),
    (["reset-state", "--force"], "reset_state", {"force": True}),
    (["reload"], "reload", {"dry_run": False}),
    (["reload", "--dry-run"], "reload", {"dry_run": True}),
]


@pytest.mark.parametrize(("argv", "op", "args"), REQUESTS, ids=[" ".join(r[0]) for r in REQUESTS])
def test_each_command_sends_its_op(
    fake: FakeDaemon, argv: list[str], op: str, args: dict[str, Any]
) -> None:
    result = run(fake, *argv)
    assert result.exit_code == 0, result.output
    assert fake.requests == [{"v": 1, "id": 1, "op": op, "args": args}]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("argv", "op", "args"), REQUESTS, ids=[" ".join(r[0]) for r in REQUESTS])
def test_json_prints_the_result_untouched(
    fake: FakeDaemon, argv: list[str], op: str, args: dict[str, Any]
) -> None:
    result = run(fake, *argv, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == CANNED[op]


def test_every_spec_command_has_help_with_an_example() -> None:
    names = [
        *("status", "monitor", "submit", "list-tasks", "show", "cancel-task", "priority"),
        *("history", "logs", "routes", "resolve", "schedules", "schedule", "config", "pause"),
        *("resume", "explain", "prune", "completion", "process-queue", "clear-queue"),
        *("fix-stuck", "reset-state", "reload", "ping"),
    ]
    assert set(names) <= set(syncctl.commands)
    for name in [*names, "schedule run", "schedule pause", "schedule resume"]:
        result = run(None, *name.split(), "--help")
        assert result.exit_code == 0
        assert re.search(r"Example: syncctl \S", result.output), name


# -- global options ---------------------------------------------------------------------------


def test_global_options_before_and_after_the_command(fake: FakeDaemon) -> None:
    before = CliRunner().invoke(syncctl, ["--socket", str(fake.path), "--json", "ping"])
    after = CliRunner().invoke(syncctl, ["ping", "--json", "--socket", str(fake.path)])
    nested = CliRunner().invoke(
        syncctl, ["--json", "schedule", "--socket", str(fake.path), "run", "hs"]
    )
    assert before.exit_code == after.exit_code == nested.exit_code == 0
    assert json.loads(before.stdout) == json.loads(after.stdout) == CANNED["ping"]
    assert json.loads(nested.stdout) == CANNED["schedule_run"]


def test_command_level_socket_overrides_group_level(fake: FakeDaemon) -> None:
    result = CliRunner().invoke(
        syncctl, ["--socket", "/nope.sock", "ping", "--socket", str(fake.path)]
    )
    assert result.exit_code == 0


def test_socket_from_environment(fake: FakeDaemon) -> None:
    result = CliRunner().invoke(syncctl, ["ping"], env={"SYNCD_SOCKET": str(fake.path)})
    assert result.exit_code == 0
    assert result.stdout == "syncd 0.1.0, pid 42, up 1h 02m (since 2025-09-29 13:00:00 UTC)\n"


def test_unreadable_config_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from syncd.config import load
    from syncd.config import model as config

    def broken(path: Path, *a: Any, **kw: Any) -> Any:
        raise config.ConfigError(str(path), [config.Problem("daemon.max_workers", "too big")])

    monkeypatch.setattr(load, "load_config", broken)
    result = run(None, "--config", "/etc/x.toml", "ping")
    assert result.exit_code == 2
    assert "daemon.max_workers: too big" in result.stderr


# -- exit codes -------------------------------------------------------------------------------


def test_unreachable_exits_3_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "syncd.sock"
    result = run(None, "status", "--socket", str(missing))
    assert result.exit_code == 3
    assert str(missing) in result.stderr
    assert "systemctl start syncd" in result.stderr
    assert "Traceback" not in result.output


def test_refusal_exits_1_with_code_message_and_details(fake: FakeDaemon) -> None:
    def refuse(args: dict[str, Any]) -> Any:
        raise FakeError(
            "unknown_route", "hubspot has no route 'x'", {"sync_types": ["all", "deals"]}
        )

    fake.results["submit"] = refuse
    result = run(fake, "submit", "hubspot", "x")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: unknown_route: hubspot has no route 'x'",
        "  sync_types: all, deals",
    ]
    assert result.stdout == ""


def test_reload_rejected_prints_each_problem(fake: FakeDaemon) -> None:
    problems = [
        {"path": "sources.a.routes.b", "message": "executable 'x' not found"},
        {"path": "schedules[0] (s).cron", "message": "bad minute '61'"},
    ]

    def reject(args: dict[str, Any]) -> Any:
        raise FakeError(
            "config_invalid", "config rejected; old config kept", {"problems": problems}
        )

    fake.results["reload"] = reject
    result = run(fake, "reload")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: config_invalid: config rejected; old config kept",
        "  sources.a.routes.b: executable 'x' not found",
        "  schedules[0] (s).cron: bad minute '61'",
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["priority", "812", "12"],
        ["priority", "x", "1"],
        ["list-tasks", "--active", "--queued"],
        ["config", "--max-workers", "3", "--reset"],
        ["config", "--max-workers", "0"],
        ["history", "--since", "yesterday"],
        ["history", "--status", "running"],
        ["submit", "hubspot", "--param", "=x"],
        ["submit", "hubspot", "--param", "a=1", "--param", "a=2"],
        ["cancel-task"],
        ["completion", "powershell"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2_without_a_request(fake: FakeDaemon, argv: list[str]) -> None:
    result = run(fake, *argv)
    assert result.exit_code == 2, result.output
    assert fake.requests == []


def test_unexpected_failure_is_one_line_not_a_traceback(fake: FakeDaemon) -> None:
    fake.results["get"] = {"unexpected": True}
    result = run(fake, "show", "1")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output


def test_ctrl_c_exits_130_quietly(fake: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ctl_pool, "time", SimpleNamespace(sleep=sleep))
    result = run(fake, "monitor", "--continuous", "--interval", "0.5")
    assert result.exit_code == 130
    assert result.stdout.count("Worker Pool Status:") == 2
    assert sleeps == [0.5, 0.5]
    assert result.stderr == ""


# -- rendering through the commands -----------------------------------------------------------


def test_monitor_prints_the_old_block(fake: FakeDaemon) -> None:
    result = run(fake, "monitor")
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] Worker Pool Status:", lines[0])
    assert lines[1:] == [
        "  Max Workers: 2",
        "  Active: 1 tasks",
        "  Queued: 2 tasks",
        "",
        "Active Tasks:",
        "  - Task 812: genius.all (running for 2m 15s)",
        "",
        "Queued Tasks:",
        "  - Task 813: five9.contacts (priority: 5)",
        "  - Task 814: hubspot.deals (priority: 3)",
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["submit", "hubspot", "contacts"], "queued task 812 (hubspot.contacts)\n"),
        (["pause"], "dispatching paused; running tasks continue\n"),
        (["process-queue"], "started: 812\n"),
        (["clear-queue"], "cancelled 3 queued tasks\n"),
        (["reset-state", "--force"], "cancelled 2 queued tasks; killed: 5\n"),
        (["fix-stuck"], "failed as stale: 7; reconciled: -\n"),
        (["prune", "--dry-run"], "would delete 10 tasks, kept 4, freed 2048 bytes\n"),
        (["cancel", "812", "9"], "cancelled task 812\ntask 9 already completed, not cancelled\n"),
        (["priority", "812", "1"], "task 812: priority 1\n"),
        (["schedule", "run", "hs"], "hs: queued task 812\n"),
        (["reload"], "config reloaded: added 1 (a.b), removed 0, changed 0\n"),
        (["explain", "813"], "task 813: pool_full: all slots busy\n  blocked by: 811\n"),
        (["logs", "812"], "line 1\nline 2\n"),
    ],
)
def test_human_output(fake: FakeDaemon, argv: list[str], expected: str) -> None:
    result = run(fake, *argv)
    assert result.exit_code == 0, result.output
    assert result.stdout == expected


def test_submit_says_started_when_its_task_took_a_free_slot(fake: FakeDaemon) -> None:
    fake.results["submit"] = {"task": {**T, "status": "running"}, "coalesced": False}
    result = run(fake, "submit", "hubspot", "contacts")
    assert result.exit_code == 0, result.output
    assert result.stdout == "started task 812 (hubspot.contacts)\n"


def test_schedule_run_says_started_when_its_task_took_a_free_slot(fake: FakeDaemon) -> None:
    outcome = {"kind": "queued", "task_id": 812, "at": "2025-09-29T15:00Z", "started": True}
    fake.results["schedule_run"] = {"outcome": outcome}
    result = run(fake, "schedule", "run", "hs")
    assert result.exit_code == 0, result.output
    assert result.stdout == "hs: started task 812\n"


def test_submit_coalesced(fake: FakeDaemon) -> None:
    fake.results["submit"] = {"task": dict(T, route="all", sync_type="deals"), "coalesced": True}
    result = run(fake, "submit", "hubspot", "deals")
    assert result.stdout == "coalesced into task 812 (hubspot.deals (route all))\n"


def test_show_prints_every_field(fake: FakeDaemon) -> None:
    result = run(fake, "show", "812")
    keys = [line.split()[0] for line in result.stdout.splitlines()]
    assert sorted(keys) == sorted(T)


def test_status_verbose_lists_tasks(fake: FakeDaemon) -> None:
    result = run(fake, "status", "-v")
    assert "Utilization:  50%" in result.stdout
    assert "50.0 MiB" in result.stdout and "page 3/10" in result.stdout


def test_config_shows_value_and_origin(fake: FakeDaemon) -> None:
    result = run(fake, "config", "--max-workers", "4")
    assert result.stdout.splitlines() == [
        "SETTING      VALUE  ORIGIN",
        "max_workers  4      runtime",
    ]


def test_completion_script_needs_no_daemon() -> None:
    for shell in ("bash", "zsh", "fish"):
        result = run(None, "completion", shell, "--socket", "/nope.sock")
        assert result.exit_code == 0
        assert "_SYNCCTL_COMPLETE" in result.stdout


# -- --param and --since ----------------------------------------------------------------------


def test_parse_params() -> None:
    assert ctl.parse_params(["since=2025-01-01", "full", "x=", "y= a b"]) == {
        "since": "2025-01-01",
        "full": True,
        "x": "",
        "y": " a b",
    }
    assert ctl.parse_params(["since=x; rm -rf /"]) == {"since": "x; rm -rf /"}
    with pytest.raises(click.BadParameter):
        ctl.parse_params(["=v"])


NOW = datetime(2025, 9, 29, 15, 30, 45, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("30m", "2025-09-29T15:00:45Z"),
        ("2h", "2025-09-29T13:30:45Z"),
        ("7d", "2025-09-22T15:30:45Z"),
        ("90s", "2025-09-29T15:29:15Z"),
        ("1w", "2025-09-22T15:30:45Z"),
        ("2025-09-01", "2025-09-01T00:00:00Z"),
        ("2025-09-01T12:00:00Z", "2025-09-01T12:00:00Z"),
        ("2025-09-01T12:00:00+02:00", "2025-09-01T10:00:00Z"),
        ("2025-09-01 12:00", "2025-09-01T12:00:00Z"),
    ],
)
def test_since_iso(text: str, iso: str) -> None:
    assert ctl.since_iso(text, NOW) == iso


def test_history_relative_since_is_sent_as_utc_iso(fake: FakeDaemon) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    assert run(fake, "history", "--since", "2h").exit_code == 0
    sent = datetime.fromisoformat(fake.last("history")["since"].replace("Z", "+00:00"))
    after = datetime.now(timezone.utc)
    assert before - timedelta(hours=2, seconds=1) <= sent <= after - timedelta(hours=2)
    assert fake.last("history")["since"].endswith("Z")


def test_history_since_out_of_range_is_a_usage_error(fake: FakeDaemon) -> None:
    result = run(fake, "history", "--since", "99999999999d")
    assert result.exit_code == 2 and "out of range" in result.output
    assert "Traceback" not in result.output and "history" not in fake.ops


def test_logs_of_a_task_writing_faster_than_it_is_read_stops_where_it_was_asked(
    fake: FakeDaemon,
) -> None:
    """Each reply's end had grown: the loop chased it for as long as the task wrote."""
    pages = iter(range(1000))

    def page(args: dict[str, Any]) -> dict[str, Any]:
        n = next(pages)
        return {"text": "x", "size": args.get("offset", 0) + 1, "end": 3 + 10 * n,
                "truncated": False}  # fmt: skip

    fake.results["logs"] = page
    result = run(fake, "logs", "812")
    assert result.exit_code == 0 and result.stdout == "xxx"


def test_logs_reads_a_log_longer_than_one_reply_to_its_end(fake: FakeDaemon) -> None:
    """A reply carries at most 1 MiB: `syncctl logs` printed the first one and stopped."""
    text = "0123456789" * 3

    def page(args: dict[str, Any]) -> dict[str, Any]:
        at = args.get("offset", 0)
        return {"text": text[at : at + 12], "size": min(at + 12, len(text)), "end": len(text),
                "truncated": False}  # fmt: skip

    fake.results["logs"] = page
    result = run(fake, "logs", "812")
    assert result.exit_code == 0 and result.stdout == text
    assert [r["args"].get("offset", 0) for r in fake.requests if r["op"] == "logs"] == [0, 12, 24]
    as_json = json.loads(run(fake, "logs", "812", "--json").stdout)
    assert as_json["text"] == text and as_json["end"] == len(text)


# -- streams: logs --follow and submit --wait ------------------------------------------------


@pytest.mark.parametrize(("final", "code"), [("completed", 0), ("failed", 1), ("cancelled", 1)])
def test_logs_follow_exit_status(fake: FakeDaemon, final: str, code: int) -> None:
    fake.streams["logs"] = [
        ({"text": "starting\n", "offset": 9}, True),
        ({"text": "done\n", "offset": 14}, True),
        ({"status": final, "exit_code": 0 if final == "completed" else 3}, False),
    ]
    result = run(fake, "logs", "812", "--follow")
    assert result.exit_code == code
    assert result.stdout == "starting\ndone\n"
    assert fake.last("logs") == {"id": 812, "follow": True}


def test_logs_follow_json_is_one_object_per_line(fake: FakeDaemon) -> None:
    frames = [
        ({"text": "a\n", "offset": 2}, True),
        ({"status": "completed", "exit_code": 0}, False),
    ]
    fake.streams["logs"] = frames
    result = run(fake, "logs", "812", "-f", "--json")
    assert [json.loads(line) for line in result.stdout.splitlines()] == [f for f, _ in frames]
    assert result.exit_code == 0


def _wait_fixture(fake: FakeDaemon, final: dict[str, Any]) -> None:
    running = dict(T, status="running")
    fake.results["get"] = {"task": running}
    fake.streams["watch"] = [
        ({"event": "pool", "at": "2025-09-29T15:00:00Z"}, True),
        ({"event": "task", "at": "x", "task": dict(T, id=999, status="completed")}, True),
        ({"event": "task", "at": "x", "task": dict(T, **final)}, True),
    ]


@pytest.mark.parametrize(
    ("final", "code", "line"),
    [
        ({"status": "completed", "exit_code": 0}, 0, "task 812: completed (exit 0)"),
        (
            {"status": "failed", "exit_code": 2, "error": "exit 2"},
            1,
            "task 812: failed (exit 2): exit 2",
        ),
        ({"status": "cancelled"}, 1, "task 812: cancelled"),
    ],
)
def test_submit_wait_follows_the_task(
    fake: FakeDaemon, final: dict[str, Any], code: int, line: str
) -> None:
    _wait_fixture(fake, final)
    result = run(fake, "submit", "hubspot", "contacts", "--wait")
    assert result.exit_code == code, result.output
    assert result.stdout.splitlines() == [
        "queued task 812 (hubspot.contacts)",
        "task 812: running",
        line,
    ]
    assert fake.last("watch") == {"events": ["task"]}
    # (Which of watch and get the daemon reads first is a race across two connections; the
    # client's idle re-check covers it: tests/test_client.py::test_follow_task_rechecks...)


def test_submit_wait_when_already_finished(fake: FakeDaemon) -> None:
    fake.results["get"] = {"task": dict(T, status="completed", exit_code=0)}
    fake.silent.add("watch")
    result = run(fake, "submit", "hubspot", "--wait")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "task 812: completed (exit 0)"


def test_submit_wait_json_lines(fake: FakeDaemon) -> None:
    _wait_fixture(fake, {"status": "completed", "exit_code": 0})
    result = run(fake, "submit", "hubspot", "--wait", "--json")
    objs = [json.loads(line) for line in result.stdout.splitlines()]
    assert objs[0] == CANNED["submit"]
    assert [o["status"] for o in objs[1:]] == ["running", "completed"]


def test_daemon_gone_mid_stream_exits_3(fake: FakeDaemon) -> None:
    fake.streams["logs"] = [({"text": "a\n", "offset": 2}, True)]

    # The fake ends the stream by closing every connection once the frames are sent.
    original = fake._answer

    def answer_then_close(req: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from original(req)
        if req["op"] == "logs":
            raise OSError("daemon died")

    fake._answer = answer_then_close  # type: ignore[method-assign]
    result = run(fake, "logs", "812", "--follow")
    assert result.exit_code == 3
    assert result.stdout == "a\n"
    assert "closed the connection" in result.stderr


def test_watch_prints_source_events_by_their_message(fake: FakeDaemon) -> None:
    message = "source crm opened: 5 consecutive failures, cooldown until 14:32:00 UTC"
    fake.streams["watch"] = [
        ({"event": "source", "at": "2025-09-29T14:22:00Z", "source": "crm", "message": message},
         False),
    ]  # fmt: skip
    result = run(fake, "watch", "--events", "source")
    assert result.exit_code == 0, result.output
    assert fake.last("watch") == {"events": ["source"]}
    assert result.stdout == f"2025-09-29T14:22:00Z {message}\n"


# -- ops whose work grows with the store ------------------------------------------------------

SHORT = 0.2  # the request timeout in these tests, for 30 s
LATE = 3 * SHORT  # how long the fake daemon takes to answer
LONG = [
    (["clear-queue"], "clear_queue", "cancelled 3 queued tasks\n"),
    (["reset-state"], "reset_state", "cancelled 2 queued tasks; killed: 5\n"),
    (["prune"], "prune", "deleted 10 tasks, kept 4, freed 2048 bytes\n"),
]


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """syncctl's request timeout cut to SHORT, so a late reply takes LATE, not minutes."""

    class ShortClient(Client):
        def __init__(self, path: Path, *, timeout: float | None = 30.0, **kw: Any) -> None:
            super().__init__(path, timeout=None if timeout is None else SHORT, **kw)

    monkeypatch.setattr(ctl, "Client", ShortClient)


def answer_late(fake: FakeDaemon, op: str, then: Callable[[], Any]) -> None:
    """The fake answers `op` with then() only after LATE (the daemon at work)."""

    def late(args: dict[str, Any]) -> Any:
        time.sleep(LATE)
        return then()

    fake.results[op] = late


@pytest.mark.parametrize(("argv", "op", "line"), LONG, ids=[r[1] for r in LONG])
@pytest.mark.usefixtures("short_timeout")
def test_a_long_op_waits_past_the_request_timeout(
    fake: FakeDaemon, argv: list[str], op: str, line: str
) -> None:
    """A 1M-task clear-queue outlives syncctl's 30 s timeout and still succeeds."""
    answer_late(fake, op, lambda: CANNED[op])
    t0 = time.monotonic()
    result = run(fake, *argv)
    assert time.monotonic() - t0 >= LATE
    assert result.exit_code == 0, result.output
    assert (result.stdout, result.stderr) == (line, "")


@pytest.mark.usefixtures("short_timeout")
def test_a_long_op_json_is_the_late_reply_alone(fake: FakeDaemon) -> None:
    answer_late(fake, "clear_queue", lambda: CANNED["clear_queue"])
    result = run(fake, "clear-queue", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == CANNED["clear_queue"]
    assert result.stderr == ""


@pytest.mark.usefixtures("short_timeout")
def test_an_ordinary_op_as_late_still_times_out(fake: FakeDaemon) -> None:
    answer_late(fake, "process_queue", lambda: CANNED["process_queue"])
    t0 = time.monotonic()
    result = run(fake, "process-queue")
    assert time.monotonic() - t0 < LATE
    assert result.exit_code == 3
    assert "no reply from the daemon" in result.stderr
    assert f"within {SHORT:g} s (op process_queue)" in result.stderr


@pytest.mark.usefixtures("short_timeout")
def test_daemon_gone_during_a_long_op_exits_3(fake: FakeDaemon) -> None:
    """No timeout is no hang: the connection's end is reported as the daemon's end."""

    def die() -> Any:
        raise OSError("daemon died")  # the fake closes the connection without a reply

    answer_late(fake, "clear_queue", die)
    result = run(fake, "clear-queue")
    assert result.exit_code == 3
    assert "closed the connection without a reply" in result.stderr
    assert result.stdout == ""


def test_long_ops_are_ops() -> None:
    """A renamed op would silently fall back to the request timeout."""
    assert ctl.LONG_OPS - set(registry()) == set()
