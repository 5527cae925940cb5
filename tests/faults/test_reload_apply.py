"""Reload applies what it says it applies (RELIABILITY C4): a changed `control_group` holds on
the next request (revoking a group's rights works at once), and the keys only a restart can
apply (`socket`, `socket_mode`, `state_dir`) are named in `restart_required`, never reported
as applied."""

from __future__ import annotations

import os

from tests.helpers.daemon import render_config
from tests.helpers.system import (
    DaemonProc,
    FaultUsers,
    raw_as,
    syncctl,
)

ROUTES = {"alpha": {"routes": {"a1": "a1", "a2": "a2"}}}
SUBMIT = ("submit", {"source": "alpha", "sync_type": "a1", "allow_duplicate": True})


def reconfigure(d: DaemonProc, **daemon: object) -> None:
    """Replace the config file atomically with these [daemon] settings."""
    settings = {
        "max_workers": 1,
        "state_dir": "state",
        "socket": str(d.socket),
        "socket_mode": "0666",
        "heartbeat_seconds": 0.2,
        "kill_grace_seconds": 1,
        **daemon,
    }
    tmp = d.config.with_suffix(".tmp")
    tmp.write_text(render_config(settings, ROUTES))
    os.replace(tmp, d.config)


def member_submit(d: DaemonProc, users: FaultUsers) -> dict[str, object]:
    return raw_as(users.member, d.socket, [SUBMIT])[0]


def test_c4_reload_applies_control_group_and_names_restart_only_keys(
    make_daemon,
    workdir,
    test_users,
):
    os.chmod(workdir, 0o755)  # let the test users reach the socket
    d = make_daemon(
        ROUTES, daemon={"max_workers": 1, "socket_mode": "0666", "control_group": test_users.group}
    )
    d.call("pause")
    assert member_submit(d, test_users)["ok"] is True

    # Revoke: the group is gone from the config; the member is refused on the next request.
    reconfigure(d)
    result = d.call("reload")
    assert result["applied"] is True
    assert "setting control_group" in result["changes"]["changed"]
    refused = member_submit(d, test_users)
    assert refused["ok"] is False and refused["error"]["code"] == "forbidden", refused  # type: ignore[index]
    assert result["restart_required"] == []

    # Grant again, and change what only a restart can apply.
    reconfigure(d, control_group=test_users.group, socket_mode="0660", state_dir="elsewhere")
    dry = d.call("reload", dry_run=True)
    assert dry["restart_required"] == ["socket_mode", "state_dir"]
    result = d.call("reload")
    assert result["restart_required"] == ["socket_mode", "state_dir"]
    changed = result["changes"]["changed"]
    assert "setting control_group" in changed
    assert "setting socket_mode" not in changed and "setting state_dir" not in changed
    assert member_submit(d, test_users)["ok"] is True
    assert oct(os.stat(d.socket).st_mode & 0o777) == "0o666"  # still the running socket
    assert not (workdir / "elsewhere").exists()
    log = d.stderr()
    assert "socket_mode changed in the config; it takes effect at restart" in log
    assert "state_dir changed in the config; it takes effect at restart" in log

    # syncctl says so too; a reload with nothing new names nothing.
    reconfigure(d, control_group=test_users.group, socket="/tmp/other-syncd.sock")
    shown = syncctl(d, "reload")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().endswith("not applied, needs a restart: socket"), shown.stdout
    reconfigure(d, control_group=test_users.group)
    assert d.call("reload")["restart_required"] == []
