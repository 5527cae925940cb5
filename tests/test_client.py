"""syncd.ctl.client against a fake daemon: a real AF_UNIX socket speaking NDJSON in a thread.

`FakeDaemon` is also what tests/test_ctl.py drives syncctl against."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.core import paths
from syncd.ctl.client import (
    Client,
    ConfigUnreadable,
    DaemonError,
    DaemonUnreachable,
    locate_socket,
    socket_path,
)
from tests.helpers.fake_daemon import FakeDaemon, FakeError


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # A short path of our own: AF_UNIX paths are limited to 108 bytes.
    d = Path(tempfile.mkdtemp(prefix="sctl-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(sock_dir: Path) -> Iterator[FakeDaemon]:
    d = FakeDaemon(sock_dir / "syncd.sock")
    yield d
    d.close()


# -- requests and replies -------------------------------------------------------------------


def test_call_sends_v1_request_with_increasing_ids(daemon: FakeDaemon) -> None:
    daemon.results["ping"] = {"version": "0.1.0", "pid": 1}
    with Client(daemon.path) as c:
        assert c.call("ping") == {"version": "0.1.0", "pid": 1}
        assert c.call("ping", x=1) == {"version": "0.1.0", "pid": 1}
    assert daemon.requests == [
        {"v": 1, "id": 1, "op": "ping", "args": {}},
        {"v": 1, "id": 2, "op": "ping", "args": {"x": 1}},
    ]
    assert daemon.connections == 1  # one connection reused


def test_refusal_raises_daemon_error_with_details(daemon: FakeDaemon) -> None:
    def refuse(args: dict[str, Any]) -> Any:
        raise FakeError("unknown_route", "no route 'x'", {"sync_types": ["all", "contacts"]})

    daemon.results["resolve"] = refuse
    with Client(daemon.path) as c, pytest.raises(DaemonError) as info:
        c.call("resolve", source="hubspot", sync_type="x")
    assert info.value.code == "unknown_route"
    assert info.value.message == "no route 'x'"
    assert info.value.details == {"sync_types": ["all", "contacts"]}


def test_stream_yields_until_more_false(daemon: FakeDaemon) -> None:
    daemon.streams["logs"] = [
        ({"text": "a\n", "offset": 2}, True),
        ({"text": "b\n", "offset": 4}, True),
        ({"status": "completed", "exit_code": 0}, False),
    ]
    daemon.results["ping"] = {"ok": 1}
    with Client(daemon.path, timeout=None) as c:
        frames = list(c.stream("logs", id=3, follow=True))
        assert c.call("ping") == {"ok": 1}  # the connection is usable after the stream
    assert frames[-1] == {"status": "completed", "exit_code": 0}
    assert [f.get("text") for f in frames[:2]] == ["a\n", "b\n"]
    assert daemon.last("logs") == {"id": 3, "follow": True}


def test_stream_error_raises(daemon: FakeDaemon) -> None:
    def refuse(args: dict[str, Any]) -> Any:
        raise FakeError("unknown_task", "no task 9")

    daemon.results["logs"] = refuse
    with Client(daemon.path) as c, pytest.raises(DaemonError, match="unknown_task"):
        list(c.stream("logs", id=9, follow=True))


def test_request_timeout_is_unreachable_naming_the_path(daemon: FakeDaemon) -> None:
    daemon.silent.add("status")
    t0 = time.monotonic()
    with Client(daemon.path, timeout=0.2) as c, pytest.raises(DaemonUnreachable) as info:
        c.call("status")
    assert time.monotonic() - t0 < 5
    assert str(daemon.path) in str(info.value)
    assert "0.2 s" in str(info.value)


def test_request_with_no_timeout_waits_past_the_client_timeout(daemon: FakeDaemon) -> None:
    """Ops whose work grows with the store ask for no timeout; the client's stays for others."""

    def late(args: dict[str, Any]) -> Any:
        time.sleep(0.5)
        return {"cancelled": 3}

    daemon.results["clear_queue"] = late
    with Client(daemon.path, timeout=0.1) as c:
        assert c.request("clear_queue", {}, None) == {"cancelled": 3}
        with pytest.raises(DaemonUnreachable, match=r"within 0\.1 s \(op clear_queue\)"):
            c.call("clear_queue")


