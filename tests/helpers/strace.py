"""strace attached to a running daemon: what it exec'd, when it wrote and synced its files."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.daemon import wait_for

# "<tid> <epoch seconds> <syscall>(<fd><path>, ..." (or a call on no fd) or the "<... name
# resumed>" half of a call another thread interrupted; -y prints each fd's path (or
# socket:[inode]).
_LINE = re.compile(
    r"^(?P<tid>\d+)\s+(?P<t>\d+\.\d+)\s+"
    r"(?:<\.\.\. (?P<resumed>\w+) resumed>|(?P<name>\w+)\((?:(?P<fd>\d+)<(?P<path>[^>]*)>)?)"
    r"(?P<rest>.*)$"
)


@dataclass
class Call:
    tid: int
    name: str
    path: str  # "" for a call on no file descriptor
    start: float
    end: float
    text: str  # the line (the first one for a call that was interrupted)


class Tracer:
    """strace -f on every thread of `pid`; stop() returns its log. Without strace, or when it
    cannot attach, the test fails and says why: the audit is part of the test, not an extra."""

    def __init__(self, pid: int, syscalls: str, log: Path) -> None:
        strace = shutil.which("strace")
        if strace is None:
            pytest.fail("strace not found: install Debian's `strace` package (CI does: .ci/run)")
        self.log = log
        self.err = log.with_suffix(".err")
        argv = [strace, "-f", "-qq", "-ttt", "-y", "-s", "120", "-e", f"trace={syscalls}"]
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [*argv, "-o", str(log), "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=err
            )

        def attached() -> bool:  # every thread of the daemon has strace as its tracer
            if self.proc.poll() is not None:
                pytest.fail(
                    f"strace could not attach to pid {pid} (exit {self.proc.returncode}; is"
                    f" ptrace permitted here?): {self.stderr()}"
                )
            mark = f"TracerPid:\t{self.proc.pid}"
            tasks = os.listdir(f"/proc/{pid}/task")
            return all(mark in Path(f"/proc/{pid}/task/{t}/status").read_text() for t in tasks)

        try:
            wait_for(attached, 10, "strace to attach to every daemon thread")
        except AssertionError as exc:
            self.proc.kill()
            pytest.fail(f"{exc}: {self.stderr()}")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace").strip()

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        return self.log.read_text()


def calls(log: str) -> list[Call]:
    """The calls in start order, with their end times (a call interrupted by
    another thread's line ends at its "resumed" line)."""
    done: list[Call] = []
    open_calls: dict[int, Call] = {}
    for line in log.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        tid, at = int(m["tid"]), float(m["t"])
        if m["resumed"]:
            call = open_calls.pop(tid, None)
            if call is not None:
                call.end = at
            continue
        call = Call(tid, m["name"], m["path"] or "", at, at, line)
        done.append(call)
        if m["rest"].endswith("<unfinished ...>"):
            open_calls[tid] = call
    return done
