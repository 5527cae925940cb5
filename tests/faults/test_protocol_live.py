"""Protocol attacks K1-K9 against a real daemon (RELIABILITY 2.4), each a smaller live version
of tests/test_server.py's fake-handler test, each followed by a ping from another client that
must answer within 100 ms. K6's 60 s idle timeout and K7's 10 s request deadline are
shortened in the daemon's process (DaemonProc.prelude) rather than waited for."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from syncd.ctl.client import Client
from tests.helpers.daemon import log_time
from tests.helpers.system import (
    Conn,
    DaemonProc,
    assert_responsive,
    reset_peak_rss,
    rss_bytes,
    wait_for,
)


def raw(d: DaemonProc, timeout: float = 15) -> socket.socket:
    """A raw connection; EAGAIN (a full listen backlog in a burst) is retried for 5 s, as
    syncctl does."""
    deadline = time.monotonic() + 5
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(str(d.socket))
            return s
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def read_line(s: socket.socket) -> dict[str, object]:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    reply: dict[str, object] = json.loads(buf)
    return reply


def closed(s: socket.socket) -> bool:
    """True once the daemon closes `s` (after any last error reply); False on a timeout."""
    try:
        while s.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_k1_ten_megabyte_line_is_refused_and_closed(make_daemon):
    d = make_daemon()
    assert d.proc is not None
    before = rss_bytes(d.proc.pid)
    reset_peak_rss(d.proc.pid)
    s = raw(d)
    sent = 0
    try:
        while sent < 10 << 20:
            s.sendall(b"x" * 65536)
            sent += 65536
    except (BrokenPipeError, ConnectionResetError):
        pass
    # Refused at 1 MiB: the daemon stops reading there, so the sender is cut off after
    # 1 MiB plus what the socket buffers hold (a few hundred KiB), never 10 MB.
    assert sent < 2 << 20, f"{sent} bytes were accepted"
    reply = read_line(s)
    assert reply["ok"] is False
    error = reply["error"]
    assert isinstance(error, dict) and error["code"] == "bad_request"
    assert "too long" in str(error["message"])
    assert closed(s)
    s.close()
    # /proc/<daemon pid>/status: the peak during the attack (a buffer freed with the
    # connection no longer shows in VmRSS) and what is left after it.
    peak = rss_bytes(d.proc.pid, "VmHWM") - before
    assert peak < 5 << 20, f"RSS grew {peak} bytes during the attack"
    assert rss_bytes(d.proc.pid) - before < 5 << 20
    assert_responsive(d)


def test_k2_garbage_lines_leave_the_connection_usable(make_daemon):
    d = make_daemon()
    s = raw(d)
    for line in [b"{not json", b"[1, 2]", b'"a string"', b'{"v": 1, "op": "ping\xff\xfe"}']:
        s.sendall(line + b"\n")
        reply = read_line(s)
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request", (line, reply)  # type: ignore[index]
    s.sendall(b'{"v": 1, "id": 7, "op": "ping", "args": {}}\n')
    assert read_line(s)["ok"] is True
    s.close()
    assert_responsive(d)


def test_k3_deep_huge_and_wide_json(make_daemon):
    d = make_daemon()
    wide = b",".join(b'"%x":0' % i for i in range(100_000))  # 100k keys, under 1 MiB
    attacks = [
        b"[" * 1000,
        b'{"v": 1, "id": ' + b"9" * 5000 + b', "op": "ping", "args": {}}',
        b'{"v": 1, "id": 1, "op": "ping", "args": {"n": ' + b"9" * 5000 + b"}}",
        b"{" + wide + b"}",
        b'{"v": 1, "id": 1, "op": "status", "args": {' + wide + b"}}",
    ]
    s = raw(d)
    for payload in attacks:
        assert len(payload) < 1 << 20  # each reaches the parser, not the line cap
        s.sendall(payload + b"\n")
        reply = read_line(s)
        error = reply["error"]
        assert isinstance(error, dict) and error["code"] in ("bad_request", "invalid_args")
        assert "Traceback" not in json.dumps(reply)
    s.sendall(b'{"v": 1, "id": 2, "op": "ping", "args": {}}\n')
    assert read_line(s)["ok"] is True  # each was answered on a connection that stays usable
    s.close()
    assert "Traceback" not in d.stderr()
    assert_responsive(d)


def test_k4_unknown_op_bad_args_and_version_echo_the_id(make_daemon):
    d = make_daemon()
    s = raw(d)
    cases = [
        ({"v": 1, "id": "a", "op": "no_such_op", "args": {}}, "unknown_op"),
        ({"v": 1, "id": "b", "op": "get", "args": {"id": "seven"}}, "invalid_args"),
        ({"v": 1, "id": "c", "op": "ping", "args": {"extra": 1}}, "invalid_args"),
        ({"v": 2, "id": "d", "op": "ping", "args": {}}, "unsupported_version"),
    ]
    for request, code in cases:
        s.sendall(json.dumps(request).encode() + b"\n")
        reply = read_line(s)
        assert reply["id"] == request["id"] and reply["error"]["code"] == code, reply  # type: ignore[index]
    s.sendall(json.dumps({"v": 1, "id": "i" * 5000, "op": "nope"}).encode() + b"\n")
    reply = read_line(s)
    assert len(json.dumps(reply["id"]).encode()) <= 258  # 256 B plus the quotes
    s.close()
    assert_responsive(d)


def test_k5_two_hundred_concurrent_clients(make_daemon):
    d = make_daemon()
    d.call("pause")  # so the one task stays queued for the count
    results: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            with Client(d.socket) as client:  # syncctl's client: retries EAGAIN for 5 s
                client.call("status")
                task = client.call("submit", source="alpha", sync_type="a1", params={"sleep": 1})
            with lock:
                results.append(task["task"]["id"])
        except Exception as exc:
            with lock:
                errors.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]
    assert len(results) == 200 and len(set(results)) == 1
    queued = d.call("list", status=["queued"])["tasks"]
    assert [t["id"] for t in queued] == [results[0]]
    assert_responsive(d)


# The daemon's 60 s idle timeout, shortened through its Server's defaults: long enough that
# opening 1000 connections and reading 744 refusals on a loaded machine stays well inside it.
IDLE = 10.0
SHORT_TIMEOUTS = (
    "from syncd.control.server import Server\n"
    "Server.__init__.__kwdefaults__.update(idle_timeout={idle}, request_timeout={request})"
)


@contextlib.contextmanager
def open_files(needed: int) -> Iterator[None]:
    """Room for `needed` descriptors in this process (its daemons inherit it): raise the
    soft RLIMIT_NOFILE up to the hard one for the test; fail, never skip, if it is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.fail(f"the test needs {needed} open files; the hard limit (ulimit -Hn) is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_k6_a_thousand_idle_connections(make_daemon):
    """1000 connections opened and held idle: the first 256 are served, the other 744 get
    `busy` and are closed; the held ones are closed by the idle timeout (not before); then
    a legitimate client gets through. Everything here runs as the daemon's own user, so
    the per-user share (K12) does not apply and all 256 slots fill."""
    with open_files(1000 + 256 + 256):  # ours, the daemon's, and headroom
        d = make_daemon(start=False)
        d.prelude = SHORT_TIMEOUTS.format(idle=IDLE, request=10.0)
        d.start()
        conns: list[tuple[float, socket.socket]] = []
        try:
            for _ in range(1000):
                conns.append((time.monotonic(), raw(d)))
            held, extra = conns[:256], conns[256:]
            for _, s in extra:
                reply = read_line(s)
                assert reply["error"]["code"] == "busy", reply  # type: ignore[index]
                assert closed(s)
            # Each held one is accepted and idle: no data, not closed. Only those opened
            # less than IDLE - 2 s ago are looked at: the daemon may close the others.
            checked = 0
            for opened, s in held:
                if time.monotonic() - opened < IDLE - 2.0:
                    s.setblocking(False)
                    with pytest.raises(BlockingIOError):
                        s.recv(1)
                    checked += 1
            assert checked > 0, "opening 1000 connections took longer than the idle timeout"
            # The refusal below needs every held connection still open: younger than IDLE.
            assert time.monotonic() - held[0][0] < IDLE - 1.0, "too slow to check the cap"
            busy = Conn(d.socket, timeout=10)  # all 256 slots taken: refused
            assert busy.read_reply()["error"]["code"] == "busy"
            busy.close()
            # The idle timeout closes every held connection (a bound far above IDLE, only
            # so a loaded machine cannot fail it), and none before its IDLE seconds.
            for opened, s in held:
                s.setblocking(True)
                s.settimeout(IDLE + 15.0)
                assert closed(s), "an idle connection was not closed"
                assert time.monotonic() - opened >= IDLE - 0.05
            assert_responsive(d)  # a legitimate client gets through
        finally:
            for _, s in conns:
                s.close()


def test_k7_slowloris_and_k8_slow_reader_are_cut_off(make_daemon):
    d = make_daemon(daemon={"log_max_bytes": 64 << 20})
    task = d.call(
        "submit", source="alpha", sync_type="a1", params={"output-bytes": 20 << 20, "sleep": 60}
    )["task"]
    log = d.state_dir / "logs" / f"{task['id']}.log"
    wait_for(lambda: log.exists() and log.stat().st_size > 20 << 20, 30, "20 MiB of output")
    slow = raw(d, timeout=30)
    slow.sendall(b"{")  # K7: one byte, then nothing
    reader = raw(d, timeout=30)  # K8: follows the log and never reads
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.sendall(
        json.dumps(
            {"v": 1, "id": 1, "op": "logs", "args": {"id": task["id"], "follow": True}}
        ).encode()
        + b"\n"
    )
    start = time.monotonic()
    for _ in range(5):  # meanwhile other clients are served at once
        assert_responsive(d)
    wait_for(lambda: "did not read" in d.stderr(), 30, "the slow reader to be disconnected")
    assert closed(slow), "the slowloris connection is still open"
    assert time.monotonic() - start < 25
    received = 0
    while True:
        chunk = reader.recv(1 << 20)
        if not chunk:
            break
        received += len(chunk)
    assert received < 20 << 20, "the slow reader was not cut off"
    slow.close()
    reader.close()
    assert_responsive(d)
    assert d.task(task["id"])["status"] == "running"  # dispatch and the task are unaffected


def drain(s: socket.socket) -> bytes:
    """What is still readable from a connection the peer closed (a reset ends it too)."""
    data = b""
    s.settimeout(5.0)
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk


def test_k7_a_trickle_is_cut_at_the_deadline_from_its_first_byte(make_daemon):
    """One byte at a time, faster than the deadline (the daemon's 10 s shortened to 2 s
    through its Server's defaults): each byte must not extend it, so the connection is
    closed REQUEST seconds after the FIRST byte, as the daemon's log line shows."""
    request = 2.0
    d = make_daemon(start=False)
    d.prelude = SHORT_TIMEOUTS.format(idle=60.0, request=request)
    d.start()
    s = raw(d, timeout=30)
    first = time.time()  # the daemon sees the first byte after this
    replies = b""
    for byte in b'{"v": 1, "id": 1, "op": "ping", "args": {}' + b" " * 1000:
        if time.time() - first > request + 4.0:
            pytest.fail("the trickle was not cut off: each byte extends the deadline")
        try:
            s.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break  # cut: its answer may still wait in our receive buffer
        # Pace: a byte every 0.3 s (not a divisor of the deadline, so the cut and a pace
        # step rarely meet), or the daemon's answer.
        s.settimeout(0.3)
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:  # a byte sent just before the close made it a reset
            break
        if not chunk:
            break
        replies += chunk
    else:
        pytest.fail("the trickle was never cut off")
    replies += drain(s)
    reply = json.loads(replies.split(b"\n")[0])
    assert reply["error"]["code"] == "bad_request"
    assert f"not complete within {request:g} s of its first byte" in reply["error"]["message"]
    cut = log_time(d.stderr(), "incomplete after")
    # From the first byte (ms log resolution); the upper bound only absorbs a loaded
    # machine's wake-up: a deadline moved by the trickle would never fire at all.
    assert request - 0.01 <= cut - first <= request + 1.5, cut - first
    s.close()
    assert_responsive(d)


def test_k9_client_gone_right_after_submit(make_daemon):
    d = make_daemon()
    d.call("pause")
    for n in range(20):
        s = raw(d)
        args = {"source": "alpha", "sync_type": "a1", "params": {"exit": n}}
        request = {"v": 1, "id": n, "op": "submit", "args": args}
        s.sendall(json.dumps(request).encode() + b"\n")
        s.close()
    # The whole line reached the daemon before the close, so each submit is handled.
    wait_for(lambda: d.stderr().count("submit by ") == 20, 20, "20 submits to be handled")
    tasks = wait_for(
        lambda: (lambda t: t if len(t) == 20 else None)(
            d.call("list", status=["queued"], limit=100)["tasks"]
        ),
        20,
        "20 committed tasks",
    )
    for task in tasks:  # whatever was committed is whole
        assert task["source"] == "alpha" and task["argv"][-1].startswith("--exit=")
        assert d.task(task["id"]) == task
    assert_responsive(d)
