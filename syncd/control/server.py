"""The control socket: bind without a permissive window, one thread per connection, and the
limits that keep one slow or hostile client from hurting anyone else (line cap, idle and
request deadlines, a connection cap). Only this module and connection.py touch sockets;
requests go to a RequestHandler (the op context of control/ops)."""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import logging
import os
import secrets
import select
import socket
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from syncd.control.auth import Authorizer, peer_credentials
from syncd.control.connection import Connection, RequestHandler, Stream, is_stream
from syncd.control.protocol import OpSpec, encode, error_reply
from syncd.core.models import ErrorCode

__all__ = ["RequestHandler", "Server", "SocketInUse", "Stream", "is_stream"]

log = logging.getLogger(__name__)

BACKLOG = 128
SHUTDOWN_GRACE = 2.0  # for in-flight requests before their sockets are cut
CUT_GRACE = 1.0  # then for every cut connection's thread to end (one deadline for all)
BUSY_LOG_EVERY = 10.0
MAX_UNIX_PATH = 107


class SocketInUse(Exception):
    """Something live already listens on the socket path; it is left untouched."""


class Server:
    def __init__(
        self,
        path: Path,
        mode: int,
        handler: RequestHandler,
        authorizer: Authorizer,
        *,
        max_connections: int = 256,
        max_per_user: int = 64,
        reserved: int = 16,
        idle_timeout: float = 60.0,
        request_timeout: float = 10.0,
        max_line: int = 1 << 20,
        drain_timeout: float = 10.0,
        ops: Mapping[str, OpSpec],
        group: str | None = None,
        probe_timeout: float = 2.0,
    ):
        self.path = Path(path)
        self.mode = mode
        self.handler = handler
        self.ops = ops
        self.authorizer = authorizer
        self.max_connections = max_connections
        # One user cannot hold every slot, and the last `reserved` ones are kept for root
        # and the daemon's own user, so an operator always gets in (RELIABILITY K6, K12).
        self.max_per_user = max_per_user
        self.reserved = reserved
        self.daemon_uid = os.getuid()
        self._per_uid: dict[int, int] = {}
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.max_line = max_line
        self.drain_timeout = drain_timeout
        self.group = group
        self.probe_timeout = probe_timeout
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[Connection] = set()
        self._listener: socket.socket | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of OUR socket file
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._serving = threading.Event()
        self._served = threading.Event()
        self._next_conn = 0
        self._busy_count = 0
        self._busy_logged = 0.0

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._conns)

    # -- bind ---------------------------------------------------------------------------------
    def bind(self) -> None:
        """Replace a stale socket file, refuse a live one, and appear at the final path only
        once the mode (and group) are right: bind a temporary name under umask 0o177,
        chmod/chgrp it, listen, then rename it into place."""
        if len(os.fsencode(self.path)) > MAX_UNIX_PATH:
            raise OSError(errno.ENAMETOOLONG, f"socket path longer than {MAX_UNIX_PATH} bytes")
        parent = self.path.parent
        if not parent.exists():
            parent.mkdir(parents=True, exist_ok=True)
            os.chmod(parent, 0o750)
        self._clear_stale()
        tmp = parent / f".{secrets.token_hex(4)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)
            try:
                sock.bind(str(tmp))
            finally:
                os.umask(old_umask)
            try:
                sock.listen(BACKLOG)
                os.chmod(tmp, self.mode)
                if self.group:
                    self._chgrp(tmp)
                os.rename(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        self._listener = sock
        log.info("listening on %s (mode %04o)", self.path, self.mode)

    def _chgrp(self, path: Path) -> None:
        assert self.group is not None
        try:
            gid = grp.getgrnam(self.group).gr_gid
        except KeyError:
            log.warning("socket group %r is unknown; the socket keeps its group", self.group)
            return
        try:
            os.chown(path, -1, gid)
        except PermissionError:
            log.warning("cannot give the socket to group %r (not a member?)", self.group)

    def _clear_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUse(f"{self.path} exists and is not a socket; not touching it")
        answer = self._probe()
        if answer is not None:
            raise SocketInUse(f"a daemon already answers on {self.path} ({answer})")
        log.warning("replacing stale socket file %s", self.path)
        self.path.unlink(missing_ok=True)

    def _probe(self) -> str | None:
        """None when nothing listens on the path; else what answered. A listener that
        accepts but does not answer `ping` counts as live too (stopped, or not ours): a
        socket someone listens on is never unlinked."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(self.probe_timeout)
        try:
            try:
                probe.connect(str(self.path))
            except (ConnectionRefusedError, FileNotFoundError):
                return None
            except OSError as exc:
                return f"connect failed: {exc.strerror or exc}"
            probe.sendall(b'{"v":1,"id":"bind-probe","op":"ping"}\n')
            with probe.makefile("rb") as answer:
                reply = json.loads(answer.readline(65536))
            if isinstance(reply, dict) and isinstance(reply.get("result"), dict):
                return f"pid {reply['result'].get('pid')}"
            return "it accepts connections but did not answer ping"
        except (OSError, ValueError):
            return "it accepts connections but did not answer ping"
        finally:
            probe.close()

    # -- accept -------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Accept until stop_accepting()/shutdown(); call it in a thread of its own."""
        listener = self._listener
        if listener is None:
            raise RuntimeError("bind() first")
        poller = select.poll()
        poller.register(listener.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        self._serving.set()
        try:
            while not self.stopping.is_set():
                ready = {fd for fd, _ in poller.poll()}
                if self.stopping.is_set():
                    break
                if listener.fileno() in ready:
                    self._accept(listener)
        finally:
            self._served.set()

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:
            # Out of fds or memory: do not spin on a listener that stays readable.
            log.warning("accept failed: %s", exc.strerror or exc)
            self.stopping.wait(0.1)
            return
        try:
            creds = peer_credentials(sock)  # no user-database lookup in the accept loop
        except OSError as exc:
            log.warning("no peer credentials on a new connection (%s); closed", exc)
            sock.close()
            return
        uid = creds[1]
        with self._lock:
            refusal = self._refusal(uid)
            if refusal is None:
                self._next_conn += 1
                conn = Connection(self, sock, creds, self._next_conn)
                self._conns.add(conn)
                self._per_uid[uid] = self._per_uid.get(uid, 0) + 1
        if refusal is not None:
            self._refuse_busy(sock, uid, refusal)
            return
        try:
            conn.start()
        except RuntimeError:
            log.warning("cannot start a thread for a connection from uid %d; closed", uid)
            self.forget(conn)
            conn.close()

    def _refusal(self, uid: int) -> str | None:
        """Why a new connection from `uid` is refused, or None (caller holds the lock)."""
        total = len(self._conns)
        if uid in (0, self.daemon_uid):
            if total >= self.max_connections:
                return f"too many connections (limit {self.max_connections}); try again shortly"
            return None
        if total >= self.max_connections - self.reserved:
            return f"too many connections (limit {self.max_connections}); try again shortly"
        if self._per_uid.get(uid, 0) >= self.max_per_user:
            return (
                f"too many connections from uid {uid} (limit {self.max_per_user} per user);"
                " close some and try again"
            )
        return None

    def _refuse_busy(self, sock: socket.socket, uid: int, message: str) -> None:
        try:
            sock.setblocking(False)
            sock.send(encode(error_reply(None, ErrorCode.BUSY, message)))
        except OSError:
            pass
        sock.close()
        self._busy_count += 1
        now = time.monotonic()
        if now - self._busy_logged >= BUSY_LOG_EVERY:
            log.warning(
                "connection limit reached: refused %d connection(s), the latest from uid %d: %s",
                self._busy_count,
                uid,
                message,
            )
            self._busy_logged = now
            self._busy_count = 0

    def forget(self, conn: Connection) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.discard(conn)
                uid = conn.peer.uid
                left = self._per_uid.get(uid, 0) - 1
                if left > 0:
                    self._per_uid[uid] = left
                else:
                    self._per_uid.pop(uid, None)

    # -- stop ---------------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        """Close the listener and remove our socket file (only if it is still ours)."""
        self.stopping.set()
        with self._lock:
            if self._wake_w >= 0:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_w, b"x")
        if self._serving.is_set():
            self._served.wait(2.0)
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is None:
            return
        self._unlink_own()
        listener.close()

    def _unlink_own(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._identity:
            self.path.unlink(missing_ok=True)
        else:
            log.warning("%s was replaced by someone else; left in place", self.path)

    def shutdown(self) -> None:
        """Stop accepting, end streams, let in-flight requests answer, then cut the rest."""
        self.stop_accepting()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.stop_reading()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        for conn in conns:
            conn.join(max(0.0, deadline - time.monotonic()))
        for conn in conns:
            if conn.alive():
                conn.cut()
        deadline = time.monotonic() + CUT_GRACE
        for conn in conns:
            conn.join(max(0.0, deadline - time.monotonic()))
        stuck = sum(conn.alive() for conn in conns)
        if stuck:
            log.warning("shutdown: %d connection thread(s) still busy; not waited for", stuck)
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
