"""Spawn one task's process and supervise it until it and everything it started are gone.

One supervisor per child copies its output into the TaskLog and watches the leader through
a pidfd, so it learns of the exit *without reaping it*. While the leader is an unreaped
zombie its pid, and so its process-group number, cannot be reused, which makes `killpg`
safe; the supervisor uses that window to stop whatever is left of the group, lets the output
drain, and only then reaps. After the reap the group is never `killpg`'d again unless a
process we recorded from the tree is still a member. The supervisor runs in the thread of
whoever waits for the child (the dispatcher's worker), or in a thread of its own.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from syncd.pool.envfile import SpawnError
from syncd.pool.procs import (
    PidWindow,
    ProcIdentity,
    TreeSample,
    TreeSampler,
    group_members,
    pipe_holders,
    signal_tree,
    wait_gone,
)
from syncd.tasklog.writer import TaskLog

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_PIPE_SIZE = 1 << 20
_DRAIN_BATCH = 64  # reads of whatever is left when the pump is told to stop
_POLL_SECONDS = 0.05


# -- environment ----------------------------------------------------------------------------


# -- spawning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpawnRequest:
    task_id: int
    argv: Sequence[str]
    cwd: Path | None
    env: Mapping[str, str]
    log_path: Path
    log_max_bytes: int
    # The caller calls wait() at once and supervises in its own thread (no thread started).
    caller_waits: bool = False


def _spawn_message(exc: Exception, argv: list[str], cwd: Path | None) -> str:
    exe = argv[0]
    if isinstance(exc, ValueError):
        return f"invalid command or environment for {exe!r}: {exc}"
    if not isinstance(exc, OSError):
        return f"cannot execute {exe!r}: {exc}"
    about_cwd = cwd is not None and exc.filename is not None and str(exc.filename) == str(cwd)
    if about_cwd:
        if isinstance(exc, FileNotFoundError):
            return f"working directory '{cwd}' not found"
        return f"working directory '{cwd}': {exc.strerror}"
    if isinstance(exc, FileNotFoundError):
        where = "" if "/" in exe else " in PATH"
        return f"executable {exe!r} not found{where}"
    if isinstance(exc, PermissionError):
        return f"permission denied executing {exe!r}"
    if exc.errno == errno.ENOEXEC:
        return f"cannot execute {exe!r}: not an executable file format"
    return f"cannot execute {exe!r}: {exc.strerror or exc}"


class Child:
    """One running task process: its supervisor and the ways to stop it."""

    # Grace for group members still running when the leader exits on its own.
    leftover_grace = 1.0
    # How long output may stay open after the group is gone before holders are hunted down.
    drain_seconds = 2.0

    def __init__(self, req: SpawnRequest, proc: subprocess.Popen[bytes], tasklog: TaskLog):
        assert proc.stdout is not None
        self.task_id = req.task_id
        self.pid = proc.pid
        self.identity = ProcIdentity.of(proc.pid)  # unreaped, so /proc/<pid> still exists
        self._window = PidWindow.starting_at(proc.pid)
        self.log = tasklog
        self._proc = proc
        self._out = proc.stdout
        self._out_fd = self._out.fileno()
        self._pipe_inode = os.fstat(self._out_fd).st_ino
        self._pidfd = _pidfd_open(proc.pid)
        self._sampler = TreeSampler(proc.pid)
        self._lock = threading.Lock()  # orders signalling against the reap
        self._reaped = False
        self._returncode: int | None = None
        self._terminating = False
        self._exited_first = False  # the leader had exited on its own before terminate()
        self._term_at: float | None = None  # when terminate() sent SIGTERM
        self._kill_at: float | None = None
        self._recorded: list[psutil.Process] = []
        self._done = threading.Event()
        self._supervising = False  # someone runs _supervise: the first wait() or a thread
        self._poller = select.poll()
        self._poller.register(self._out_fd, select.POLLIN)
        if self._pidfd is not None:
            self._poller.register(self._pidfd, select.POLLIN)
        self._eof = False
        self._leader_gone = False
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._out_fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)

    @classmethod
    def start(cls, req: SpawnRequest) -> Child:
        """Start the process in its own session, stdin /dev/null, output to the task log."""
        argv = [str(a) for a in req.argv]
        if not argv:
            raise SpawnError("empty command")
        if req.cwd is not None and not req.cwd.is_dir():
            what = "is not a directory" if req.cwd.exists() else "not found"
            raise SpawnError(f"working directory '{req.cwd}' {what}")
        try:
            tasklog = TaskLog(req.log_path, req.log_max_bytes)
        except OSError as exc:
            raise SpawnError(f"cannot create log '{req.log_path}': {exc.strerror}") from None
        try:
            proc = subprocess.Popen(
                argv,
                cwd=req.cwd,
                env=req.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            message = _spawn_message(exc, argv, req.cwd)
            tasklog.write(f"[syncd: spawn error: {message}]\n".encode())
            tasklog.close()
            raise SpawnError(message) from None
        log.debug("task %d: started pid %d: %s", req.task_id, proc.pid, argv)
        child = cls(req, proc, tasklog)
        if not req.caller_waits:
            child._start_supervisor()
        return child

    # -- public ---------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status once the leader exited, the rest of its group was stopped and the
        output drained (negative: killed by that signal); None if `timeout` passed first.

        The first wait() without a timeout supervises in the caller's thread if nobody does
        yet (the dispatcher's worker waits anyway: no thread to start per task)."""
        if timeout is None and self._claim_supervision():
            self._supervise()
        else:
            self._start_supervisor()
        if self._done.wait(timeout):
            return self._returncode
        return None

    @property
    def exited(self) -> bool:
        """True once `wait()` would return without blocking."""
        self._start_supervisor()
        return self._done.is_set()

    def _claim_supervision(self) -> bool:
        with self._lock:
            claimed, self._supervising = not self._supervising, True
        return claimed

    def _start_supervisor(self) -> None:
        if self._claim_supervision():
            name = f"task-{self.task_id}-supervisor"
            threading.Thread(target=self._supervise, name=name, daemon=True).start()

    def sample(self) -> TreeSample:
        return self._sampler.sample()

    def terminate(self, grace: float) -> None:
        """SIGTERM the group and every recorded descendant now; SIGKILL what is left after
        `grace` seconds (from a timer thread). Non-blocking and idempotent."""
        with self._lock:
            if self._terminating:
                return
            self._terminating = True
            self._exited_first = self._reaped or self._leader_has_exited()
            self._term_at = time.monotonic()
            self._kill_at = self._term_at + grace
            self._recorded = self._sampler.descendants()
            if self._reaped and not self._recorded:
                return  # nothing is ours any more; the group number may belong to others
            log.info("task %d: sending SIGTERM to process group %d", self.task_id, self.pid)
            signal_tree(self.pid, signal.SIGTERM, not self._reaped, self._recorded)
        timer = threading.Timer(grace, self._escalate)
        timer.name = f"task-{self.task_id}-kill"
        timer.daemon = True
        timer.start()

    @property
    def exited_before_kill(self) -> bool:
        """terminate() came after the leader had already exited by itself: its exit status,
        not the kill, says how the task ended."""
        return self._exited_first

    def _leader_has_exited(self) -> bool:
        """Has the leader exited (it stays unreaped)? Asked without blocking."""
        try:
            flags = os.WEXITED | os.WNOWAIT | os.WNOHANG
            return os.waitid(os.P_PID, self.pid, flags) is not None
        except ChildProcessError:
            return True

    # -- killing --------------------------------------------------------------------------

    def _escalate(self) -> None:
        try:
            with self._lock:
                known = {p.pid: p for p in (*self._recorded, *self._sampler.descendants())}
                recorded = list(known.values())
                group = None if self._reaped else self.pid
                if not wait_gone(group, recorded, 0):
                    return
                log.warning(
                    "task %d: still running %.1fs after SIGTERM; sending SIGKILL",
                    self.task_id,
                    time.monotonic() - (self._term_at or time.monotonic()),
                )
                signal_tree(self.pid, signal.SIGKILL, not self._reaped, recorded)
            for pid in wait_gone(group, recorded, 2.0):
                log.warning("task %d: process %d survived SIGKILL", self.task_id, pid)
        except Exception:
            log.exception("task %d: escalation to SIGKILL failed", self.task_id)

    def _stop_leftovers(self) -> None:
        """The leader exited (still unreaped): stop the rest of its group, honouring the
        grace of a terminate() in progress. Output is still copied meanwhile."""
        if not [p for p in group_members(self.pid, self._window) if p != self.pid]:
            return
        log.info("task %d: leader exited; stopping the rest of group %d", self.task_id, self.pid)
        signal_tree(self.pid, signal.SIGTERM, True, [])
        start = time.monotonic()
        while True:
            left = [p for p in group_members(self.pid) if p != self.pid]
            deadline = max(start + self.leftover_grace, self._kill_at or 0.0)
            if not left or time.monotonic() >= deadline:
                break
            self._pump_for(_POLL_SECONDS)
        if left:
            signal_tree(self.pid, signal.SIGKILL, True, [])
            for pid in wait_gone(self.pid, [], 2.0):
                if pid != self.pid:
                    log.warning("task %d: process %d survived SIGKILL", self.task_id, pid)

    def _await_drain(self) -> None:
        """Output stays open only if something outside the group holds it: stop those."""
        if self._pump_until_eof(self.drain_seconds):
            return
        holders = pipe_holders(self._pipe_inode)
        for proc in holders:
            log.warning(
                "task %d: process %d keeps the task's output open after the task ended; "
                "stopping it",
                self.task_id,
                proc.pid,
            )
        if holders:
            signal_tree(self.pid, signal.SIGTERM, True, holders)
            if wait_gone(None, holders, self.leftover_grace):
                signal_tree(self.pid, signal.SIGKILL, True, holders)
                for pid in wait_gone(None, holders, 2.0):
                    log.warning("task %d: process %d survived SIGKILL", self.task_id, pid)
            if self._pump_until_eof(self.drain_seconds):
                return
        log.warning("task %d: output still open after the task ended; not reading it", self.task_id)
        self._drain_available()

    # -- supervision ----------------------------------------------------------------------

    def _supervise(self) -> None:
        try:
            self._await_leader_exit()
            self._stop_leftovers()
            self._await_drain()
        except Exception:
            log.exception("task %d: supervising the exit failed", self.task_id)
        finally:
            self._finish()

    def _await_leader_exit(self) -> None:
        """Copy output until the leader exits (not reaped). Without a pidfd, the leader is
        looked at between slices of reading, and waited for outright once output ends."""
        while not self._leader_gone:
            if self._pidfd is not None:
                self._poll_once(None)
            elif self._eof:
                self._waitid(0)
            else:
                self._poll_once(_POLL_SECONDS)
                self._waitid(os.WNOHANG)

    def _waitid(self, flags: int) -> None:
        """Has the leader exited (WNOWAIT: it stays a zombie)? With WNOHANG, maybe not yet."""
        try:
            if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT | flags) is None:
                return  # WNOHANG, still running
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored?); Popen.wait copes
            log.warning("task %d: pid %d was reaped by someone else", self.task_id, self.pid)
        self._leader_gone = True

    def _poll_once(self, timeout: float | None) -> None:
        """One wait for output, its end or the leader's exit (each fd is dropped once done
        with, so an empty poll is a plain sleep); copies one chunk of output."""
        ms = None if timeout is None else max(0, int(timeout * 1000))
        for fd, _ in self._poller.poll(ms):
            if fd == self._pidfd:
                self._poller.unregister(fd)
                self._leader_gone = True
            elif fd == self._out_fd and not self._eof:
                try:
                    data = os.read(fd, _CHUNK)
                except OSError as exc:
                    log.warning("task %d: reading output failed: %s", self.task_id, exc)
                    data = b""
                if data:
                    self.log.write(data)
                else:
                    self._poller.unregister(fd)
                    self._eof = True

    def _pump_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._poll_once(left)

    def _pump_until_eof(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not self._eof and (left := deadline - time.monotonic()) > 0:
            self._poll_once(left)
        return self._eof

    def _drain_available(self) -> None:
        """Whatever is already in the pipe, without waiting for more."""
        if self._eof:
            return
        os.set_blocking(self._out_fd, False)
        for _ in range(_DRAIN_BATCH):
            try:
                data = os.read(self._out_fd, _CHUNK)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self.log.write(data)

    def _finish(self) -> None:
        with contextlib.suppress(OSError):
            self._out.close()
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
        # Wait for the exit without the lock (terminate() needs it to stop a leader that
        # is still running, e.g. after a supervision error), then reap under it.
        self._await_exit()
        with self._lock:
            self._returncode = self._proc.wait()
            self._reaped = True
        self.log.close()
        log.debug("task %d: pid %d exited with %s", self.task_id, self.pid, self._returncode)
        self._done.set()

    def _await_exit(self) -> None:
        """Block until the leader has exited, leaving it unreaped (no lock held)."""
        while True:
            try:
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
                return
            except InterruptedError:
                continue
            except ChildProcessError:  # reaped elsewhere: Popen.wait copes
                return


def _pidfd_open(pid: int) -> int | None:
    """A pidfd for the leader (Linux 5.3+), so one poll() waits for output and the exit
    alike; None where the kernel has none, and the supervisor polls the exit instead."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError) as exc:
        log.debug("pidfd_open(%d) unavailable (%s); polling for the exit", pid, exc)
        return None
