"""Real system resources for the fault tests: a `syncctl` runner, ping latency probes,
little job scripts written into the test's work dir, a real tmpfs mount and throw-away
system users. The mount and user parts need root; CI runs as root, so they fail loudly
rather than skip when the machine refuses."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemon import (  # noqa: F401  (fixtures are re-exported to test modules)
    JOB,
    REPO,
    Conn,
    DaemonProc,
    make_daemon,
    wait_for,
    workdir,
)

CTL = [sys.executable, "-c", "from syncd.ctl.main import main; main()"]
PING_LIMIT = 0.100  # RELIABILITY 2.4: ping from another client answers in under 100 ms


# -- syncctl ----------------------------------------------------------------------------------


def syncctl(d: DaemonProc, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real `syncctl` against `d` (exit code, stdout and stderr as a person sees them)."""
    return subprocess.run(
        [*CTL, "--socket", str(d.socket), *args],
        capture_output=True,
        text=True,
        env=d.env,
        timeout=timeout,
        check=False,
    )


# -- responsiveness ---------------------------------------------------------------------------


def ping_seconds(d: DaemonProc) -> float:
    """Connect + ping + reply on a fresh connection, in seconds."""
    start = time.monotonic()
    conn = Conn(d.socket, timeout=10)
    try:
        conn.call("ping")
    finally:
        conn.close()
    return time.monotonic() - start


def assert_responsive(d: DaemonProc, limit: float = PING_LIMIT, tries: int = 3) -> float:
    """A ping from another client answers within `limit`: the best of `tries` attempts, so a
    single scheduler hiccup of a loaded 2-core CI box does not fail the row."""
    best = min(ping_seconds(d) for _ in range(tries))
    assert best < limit, f"ping took {best * 1000:.0f} ms (limit {limit * 1000:.0f} ms)"
    return best


@dataclass
class PingProbe:
    """Pings `d` from its own thread every `interval` s while an attack runs."""

    d: DaemonProc
    interval: float = 0.02
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PingProbe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.latencies.append(ping_seconds(self.d))
            except Exception as exc:
                self.errors.append(repr(exc))
            self._stop.wait(self.interval)

    def p99(self) -> float:
        assert self.latencies, "the probe never pinged"
        if len(self.latencies) < 2:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[98]


# -- job scripts ------------------------------------------------------------------------------


def write_script(dirpath: Path, name: str, body: str) -> Path:
    """A Python job script in the work dir, runnable as a route argv (no shell anywhere)."""
    path = dirpath / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def script_route(path: Path, **overrides: Any) -> dict[str, Any]:
    """A `{argv = [...]}` route running `path` with this interpreter."""
    return {"argv": [sys.executable, str(path)], **overrides}


def read_json_lines(path: Path) -> list[Any]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- processes --------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_scan(pgid: int) -> list[int]:
    """Every live (non-zombie) process whose process group is `pgid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for pid {pid}")


def reset_peak_rss(pid: int) -> None:
    """Start VmHWM (the peak RSS) afresh from the current RSS (proc(5), clear_refs "5"), so
    a later VmHWM is the peak reached since: memory freed before it is read still counts."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


