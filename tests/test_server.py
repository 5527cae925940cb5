"""The control socket against real Unix sockets and a fake handler over the real OPS table:
RELIABILITY K1-K9, A1, A3, A5, pipelining, stale/live socket files, streams, shutdown.
After each attack a ping from another client must answer within 100 ms."""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from syncd.control.auth import Authorizer, Peer
from syncd.control.server import Server, SocketInUse, Stream
from syncd.ctl.client import Client
from tests.helpers.daemon import wait_for
from tests.helpers.server import OPS, Conn, FakeHandler, FakeStream, peer_of

PING_BUDGET = 0.1


def assert_responsive(path: Path) -> None:
    start = time.monotonic()
    c = Conn(path)
    try:
        reply = c.call("ping")
    finally:
        c.close()
    elapsed = time.monotonic() - start
    assert reply["ok"] is True
    assert elapsed < PING_BUDGET, f"ping took {elapsed * 1000:.0f} ms"


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="sd"))  # AF_UNIX paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def handler() -> FakeHandler:
    return FakeHandler()


@contextmanager
def running(server: Server) -> Iterator[Server]:
    server.bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(5)
        assert not thread.is_alive()


@pytest.fixture
def serve(sock_dir: Path, handler: FakeHandler) -> Iterator[Callable[..., Server]]:
    """serve(**server_kwargs) → a bound, serving Server on sock_dir/s.sock."""
    stack: list[Any] = []

    def start(authorizer: Authorizer | None = None, **kw: Any) -> Server:
        server = Server(
            sock_dir / "s.sock", 0o660, handler, authorizer or Authorizer(None), ops=OPS, **kw
        )
        cm = running(server)
        stack.append(cm)
        return cm.__enter__()

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


# -- basics ---------------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(serve: Callable[..., Server]) -> None:
    srv = serve()
    c = Conn(srv.path)
    c.send(
        b'{"v":1,"id":1,"op":"ping"}\n'
        b'{"v":1,"id":2,"op":"nope"}\n'
        b'\n{"v":1,"id":3,"op":"submit","args":{"source":"a"}}\n'
    )
    replies = [c.reply() for _ in range(3)]
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert [r["ok"] for r in replies] == [True, False, True]
    assert replies[1]["error"]["code"] == "unknown_op"
    assert replies[2]["result"]["task"] == {"id": 1}


def test_pipelined_submits_reach_the_handler_as_groups(
    serve: Callable[..., Server], handler: FakeHandler
) -> None:
    """Complete submit lines already buffered behind a submit go to handle_batch together
    (one commit); a line that is not a well-formed submit ends the group, in order."""
    srv = serve()
    c = Conn(srv.path)
    submit = b'{"v":1,"id":%d,"op":"submit","args":{"source":"a"}}\n'
    c.send(
        b"".join(submit % i for i in range(1, 6))
        + b'{"v":1,"id":6,"op":"ping"}\n'
        + b'{"v":1,"id":7,"op":"submit","args":{"source":7}}\n'  # invalid: its own error
        + b"".join(submit % i for i in range(8, 11))
    )
    replies = [c.reply() for _ in range(10)]
    assert [r["id"] for r in replies] == list(range(1, 11))
    assert [r["ok"] for r in replies] == [True] * 6 + [False] + [True] * 3
    assert replies[6]["error"]["code"] == "invalid_args"
    assert [r["result"]["task"]["id"] for r in replies[:5]] == [1, 2, 3, 4, 5]
    assert [r["result"]["task"]["id"] for r in replies[7:]] == [6, 7, 8]
    assert handler.groups and max(handler.groups) > 1 and sum(handler.groups) <= 8


