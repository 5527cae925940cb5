"""systemd's notify protocol (sd_notify): one datagram per state change to $NOTIFY_SOCKET.
A no-op when the variable is unset, so the daemon runs the same in a terminal."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None = None):
        addr = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self.address = None
        if addr:
            # A leading '@' names an abstract socket (Linux).
            self.address = "\0" + addr[1:] if addr.startswith("@") else addr

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

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")
