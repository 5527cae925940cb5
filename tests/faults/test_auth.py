"""Authorization and injection against a real daemon (RELIABILITY 2.5 A1-A6).

The client side of A1/A2 runs as throw-away system users created with groupadd/useradd (CI
runs as root; a failure to create them fails the test, it never skips). The socket is made
0666 for these tests so that only SO_PEERCRED, not the file mode, decides."""

from __future__ import annotations

import json
import os
import stat
import time

from tests.helpers.strace import Tracer
from tests.helpers.system import (
    DaemonProc,
    FaultUsers,
    raw_as,
    read_json_lines,
    script_route,
    syncctl,
    write_script,
)

MUTATING = [
    ("submit", {"source": "alpha", "sync_type": "a1"}),
    ("cancel", {"ids": [1]}),
    ("config_set", {"max_workers": 3}),
    ("reset_state", {}),
]
READ_ONLY = [("ping", {}), ("status", {}), ("list", {}), ("routes", {}), ("get", {"id": 1})]


def open_daemon(make_daemon, workdir, users: FaultUsers) -> DaemonProc:
    os.chmod(workdir, 0o755)  # mkdtemp makes it 0700: let the test users reach the socket
    d = make_daemon(daemon={"socket_mode": "0666", "control_group": users.group})
    d.call("pause")
    d.call("submit", source="alpha", sync_type="a2")  # task 1, so `get`/`cancel` have a target
    return d


def test_a1_outsider_may_read_but_not_mutate(make_daemon, workdir, test_users):
    d = open_daemon(make_daemon, workdir, test_users)
    uid, _ = test_users.ids(test_users.outsider)
    replies = raw_as(test_users.outsider, d.socket, MUTATING + READ_ONLY)
    for (op, _), reply in zip(MUTATING, replies[: len(MUTATING)], strict=True):
        assert reply["ok"] is False and reply["error"]["code"] == "forbidden", (op, reply)
    for (op, _), reply in zip(READ_ONLY, replies[len(MUTATING) :], strict=True):
        assert reply["ok"] is True, (op, reply)
    for op, _ in MUTATING:
        line = f"forbidden: {op} from user {test_users.outsider} (uid {uid},"
        assert line in d.stderr(), f"{line!r} not logged"
    assert d.task(1)["status"] == "queued"
    assert d.call("config_get")["settings"]["max_workers"]["value"] == 2


def test_a2_supplementary_and_primary_group_members_may_mutate(
    make_daemon,
    workdir,
    test_users,
):
    d = open_daemon(make_daemon, workdir, test_users)
    # The member's process does not carry the group (extra_groups=[]): the daemon must find
    # it in the user database, not in the connection's credentials.
    member = raw_as(
        test_users.member, d.socket, [("submit", {"source": "alpha", "sync_type": "a1"})]
    )
    assert member[0]["ok"] is True, member
    assert member[0]["result"]["task"]["requested_by"] == test_users.member
    primary = raw_as(
        test_users.primary,
        d.socket,
        [("submit", {"source": "alpha", "sync_type": "a1", "params": {"sleep": 1}})],
        group=test_users.gid,
    )
    assert primary[0]["ok"] is True, primary
    assert f"submit by {test_users.member} (uid" in d.stderr()


def test_a3_socket_mode_from_the_first_instant(make_daemon, workdir):
    d = make_daemon(start=False)
    d.start(wait=False)
    modes: set[int] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # a tight stat loop while the daemon starts
        try:
            st = os.stat(d.socket)
        except FileNotFoundError:
            continue
        modes.add(stat.S_IMODE(st.st_mode))
        if d.ready():
            break
    assert modes == {0o660}, {oct(m) for m in modes}
    assert stat.S_ISSOCK(os.stat(d.socket).st_mode)
    assert os.stat(d.socket).st_uid == os.getuid()


RECORD_ARGV = """
import json, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(sys.argv[2:]) + "\\n")
"""