# -- root-only machinery ----------------------------------------------------------------------


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this fault test needs root (CI runs as root): mounts, users or chattr")


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    """A real tmpfs of `size` mounted on `path` for the duration."""
    require_root()
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs on {path}: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def read_only_bind(path: Path) -> Iterator[Path]:
    """`path` bind-mounted read-only onto itself (a hardening misconfiguration, S4)."""
    require_root()
    steps = [
        ["mount", "--bind", str(path), str(path)],
        ["mount", "-o", "remount,ro,bind", str(path)],
    ]
    mounted = 0
    try:
        for argv in steps:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                pytest.fail(f"{' '.join(argv)} failed: {done.stderr.strip()}")
            mounted = 1
        yield path
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill_disk(path: Path) -> int:
    """Write `path` until the file system is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError:
                break
    # Top up the last partial block too.
    with open(path, "ab", buffering=0) as f:
        for _ in range(4096):
            try:
                f.write(b"\0" * 512)
            except OSError:
                break
    return written


@dataclass(frozen=True)
class FaultUsers:
    """Throw-away accounts: `outsider` (not in the control group), `member` (the group as a
    supplementary group), `primary` (the group as its primary gid)."""

    group: str
    gid: int
    outsider: str
    member: str
    primary: str

    def ids(self, name: str) -> tuple[int, int]:
        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid


def _run_or_fail(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"cannot create test users/groups: {' '.join(argv)}: {done.stderr.strip()}")


@pytest.fixture(scope="module")
def test_users() -> Iterator[FaultUsers]:
    """Create the accounts with groupadd/useradd (root only; removed afterwards)."""
    require_root()
    tag = f"{os.getpid() % 100000}"
    users = FaultUsers(
        group=f"sdtctl{tag}",
        gid=0,
        outsider=f"sdtout{tag}",
        member=f"sdtmem{tag}",
        primary=f"sdtpri{tag}",
    )
    created_users: list[str] = []
    created_group = False
    try:
        _run_or_fail(["groupadd", users.group])
        created_group = True
        base = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        _run_or_fail([*base, "--user-group", users.outsider])
        created_users.append(users.outsider)
        _run_or_fail([*base, "--user-group", "--groups", users.group, users.member])
        created_users.append(users.member)
        _run_or_fail([*base, "--no-user-group", "--gid", users.group, users.primary])
        created_users.append(users.primary)
        yield FaultUsers(**{**users.__dict__, "gid": grp.getgrnam(users.group).gr_gid})
    finally:
        for name in created_users:
            subprocess.run(["userdel", name], capture_output=True, check=False)
            with contextlib.suppress(KeyError):
                grp.getgrnam(name)
                subprocess.run(["groupdel", name], capture_output=True, check=False)
        if created_group:
            subprocess.run(["groupdel", users.group], capture_output=True, check=False)


# A stdlib-only NDJSON client, run as another user: it must not need this repo's venv (which
# may live under a 0700 home) or any third-party package.
RAW_CLIENT = """
import json, socket, sys
path, requests = sys.argv[1], json.loads(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(path)
buf = b""
out = []
for i, (op, args) in enumerate(requests):
    s.sendall(json.dumps({"v": 1, "id": i, "op": op, "args": args}).encode() + b"\\n")
    while b"\\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("connection closed")
        buf += chunk
    line, buf = buf.split(b"\\n", 1)
    out.append(json.loads(line))
print(json.dumps(out))
"""


def interpreter_for(user: str) -> str:
    """A Python interpreter `user` can execute (the venv's may sit under a private home)."""
    candidates = [sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3"]
    which = shutil.which("python3")
    if which:
        candidates.append(which)
    for exe in dict.fromkeys(c for c in candidates if c):
        try:
            done = subprocess.run(
                [exe, "-c", "import json, socket"], user=user, capture_output=True, timeout=30
            )
        except OSError:
            continue
        if done.returncode == 0:
            return exe
    pytest.fail(f"no Python interpreter is executable by user {user}: tried {candidates}")


def raw_as(
    user: str,
    sock: Path,
    requests: list[tuple[str, dict[str, Any]]],
    *,
    group: int | str | None = None,
    extra_groups: list[int | str] | None = None,
) -> list[dict[str, Any]]:
    """Send `requests` over one connection as `user` (setuid subprocess); the replies."""
    done = subprocess.run(
        [interpreter_for(user), "-c", RAW_CLIENT, str(sock), json.dumps(requests)],
        user=user,
        group=group if group is not None else pwd.getpwnam(user).pw_gid,
        extra_groups=extra_groups if extra_groups is not None else [],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        cwd="/",
        check=False,
    )
    assert done.returncode == 0, f"client as {user} failed: {done.stderr}"
    replies: list[dict[str, Any]] = json.loads(done.stdout)
    return replies


def socket_roundtrip(path: Path, payload: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes on a fresh connection and return everything read until EOF/timeout."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    try:
        s.sendall(payload)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
        return data
    finally:
        s.close()
