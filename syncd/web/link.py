"""The web's side of the control socket: a few reusable blocking clients for page reads
(run in worker threads), a fresh one per action (it carries the `via` the daemon logs), and
a ping with a one-second budget for /healthz."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

from syncd.ctl.client import Client, DaemonError, DaemonUnreachable

HEALTH_TIMEOUT = 1.0
READ_TIMEOUT = 5.0  # a page waits no longer for a hung daemon


class DaemonLink:
    def __init__(self, socket: Path):
        self.socket = socket
        self._idle: queue.SimpleQueue[Client] = queue.SimpleQueue()

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
        """An op this daemon may not have yet: None when it answers unknown_op."""
        try:
            return self.call(op, **args)
        except DaemonError as exc:
            if exc.code == "unknown_op":
                return None
            raise

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
