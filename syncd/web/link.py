"""The web's side of the control socket: a few reusable blocking clients for page reads
(run in worker threads), a fresh one per action (it carries the `via` the daemon logs), and
a ping with a one-second budget for /healthz."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from syncd.ctl.client import Client, DaemonError, DaemonUnreachable

HEALTH_TIMEOUT = 1.0
PARALLEL_READS = 8
UNKNOWN_OP_RECHECK_SECONDS = 60.0
READ_TIMEOUT = 5.0  # a page waits no longer for a hung daemon


class DaemonLink:
    def __init__(self, socket: Path):
        self.socket = socket
        self._idle: queue.SimpleQueue[Client] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(PARALLEL_READS, thread_name_prefix="daemon-read")
        self._unknown: dict[str, float] = {}  # op -> when the daemon said unknown_op
        self._lock = threading.Lock()

    def call(self, op: str, **args: Any) -> Any:
        """One read-only request on a pooled connection (thread-safe: one client per call)."""
        try:
            client = self._idle.get_nowait()
        except queue.Empty:
            client = Client(self.socket, timeout=READ_TIMEOUT, origin="syncd web")
        try:
            result = client.call(op, **{k: v for k, v in args.items() if v is not None})
        except DaemonUnreachable:
            client.close()
            raise
        self._idle.put(client)
        return result

    def optional(self, op: str, **args: Any) -> Any | None:
        """An op this daemon may not have yet: None when it answers unknown_op (asked again
        a minute later, so a daemon upgraded meanwhile is noticed)."""
        with self._lock:
            since = self._unknown.get(op)
        if since is not None and time.monotonic() - since < UNKNOWN_OP_RECHECK_SECONDS:
            return None
        try:
            return self.call(op, **args)
        except DaemonError as exc:
            if exc.code == "unknown_op":
                with self._lock:
                    self._unknown[op] = time.monotonic()
                return None
            raise

    def many(self, calls: dict[str, tuple[str, dict[str, Any] | None]]) -> dict[str, Any]:
        """Several reads at once, each on its own connection; args None marks an optional
        op. The first failure is raised, after every read has ended."""
        futures: dict[str, Future[Any]] = {}
        for key, (op, args) in calls.items():
            if args is None:
                futures[key] = self._pool.submit(self.optional, op)
            else:
                futures[key] = self._pool.submit(self.call, op, **args)
        out: dict[str, Any] = {}
        error: BaseException | None = None
        for key, future in futures.items():
            try:
                out[key] = future.result()
            except BaseException as exc:  # re-raised below, once all are done
                error = error or exc
        if error is not None:
            raise error
        return out

    def act(self, op: str, via: str, **args: Any) -> Any:
        """A mutating request; the daemon decides whether this user may, and logs `via`."""
        with Client(self.socket, timeout=READ_TIMEOUT, origin="syncd web", via=via) as client:
            return client.call(op, **args)

    def watch(self) -> Client:
        """A client for the one shared `watch` stream (no request timeout)."""
        return Client(self.socket, timeout=None, origin="syncd web")

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(ok, body): the daemon answered `ping` within a second, or why not."""
        client = Client(
            self.socket, connect_timeout=HEALTH_TIMEOUT, timeout=HEALTH_TIMEOUT, origin="syncd web"
        )
        try:
            ping = client.call("ping")
        except DaemonUnreachable as exc:
            return False, {"daemon": "down", "reason": str(exc), "socket": str(self.socket)}
        except DaemonError as exc:
            return False, {"daemon": "error", "reason": exc.message, "socket": str(self.socket)}
        finally:
            client.close()
        return True, {
            "daemon": "ok",
            "version": ping.get("version"),
            "pid": ping.get("pid"),
            "uptime_seconds": ping.get("uptime_seconds"),
        }
