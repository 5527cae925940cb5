"""The client side of the socket protocol: NDJSON requests over AF_UNIX (syncctl, the web).

Imported by every syncctl run, so it imports only the standard library; the config loader
is imported lazily, and only when the socket has to be read from a config file."""

from __future__ import annotations

import errno
import json
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from syncd.core import paths
from syncd.core.models import FINAL_NAMES

START_HINT = "Start it with `systemctl start syncd` or `syncd --config PATH`"
# A connection unused for this long may have been closed by the daemon's 60 s idle timeout.
REUSE_SECONDS = 30.0
RETRY_PAUSE = 0.05
MAX_LINE = 64 * 1024 * 1024


class DaemonUnreachable(Exception):
    """No daemon answered: the message says where we looked and how to start one."""


class ConfigUnreadable(Exception):
    """--config names a file the socket path cannot be read from."""


class DaemonError(Exception):
    """The daemon answered `ok: false`."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details


class _Connection:
    """One socket plus a line buffer of our own, so a read timeout never loses data."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()
        self.last_used = time.monotonic()

    def send(self, line: bytes) -> None:
        self.sock.settimeout(None)
        self.sock.sendall(line)
        self.last_used = time.monotonic()

    def read_line(self, timeout: float | None) -> bytes | None:
        """The next line, b"" at end of stream, None when `timeout` passed without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[: nl + 1])
                del self.buf[: nl + 1]
                self.last_used = time.monotonic()
                return line
            if len(self.buf) > MAX_LINE:
                raise ValueError("reply line too long")
            if deadline is None:
                self.sock.settimeout(None)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                return b""
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()


class Client:
    """A connection to the daemon, opened on first use and reused for later requests."""

    def __init__(
        self,
        path: Path,
        *,
        connect_timeout: float = 5.0,
        timeout: float | None = 30.0,
        origin: str | None = None,
        via: str | None = None,
    ):
        self.path = Path(path)
        self.via = via  # sent with every request: the daemon logs who relayed it
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.origin = origin
        self._conn: _Connection | None = None
        self._next_id = 0

    # -- public ---------------------------------------------------------------------------

    def call(self, op: str, **args: Any) -> Any:
        """Send one request and return its result; DaemonError when the daemon refuses it."""
        return self.request(op, args, self.timeout)

    def request(self, op: str, args: Mapping[str, Any], timeout: float | None) -> Any:
        """call() with a reply timeout of its own: None waits until the reply or until the
        daemon closes the connection, for ops whose work grows with the store."""
        req_id = self._send(op, dict(args))
        reply = self._read_reply(req_id, timeout)
        if reply is None:
            self.close()
            raise DaemonUnreachable(
                f"no reply from the daemon at {self.path} within {timeout:g} s"
                f" (op {op}): it is running but not answering"
            )
        return self._result(reply)

    def stream(self, op: str, **args: Any) -> Iterator[dict[str, Any]]:
        """Yield each result of a stream until the daemon sends `more: false`."""
        for item in self.open_stream(op, args):
            if item is not None:
                yield item

    def open_stream(
        self, op: str, args: Mapping[str, Any], idle: float | None = None
    ) -> Iterator[dict[str, Any] | None]:
        """Send a stream request now; the iterator yields results, and None each time
        `idle` seconds pass without one (so a caller can re-check something)."""
        req_id = self._send(op, dict(args))
        return self._stream_replies(req_id, idle)

    def follow_task(self, task_id: int, idle: float = 2.0) -> Iterator[dict[str, Any]]:
        """Yield the task each time it may have changed, ending with its final state.

        Watches task events on a second connection. The watch is sent before the first
        `get`, and every `idle` seconds without an event the task is fetched again, so a
        change racing the subscription is never missed for more than `idle` seconds."""
        while True:
            with Client(self.path, connect_timeout=self.connect_timeout, timeout=None) as w:
                events = w.open_stream("watch", {"events": ["task"]}, idle=idle)
                current = self.call("get", id=task_id)["task"]
                yield current
                if current.get("status") in FINAL_NAMES:
                    return
                for event in events:
                    seen = None if event is None else _event_task(event)
                    if event is not None and (seen is None or seen.get("id") != task_id):
                        continue
                    if seen is None or "status" not in seen or "source" not in seen:
                        current = self.call("get", id=task_id)["task"]
                    else:
                        current = seen
                    yield current
                    if current.get("status") in FINAL_NAMES:
                        return
            # The watch ended without the task ending (daemon dropped it): subscribe again.

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.path} ({self.origin})" if self.origin else str(self.path)

    def _unreachable(self, why: str) -> DaemonUnreachable:
        return DaemonUnreachable(f"no daemon at {self._where()}: {why}. {START_HINT}")

    def _connect(self) -> _Connection:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            left = deadline - time.monotonic()
            sock.settimeout(max(left, 0.01))
            try:
                sock.connect(str(self.path))
                return _Connection(sock)
            except (BlockingIOError, InterruptedError) as exc:
                # EAGAIN: the listen backlog is full (a burst of clients). Retry until the
                # connect deadline rather than failing a busy but healthy daemon.
                sock.close()
                if time.monotonic() + RETRY_PAUSE >= deadline:
                    raise self._unreachable(
                        f"socket busy for {self.connect_timeout:g} s ({exc.strerror})"
                    ) from None
                time.sleep(RETRY_PAUSE)
            except FileNotFoundError:
                sock.close()
                raise self._unreachable("no such socket file") from None
            except ConnectionRefusedError:
                sock.close()
                raise self._unreachable("connection refused (stale socket file?)") from None
            except PermissionError:
                sock.close()
                raise DaemonUnreachable(
                    f"permission denied on {self._where()}: ask for membership of the"
                    " socket's group (see `ls -l` on it)"
                ) from None
            except TimeoutError:
                sock.close()
                raise self._unreachable(
                    f"connect timed out after {self.connect_timeout:g} s"
                ) from None
            except OSError as exc:
                sock.close()
                if exc.errno == errno.ENOTSOCK:
                    raise self._unreachable("the path is not a socket") from None
                raise self._unreachable(exc.strerror or str(exc)) from None

    def _send(self, op: str, args: dict[str, Any]) -> int:
        self._next_id += 1
        req_id = self._next_id
        request: dict[str, Any] = {"v": 1, "id": req_id, "op": op, "args": args}
        if self.via is not None:
            request["via"] = self.via
        line = json.dumps(request) + "\n"
        data = line.encode()
        conn = self._conn
        if conn is not None and time.monotonic() - conn.last_used > REUSE_SECONDS:
            self.close()
            conn = None
        if conn is not None:
            try:
                conn.send(data)
                return req_id
            except OSError:
                # The daemon closed this connection since its last use; it cannot have
                # read the request, so sending it again on a fresh connection is safe.
                self.close()
        self._conn = self._connect()
        try:
            self._conn.send(data)
        except OSError as exc:
            self.close()
            raise self._unreachable(f"sending failed ({exc.strerror or exc})") from None
        return req_id

    def _read_reply(self, req_id: int, timeout: float | None) -> dict[str, Any] | None:
        conn = self._conn
        assert conn is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                line = conn.read_line(left)
            except (OSError, ValueError) as exc:
                self.close()
                raise self._unreachable(f"reading the reply failed ({exc})") from None
            if line is None:
                return None
            if line == b"":
                self.close()
                raise DaemonUnreachable(
                    f"the daemon at {self._where()} closed the connection without a reply"
                )
            try:
                reply = json.loads(line)
            except ValueError:
                self.close()
                raise DaemonUnreachable(
                    f"the daemon at {self._where()} sent a reply that is not JSON"
                ) from None
            if not isinstance(reply, dict):
                continue
            if reply.get("id") in (req_id, None):
                return reply

    def _stream_replies(self, req_id: int, idle: float | None) -> Iterator[dict[str, Any] | None]:
        done = False
        try:
            while True:
                reply = self._read_reply(req_id, idle)
                if reply is None:
                    yield None
                    continue
                more = bool(reply.get("more", False))
                result = self._result(reply)
                if not more:
                    done = True
                if isinstance(result, dict):
                    yield result
                if not more:
                    return
        finally:
            if not done:
                # Abandoned mid-stream: the connection still carries the stream, drop it.
                self.close()

    def _result(self, reply: Mapping[str, Any]) -> Any:
        if reply.get("ok"):
            return reply.get("result")
        error = reply.get("error") or {}
        if not isinstance(error, dict):
            error = {"message": str(error)}
        details = error.get("details")
        raise DaemonError(
            str(error.get("code", "unknown")),
            str(error.get("message", "")),
            details if isinstance(details, dict) else None,
        )


def _event_task(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task a `watch` event is about: a task object, or just its id and status."""
    if event.get("event") != "task":
        return None
    task = event.get("task")
    if isinstance(task, dict):
        out = dict(task)
    elif isinstance(task, int):
        out = {"id": task}
    else:
        return None
    if "status" not in out and isinstance(event.get("status"), str):
        out["status"] = event["status"]
    return out


