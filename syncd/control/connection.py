"""One client connection of the control socket: NDJSON lines under a length cap, an idle
timeout and a per-request deadline, replies in order, at most one stream at a time, and
writes with a deadline. Every wait has a timeout, so no client can pin its thread forever."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

from syncd.control.auth import Authorizer, Peer, user_name
from syncd.control.protocol import (
    OpSpec,
    ProtocolError,
    Request,
    encode,
    error_reply,
    ok_reply,
    parse_request,
)
from syncd.core.errors import SyncdError
from syncd.core.models import ErrorCode

log = logging.getLogger(__name__)

RECV_CHUNK = 64 * 1024
BATCH_MAX = 256  # pipelined requests of a batchable op handled together (one commit)
WRITE_HIGH_WATER = 256 * 1024  # per-client kernel send buffer (Linux doubles SO_SNDBUF)


@runtime_checkable
class Stream(Protocol):
    """What a stream op returns: (result, more) pairs, the last with more=False, and None
    about every 0.5 s when idle so the server can notice a vanished client or a shutdown."""

    def __iter__(self) -> Iterator[tuple[dict[str, Any], bool] | None]: ...

    def close(self) -> None: ...


class RequestHandler(Protocol):
    def handle(self, request: Request, peer: Peer) -> Any:
        """A JSON-able result or a Stream; raises SyncdError for errors a client should see."""

    def handle_batch(self, requests: list[Request], peer: Peer) -> list[Any]:
        """Pipelined requests of one batchable op: per request its result or SyncdError."""


class Host(Protocol):
    """What a connection needs from the server that accepted it."""

    handler: RequestHandler
    authorizer: Authorizer
    ops: Mapping[str, OpSpec]
    stopping: threading.Event
    max_line: int
    idle_timeout: float
    request_timeout: float
    drain_timeout: float

    def forget(self, conn: Connection) -> None: ...


def is_stream(result: Any) -> bool:
    plain = (dict, list, tuple, str, bytes, int, float, bool, type(None))
    return not isinstance(result, plain) and isinstance(result, Stream)


class Connection:
    """One client: reads NDJSON lines under the line cap and deadlines, answers them in
    order, runs at most one stream at a time. Everything it waits on has a timeout."""

    def __init__(self, server: Host, sock: socket.socket, creds: tuple[int, int, int], number: int):
        self.server = server
        self.sock = sock
        pid, uid, gid = creds
        self.peer = Peer(pid, uid, gid, str(uid))  # the user name is looked up in the thread
        self._sock_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"conn-{number}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop_reading(self) -> None:
        """Wake a thread blocked in recv (shutdown); replies can still be written."""
        self._shutdown(socket.SHUT_RD)

    def cut(self) -> None:
        self._shutdown(socket.SHUT_RDWR)

    def _shutdown(self, how: int) -> None:
        # Under the lock, so a shutdown can never hit an fd number the kernel reused.
        with self._sock_lock:
            if not self._closed:
                with contextlib.suppress(OSError):
                    self.sock.shutdown(how)

    def close(self) -> None:
        with self._sock_lock:
            if not self._closed:
                self._closed = True
                self.sock.close()

    def _run(self) -> None:
        peer = self.peer = replace(self.peer, user=user_name(self.peer.uid))
        log.debug("connection from %s (uid %d, pid %d)", peer.user, peer.uid, peer.pid)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, WRITE_HIGH_WATER // 2)
            self._serve()
        except Exception:
            log.exception("connection from %s (pid %d) failed", peer.user, peer.pid)
        finally:
            self.close()
            self.server.forget(self)

    # -- reading ------------------------------------------------------------------------------
    def _serve(self) -> None:
        srv = self.server
        buf = bytearray()
        scan = 0  # where to resume looking for a newline
        last = time.monotonic()  # end of the last request: the idle clock
        first_byte: float | None = None  # start of the pending request: its deadline clock
        while not srv.stopping.is_set():
            nl = buf.find(b"\n", scan)
            if nl >= 0:
                line = bytes(buf[:nl])
                del buf[: nl + 1]
                scan = 0
                if len(line) > srv.max_line:
                    self._too_long()
                    return
                if not self._handle_line(line, buf):
                    return
                last = time.monotonic()
                first_byte = last if buf else None
                continue
            scan = len(buf)
            if len(buf) > srv.max_line:
                # Close rather than resync: the tail of an oversized line must never be
                # parsed as a request of its own.
                self._too_long()
                return
            if first_byte is None:
                left = last + srv.idle_timeout - time.monotonic()
            else:
                left = first_byte + srv.request_timeout - time.monotonic()
            if left <= 0:
                self._timed_out(first_byte is not None)
                return
            try:
                self.sock.settimeout(left)
                chunk = self.sock.recv(RECV_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            if first_byte is None:
                first_byte = time.monotonic()
            buf += chunk

    def _too_long(self) -> None:
        limit = self.server.max_line
        log.warning(
            "request line over %d bytes from %s (pid %d); connection closed",
            limit,
            self.peer.user,
            self.peer.pid,
        )
        reply = error_reply(None, ErrorCode.BAD_REQUEST, f"line too long (limit {limit} bytes)")
        self._send(encode(reply))

    def _timed_out(self, mid_request: bool) -> None:
        srv = self.server
        if not mid_request:
            log.debug("closing idle connection from %s", self.peer.user)
            return
        log.info(
            "request from %s (pid %d) incomplete after %g s; connection closed",
            self.peer.user,
            self.peer.pid,
            srv.request_timeout,
        )
        message = f"request not complete within {srv.request_timeout:g} s of its first byte"
        self._send(encode(error_reply(None, ErrorCode.BAD_REQUEST, message)))

    # -- answering ----------------------------------------------------------------------------
    def _handle_line(self, line: bytes, pending: bytearray) -> bool:
        """Answer one line (and the submits pipelined behind it, as one group commit);
        False when the connection should close."""
        if not line.strip():
            return True
        try:
            request = parse_request(line, self.server.ops)
        except ProtocolError as exc:
            code = exc.code.value
            log.info("client error from %s (pid %d): %s", self.peer.user, self.peer.pid, code)
            return self._send(encode(error_reply(exc.id, exc.code, exc.message, exc.details)))
        srv, peer = self.server, self.peer
        if request.spec.mutating:
            if not srv.authorizer.may_mutate(peer):
                log.warning(
                    "forbidden: %s from user %s (uid %d, pid %d)",
                    request.op,
                    peer.user,
                    peer.uid,
                    peer.pid,
                )
                message = f"{request.op} is reserved to root, the daemon's user" + (
                    f" and members of group {srv.authorizer.control_group!r}"
                    if srv.authorizer.control_group
                    else ""
                )
                return self._send(encode(error_reply(request.id, ErrorCode.FORBIDDEN, message)))
            via = f" via {request.via}" if request.via else ""
            log.info("%s by %s%s (uid %d, pid %d)", request.op, peer.user, via, peer.uid, peer.pid)
        if request.spec.batch is not None and b"\n" in pending:
            return self._batch(request, pending)
        try:
            result = srv.handler.handle(request, peer)
        except SyncdError as exc:
            refused = f"{exc.code.value}: {exc.message}"
            log.info("%s from %s refused: %s", request.op, peer.user, refused)
            return self._send(encode(error_reply(request.id, exc.code, exc.message, exc.details)))
        except Exception:
            log.exception("op %s failed (request from %s)", request.op, peer.user)
            return self._send(encode(_internal(request.id)))
        if is_stream(result):
            return self._stream(request, result)
        return self._send(self._encode(ok_reply(request.id, result), request)[0])

    def _batch(self, first: Request, pending: bytearray) -> bool:
        """`first` and the complete lines of the same batchable op right behind it, handled
        together and answered in order: a client that pipelines submits pays one fsync per
        group, not per task, and each reply still goes out only after its commit. The first
        line that is not a well-formed request of that op ends the group and is answered the
        usual way."""
        group = [first]
        peer = self.peer
        while len(group) < BATCH_MAX:
            nl = pending.find(b"\n")
            if nl < 0 or nl > self.server.max_line:
                break
            try:
                request = parse_request(bytes(pending[:nl]), self.server.ops)
            except ProtocolError:
                break
            if request.op != first.op:
                break
            del pending[: nl + 1]
            group.append(request)
        if len(group) > 1:  # the first one was logged as usual; each task gets its own line
            log.info("%d more pipelined %s by %s", len(group) - 1, first.op, peer.user)
        try:
            results = self.server.handler.handle_batch(group, peer)
        except Exception:
            log.exception("a group of %d %s failed (from %s)", len(group), first.op, peer.user)
            return self._send(b"".join(encode(_internal(r.id)) for r in group))
        out = []
        for request, result in zip(group, results, strict=True):
            if isinstance(result, SyncdError):
                log.info("%s from %s refused: %s: %s", first.op, peer.user, result.code.value,
                         result.message)  # fmt: skip
                out.append(encode(error_reply(request.id, result.code, result.message,
                                              result.details)))  # fmt: skip
            else:
                out.append(self._encode(ok_reply(request.id, result), request)[0])
        return self._send(b"".join(out))

    def _stream(self, request: Request, stream: Stream) -> bool:
        try:
            for item in stream:
                if self.server.stopping.is_set():
                    self._send(encode(ok_reply(request.id, None, more=False)))
                    return False
                if item is None:
                    if self._peer_gone():
                        return False
                    continue
                result, more = item
                data, fine = self._encode(ok_reply(request.id, result, more=more), request)
                if not self._send(data) or not fine:
                    return False
                if not more:
                    return True
            # The stream ended without a last item (e.g. its events were dropped).
            return self._send(encode(ok_reply(request.id, None, more=False)))
        except SyncdError as exc:
            return self._send(encode(error_reply(request.id, exc.code, exc.message, exc.details)))
        except Exception:
            log.exception("stream %s failed (request from %s)", request.op, self.peer.user)
            self._send(encode(_internal(request.id)))
            return False
        finally:
            try:
                stream.close()
            except Exception:
                log.exception("closing stream %s failed", request.op)

    def _encode(self, reply: dict[str, Any], request: Request) -> tuple[bytes, bool]:
        try:
            return encode(reply), True
        except (TypeError, ValueError):
            log.exception("op %s returned a result that is not JSON", request.op)
            return encode(_internal(request.id)), False

    def _send(self, data: bytes) -> bool:
        """Write with a deadline: a client that does not read is disconnected, never
        buffered for without bound."""
        try:
            self.sock.settimeout(self.server.drain_timeout)
            self.sock.sendall(data)
            return True
        except TimeoutError:
            log.warning(
                "client %s (pid %d) did not read for %g s; disconnected",
                self.peer.user,
                self.peer.pid,
                self.server.drain_timeout,
            )
            return False
        except OSError:
            return False

    def _peer_gone(self) -> bool:
        """Has the client closed its end? (POLLHUP: both directions shut, unlike a client
        that only finished sending, as `socat` does.)"""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        gone = select.POLLHUP | select.POLLERR | select.POLLNVAL
        return any(ev & gone for _, ev in poller.poll(0))


def _internal(req_id: Any) -> dict[str, Any]:
    return error_reply(req_id, ErrorCode.INTERNAL, "internal error; the daemon log has details")