def test_a4_params_are_argv_elements_never_a_shell(make_daemon, workdir):
    script = write_script(workdir, "argv_job.py", RECORD_ARGV)
    route = script_route(script, allowed_params=["since", "full"])
    route["argv"] = [*route["argv"], str(workdir / "argv.json")]
    d = make_daemon({"alpha": {"routes": {"rec": route}}})
    assert d.proc is not None
    # The audit that no shell is ever exec'd is part of A4, not an extra: without strace, or
    # when strace cannot attach, the test fails and says so.
    tracer = Tracer(d.proc.pid, "execve", workdir / "strace.out")

    done = syncctl(d, "submit", "alpha", "rec", "--param", "since=x; rm -rf /", "--wait")
    assert done.returncode == 0, done.stderr
    assert read_json_lines(workdir / "argv.json") == [["--since=x; rm -rf /"]]

    newline = syncctl(d, "submit", "alpha", "rec", "--param", "since=a\nb")
    assert newline.returncode == 1 and "invalid_args" in newline.stdout + newline.stderr
    nul = d.request("submit", source="alpha", sync_type="rec", params={"since": "a\x00b"})
    assert nul["error"]["code"] == "invalid_args"
    for key in ("full --evil", "sleep", "since;id"):
        bad = d.request("submit", source="alpha", sync_type="rec", params={key: "1"})
        assert bad["error"]["code"] == "param_not_allowed", (key, bad)
    assert len(read_json_lines(workdir / "argv.json")) == 1  # nothing else ran

    execs = [line for line in tracer.stop().splitlines() if "execve(" in line]
    assert any("argv_job.py" in line for line in execs), execs  # strace saw the spawn
    assert not [line for line in execs if '"/bin/sh"' in line or "/bin/sh" in line], execs
    assert not [line for line in execs if '"-c"' in line], execs


def test_a5_clients_cannot_pass_argv_cwd_env_or_command(make_daemon):
    d = make_daemon()
    base = {"source": "alpha", "sync_type": "a1"}
    for field, value in [
        ("argv", ["/bin/sh", "-c", "id"]),
        ("cwd", "/"),
        ("env", {"LD_PRELOAD": "/tmp/x.so"}),
        ("command", "rm"),
    ]:
        reply = d.request("submit", **base, **{field: value})
        assert reply["error"]["code"] == "invalid_args", (field, reply)
        assert field in reply["error"]["message"]
        many = d.request("submit_many", items=[{**base, field: value}])
        assert many["error"]["code"] == "invalid_args", (field, many)
    assert d.call("list")["tasks"] == []


def test_a6_env_file_secret_never_leaves_the_child(make_daemon, workdir):
    secret = "sentinel-a6-d41d8cd98f"
    env_file = workdir / "secrets.env"
    env_file.write_text(f"API_TOKEN={secret}\nOTHER='{secret}-2'\n")
    check = write_script(
        workdir,
        "uses_secret.py",
        "import os, sys\nsys.exit(0 if os.environ['API_TOKEN'].startswith('sentinel') else 9)\n",
    )
    d = make_daemon(
        {"alpha": {"routes": {"a1": "a1", "sec": script_route(check)}}},
        defaults={"env_file": str(env_file)},
    )
    ok = d.call("submit", source="alpha", sync_type="sec")["task"]["id"]
    assert d.wait_status(ok, {"completed", "failed"})["status"] == "completed"  # it got it
    bad = d.call("submit", source="alpha", sync_type="a1", params={"exit": 3})["task"]["id"]
    d.wait_status(bad, {"failed"})

    replies: list[object] = [
        d.call("config_get"),
        d.call("get", id=ok),
        d.call("get", id=bad),
        d.call("list", status=["completed", "failed"]),
        d.call("routes"),
        d.call("resolve", source="alpha", sync_type="sec"),
        d.call("history"),
        d.call("status", verbose=True),
        d.call("logs", id=ok),
        d.call("logs", id=bad),
        d.request("submit", source="alpha", sync_type="nope"),
        d.request("submit", source="alpha", sync_type="a1", params={"API_TOKEN": secret}),
        d.call("reload", dry_run=True),
    ]
    text = json.dumps(replies)
    assert secret not in text
    for args in (["config", "--json"], ["show", str(ok)], ["routes"], ["resolve", "alpha", "sec"]):
        out = syncctl(d, *args)
        assert secret not in out.stdout + out.stderr, args
    # A broken env_file line must not echo its value either.
    env_file.write_text(f"API_TOKEN={secret}\nbroken line {secret}\n")
    failed = d.call("submit", source="alpha", sync_type="sec")["task"]["id"]
    row = d.wait_status(failed, {"failed", "completed"})
    assert row["status"] == "failed" and "env file" in row["error"], row
    assert secret not in json.dumps(row) + json.dumps(d.call("logs", id=failed))
    assert d.stop() == 0
    assert secret not in d.stderr()
