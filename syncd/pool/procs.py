"""Process identity, process-tree sampling and safe group signalling.

A task's process is identified by (pid, kernel start time, boot id) so that a recycled pid
is never mistaken for it. A process group is signalled with `killpg` only while its number
cannot have been recycled: the leader is known to be unreaped (alive or a zombie), or a
process we recorded from the task's tree is still a live member. Everything else is
signalled one process at a time through psutil, which checks the creation time first.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

_PROC = Path("/proc")
_BOOT_ID = _PROC / "sys/kernel/random/boot_id"
_RACES = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)
_POLL_SECONDS = 0.05
_WINDOW_READ_MAX = 256  # pids read one by one rather than listing /proc


@functools.cache
def boot_id() -> str:
    """The kernel's boot id: a pid and start time only mean something within one boot.
    Read once: it cannot change while this process lives."""
    return _BOOT_ID.read_text().strip()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards).

    The name is in parentheses and may itself contain spaces and ')', so split after the
    last ')'."""
    try:  # os-level I/O: pathlib costs several times the read itself, once per pid of /proc
        fd = os.open(f"{_PROC}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
    except OSError:
        return None
    _, sep, rest = raw.rpartition(b")")
    if not sep:
        return None
    return rest.decode("ascii", "replace").split()


def proc_starttime(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: start time in clock ticks since boot."""
    fields = _stat_fields(pid)
    return _starttime(fields) if fields is not None else None


def _starttime(fields: list[str]) -> int | None:
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _read_int(path: str, prefix: bytes = b"") -> int | None:
    """The integer after `prefix` at the start of a line of a small /proc file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            raw = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
    except OSError:
        return None
    if prefix:
        if raw.startswith(prefix):
            start = len(prefix)
        else:
            found = raw.find(b"\n" + prefix)
            if found < 0:
                return None
            start = found + 1 + len(prefix)
        raw = raw[start:]
    try:
        return int(raw.split(b"\n", 1)[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class PidWindow:
    """Where the pids of a process's group can be: a member is the process itself or was
    created after it, and Linux hands out pids cyclically, so every member's pid lies in
    (first, ns_last_pid] taken cyclically, unless the allocator has come round since.
    The kernel's fork counter tells: with fewer forks since than half of pid_max it cannot
    have. This lets a task's exit look at the few pids created during it instead of every
    process of the machine; otherwise (or when /proc cannot say) everything is scanned."""

    first: int
    forks_at_start: int | None

    @classmethod
    def starting_at(cls, pid: int) -> PidWindow:
        return cls(pid, _read_int(f"{_PROC}/stat", b"processes "))

    def candidates(self) -> Iterable[int] | None:
        """The pids allocated at or after `first` (a superset of the group's members), or
        None when only a full scan is safe. A narrow window (the usual case: a task's exit
        on a quiet machine) is read pid by pid, without listing all of /proc."""
        pid_max = _read_int(f"{_PROC}/sys/kernel/pid_max")
        last = _read_int(f"{_PROC}/sys/kernel/ns_last_pid")
        forks = _read_int(f"{_PROC}/stat", b"processes ")
        if None in (pid_max, last, forks, self.forks_at_start):
            return None
        assert pid_max is not None and last is not None and forks is not None
        if forks - (self.forks_at_start or 0) >= pid_max // 2:
            return None
        first = self.first
        if last >= first:
            span = range(first, last + 1)
            if len(span) <= _WINDOW_READ_MAX:
                return span
            return [pid for pid in _all_pids() if first <= pid <= last]
        # wrapped once
        if pid_max - first + last <= _WINDOW_READ_MAX:
            return [*range(first, pid_max), *range(1, last + 1)]
        return [pid for pid in _all_pids() if pid >= first or pid <= last]


def _all_pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir(_PROC) if name.isdigit()]
    except OSError:
        return []


def group_members(pgid: int, window: PidWindow | None = None) -> list[int]:
    """Pids whose process group is `pgid`, zombies excluded (they hold nothing but a pid).

    With a `window`, only pids it offers are read (see PidWindow)."""
    pids = window.candidates() if window is not None else None
    members: list[int] = []
    wanted = str(pgid)
    for pid in _all_pids() if pids is None else pids:
        fields = _stat_fields(pid)
        if fields is None or len(fields) < 3 or fields[0] in ("Z", "X"):
            continue
        if fields[2] == wanted:
            members.append(pid)
    return members


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except _RACES:
        return False


def _pgid_of(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid) if _alive(proc) else None
    except OSError:
        return None


def signal_tree(
    pgid: int, sig: int, leader_unreaped: bool, recorded: Iterable[psutil.Process]
) -> bool:
    """Send `sig` to a task's group and to each recorded process of its tree.

    `killpg` only when the group number is provably still the task's: its leader is
    unreaped, or a recorded process (identity checked by psutil) is still a member.
    Returns whether anything was signalled."""
    recorded = list(recorded)
    sent = False
    if leader_unreaped or any(_pgid_of(p) == pgid for p in recorded):
        try:
            os.killpg(pgid, sig)
            sent = True
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            log.warning("cannot signal process group %d: %s", pgid, exc)
    for proc in recorded:
        try:
            if _alive(proc):
                proc.send_signal(sig)  # psutil refuses if the pid now names another process
                sent = True
        except _RACES:
            pass
    return sent


def survivors(pgid: int | None, recorded: Iterable[psutil.Process]) -> list[int]:
    """Live recorded processes plus live members of `pgid` (None: do not scan a group)."""
    pids = {p.pid for p in recorded if _alive(p)}
    if pgid is not None:
        pids.update(group_members(pgid))
    return sorted(pids)


def wait_gone(pgid: int | None, recorded: Iterable[psutil.Process], timeout: float) -> list[int]:
    """Poll until nothing of the tree is alive or `timeout` passes; return the survivors."""
    recorded = list(recorded)
    deadline = time.monotonic() + timeout
    while True:
        left = survivors(pgid, recorded)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(_POLL_SECONDS)


STORE_ID_VAR = "SYNCD_STORE_ID"
TASK_ID_VAR = "SYNCD_TASK_ID"
_ENVIRON_MAX = 1 << 20
_KILL_WAIT_SECONDS = 2.0  # after SIGKILL: what is still alive then is reported, not waited for


def _environ(pid: int) -> bytes | None:
    try:
        fd = os.open(f"{_PROC}/{pid}/environ", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # gone, or another user's
        return None
    parts: list[bytes] = []
    size = 0
    try:
        while size < _ENVIRON_MAX and (chunk := os.read(fd, 65536)):
            parts.append(chunk)
            size += len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(parts)


def task_processes(store_id: str) -> dict[int, list[ProcIdentity]]:
    """Live processes whose environment marks them as tasks of the database `store_id`,
    by task id: what a restart kills when a task's pid was never recorded. One pass over
    /proc, reading each process's environ (others' users are skipped).

    Each identity's start time is read before the environ and checked after it: a pid that
    was recycled while it was read is skipped, never attributed to the new process."""
    marker = f"\0{STORE_ID_VAR}={store_id}\0".encode()
    key = f"\0{TASK_ID_VAR}=".encode()
    me = os.getpid()
    boot = boot_id()
    found: dict[int, list[ProcIdentity]] = {}
    for pid in _all_pids():
        if pid == me:
            continue
        before = proc_starttime(pid)
        raw = _environ(pid)
        if before is None or not raw or marker not in b"\0" + raw:
            continue
        env = b"\0" + raw
        at = env.find(key)
        if at < 0:
            continue
        end = env.find(b"\0", at + len(key))
        value = env[at + len(key) : end if end >= 0 else len(env)]
        fields = _stat_fields(pid)
        if not value.isdigit() or fields is None or fields[0] in ("Z", "X"):
            continue
        if _starttime(fields) != before:  # another process by now: its environ is not ours
            continue
        found.setdefault(int(value), []).append(ProcIdentity(pid, before, boot))
    return found


@dataclass(frozen=True)
class ProcIdentity:
    """What was stored at spawn to recognise the task's process after a daemon restart."""

    pid: int
    starttime: int
    boot_id: str

    def is_alive(self) -> bool:
        """Same boot, and the pid still names the process started then (alive or zombie)."""
        try:
            if boot_id() != self.boot_id:
                return False
        except OSError:
            return False
        return proc_starttime(self.pid) == self.starttime

    @classmethod
    def of(cls, pid: int) -> ProcIdentity:
        return cls(pid, proc_starttime(pid) or 0, boot_id())


def _running(identity: ProcIdentity) -> bool:
    """Alive and not a zombie: a zombie leader needs no more signals, only its members."""
    fields = _stat_fields(identity.pid)
    return identity.is_alive() and fields is not None and fields[0] not in ("Z", "X")


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except _RACES:
        return None


def _tree(pid: int) -> list[psutil.Process]:
    try:
        leader = psutil.Process(pid)
        return [leader, *leader.children(recursive=True)]
    except _RACES:
        return []


@dataclass(frozen=True)
class KillResult:
    """What killing a left-over group did: whether anything was signalled, and the pids
    still alive after SIGKILL and its wait (stuck in the kernel, or beyond our reach)."""

    sent: bool
    survivors: tuple[int, ...] = ()


def kill_identified_group(identity: ProcIdentity, grace: float) -> KillResult:
    """Kill a task process left by a previous daemon instance, if it is provably that process.

    SIGTERM to its group and recorded descendants, up to `grace` seconds, then SIGKILL.
    A recycled pid or another boot is never signalled."""
    if not identity.is_alive():
        return KillResult(sent=False)
    pid = identity.pid
    recorded = _tree(pid)
    if not identity.is_alive():  # it ended while we listed its tree
        return KillResult(sent=False)
    log.info("killing left-over process group %d", pid)
    sent = signal_tree(pid, signal.SIGTERM, leader_unreaped=True, recorded=recorded)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _running(identity) and not survivors(pid, recorded):
            break
        time.sleep(_POLL_SECONDS)
    left: list[int] = []
    if _running(identity) or survivors(pid, recorded):
        signal_tree(pid, signal.SIGKILL, leader_unreaped=identity.is_alive(), recorded=recorded)
        left = wait_gone(pid, recorded, _KILL_WAIT_SECONDS)
        for survivor in left:
            log.warning("process %d survived SIGKILL of left-over group %d", survivor, pid)
    return KillResult(sent=sent, survivors=tuple(left))


@dataclass(frozen=True)
class TreeSample:
    """One look at a task's process tree. cpu_seconds and io_bytes are cumulative and never
    decrease, even when members exit, so growth always means progress."""

    cpu_seconds: float
    io_bytes: int
    rss_bytes: int
    cpu_percent: float
    processes: int


@dataclass
class _Seen:
    proc: psutil.Process
    cpu: float = 0.0
    io: int = 0


class TreeSampler:
    """Samples one task's tree; keeps the psutil objects so cpu_percent has a baseline and
    processes that left the tree (setsid + reparenting) are still remembered for killing."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        # The leader as it is now (pid and start time, taken while it cannot be reaped):
        # once it is reaped its number may name another program's process, whose tree is
        # never walked as ours (RELIABILITY P5).
        self._leader = _process(pid)
        self._lock = threading.Lock()  # the monitor samples while a worker may be killing
        self._seen: dict[int, _Seen] = {}
        self._cpu_total = 0.0
        self._io_total = 0

    def _refresh(self) -> list[_Seen]:
        """Update the remembered set from the live tree; return the live entries."""
        live: list[_Seen] = []
        current: set[int] = set()
        tree = _tree(self.pid)
        if tree and tree[0] != self._leader:  # psutil compares pid and start time
            tree = []  # the leader was reaped and its number reused: only remembered ones
        for proc in tree:
            seen = self._seen.get(proc.pid)
            if seen is None or seen.proc != proc:  # new, or the pid was reused
                seen = self._seen[proc.pid] = _Seen(proc)
            current.add(proc.pid)
            live.append(seen)
        for pid, seen in list(self._seen.items()):
            if pid in current:
                continue
            if _alive(seen.proc):
                live.append(seen)  # escaped the tree, still ours
            else:
                del self._seen[pid]
        return live

    def descendants(self) -> list[psutil.Process]:
        """Every live process of the tree except the leader, including escaped ones."""
        with self._lock:
            return [s.proc for s in self._refresh() if s.proc.pid != self.pid]

    def sample(self) -> TreeSample:
        with self._lock:
            return self._sample()

    def _sample(self) -> TreeSample:
        rss = 0
        percent = 0.0
        count = 0
        for seen in self._refresh():
            proc = seen.proc
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    times = proc.cpu_times()
                    cpu = times.user + times.system + times.children_user + times.children_system
                    mem = proc.memory_info().rss
                    pct = proc.cpu_percent(interval=None)
                    io = _io_bytes(proc)
            except _RACES:
                continue
            self._cpu_total += max(0.0, cpu - seen.cpu)
            self._io_total += max(0, io - seen.io)
            seen.cpu = max(seen.cpu, cpu)
            seen.io = max(seen.io, io)
            rss += mem
            percent += pct
            count += 1
        return TreeSample(self._cpu_total, self._io_total, rss, percent, count)


def pipe_holders(inode: int) -> list[psutil.Process]:
    """Other processes with a pipe (identified by its inode) open: whoever keeps a task's
    output open after its process group is gone escaped the group (setsid)."""
    target = f"pipe:[{inode}]"
    me = os.getpid()
    found: list[psutil.Process] = []
    for name in os.listdir(_PROC):
        if not name.isdigit() or int(name) == me:
            continue
        fd_dir = _PROC / name / "fd"
        try:
            links = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
            if target in links:
                found.append(psutil.Process(int(name)))
        except (OSError, *_RACES):
            continue
    return found


def _io_bytes(proc: psutil.Process) -> int:
    """Characters read and written, sockets included: a sync talking to an API is working
    even when it touches no disk. 0 when the kernel does not tell us."""
    try:
        io = proc.io_counters()
    except (*_RACES, AttributeError, NotImplementedError, OSError):
        return 0
    chars = getattr(io, "read_chars", None), getattr(io, "write_chars", None)
    if chars[0] is not None and chars[1] is not None:
        return int(chars[0]) + int(chars[1])
    return int(io.read_bytes) + int(io.write_bytes)
