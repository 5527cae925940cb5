"""Config faults against a real daemon (RELIABILITY 2.6 C1-C3): rejected reloads keep the
running config and name each problem by key path; a SIGHUP storm leaves one coherent config;
a reload that removes a route with queued tasks fails them at dispatch with unknown_route."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.helpers.daemon import render_config
from tests.helpers.system import (
    DaemonProc,
    syncctl,
    wait_for,
)

SETTINGS = {"max_workers": 1, "heartbeat_seconds": 0.2, "kill_grace_seconds": 1}


def rewrite(d: DaemonProc, text: str) -> None:
    """Replace the config file atomically (as an editor or config management would)."""
    tmp = d.config.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, d.config)


def config_text(d: DaemonProc, routes: dict[str, str], **daemon: object) -> str:
    settings = {**SETTINGS, "state_dir": "state", "socket": str(d.socket), **daemon}
    return render_config(settings, {"alpha": {"routes": routes}})


def busy_pool(d: DaemonProc) -> tuple[int, list[int]]:
    """One running task and two queued ones (max_workers = 1)."""
    running = d.call("submit", source="alpha", sync_type="a1", params={"sleep": 30})["task"]["id"]
    d.wait_status(running, {"running"})
    queued = [d.call("submit", source="alpha", sync_type=t)["task"]["id"] for t in ("a2", "a3")]
    return running, queued


BAD_CONFIGS = {
    "syntax": ("[daemon\nmax_workers = 2\n", ["line 1"]),
    "unknown_key": (None, ["daemon.bogus_key"]),
    "executable": (None, ["sources.alpha.routes.a2", "no-such-exe-xyz"]),
}


@pytest.mark.parametrize("kind", sorted(BAD_CONFIGS))
def test_c1_rejected_reload_keeps_config_and_names_key_paths(make_daemon, kind):
    d = make_daemon({"alpha": {"routes": {"a1": "a1", "a2": "a2", "a3": "a3"}}}, daemon=SETTINGS)
    running, queued = busy_pool(d)
    before = d.call("routes")
    text, expected = BAD_CONFIGS[kind]
    if kind == "unknown_key":
        text = config_text(d, {"a1": "a1", "a2": "a2", "a3": "a3"}).replace(
            "[daemon]\n", "[daemon]\nbogus_key = 1\n"
        )
    elif kind == "executable":
        good = config_text(d, {"a1": "a1", "a2": "a2", "a3": "a3"})
        text = good.replace('a2 = "a2"', 'a2 = { argv = ["no-such-exe-xyz"] }')
    assert text is not None
    rewrite(d, text)

    done = syncctl(d, "reload")
    assert done.returncode == 1, (done.stdout, done.stderr)
    shown = done.stdout + done.stderr
    for needle in expected:
        assert needle in shown, f"{needle!r} not in the reload error:\n{shown}"
    wait_for(lambda: all(n in d.stderr() for n in expected), 10, "the log to name the problem")
    assert "reload rejected" in d.stderr()

    # Old config kept: same routes; the running task runs on, the queued ones stay queued.
    assert d.call("routes") == before
    assert d.task(running)["status"] == "running"
    assert [d.task(i)["status"] for i in queued] == ["queued", "queued"]
    # A SIGHUP with the same bad file is rejected too, and the daemon lives.
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP reload rejected" in d.stderr(), 10, "the SIGHUP rejection")
    assert d.call("ping")["pid"] == d.proc.pid
    assert d.task(running)["status"] == "running"
    assert "Traceback" not in d.stderr()


def test_c2_hundred_sighups_in_a_second_leave_one_coherent_config(make_daemon):
    d = make_daemon({"alpha": {"routes": {"a1": "a1"}}}, daemon=SETTINGS)
    assert d.proc is not None
    start = time.monotonic()
    last_routes: list[str] = []
    for i in range(100):
        if i % 10 == 0:  # the file changes under the storm, always to a valid version
            last_routes = ["a1", *(f"r{j}" for j in range(i // 10 + 1))]
            rewrite(d, config_text(d, {r: r for r in last_routes}))
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.008)
    assert time.monotonic() - start < 3
    assert d.call("ping")["pid"] == d.proc.pid
    d.proc.send_signal(signal.SIGHUP)  # the last file version is certainly applied after this

    def applied() -> bool:
        routes = d.call("routes")["sources"][0]["routes"]
        return sorted(r["sync_type"] for r in routes) == sorted(last_routes)

    wait_for(applied, 20, "the last config version to be applied")
    # Coherent: every route of the final version resolves and runs.
    task = d.call("submit", source="alpha", sync_type="r9")["task"]
    assert task["argv"][-1] == "r9"
    assert d.wait_status(task["id"], {"completed", "failed"})["status"] == "completed"
    assert d.proc.poll() is None
    assert "Traceback" not in d.stderr()
    assert "rejected" not in d.stderr()


def test_c3_removed_route_fails_its_queued_tasks_with_unknown_route(make_daemon):
    d = make_daemon({"alpha": {"routes": {"a1": "a1", "a2": "a2", "a3": "a3"}}}, daemon=SETTINGS)
    d.call("pause")
    doomed = d.call("submit", source="alpha", sync_type="a2")["task"]["id"]
    kept = d.call("submit", source="alpha", sync_type="a1")["task"]["id"]
    rewrite(d, config_text(d, {"a1": "a1", "a3": "a3", "a4": "a4"}))

    dry = syncctl(d, "reload", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    result = json.loads(dry.stdout)
    assert result["applied"] is False
    assert "route alpha.a2" in result["changes"]["removed"]
    assert "route alpha.a4" in result["changes"]["added"]
    assert result["affected_queued"] == [doomed]
    human = syncctl(d, "reload", "--dry-run")
    assert human.returncode == 0 and "alpha.a2" in human.stdout, human.stdout
    assert d.call("resolve", source="alpha", sync_type="a2")["route"] == "a2"  # not applied

    reply = d.call("reload")
    assert reply["applied"] is True and reply["affected_queued"] == [doomed]
    assert not d.request("resolve", source="alpha", sync_type="a2")["ok"]
    d.call("resume")
    failed = d.wait_status(doomed, {"failed", "completed"})
    assert failed["status"] == "failed" and "unknown_route" in failed["error"], failed
    assert d.wait_status(kept, {"completed", "failed"})["status"] == "completed"
    assert "Traceback" not in d.stderr()


def test_reload_applies_history_days_to_maintenance(make_daemon):
    d = make_daemon({"alpha": {"routes": {"a1": "a1"}}}, daemon={**SETTINGS, "history_days": 30})
    ids = [
        d.call("submit", source="alpha", sync_type="a1", allow_duplicate=True)["task"]["id"]
        for _ in range(5)
    ]
    for task_id in ids:
        d.wait_status(task_id, {"completed"})
    assert d.call("prune", dry_run=True)["deleted"] == 0
    # ~0.9 s of history: the two oldest of five completed runs go (the newest 3 are kept).
    rewrite(
        d,
        config_text(d, {"a1": "a1"}, history_days=0.00001, prune_at="30 3 * * *"),
    )
    assert d.call("reload")["applied"] is True
    wait_for(lambda: d.call("prune", dry_run=True)["deleted"] == 2, 20, "the new history_days")


def test_clear_queue_still_clears_a_source_a_reload_removed(make_daemon):
    """A reload leaves the removed source's queued tasks queued (they fail when their turn
    comes); `clear-queue --source` must still reach them, and a typo is still an error."""
    sources = {"alpha": {"routes": {"a1": "a1"}}, "beta": {"routes": {"b1": "b1"}}}
    d = make_daemon(sources, daemon=SETTINGS)
    d.call("pause")
    stranded = d.call("submit", source="beta", sync_type="b1")["task"]["id"]
    rewrite(d, config_text(d, {"a1": "a1"}))
    assert d.call("reload")["affected_queued"] == [stranded]
    assert d.call("clear_queue", source="Beta") == {"cancelled": 1}
    assert d.task(stranded)["status"] == "cancelled"
    assert d.request("clear_queue", source="beta")["error"]["code"] == "unknown_source"
