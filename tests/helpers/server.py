"""A control server with a fake handler over the real op registry, and a raw connection to
it: the socket layer tested without a daemon."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from syncd.control.auth import Authorizer, Peer, peer_credentials, user_name
from syncd.control.ops.table import registry
from syncd.control.protocol import Request
from syncd.core.errors import SyncdError
from syncd.core.models import ErrorCode

OPS = registry()

__all__ = ["OPS", "Authorizer", "Conn", "FakeHandler", "FakeStream", "peer_of"]


class FakeStream:
    """watch-like: `count` events of `pad` bytes (None = endless), then idle ticks until
    closed; with `final`, a last item with more=False instead."""

    def __init__(self, count: int | None, pad: int = 10, final: bool = False):
        self.count, self.pad, self.final = count, pad, final
        self.closed = threading.Event()
        self.sent = 0

    def __iter__(self) -> Iterator[tuple[dict[str, Any], bool] | None]:
        while not self.closed.is_set():
            if self.count is None or self.sent < self.count:
                self.sent += 1
                yield {"event": "task", "n": self.sent, "pad": "x" * self.pad}, True
            elif self.final:
                yield {"status": "completed", "exit_code": 0}, False
                return
            else:
                self.closed.wait(0.05)
                yield None

    def close(self) -> None:
        self.closed.set()


class FakeHandler:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submits: list[dict[str, Any]] = []
        self.groups: list[int] = []
        self.streams: list[FakeStream] = []
        self.release = threading.Event()
        self.next_stream: Callable[[], FakeStream] = lambda: FakeStream(3)

    def handle(self, request: Request, peer: Peer) -> Any:
        op, args = request.op, request.args
        if op == "ping":
            return {"pid": os.getpid(), "user": peer.user}
        if op == "submit":
            with self.lock:
                self.submits.append(args)
                return {"task": {"id": len(self.submits)}, "coalesced": False}
        if op == "status":
            if args["verbose"]:
                raise RuntimeError("secret-internal-detail")
            return {"state": "available"}
        if op == "get":
            raise SyncdError(ErrorCode.UNKNOWN_TASK, f"no task {args['id']}", {"id": args["id"]})
        if op == "explain":  # a slow op: blocks until the test releases it
            self.release.wait(10)
            return {"reason": "none"}
        if op == "config_get":
            return {"not json": object()}
        if op in ("watch", "logs"):
            stream = self.next_stream()
            self.streams.append(stream)
            return stream
        return {"op": op}

    def handle_batch(self, requests: list[Request], peer: Peer) -> list[Any]:
        with self.lock:
            self.groups.append(len(requests))
        out: list[Any] = []
        for request in requests:
            try:
                out.append(self.handle(request, peer))
            except SyncdError as exc:
                out.append(exc)
        return out


def peer_of(sock: socket.socket) -> Peer:
    """Our own credentials, as the server sees them."""
    pid, uid, gid = peer_credentials(sock)
    return Peer(pid, uid, gid, user_name(uid))


class Conn:
    def __init__(self, path: Path, timeout: float = 5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))  # blocking: waits for room in the listen backlog
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data: bytes | dict[str, Any]) -> None:
        if isinstance(data, dict):
            data = json.dumps(data).encode() + b"\n"
        self.sock.sendall(data)

    def reply(self, timeout: float = 5.0) -> dict[str, Any]:
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; unread {self.buf[:100]!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        out: dict[str, Any] = json.loads(line)
        return out

    def call(self, op: str, _id: Any = 1, **args: Any) -> dict[str, Any]:
        self.send({"v": 1, "id": _id, "op": op, "args": args})
        return self.reply()

    def closed_within(self, timeout: float) -> bool:
        """True once the server closed the connection (EOF or reset), reading past data."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                return False
            except OSError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()