def locate_socket(
    cli_socket: str | None, cli_config: str | None, env: Mapping[str, str]
) -> tuple[Path, str]:
    """The socket path and why it was chosen (for the unreachable message)."""
    if cli_socket:
        return Path(cli_socket), "from --socket"
    if env.get("SYNCD_SOCKET"):
        return Path(env["SYNCD_SOCKET"]), "from $SYNCD_SOCKET"
    if cli_config:
        return _socket_from_config(cli_config), f"from the config {cli_config}"
    # The daemon's own default rules, plus the systemd unit's path, which an operator's
    # login shell does not see in its environment. An existing socket file wins; otherwise
    # the first path the daemon itself would choose.
    candidates = [(path, f"from {origin}") for path, origin in paths.runtime_sockets(env)]
    system = (paths.SYSTEM_SOCKET, "the systemd service's socket")
    state = (paths.default_state_dir(env) / paths.SOCKET_NAME, "the default state dir")
    for path, why in [*candidates, system, state]:
        if path.exists():
            return path, why
    return (candidates or [state])[0]


def socket_path(cli_socket: str | None, cli_config: str | None, env: Mapping[str, str]) -> Path:
    """--socket, else $SYNCD_SOCKET, else the config's socket, else the default rules."""
    return locate_socket(cli_socket, cli_config, env)[0]


def _socket_from_config(path: str) -> Path:
    from syncd.config.load import load_config
    from syncd.config.model import ConfigError  # heavy: only when asked for

    try:
        return Path(load_config(Path(path)).daemon.socket)
    except ConfigError as exc:
        raise ConfigUnreadable(f"--config {path}:\n{exc}") from None
    except OSError as exc:
        raise ConfigUnreadable(f"--config {path}: {exc.strerror or exc}") from None
