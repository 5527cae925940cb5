"""Watermark rules without a daemon: the load error, what is filled in and what stays
literal, and that a follow-up of a task whose watermarks were filled in gets them again."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from syncd.config.load import loads_config
from syncd.config.model import ConfigError
from syncd.config.routing import RouteTable
from syncd.config.watermarks import fill_watermarks, has_watermarks, next_run_argv
from syncd.core.clock import FakeClock
from syncd.core.models import Status
from syncd.ctl.render import resolve_text
from syncd.store.facade import NewTask, Store

PY = sys.executable
ROUTE = f'["{PY}", "sync.py", "--since={{last_success_started_at}}"]'


def load(text: str) -> RouteTable:
    return RouteTable.from_config(loads_config(text, base_dir=Path("/")))


def test_a_route_using_a_watermark_must_set_its_default() -> None:
    with pytest.raises(ConfigError) as err:
        load(f"[sources.crm.routes]\ncontacts = {{ argv = {ROUTE} }}\n")
    assert [str(p) for p in err.value.errors] == [
        "sources.crm.routes.contacts.watermark_default: required: the argv uses "
        "{last_success_started_at}; set the value the first run gets before any run "
        'completed (e.g. "1970-01-01T00:00:00Z")'
    ]
    prefix = f'[defaults]\ncommand_prefix = ["{PY}", "x", "--until={{last_success_finished_at}}"]\n'
    with pytest.raises(ConfigError) as err:
        load(prefix + '[sources.crm.routes]\ncontacts = "c"\n')
    assert "{last_success_finished_at}" in str(err.value.errors[0])
    bad = f'[sources.crm.routes]\ncontacts = {{ argv = {ROUTE}, watermark_default = "a\\nb" }}\n'
    with pytest.raises(ConfigError, match="watermark_default: 'a\\\\nb' must not contain"):
        load(bad)
    # Inherited like the other route keys; a route without placeholders needs none.
    table = load(
        '[defaults]\nwatermark_default = "2020-01-01"\n'
        f'[sources.crm.routes]\ncontacts = {{ argv = {ROUTE} }}\nother = {{ argv = ["{PY}"] }}\n'
    )
    route = table.route("crm", "contacts")
    assert route is not None and route.watermark_default == "2020-01-01"


def test_only_the_routes_own_words_are_filled_in_and_other_braces_stay() -> None:
    argv = ["x", "--a={last_success_started_at}", "{x}", "b={last_success_finished_at}{y}"]
    params = {"note": "{last_success_started_at}", "full": True}
    task_argv = [*argv, "--full", "--note={last_success_started_at}"]
    assert has_watermarks(task_argv, params)
    assert not has_watermarks(
        ["x", "--note={last_success_started_at}"], {"note": "{last_success_started_at}"}
    )
    assert fill_watermarks(task_argv, params, "S", "F") == [
        "x", "--a=S", "{x}", "b=F{y}", "--full", "--note={last_success_started_at}",
    ]  # fmt: skip
    # One pass: a value holding a placeholder's text is not expanded again.
    assert fill_watermarks(argv, {}, "{last_success_finished_at}", "F")[1] == (
        "--a={last_success_finished_at}"
    )
    assert next_run_argv(argv, {}, None, "D")[1:4:2] == ["--a=D", "b=D{y}"]
    assert next_run_argv(argv, {}, ("S", None), "D")[1:4:2] == ["--a=S", "b=D{y}"]


def test_a_follow_up_takes_the_argv_it_was_queued_with(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "syncd.db", FakeClock(datetime(2025, 1, 1, tzinfo=timezone.utc)))
    template = ["x", "--since={last_success_started_at}"]
    task, _ = store.enqueue(NewTask("crm", "contacts", "contacts", template, {}, 5, "manual"))
    store.transition(task.id, Status.QUEUED, Status.RUNNING, started_at="2025-01-01T00:00:00Z")
    assert store.record_spawn_argv(task.id, ["x", "--since=2024"], template)
    row = store.get(task.id)
    assert row is not None and row.argv == ["x", "--since=2024"]  # the argv run
    again = NewTask.follow_up(row, f"requeue:{task.id}")  # as a crash's requeue reads it
    assert again.argv == template
    store.finish(task.id, Status.COMPLETED, finished_at="2025-01-01T00:01:00Z", exit_code=0,
                 error=None)  # fmt: skip
    assert not store.record_spawn_argv(task.id, ["y"], template)  # only while running
    store.close()


def test_syncctl_resolve_shows_the_template_and_where_the_time_came_from() -> None:
    base = {"source": "crm", "sync_type": "contacts", "route": "contacts", "rule": "exact",
            "cwd": None, "timeout_minutes": 120, "priority": 5, "max_concurrent": None,
            "argv": ["x", "--since=2025-01-01T00:00:00.000000Z"],
            "argv_template": ["x", "--since={last_success_started_at}"]}  # fmt: skip
    last = {"task_id": 7, "started_at": "2025-01-01T00:00:00.000000Z", "finished_at": None}
    lines = resolve_text({**base, "watermark": {"default": "1970", "last_success": last}})
    assert lines.splitlines()[1:4] == [
        "  argv:            x --since=2025-01-01T00:00:00.000000Z",
        "  argv template:   x '--since={last_success_started_at}'",
        "  watermark:       last success: task 7 started 2025-01-01T00:00:00.000000Z",
    ]
    first = resolve_text({**base, "watermark": {"default": "1970", "last_success": None}})
    assert "  watermark:       no success yet: watermark_default '1970'" in first.splitlines()
