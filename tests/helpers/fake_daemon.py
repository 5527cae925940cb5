"""A fake daemon on a real Unix socket: canned results per op, every request recorded."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], Any]


class FakeError(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.error: dict[str, Any] = {"code": code, "message": message}
        if details is not None:
            self.error["details"] = details


class FakeDaemon:
    """Answers canned results per op and records every request it reads.

    `results[op]` is a value or a callable(args); `streams[op]` is a list of
    (result, more) frames sent in order; an op in `silent` is never answered."""

    def __init__(self, path: Path):
        self.path = path
        self.requests: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {}
        self.streams: dict[str, list[tuple[dict[str, Any], bool]]] = {}
        self.silent: set[str] = set()
        self.connections = 0
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(16)
        self._closing = False
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def ops(self) -> list[str]:
        return [r["op"] for r in self.requests]

    def last(self, op: str) -> dict[str, Any]:
        """The args of the last request for `op`."""
        return [r for r in self.requests if r["op"] == op][-1]["args"]

    def close(self) -> None:
        self._closing = True
        self._sock.close()
        for c in list(self._conns):
            c.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            for line in reader:
                req = json.loads(line)
                with self._lock:
                    self.requests.append(req)
                for reply in self._answer(req):
                    conn.sendall((json.dumps(reply) + "\n").encode())
        except OSError:
            pass
        finally:
            conn.close()

    def _answer(self, req: dict[str, Any]) -> Iterator[dict[str, Any]]:
        op, rid = req["op"], req["id"]
        assert req["v"] == 1
        if op in self.silent:
            return
        if op in self.streams:
            for result, more in self.streams[op]:
                yield {"id": rid, "ok": True, "result": result, "more": more}
            return
        if op not in self.results:
            yield {"id": rid, "ok": False, "error": {"code": "unknown_op", "message": op}}
            return
        value = self.results[op]
        try:
            result = value(req["args"]) if callable(value) else value
        except FakeError as exc:
            yield {"id": rid, "ok": False, "error": exc.error}
            return
        yield {"id": rid, "ok": True, "result": result}
