"""Watermarks end to end: a job that prints its argv, run by a real daemon. The first run
gets watermark_default, a failed run does not move the watermark, a completed one does, and
a task queued before a completion gets the newer value when it starts; the argv recorded is
the argv run; a param holding a placeholder's text stays literal."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

JOB = """\
import json, pathlib, sys, time
here = pathlib.Path(__file__).parent
print("ARGV " + json.dumps(sys.argv[1:]), flush=True)
deadline = time.monotonic() + 60
while (here / "HOLD").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
sys.exit(1 if (here / "FAIL").exists() else 0)
"""
DEFAULT = "1970-01-01T00:00:00Z"
TEMPLATE = ["--since={last_success_started_at}", "--until={last_success_finished_at}", "{x}"]


def printed_argv(d: Any, task_id: int) -> list[str]:
    """The argv the job saw, from its own output."""
    text = d.call("logs", id=task_id)["text"]
    line = next(ln for ln in text.splitlines() if ln.startswith("ARGV "))
    argv: list[str] = json.loads(line[5:])
    return argv


def run(d: Any, status: str, **args: Any) -> dict[str, Any]:
    task = d.call("submit", source="crm", sync_type="contacts", **args)["task"]
    done: dict[str, Any] = d.wait_status(task["id"], {"completed", "failed"})
    assert done["status"] == status, done
    return done


def test_watermarks_move_only_on_completion_and_are_read_at_spawn(make_daemon, workdir: Path):
    job = workdir / "job.py"
    job.write_text(JOB)
    route = {
        "argv": [sys.executable, str(job), *TEMPLATE],
        "watermark_default": DEFAULT,
        "allowed_params": ["note"],
    }
    d = make_daemon({"crm": {"routes": {"contacts": route}}})
    head = [sys.executable, str(job)]

    resolved = d.call("resolve", source="crm", sync_type="contacts")
    assert resolved["argv"] == [*head, f"--since={DEFAULT}", f"--until={DEFAULT}", "{x}"]
    assert resolved["argv_template"] == [*head, *TEMPLATE]
    assert resolved["watermark"] == {"default": DEFAULT, "last_success": None}

    (workdir / "FAIL").touch()
    failed = run(d, "failed")
    first = [*head, f"--since={DEFAULT}", f"--until={DEFAULT}", "{x}"]
    assert failed["argv"] == first and printed_argv(d, failed["id"]) == first[2:]
    (workdir / "FAIL").unlink()

    good = run(d, "completed")  # the failure did not move the watermark
    assert good["argv"] == first and printed_argv(d, good["id"]) == first[2:]

    after = run(d, "completed")
    moved = [*head, f"--since={good['started_at']}", f"--until={good['finished_at']}", "{x}"]
    assert after["argv"] == moved and printed_argv(d, after["id"]) == moved[2:]

    # Queued while an earlier run is running: it gets that run's time, not the one current
    # when it was submitted.
    (workdir / "HOLD").touch()
    holding = d.call("submit", source="crm", sync_type="contacts")["task"]
    d.wait_status(holding["id"], {"running"})
    behind = d.call("submit", source="crm", sync_type="contacts")["task"]
    assert d.task(behind["id"])["status"] == "queued"
    assert d.task(behind["id"])["argv"] == [*head, *TEMPLATE]  # filled at spawn, not submit
    (workdir / "HOLD").unlink()
    held = d.wait_status(holding["id"], {"completed"})
    assert held["argv"][2] == f"--since={after['started_at']}"
    late = d.wait_status(behind["id"], {"completed"})
    newest = [*head, f"--since={held['started_at']}", f"--until={held['finished_at']}", "{x}"]
    assert late["argv"] == newest and printed_argv(d, late["id"]) == newest[2:]

    resolved = d.call("resolve", source="crm", sync_type="contacts")
    assert resolved["argv"] == [
        *head, f"--since={late['started_at']}", f"--until={late['finished_at']}", "{x}"
    ]  # fmt: skip
    assert resolved["watermark"]["last_success"]["task_id"] == late["id"]

    # Other params, another watermark; a param's own braces are never filled in.
    note = {"note": "{last_success_started_at}"}
    odd = run(d, "completed", params=note)
    literal = [*first, "--note={last_success_started_at}"]
    assert odd["argv"] == literal and printed_argv(d, odd["id"]) == literal[2:]