def test_errors_map_to_codes_and_hide_internals(
    serve: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    srv = serve()
    c = Conn(srv.path)
    r = c.call("get", id=9)
    assert r["error"] == {"code": "unknown_task", "message": "no task 9", "details": {"id": 9}}
    with caplog.at_level(logging.ERROR):
        r = c.call("status", _id="s", verbose=True)
    assert r["id"] == "s" and r["error"]["code"] == "internal"
    assert "secret" not in json.dumps(r) and "Traceback" not in json.dumps(r)
    assert "secret-internal-detail" in caplog.text  # the traceback is in the daemon log
    assert c.call("config_get")["error"]["code"] == "internal"  # result not JSON-able
    assert c.call("ping")["ok"] is True  # the same connection still works


def test_a_slow_handler_never_delays_another_client(
    serve: Callable[..., Server], handler: FakeHandler
) -> None:
    srv = serve()
    slow = Conn(srv.path)
    slow.send({"op": "explain", "id": 1, "args": {"id": 1}})
    try:
        for _ in range(3):
            assert_responsive(srv.path)
    finally:
        handler.release.set()
    assert slow.reply()["result"] == {"reason": "none"}


# -- K1 .. K9 -------------------------------------------------------------------------------


def test_k1_line_over_1mib_is_refused_and_closed(serve: Callable[..., Server]) -> None:
    srv = serve()
    proc = psutil.Process()
    rss_before = proc.memory_info().rss
    c = Conn(srv.path)
    chunk = b"a" * 65536

    def pump() -> None:  # 10 MB without a newline, from one reused 64 KiB buffer
        try:
            for _ in range(160):
                c.sock.sendall(chunk)
        except OSError:
            pass

    sender = threading.Thread(target=pump)
    sender.start()
    reply = c.reply(timeout=10)
    assert reply["error"]["code"] == "bad_request"
    assert "line too long" in reply["error"]["message"]
    assert c.closed_within(5)
    sender.join(10)
    assert proc.memory_info().rss - rss_before < 5 * 1024 * 1024
    wait_for(lambda: srv.connection_count == 0, what="the connection to go")
    assert_responsive(srv.path)


def test_k1_pipelined_lines_before_an_oversized_one_are_answered(
    serve: Callable[..., Server],
) -> None:
    srv = serve(max_line=1000)
    c = Conn(srv.path)
    # The tail after the long line is a valid request: it must never be run.
    c.send(
        b'{"id":1,"op":"ping"}\n'
        + b"x" * 1500
        + b'\n{"id":2,"op":"submit","args":{"source":"a"}}\n'
    )
    assert c.reply()["id"] == 1
    assert "line too long" in c.reply()["error"]["message"]
    assert c.closed_within(2)
    assert_responsive(srv.path)


@pytest.mark.parametrize(
    "line", [b"{nope", b"[1,2,3]", b'"just a string"', b"\xff\xfe\xfd", b"\xc3(", b"null"]
)
def test_k2_garbage_gets_bad_request_and_the_connection_stays(
    serve: Callable[..., Server], line: bytes
) -> None:
    srv = serve()
    c = Conn(srv.path)
    c.send(line + b"\n")
    reply = c.reply()
    assert reply == {"id": None, "ok": False, "error": reply["error"]}
    assert reply["error"]["code"] == "bad_request"
    assert c.call("ping", _id="after")["id"] == "after"
    assert_responsive(srv.path)


def test_k3_resource_attacks(serve: Callable[..., Server]) -> None:
    srv = serve()
    c = Conn(srv.path)
    keys = ",".join(f'"{i:x}":0' for i in range(100_000)).encode()
    attacks = [
        (b"[" * 1000, "bad_request"),
        (b'{"op":"ping","id":' + b"[" * 1000 + b"]" * 1000 + b"}", "bad_request"),
        (b'{"op":"ping","id":' + b"7" * 5000 + b"}", "bad_request"),
        (b"{" + keys + b"}", "bad_request"),
        (b'{"op":"ping","args":{' + keys + b"}}", "invalid_args"),
    ]
    for line, code in attacks:
        assert len(line) < srv.max_line
        c.send(line + b"\n")
        reply = c.reply()
        assert reply["error"]["code"] == code, reply
        assert "Traceback" not in json.dumps(reply)
    assert c.call("ping")["ok"] is True
    assert_responsive(srv.path)


def test_k4_unknown_op_bad_args_version_and_id_echo(serve: Callable[..., Server]) -> None:
    srv = serve()
    c = Conn(srv.path)
    long_id = "i" * 5000
    cases = [
        ({"v": 1, "id": long_id, "op": "rm_rf"}, "unknown_op"),
        ({"v": 1, "id": long_id, "op": "submit", "args": {"source": 1}}, "invalid_args"),
        ({"v": 1, "id": long_id, "op": "submit", "args": {"source": "a", "x": 1}}, "invalid_args"),
        ({"v": 2, "id": long_id, "op": "ping"}, "unsupported_version"),
    ]
    for request, code in cases:
        c.send(request)
        reply = c.reply()
        assert reply["error"]["code"] == code
        assert reply["id"] == "i" * 256
    c.send({"id": {"nested": list(range(200))}, "op": "ping"})
    echoed = c.reply()["id"]
    assert isinstance(echoed, str) and len(echoed.encode()) <= 256
    assert_responsive(srv.path)


def test_k5_200_concurrent_clients(serve: Callable[..., Server], handler: FakeHandler) -> None:
    """With syncctl's own client, which retries a connect refused with EAGAIN (backlog full)."""
    srv = serve()
    n = 200
    barrier = threading.Barrier(n)
    results: list[tuple[Any, Any]] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            barrier.wait(10)
            with Client(srv.path, timeout=20) as c:
                results.append((c.call("status"), c.call("submit", source="hubspot")))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    assert len(results) == n
    assert all(status == {"state": "available"} for status, _ in results)
    assert sorted(sub["task"]["id"] for _, sub in results) == list(range(1, n + 1))
    assert len(handler.submits) == n
    assert_responsive(srv.path)


def test_k6_connection_limit_and_idle_timeout(serve: Callable[..., Server]) -> None:
    srv = serve(idle_timeout=3.0)
    held = [Conn(srv.path) for _ in range(300)]
    try:
        busy = held[256:]
        for c in busy:
            reply = c.reply()
            assert reply["error"]["code"] == "busy"
            assert c.closed_within(2)
        assert srv.connection_count == 256
        for c in held[:256]:  # idle and still open: nothing to read yet
            c.sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                c.sock.recv(1)
        # At the idle timeout every held connection is closed; then a client gets through.
        for c in held[:256]:
            assert c.closed_within(6)
        wait_for(lambda: srv.connection_count == 0, what="idle connections to close")
        assert_responsive(srv.path)
    finally:
        for c in held:
            c.close()


def test_k7_slowloris_is_cut_at_the_request_deadline(serve: Callable[..., Server]) -> None:
    srv = serve(request_timeout=0.5, idle_timeout=30)
    c = Conn(srv.path)
    start = time.monotonic()
    drip = iter(b'{"v":1,"id":1,"op":"ping"' + b" " * 100)
    closed = False
    for byte in drip:
        try:
            c.send(bytes([byte]))
        except OSError:
            closed = True
            break
        # Pace the drip by waiting for the server to give up on us.
        if c.closed_within(0.1):
            closed = True
            break
        assert_responsive(srv.path)
    elapsed = time.monotonic() - start
    assert closed
    assert 0.4 <= elapsed < 2.0


def test_k7_deadline_is_per_request_and_reports_why(serve: Callable[..., Server]) -> None:
    srv = serve(request_timeout=0.5, idle_timeout=30)
    c = Conn(srv.path)
    for i in range(4):  # complete requests spread over more than one deadline are fine
        assert c.call("ping", _id=i)["ok"] is True
        assert not c.closed_within(0.2)
    c.send(b'{"id": 9')
    reply = c.reply(timeout=2)
    assert reply["error"]["code"] == "bad_request"
    assert "not complete within 0.5 s" in reply["error"]["message"]
    assert c.closed_within(1)


def test_k8_stream_reader_that_never_reads_is_disconnected(
    serve: Callable[..., Server], handler: FakeHandler, caplog: pytest.LogCaptureFixture
) -> None:
    srv = serve(drain_timeout=0.5)
    handler.next_stream = lambda: FakeStream(None, pad=64 * 1024)
    stuck = Conn(srv.path)
    stuck.send({"op": "watch", "id": "w"})
    wait_for(lambda: handler.streams, what="the stream to start")
    stream = handler.streams[0]
    assert_responsive(srv.path)
    with caplog.at_level(logging.WARNING):
        wait_for(stream.closed.is_set, timeout=5, what="the stream to be closed")
        wait_for(lambda: srv.connection_count == 0, what="the reader to be dropped")
    assert "did not read" in caplog.text
    # What was buffered for it stays bounded (a few MiB at most, not everything produced).
    assert stream.sent < 100
    assert_responsive(srv.path)
    stuck.close()


@pytest.mark.parametrize("partial", [False, True])
def test_k9_client_disconnects_right_after_sending(
    serve: Callable[..., Server], handler: FakeHandler, partial: bool
) -> None:
    srv = serve()
    c = Conn(srv.path)
    line = json.dumps({"op": "submit", "id": 1, "args": {"source": "a"}}).encode() + b"\n"
    c.send(line[:20] if partial else line)
    c.close()
    if not partial:  # read and run even though nobody waits for the reply
        wait_for(lambda: len(handler.submits) == 1, what="the submit to run")
    assert_responsive(srv.path)  # accepted after ours, so ours was accepted too
    wait_for(lambda: srv.connection_count == 0, what="the connection to go")
    assert len(handler.submits) == (0 if partial else 1)


# -- streams --------------------------------------------------------------------------------


def test_stream_replies_then_connection_is_reused(
    serve: Callable[..., Server], handler: FakeHandler
) -> None:
    srv = serve()
    handler.next_stream = lambda: FakeStream(2, final=True)
    c = Conn(srv.path)
    c.send({"op": "logs", "id": "L", "args": {"id": 4, "follow": True}})
    replies = [c.reply() for _ in range(3)]
    assert [r["more"] for r in replies] == [True, True, False]
    assert {r["id"] for r in replies} == {"L"}
    assert replies[2]["result"] == {"status": "completed", "exit_code": 0}
    assert c.call("ping")["ok"] is True
    assert handler.streams[0].closed.is_set()


def test_stream_of_a_vanished_client_is_closed(
    serve: Callable[..., Server], handler: FakeHandler
) -> None:
    srv = serve()
    c = Conn(srv.path)
    c.send({"op": "watch", "id": 1, "args": {"events": ["task"]}})
    assert [c.reply()["more"] for _ in range(3)] == [True, True, True]
    c.close()
    wait_for(handler.streams[0].closed.is_set, what="the stream to be closed")
    wait_for(lambda: srv.connection_count == 0, what="the connection to go")


def test_shutdown_ends_streams_and_idle_connections_quickly(
    sock_dir: Path, handler: FakeHandler
) -> None:
    server = Server(sock_dir / "s.sock", 0o600, handler, Authorizer(None), ops=OPS)
    with running(server):
        watcher = Conn(server.path)
        watcher.send({"op": "watch", "id": 1})
        for _ in range(3):
            watcher.reply()
        idle = [Conn(server.path) for _ in range(5)]
        wait_for(lambda: server.connection_count == 6, what="connections")
        start = time.monotonic()
        server.shutdown()
        assert time.monotonic() - start < 1.5
    assert watcher.reply()["more"] is False
    assert watcher.closed_within(1)
    assert all(c.closed_within(1) for c in idle)
    assert handler.streams[0].closed.is_set()
    assert not server.path.exists()


# -- A1: authorization ----------------------------------------------------------------------

ALICE = Peer(pid=10, uid=1001, gid=1001, user="alice")


def fake_groups(groups: dict[int, list[int]]) -> Callable[[int], list[int]]:
    return lambda uid: groups.get(uid, [])


def test_a1_authorizer_rules() -> None:
    groups = {"syncd-ctl": 500}
    auth = Authorizer(
        "syncd-ctl",
        daemon_uid=999,
        resolve_group=groups.get,
        groups_of=fake_groups({1002: [1002, 500], 1003: [1003, 42]}),
    )
    assert auth.may_mutate(Peer(1, 0, 0, "root"))
    assert auth.may_mutate(Peer(1, 999, 999, "syncd"))
    assert not auth.may_mutate(ALICE)
    assert auth.may_mutate(Peer(1, 1002, 1002, "bob"))  # supplementary group
    assert auth.may_mutate(Peer(1, 1004, 500, "carol"))  # primary gid of the process
    assert not auth.may_mutate(Peer(1, 1003, 1003, "dave"))
    nobody_extra = Authorizer("no-such-group", daemon_uid=999, resolve_group=groups.get)
    assert not nobody_extra.may_mutate(Peer(1, 1004, 500, "carol"))
    assert not Authorizer(None, daemon_uid=999).may_mutate(Peer(1, 1002, 500, "bob"))


def test_a1_authorizer_with_the_real_user_database() -> None:
    users = [u for u in pwd.getpwall() if u.pw_uid not in (0, os.getuid())]
    if not users:
        pytest.skip("no unprivileged user in the user database")
    user = users[0]
    group = grp.getgrgid(user.pw_gid).gr_name
    auth = Authorizer(group)
    # The user's process, whatever gid it runs with, is a member via the user database.
    assert auth.may_mutate(Peer(1, user.pw_uid, 65534, user.pw_name))
    outsiders = [u for u in users if user.pw_gid not in os.getgrouplist(u.pw_name, u.pw_gid)]
    if outsiders:
        o = outsiders[0]
        assert not auth.may_mutate(Peer(1, o.pw_uid, o.pw_gid, o.pw_name))
    # A uid with no passwd entry has no groups to borrow, even under a borrowed name.
    assert not auth.may_mutate(Peer(1, 54321, 65534, user.pw_name))
    assert not Authorizer("no-such-group-xyz").may_mutate(
        Peer(1, user.pw_uid, user.pw_gid, user.pw_name)
    )


class DenyAll(Authorizer):
    def may_mutate(self, peer: Peer) -> bool:
        return False


def test_a1_forbidden_over_the_socket_and_logged(
    serve: Callable[..., Server], handler: FakeHandler, caplog: pytest.LogCaptureFixture
) -> None:
    srv = serve(authorizer=DenyAll("syncd-ctl"))
    c = Conn(srv.path)
    me = peer_of(c.sock)  # our own credentials, as the server sees them
    with caplog.at_level(logging.INFO):
        mutations: list[tuple[str, dict[str, Any]]] = [
            ("submit", {"source": "a"}),
            ("cancel", {"ids": [1]}),
            ("config_set", {"max_workers": 2}),
            ("reset_state", {"force": True}),
        ]
        for op, args in mutations:
            reply = c.call(op, **args)
            assert reply["error"]["code"] == "forbidden", reply
            assert "syncd-ctl" in reply["error"]["message"]
        assert handler.submits == []
        assert c.call("ping")["ok"] and c.call("status")["ok"]  # read-only ops are open
    assert f"forbidden: submit from user {me.user} (uid {me.uid}" in caplog.text


def test_a1_allowed_mutations_are_logged_with_the_user(
    serve: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    srv = serve()
    c = Conn(srv.path)
    with caplog.at_level(logging.INFO, logger="syncd"):
        assert c.call("submit", source="a")["ok"]
        assert c.call("ping")["result"]["user"] == peer_of(c.sock).user
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"submit by {peer_of(c.sock).user} (uid ") for m in lines)
    assert not any(m.startswith("ping by") for m in lines)


