"""Who is on the other end of the socket (SO_PEERCRED, set by the kernel, not claimed by the
client) and whether they may use mutating ops: root, the daemon's own user, or a member of
`control_group`; reading is open to every local user who can reach the socket."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import socket
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    user: str  # the user name, or str(uid) when the user database has no entry


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) as the kernel recorded them when the peer connected."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_gid(name: str) -> int | None:
    """A group name (or a number) → gid; None when the system does not know it."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        return None


def user_groups(uid: int) -> Collection[int]:
    """Every group of the user `uid` per the user database: primary plus supplementary.
    Resolved by uid, not by a name, so a uid without an entry has no groups to borrow."""
    try:
        entry = pwd.getpwuid(uid)
        return os.getgrouplist(entry.pw_name, entry.pw_gid)
    except (KeyError, OSError):
        return ()


class Authorizer:
    """Decides mutating access. Read-only ops need no decision: whoever can connect (the
    socket file's mode and group) may read."""

    def __init__(
        self,
        control_group: str | None,
        *,
        daemon_uid: int | None = None,
        resolve_group: Callable[[str], int | None] = group_gid,
        groups_of: Callable[[int], Collection[int]] = user_groups,
    ):
        self.control_group = control_group
        self.daemon_uid = os.getuid() if daemon_uid is None else daemon_uid
        self._resolve_group = resolve_group
        self._groups_of = groups_of

    def may_mutate(self, peer: Peer) -> bool:
        if peer.uid == 0 or peer.uid == self.daemon_uid:
            return True
        if not self.control_group:
            return False
        # Looked up on each request, so a group change needs no daemon restart.
        gid = self._resolve_group(self.control_group)
        if gid is None:
            return False
        return peer.gid == gid or gid in self._groups_of(peer.uid)
