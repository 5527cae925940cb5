"""systemd's notify protocol: the Notifier on its own (addresses, no-op, watchdog interval),
then a real daemon talking to a datagram socket that plays systemd."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.daemon.sdnotify import DEFAULT_WATCHDOG_SECONDS, Notifier, watchdog_interval
from tests.helpers.daemon import Conn, wait_for


class FakeSystemd:
    """An AF_UNIX datagram socket collecting notify messages, as systemd's would."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages: list[tuple[float, str]] = []

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096).decode()
        except TimeoutError:  # socket.timeout on 3.10 is an alias
            return None
        self.messages.append((time.monotonic(), data))
        return data

    def wait_for(self, prefix: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.receive(max(0.01, deadline - time.monotonic()))
            if message is not None and message.startswith(prefix):
                return message
        raise AssertionError(f"no {prefix} within {timeout}s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(str(tmp_path / "notify.sock"))
    yield fake
    fake.close()


# -- the Notifier --------------------------------------------------------------------------
def test_path_address_receives_each_message(fake_systemd):
    n = Notifier(fake_systemd.sock.getsockname())
    assert n.enabled
    assert n.ready("0/2 running, 0 queued")
    assert fake_systemd.receive(2) == "READY=1\nSTATUS=0/2 running, 0 queued"
    assert n.watchdog() and fake_systemd.receive(2) == "WATCHDOG=1"
    assert n.stopping() and fake_systemd.receive(2) == "STOPPING=1"
    assert n.reloading() and fake_systemd.receive(2) == "RELOADING=1"
    assert n.status("busy") and fake_systemd.receive(2) == "STATUS=busy"


def test_abstract_address_with_at_sign():
    name = f"syncd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(2)
        assert Notifier("@" + name).watchdog("1/2 running, 0 queued")
        assert listener.recv(4096) == b"WATCHDOG=1\nSTATUS=1/2 running, 0 queued"


def test_without_notify_socket_it_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False


def test_a_vanished_socket_is_logged_not_raised(tmp_path, caplog):
    n = Notifier(str(tmp_path / "gone.sock"))
    assert n.ready() is False
    assert "sd_notify 'READY=1' failed" in caplog.text


def test_from_environ_removes_the_variables_children_must_not_inherit():
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1", "A": "b"}
    n = Notifier.from_environ(env)
    assert env == {"A": "b"}
    assert n.address == "\0x"
    assert n.watchdog_interval == DEFAULT_WATCHDOG_SECONDS  # WATCHDOG_PID is not us


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 10.0),
        ({"WATCHDOG_USEC": "30000000"}, 10.0),  # WatchdogSec=30: never less often than 10 s
        ({"WATCHDOG_USEC": "1000000"}, 0.5),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4242"}, 0.5),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4243"}, 10.0),
        ({"WATCHDOG_USEC": "junk"}, 10.0),
        ({"WATCHDOG_USEC": "0"}, 10.0),
        ({"WATCHDOG_USEC": "10"}, 0.05),
    ],
)
def test_watchdog_interval(env, expected):
    assert watchdog_interval(env, pid=4242) == pytest.approx(expected)


# -- a real daemon -------------------------------------------------------------------------
def test_daemon_notifies_ready_watchdog_status_and_stopping(make_daemon, fake_systemd):
    d = make_daemon(start=False)
    d.env["NOTIFY_SOCKET"] = fake_systemd.sock.getsockname()
    d.env["WATCHDOG_USEC"] = "600000"  # pings every 0.3 s
    d.start(wait=False)

    ready = fake_systemd.wait_for("READY=1")
    # READY=1 comes only once the socket accepts: a client connecting now is answered.
    conn = Conn(d.socket, timeout=10)
    try:
        assert conn.call("ping")["pid"] == d.proc.pid
    finally:
        conn.close()
    assert "STATUS=0/2 running, 0 queued" in ready

    d.call("pause")
    d.call("submit", source="alpha", sync_type="a1", params={"sleep": 1})
    beats = [fake_systemd.wait_for("WATCHDOG=1", 10) for _ in range(3)]
    assert all(b.startswith("WATCHDOG=1\nSTATUS=") for b in beats)
    # The pool summary follows the pool: the queued task shows up in a later ping.
    wait_for(
        lambda: "STATUS=0/2 running, 1 queued" in fake_systemd.wait_for("WATCHDOG=1", 10),
        10,
        "a watchdog ping with the new pool summary",
    )
    stamps = [t for t, m in fake_systemd.messages if m.startswith("WATCHDOG=1")]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps and max(gaps) < 3.0, f"watchdog gaps {gaps}: not derived from WATCHDOG_USEC"

    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    fake_systemd.wait_for("STOPPING=1", 15)
    assert d.stop() == 0