def test_open_stream_yields_none_when_idle(daemon: FakeDaemon) -> None:
    daemon.silent.add("watch")
    with Client(daemon.path, timeout=None) as c:
        it = c.open_stream("watch", {"events": ["task"]}, idle=0.05)
        assert next(it) is None
        assert daemon.last("watch") == {"events": ["task"]}  # sent before the first yield


def test_follow_task_rechecks_with_get_when_idle(daemon: FakeDaemon) -> None:
    states = iter(["queued", "running", "completed"])
    daemon.results["get"] = lambda a: {"task": {"id": a["id"], "status": next(states)}}
    daemon.silent.add("watch")  # no events at all: only the idle re-checks see the changes
    with Client(daemon.path) as c:
        seen = [t["status"] for t in c.follow_task(7, idle=0.05)]
    assert seen == ["queued", "running", "completed"]


def test_follow_task_uses_watch_events(daemon: FakeDaemon) -> None:
    task = {"id": 7, "source": "a", "sync_type": "b", "status": "running"}
    daemon.results["get"] = {"task": task}
    daemon.streams["watch"] = [
        ({"event": "pool", "at": "x"}, True),
        ({"event": "task", "task": {**task, "id": 8, "status": "failed"}}, True),
        ({"event": "task", "task": {**task, "status": "failed", "exit_code": 2}}, True),
    ]
    with Client(daemon.path) as c:
        seen = list(c.follow_task(7, idle=5))
    assert [t["status"] for t in seen] == ["running", "failed"]
    assert seen[-1]["exit_code"] == 2
    assert daemon.ops.count("get") == 1


def test_reconnects_after_the_daemon_closed_an_idle_connection(daemon: FakeDaemon) -> None:
    daemon.results["ping"] = {}
    with Client(daemon.path) as c:
        c.call("ping")
        for conn in daemon._conns:
            conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 5
        while True:  # the first send may still succeed into a dying socket; retry is internal
            try:
                c.call("ping")
                break
            except DaemonUnreachable:
                assert time.monotonic() < deadline
    assert daemon.connections >= 2


# -- unreachable ----------------------------------------------------------------------------


def test_missing_socket_is_unreachable_with_path_and_hint(sock_dir: Path) -> None:
    path = sock_dir / "nope.sock"
    with pytest.raises(DaemonUnreachable) as info:
        Client(path, origin="from --socket").call("ping")
    msg = str(info.value)
    assert str(path) in msg and "from --socket" in msg
    assert "systemctl start syncd" in msg and "syncd --config PATH" in msg


def test_refused_socket_is_unreachable(sock_dir: Path) -> None:
    path = sock_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))  # bound, never listening: connect() is refused
    try:
        with pytest.raises(DaemonUnreachable, match="connection refused"):
            Client(path).call("ping")
    finally:
        s.close()


def _full_backlog(path: Path) -> tuple[socket.socket, list[socket.socket]]:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(0)
    fillers = []
    while True:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(str(path))
        except BlockingIOError:
            c.close()
            return srv, fillers
        fillers.append(c)


def test_connect_retries_eagain_until_the_backlog_drains(sock_dir: Path) -> None:
    srv, fillers = _full_backlog(sock_dir / "busy.sock")
    accepted: list[socket.socket] = []

    def drain() -> None:
        for _ in range(len(fillers) + 1):
            accepted.append(srv.accept()[0])

    timer = threading.Timer(0.3, drain)
    timer.start()
    try:
        c = Client(sock_dir / "busy.sock", connect_timeout=5)
        c._conn = c._connect()  # succeeds once the backlog has room again
        c.close()
    finally:
        timer.join()
        for s in [srv, *fillers, *accepted]:
            s.close()