def test_a5_client_cannot_pass_argv_cwd_env_or_command(
    serve: Callable[..., Server], handler: FakeHandler
) -> None:
    srv = serve()
    c = Conn(srv.path)
    for field in ("argv", "cwd", "env", "command"):
        reply = c.call("submit", source="a", **{field: ["/bin/sh", "-c", "id"]})
        assert reply["error"]["code"] == "invalid_args"
        assert reply["error"]["details"]["unknown"] == [field]
    assert handler.submits == []


# -- A3 and the socket file -----------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o660, 0o600])
def test_a3_socket_appears_only_with_its_final_mode(
    sock_dir: Path, handler: FakeHandler, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    path = sock_dir / "run" / "syncd.sock"
    seen: list[tuple[str, int, bool]] = []
    real_rename = os.rename

    def spy(src: Any, dst: Any) -> None:
        seen.append((str(src), stat.S_IMODE(os.stat(src).st_mode), os.path.exists(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", spy)
    umask = os.umask(0o022)
    os.umask(umask)
    group = grp.getgrgid(os.getgid()).gr_name
    server = Server(path, mode, handler, Authorizer(None), ops=OPS, group=group)
    server.bind()
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == mode
        assert st.st_gid == os.getgid()
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o750
        (src, src_mode, dst_existed) = seen[0]
        assert Path(src).parent == path.parent and src_mode == mode and not dst_existed
        assert sorted(p.name for p in path.parent.iterdir()) == ["syncd.sock"]
        assert os.umask(umask) == umask  # restored
    finally:
        server.shutdown()
    assert not path.exists()


def test_stale_socket_file_is_replaced(sock_dir: Path, handler: FakeHandler) -> None:
    path = sock_dir / "s.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: a crashed daemon's leftover
    with running(Server(path, 0o660, handler, Authorizer(None), ops=OPS)) as srv:
        assert_responsive(srv.path)


def test_live_daemon_is_never_displaced(serve: Callable[..., Server], handler: FakeHandler) -> None:
    first = serve()
    inode = os.stat(first.path).st_ino
    second = Server(first.path, 0o660, handler, Authorizer(None), ops=OPS)
    with pytest.raises(SocketInUse, match=f"pid {os.getpid()}"):
        second.bind()
    second.shutdown()  # never bound: must not touch the live socket file
    assert os.stat(first.path).st_ino == inode
    assert_responsive(first.path)


def test_silent_listener_and_non_socket_are_left_alone(
    sock_dir: Path, handler: FakeHandler
) -> None:
    path = sock_dir / "s.sock"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))
    other.listen(1)  # accepts (backlog) but never answers
    try:
        with pytest.raises(SocketInUse, match="did not answer"):
            Server(path, 0o660, handler, Authorizer(None), ops=OPS, probe_timeout=0.3).bind()
        assert path.exists()
    finally:
        other.close()
    plain = sock_dir / "file"
    plain.write_text("keep me")
    with pytest.raises(SocketInUse, match="not a socket"):
        Server(plain, 0o660, handler, Authorizer(None), ops=OPS).bind()
    assert plain.read_text() == "keep me"


def test_shutdown_leaves_a_socket_file_that_is_not_ours(
    sock_dir: Path, handler: FakeHandler
) -> None:
    path = sock_dir / "s.sock"
    server = Server(path, 0o660, handler, Authorizer(None), ops=OPS)
    with running(server):
        os.rename(path, sock_dir / "moved.sock")
        path.write_text("someone else's")
    assert path.read_text() == "someone else's"


def test_stream_protocol_is_structural() -> None:
    assert isinstance(FakeStream(1), Stream)
    assert not isinstance({"a": 1}, Stream)
