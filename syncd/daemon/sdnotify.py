"""systemd's notify protocol (sd_notify): one datagram per state change to $NOTIFY_SOCKET.
A no-op when the variable is unset, so the daemon runs the same in a terminal.

The watchdog interval follows systemd's advice (sd_watchdog_enabled(3)): ping at half of
$WATCHDOG_USEC when systemd set it for this process, never less often than every 10 s."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, MutableMapping

log = logging.getLogger(__name__)

DEFAULT_WATCHDOG_SECONDS = 10.0
MIN_WATCHDOG_SECONDS = 0.05  # a silly WATCHDOG_USEC must not turn the loop into a spin
_OWN_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float:
    """Seconds between WATCHDOG=1 pings: $WATCHDOG_USEC / 2 (capped at 10 s) when it is set
    and meant for us ($WATCHDOG_PID absent or our pid), else 10 s."""
    raw = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return DEFAULT_WATCHDOG_SECONDS
    try:
        usec = int(raw)
    except ValueError:
        return DEFAULT_WATCHDOG_SECONDS
    if usec <= 0:
        return DEFAULT_WATCHDOG_SECONDS
    return max(MIN_WATCHDOG_SECONDS, min(DEFAULT_WATCHDOG_SECONDS, usec / 2e6))


def _address(value: str | None) -> str | None:
    if not value:
        return None
    # A leading '@' names an abstract socket (Linux): the name starts with a NUL byte.
    return "\0" + value[1:] if value.startswith("@") else value


class Notifier:
    """Sends READY/WATCHDOG/STATUS/STOPPING/RELOADING. Failures are logged, never raised:
    the daemon must not die because systemd went away."""

    def __init__(self, address: str | None = None, *, watchdog_seconds: float | None = None):
        self.address = _address(os.environ.get("NOTIFY_SOCKET") if address is None else address)
        self.watchdog_interval = (
            watchdog_interval(os.environ) if watchdog_seconds is None else watchdog_seconds
        )

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> Notifier:
        """Read the notify variables and remove them from `environ` (as sd_notify's
        unset_environment does), so task processes do not inherit a channel to systemd."""
        notifier = cls(
            environ.get("NOTIFY_SOCKET", ""), watchdog_seconds=watchdog_interval(environ)
        )
        for name in _OWN_VARS:
            environ.pop(name, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, message: str) -> bool:
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), self.address)
            return True
        except OSError as exc:
            log.warning("sd_notify %r failed: %s", message.split("\n", 1)[0], exc)
            return False

    @staticmethod
    def _with_status(message: str, status: str) -> str:
        return message + (f"\nSTATUS={status}" if status else "")

    def ready(self, status: str = "") -> bool:
        return self.send(self._with_status("READY=1", status))

    def watchdog(self, status: str = "") -> bool:
        """The keep-alive ping; it carries the pool summary so `systemctl status` shows it."""
        return self.send(self._with_status("WATCHDOG=1", status))

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")