def test_connect_gives_up_after_the_deadline(sock_dir: Path) -> None:
    srv, fillers = _full_backlog(sock_dir / "busy.sock")
    try:
        t0 = time.monotonic()
        with pytest.raises(DaemonUnreachable, match="busy"):
            Client(sock_dir / "busy.sock", connect_timeout=0.3).call("ping")
        assert 0.25 <= time.monotonic() - t0 < 3
    finally:
        for s in [srv, *fillers]:
            s.close()


# -- socket path rules ----------------------------------------------------------------------


@pytest.fixture
def no_system_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "run-syncd" / "syncd.sock"
    monkeypatch.setattr(paths, "SYSTEM_SOCKET", path)
    return path


def test_socket_path_precedence(tmp_path: Path, no_system_socket: Path) -> None:
    env = {"SYNCD_SOCKET": "/e/s.sock", "RUNTIME_DIRECTORY": "/r", "XDG_RUNTIME_DIR": "/x"}
    assert socket_path("/cli.sock", None, env) == Path("/cli.sock")
    assert socket_path(None, None, env) == Path("/e/s.sock")
    env.pop("SYNCD_SOCKET")
    assert locate_socket(None, None, env) == (Path("/r/syncd.sock"), "from $RUNTIME_DIRECTORY")
    env.pop("RUNTIME_DIRECTORY")
    assert locate_socket(None, None, env) == (Path("/x/syncd.sock"), "from $XDG_RUNTIME_DIR")
    env = {"STATE_DIRECTORY": "/s1:/s2"}
    assert socket_path(None, None, env) == Path("/s1/syncd.sock")
    assert socket_path(None, None, {"XDG_STATE_HOME": "/xs"}) == Path("/xs/syncd/syncd.sock")
    home = {"HOME": str(tmp_path)}
    assert socket_path(None, None, home) == tmp_path / ".local/state/syncd/syncd.sock"


def test_an_existing_socket_file_wins(tmp_path: Path, no_system_socket: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "x"), "HOME": str(tmp_path)}
    no_system_socket.parent.mkdir()
    no_system_socket.touch()
    # The systemd service's socket, invisible in a login shell's environment, is found.
    assert locate_socket(None, None, env) == (no_system_socket, "the systemd service's socket")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "syncd.sock").touch()
    assert socket_path(None, None, env) == tmp_path / "x" / "syncd.sock"


def test_socket_from_config_is_loaded_lazily(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    from syncd.config import load
    from syncd.config import model as config

    seen: list[Path] = []

    def fake_load(path: Path, *a: Any, **kw: Any) -> Any:
        seen.append(path)
        return SimpleNamespace(daemon=SimpleNamespace(socket=tmp_path / "c.sock"))

    monkeypatch.setattr(load, "load_config", fake_load)
    env = {"RUNTIME_DIRECTORY": "/r"}
    assert locate_socket(None, "/etc/x.toml", env) == (
        tmp_path / "c.sock",
        "from the config /etc/x.toml",
    )
    assert seen == [Path("/etc/x.toml")]
    assert socket_path("/cli.sock", "/etc/x.toml", env) == Path("/cli.sock")
    assert len(seen) == 1  # --socket wins without reading the config

    def broken(path: Path, *a: Any, **kw: Any) -> Any:
        raise config.ConfigError(str(path), [config.Problem("daemon.socket", "bad")])

    monkeypatch.setattr(load, "load_config", broken)
    with pytest.raises(ConfigUnreadable, match=r"daemon\.socket: bad"):
        socket_path(None, "/etc/x.toml", {})


def test_client_module_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, syncd.ctl.client, syncd.ctl.main\n"
        "heavy = {'sqlite_utils', 'psutil', 'sqlite3',"
        " 'syncd.config.model', 'syncd.store.facade'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
