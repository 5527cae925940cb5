"""`[daemon] probe_on_start`: the daemon asks manage.py for its commands before it starts,
and refuses to start (78, no restart loop under systemd) when a route's command is missing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from tests.helpers.daemon import DaemonProc, wait_for
from tests.helpers.django_project import write_project


def make(
    make_daemon: Callable[..., DaemonProc], workdir: Path, routes: dict[str, str]
) -> DaemonProc:
    project = write_project(workdir / "project")
    return make_daemon(
        {"crm": {"routes": routes}},
        daemon={"probe_on_start": True},
        defaults={
            "command_prefix": [sys.executable, "manage.py"],
            "cwd": str(project),
            "allowed_params": [],
        },
        start=False,
    )


def test_a_missing_command_keeps_the_daemon_from_starting(make_daemon, workdir):
    d = make(make_daemon, workdir, {"contacts": "sync_hubspot_contacts", "leads": "sync_leads"})
    d.start(wait=False)
    assert d.proc is not None
    wait_for(lambda: d.proc.poll() is not None, 60, "the daemon to exit")
    assert d.proc.returncode == 78
    lines = d.stderr().splitlines()
    assert (
        "sources.crm.routes.leads: command 'sync_leads' is not a command of "
        f"'{sys.executable} manage.py' in {workdir / 'project'}"
    ) in lines
    assert lines[-1] == (
        f"syncd: config error in {d.config}: 1 problem(s) found by the command probe "
        "(daemon.probe_on_start)"
    )
    assert not d.socket.exists() and "Traceback" not in d.stderr()


def test_with_every_command_present_the_daemon_starts(make_daemon, workdir):
    d = make(make_daemon, workdir, {"contacts": "sync_hubspot_contacts"})
    d.start()
    assert "help --commands: 29 commands listed, 1 route(s) checked" in d.stderr()
    assert d.call("ping")["pid"] == d.proc.pid
