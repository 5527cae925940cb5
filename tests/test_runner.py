"""Child: spawning, output, exit, and killing real process trees (RELIABILITY P1-P9)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil
import pytest

from syncd.pool import procs, runner
from syncd.pool.envfile import SpawnError, build_env, read_env_file
from syncd.pool.runner import Child, SpawnRequest
from syncd.tasklog.reader import read_log
from tests.helpers.procs import (
    Impostor,
    live,
    live_in_group,
    pause,
    read_pids,
    record_killpg,
    wait_until,
)

PY = sys.executable
_task_ids = itertools.count(1)
BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Children a test started; anything left is killed so no test leaks processes."""
    started: list[Child] = []
    yield started
    for child in started:
        if not child.exited:
            child.terminate(0.0)
            child.wait(10)


def spawn(
    children: list[Child],
    tmp_path: Path,
    code: str,
    *,
    env: Mapping[str, str] | None = None,
    max_bytes: int = 1 << 20,
    cwd: Path | None = None,
    caller_waits: bool = False,
) -> Child:
    req = SpawnRequest(
        task_id=next(_task_ids),
        argv=[PY, "-c", code],
        cwd=cwd,
        env=dict(env if env is not None else BASE_ENV),
        log_path=tmp_path / f"{len(children) + 1}.log",
        log_max_bytes=max_bytes,
        caller_waits=caller_waits,
    )
    child = Child.start(req)
    children.append(child)
    return child


def output(child: Child) -> str:
    """The log as the `logs` op shows it: no file yet (no output yet) reads as nothing."""
    try:
        return read_log(child.log.path, 0, 1 << 30)[0]
    except FileNotFoundError:
        return ""


def pump_threads(child: Child) -> list[threading.Thread]:
    """The child's threads still running once its supervisor has had a moment to return."""

    def mine() -> list[threading.Thread]:
        prefix = f"task-{child.task_id}-"
        return [t for t in threading.enumerate() if t.name.startswith(prefix)]

    deadline = time.monotonic() + 5
    while mine() and time.monotonic() < deadline:
        pause(0.01)
    return mine()


# -- normal runs ------------------------------------------------------------------------------


def test_exit_code_output_and_progress(tmp_path: Path, children: list[Child]) -> None:
    code = "import sys; print('hi'); print('::progress 3/4', flush=True); sys.exit(3)"
    child = spawn(children, tmp_path, code)
    assert child.wait(15) == 3
    assert child.exited
    assert output(child) == "hi\n::progress 3/4\n"
    assert child.log.progress == "3/4"
    assert child.identity.pid == child.pid and child.identity.starttime > 0
    assert pump_threads(child) == []


def test_progress_line_still_in_the_pipe_when_the_exit_is_seen(
    tmp_path: Path, children: list[Child]
) -> None:
    """Issue 11.11, the finish side: the last progress line and the leader's exit reach the
    supervisor in the same poll (forced: nobody reads until the leader is a zombie), and
    the line is still recorded before wait() returns."""
    code = "import os; os.write(1, b'work\\n::progress 3/10\\n'); os.write(1, b'::progress 4/10')"
    child = spawn(children, tmp_path, code, caller_waits=True)
    wait_until(lambda: child._leader_has_exited(), 15, "the leader to exit unread")
    seen: list[str | None] = []
    child.log.on_progress = lambda: seen.append(child.log.progress)
    assert child.wait() == 0
    assert child.log.progress == "4/10"
    assert seen == ["3/10", "4/10"]  # each new line told once, the unterminated one at close


def test_caller_waits_supervises_in_the_waiting_thread(
    tmp_path: Path, children: list[Child]
) -> None:
    code = "import sys, time; time.sleep(0.3); print('out'); sys.exit(5)"
    child = spawn(children, tmp_path, code, caller_waits=True)
    prefix = f"task-{child.task_id}-"
    assert not [t for t in threading.enumerate() if t.name.startswith(prefix)]
    assert child.wait() == 5
    assert output(child) == "out\n"
    assert not [t for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.mark.parametrize(
    ("code", "expected_output"),
    [
        ("import sys; print('plain'); sys.exit(2)", "plain\n"),
        # output closed long before the exit: the exit is waited for outright
        ("import os, sys, time; print('x', flush=True); os.close(1); os.close(2); "
         "time.sleep(0.3); os._exit(2)", "x\n"),
        # the leader exits while a group member still holds the output (P4)
        ("import subprocess, sys; subprocess.Popen(['sleep', '60']); print('lead'); sys.exit(2)",
         "lead\n"),
    ],
)  # fmt: skip
def test_without_pidfd_the_exit_is_still_seen(
    tmp_path: Path,
    children: list[Child],
    monkeypatch: pytest.MonkeyPatch,
    code: str,
    expected_output: str,
) -> None:
    monkeypatch.setattr(runner, "_pidfd_open", lambda pid: None)
    child = spawn(children, tmp_path, code, caller_waits=True)
    started = time.monotonic()
    assert child.wait() == 2
    assert time.monotonic() - started < 5
    assert output(child) == expected_output
    assert live_in_group(child.pid) == []


def test_wait_times_out_then_signal_exit_is_negative(tmp_path: Path, children: list[Child]) -> None:
    child = spawn(children, tmp_path, "import time; time.sleep(60)")
    assert child.wait(0.1) is None
    assert not child.exited
    child.terminate(5)
    assert child.wait(15) == -signal.SIGTERM


def test_output_is_readable_while_running(tmp_path: Path, children: list[Child]) -> None:
    code = "import time; print('first', flush=True); time.sleep(60)"
    child = spawn(children, tmp_path, code)
    wait_until(lambda: output(child) == "first\n", what="live output")
    assert child.log.bytes_written == 6


# -- P1 / P2 / P3: killing --------------------------------------------------------------------


def test_p1_sigterm_trap_is_killed_at_grace(tmp_path: Path, children: list[Child]) -> None:
    code = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""
    child = spawn(children, tmp_path, code)
    wait_until(lambda: child.log.bytes_written > 0, what="the trap")
    start = time.monotonic()
    child.terminate(0.5)
    child.terminate(0.5)  # idempotent
    assert child.wait(15) == -signal.SIGKILL
    elapsed = time.monotonic() - start
    assert 0.45 <= elapsed < 1.5


@pytest.mark.parametrize("trap", [False, True], ids=["plain", "trapping"])
def test_p2_no_process_of_the_group_survives(
    tmp_path: Path, children: list[Child], trap: bool
) -> None:
    pids = tmp_path / "pids"
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if trap else ""
    code = f"""
import signal, subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c",
        "import signal, time; {ignore}time.sleep(60)"]) for _ in range(5)]
open({str(pids)!r}, "w").write(" ".join(str(k.pid) for k in kids))
time.sleep(60)
"""
    child = spawn(children, tmp_path, code)
    grandchildren = read_pids(pids, 5)
    assert len(live_in_group(child.pid)) == 6
    child.terminate(0.5)
    assert child.wait(15) is not None
    assert live_in_group(child.pid) == []
    assert not any(live(p) for p in grandchildren)


def test_p3_grandchild_that_left_the_group_is_killed(tmp_path: Path, children: list[Child]) -> None:
    pids = tmp_path / "pids"
    code = f"""
import os, subprocess, sys, time
kid = subprocess.Popen([sys.executable, "-c",
    "import os, signal, time; os.setsid(); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open({str(pids)!r}, 'w').write(str(os.getpid())); time.sleep(60)"])
time.sleep(60)
"""
    child = spawn(children, tmp_path, code)
    (escaped,) = read_pids(pids, 1)
    assert os.getpgid(escaped) == escaped  # really out of the task's group
    child.terminate(0.5)
    assert child.wait(15) is not None
    wait_until(lambda: not live(escaped), what="the escaped grandchild to die")


def test_p3_survivor_of_sigkill_is_logged_by_pid(
    tmp_path: Path,
    children: list[Child],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process that cannot be killed (simulated: signals to it are swallowed) is named."""
    pids = tmp_path / "pids"
    code = f"""
import os, subprocess, sys, time
kid = subprocess.Popen([sys.executable, "-c",
    "import os, time; os.setsid(); open({str(pids)!r}, 'w').write(str(os.getpid())); "
    "time.sleep(60)"])
time.sleep(60)
"""
    child = spawn(children, tmp_path, code)
    (escaped,) = read_pids(pids, 1)
    real_send = psutil.Process.send_signal

    def swallow(self: psutil.Process, sig: int) -> None:
        if self.pid != escaped:
            real_send(self, sig)

    monkeypatch.setattr(psutil.Process, "send_signal", swallow)
    monkeypatch.setattr(procs, "wait_gone", _short_wait_gone)
    monkeypatch.setattr(runner, "wait_gone", _short_wait_gone)
    monkeypatch.setattr(Child, "drain_seconds", 0.3)
    with caplog.at_level(logging.WARNING, logger="syncd.pool.runner"):
        child.terminate(0.2)
        assert child.wait(15) is not None
        wait_until(lambda: f"process {escaped} survived SIGKILL" in caplog.text, what="the warning")
    monkeypatch.undo()
    os.kill(escaped, signal.SIGKILL)


_real_wait_gone = procs.wait_gone


def _short_wait_gone(pgid: int | None, recorded: list[psutil.Process], timeout: float) -> list[int]:
    return _real_wait_gone(pgid, recorded, min(timeout, 0.3))


def test_terminate_before_the_child_traps_is_safe(tmp_path: Path, children: list[Child]) -> None:
    child = spawn(children, tmp_path, "import time; time.sleep(60)")
    child.terminate(0.5)
    assert child.wait(15) in (-signal.SIGTERM, -signal.SIGKILL)


# -- P4 / P5: leader exit ---------------------------------------------------------------------


def test_p4_leader_exit_kills_group_member_holding_stdout(
    tmp_path: Path, children: list[Child]
) -> None:
    pids = tmp_path / "pids"
    code = f"""
import subprocess
kid = subprocess.Popen(["sleep", "60"])
open({str(pids)!r}, "w").write(str(kid.pid))
print("leader done", flush=True)
"""
    child = spawn(children, tmp_path, code)
    start = time.monotonic()
    assert child.wait(15) == 0
    assert time.monotonic() - start < 5
    (grandchild,) = read_pids(pids, 1)
    assert not live(grandchild)
    assert live_in_group(child.pid) == []
    assert pump_threads(child) == []
    assert output(child) == "leader done\n"


def test_p4_leftover_trapping_sigterm_is_killed(tmp_path: Path, children: list[Child]) -> None:
    pids = tmp_path / "pids"
    code = f"""
import subprocess, sys, time
kid = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open({str(pids)!r}, 'w').write('x'); time.sleep(60)"])
while True:
    try:
        open({str(pids)!r}).read() and sys.exit(4)
    except FileNotFoundError:
        time.sleep(0.01)
"""
    child = spawn(children, tmp_path, code)
    assert child.wait(15) == 4
    assert live_in_group(child.pid) == []


def test_output_of_leftovers_is_still_read_while_they_are_stopped(
    tmp_path: Path, children: list[Child]
) -> None:
    """The leader exits; a group member traps SIGTERM and writes 3 MiB (three times the
    pipe) before leaving. Output must be read during its grace, or it would block on a
    full pipe until SIGKILL and lose the rest."""
    ready = tmp_path / "ready"
    member = tmp_path / "member.py"
    member.write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(0.3)\n"
        "for _ in range(3 * 1024):\n"
        "    sys.stdout.write('x' * 1023 + '\\n')\n"
        "sys.stdout.flush()\n"
    )
    code = f"""
import os, subprocess, sys, time
subprocess.Popen([sys.executable, {str(member)!r}])
while not os.path.exists({str(ready)!r}):
    time.sleep(0.01)
"""
    child = spawn(children, tmp_path, code, max_bytes=16 << 20, caller_waits=True)
    assert child.wait() == 0
    assert child.log.bytes_written == 3 * 1024 * 1024
    assert live_in_group(child.pid) == []


def test_p4_escaped_process_holding_stdout_does_not_hang_the_task(
    tmp_path: Path,
    children: list[Child],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Child, "drain_seconds", 0.3)
    pids = tmp_path / "pids"
    code = f"""
import os, subprocess, sys, time
kid = subprocess.Popen([sys.executable, "-c",
    "import os, time; os.setsid(); print('daemon up', flush=True); "
    "open({str(pids)!r}, 'w').write(str(os.getpid())); time.sleep(60)"])
while not os.path.exists({str(pids)!r}):
    time.sleep(0.01)
"""
    with caplog.at_level(logging.WARNING, logger="syncd.pool.runner"):
        child = spawn(children, tmp_path, code)
        assert child.wait(15) == 0
    (escaped,) = read_pids(pids, 1)
    assert not live(escaped)
    assert f"process {escaped} keeps the task's output open" in caplog.text
    assert pump_threads(child) == []


def test_p5_late_terminate_sends_nothing(
    tmp_path: Path, children: list[Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    child = spawn(children, tmp_path, "print('bye')")
    assert child.wait(15) == 0
    calls: list[tuple[str, int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: calls.append(("killpg", pgid, sig)))
    monkeypatch.setattr(os, "kill", lambda pid, sig: calls.append(("kill", pid, sig)))
    child.terminate(0.05)
    pause(0.3)  # the escalation would have fired by now
    assert calls == []
    assert not [t for t in threading.enumerate() if t.name == f"task-{child.task_id}-kill"]


def test_p5_late_terminate_spares_a_group_that_took_over_the_number(
    tmp_path: Path, children: list[Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader exited and was reaped (its group empty); the kernel hands its number to
    another program's group leader, which has a member. A late terminate (a cancel or a
    timeout arriving after the reap) must send nothing to that group: no killpg of the
    number, no signal to its members, and no SIGKILL after the grace either."""
    child = spawn(children, tmp_path, "print('bye')")
    assert child.wait(15) == 0
    assert live_in_group(child.pid) == []
    impostor = Impostor(child.pid, tmp_path)
    try:
        killpgs = record_killpg(monkeypatch)
        child.terminate(0.05)
        # The escalation would have fired after 0.05 s; a SIGTERM is recorded by the
        # impostor's handler within milliseconds of delivery, a SIGKILL shows as a death.
        pause(0.5)
        assert killpgs == []
        assert impostor.signals() == ""
        assert impostor.intact()
    finally:
        impostor.kill()


def test_p5_reaper_waits_for_leader_without_reaping_early(
    tmp_path: Path, children: list[Child]
) -> None:
    """Until the group is dealt with, the leader stays a zombie that reserves its pgid."""
    pids = tmp_path / "pids"
    code = f"""
import subprocess, sys
kid = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open({str(pids)!r}, 'w').write('x'); time.sleep(60)"])
while True:
    try:
        open({str(pids)!r}).read() and sys.exit(0)
    except FileNotFoundError:
        pass
"""
    child = spawn(children, tmp_path, code)
    wait_until(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, what="exit")
    assert not child.exited
    assert child.identity.is_alive()  # zombie, not reaped: the pgid cannot be reused
    assert child.wait(15) == 0
    assert not child.identity.is_alive()


# -- P6: what the child sees ------------------------------------------------------------------


def test_p6_child_sees_only_std_fds_devnull_stdin_and_its_env(
    tmp_path: Path, children: list[Child]
) -> None:
    env_file = tmp_path / "secrets.env"
    env_file.write_text("SECRET=s3nt1nel\nSHARED=from-file\n")
    env = build_env(
        BASE_ENV,
        env_file,
        {"SHARED": "from-route", "ROUTE_ONLY": "r"},
        {"SYNCD_TASK_ID": "42", "SYNCD_SOURCE": "hubspot"},
    )
    leak = os.open("/dev/null", os.O_RDONLY)
    os.set_inheritable(leak, True)
    code = """
import json, os
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
print(json.dumps({
    "fds": [fd for fd in range(1024) if is_open(fd)],
    "stdin": os.readlink("/proc/self/fd/0"),
    "env": {k: os.environ.get(k) for k in ("SECRET", "SHARED", "ROUTE_ONLY", "SYNCD_TASK_ID")},
    "sid": os.getsid(0) == os.getpid(),
}))
"""
    try:
        child = spawn(children, tmp_path, code, env=env)
        assert child.wait(15) == 0
    finally:
        os.close(leak)
    seen = json.loads(output(child))
    assert seen["fds"] == [0, 1, 2]
    assert seen["stdin"] == "/dev/null"
    assert seen["sid"] is True
    assert seen["env"] == {
        "SECRET": "s3nt1nel",
        "SHARED": "from-route",
        "ROUTE_ONLY": "r",
        "SYNCD_TASK_ID": "42",
    }


def test_cwd_is_used(tmp_path: Path, children: list[Child]) -> None:
    work = tmp_path / "work dir"
    work.mkdir()
    child = spawn(children, tmp_path, "import os; print(os.getcwd())", cwd=work)
    assert child.wait(15) == 0
    assert output(child) == f"{work}\n"


# -- P7 / P8: output volume and content -------------------------------------------------------


def test_p7_flood_is_capped_with_bounded_memory(tmp_path: Path, children: list[Child]) -> None:
    max_bytes = 1 << 20
    code = """
import sys
out = sys.stdout.buffer
out.write(b"FIRST LINE\\n")
block = (b"y" * 1023 + b"\\n") * 1024
for _ in range(200):
    out.write(block)
out.write(b"LAST LINE\\n")
"""
    me = psutil.Process()
    rss_before = me.memory_info().rss
    peak = rss_before
    child = spawn(children, tmp_path, code, max_bytes=max_bytes)
    while child.wait(0.05) is None:
        peak = max(peak, me.memory_info().rss)
    assert child.wait() == 0
    assert peak - rss_before < 50 * 1024 * 1024
    assert child.log.bytes_written == 200 * 1024 * 1024 + 21
    data = child.log.path.read_bytes()
    assert len(data) <= max_bytes + 64
    assert data.startswith(b"FIRST LINE\n")
    assert data.endswith(b"y\nLAST LINE\n")
    assert b"bytes omitted]" in data
    _, end, capped = read_log(child.log.path, 0, 1 << 30)
    assert capped and end == child.log.bytes_written
    assert not child.log.path.with_name(child.log.path.name + ".tail").exists()


def test_p8_binary_output_and_huge_progress_line(tmp_path: Path, children: list[Child]) -> None:
    code = """
import sys
out = sys.stdout.buffer
out.write(b"bin \\xff\\xfe\\x00 end\\n")
out.write(b"::progress " + b"p" * (1 << 20) + b"\\n")
out.write(b"tail\\n")
"""
    child = spawn(children, tmp_path, code, max_bytes=4096)
    assert child.wait(15) == 0
    raw = child.log.path.read_bytes()
    assert raw.startswith(b"bin \xff\xfe\x00 end\n")
    text = output(child)
    assert text.startswith("bin \ufffd\ufffd\x00 end\n")
    assert text.endswith("p\ntail\n")
    assert child.log.progress is not None
    assert 0 < len(child.log.progress.encode()) <= 4096


# -- P9: spawn errors -------------------------------------------------------------------------


def request(tmp_path: Path, argv: list[str], cwd: Path | None = None) -> SpawnRequest:
    return SpawnRequest(9, argv, cwd, BASE_ENV, tmp_path / "9.log", 4096)


def test_p9_deleted_executable(tmp_path: Path) -> None:
    exe = tmp_path / "sync-thing"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    exe.unlink()
    with pytest.raises(SpawnError) as info:
        Child.start(request(tmp_path, [str(exe), "--full"]))
    assert str(info.value) == f"executable '{exe}' not found"
    assert "spawn error" in read_log(tmp_path / "9.log")[0]


def test_p9_executable_not_in_path(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match="executable 'no-such-sync-cmd' not found in PATH"):
        Child.start(request(tmp_path, ["no-such-sync-cmd"]))


def test_p9_not_executable(tmp_path: Path) -> None:
    exe = tmp_path / "plain"
    exe.write_text("data\n")
    exe.chmod(0o644)
    with pytest.raises(SpawnError, match="permission denied executing"):
        Child.start(request(tmp_path, [str(exe)]))


def test_p9_missing_cwd(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match=r"working directory '.*gone' not found"):
        Child.start(request(tmp_path, [PY, "-c", "pass"], cwd=tmp_path / "gone"))
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(SpawnError, match="is not a directory"):
        Child.start(request(tmp_path, [PY, "-c", "pass"], cwd=afile))


def test_p9_empty_argv_and_nul(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match="empty command"):
        Child.start(request(tmp_path, []))
    with pytest.raises(SpawnError, match="invalid command"):
        Child.start(request(tmp_path, [PY, "-c", "pass\0"]))


# -- env files --------------------------------------------------------------------------------


def test_env_file_parsing(tmp_path: Path) -> None:
    path = tmp_path / "a.env"
    path.write_text(
        "# comment\n"
        "\n"
        "PLAIN=value with spaces  \n"
        "  SPACED = x \n"
        "EMPTY=\n"
        "HASH=a#b # not a comment\n"
        "SINGLE='lit $HOME \\n'  # trailing comment\n"
        'DOUBLE="a\\"b\\\\c\\nd"\n'
        "EQUALS=a=b=c\n"
        "CRLF=x\r\n"
        "_UNDER9=1\n"
    )
    assert read_env_file(path) == {
        "PLAIN": "value with spaces",
        "SPACED": "x",
        "EMPTY": "",
        "HASH": "a#b # not a comment",
        "SINGLE": "lit $HOME \\n",
        "DOUBLE": 'a"b\\c\nd',
        "EQUALS": "a=b=c",
        "CRLF": "x",
        "_UNDER9": "1",
    }


@pytest.mark.parametrize(
    "line",
    [
        "NOEQUALSs3cr3t",
        "1ABC=s3cr3t",
        "BAD-KEY=s3cr3t",
        "=s3cr3t",
        "K='s3cr3t",
        'K="s3cr3t',
        "K='s3cr3t' b",
        "K='s3cr3t\0'",
    ],
)
def test_env_file_malformed_line_names_file_and_line_not_value(tmp_path: Path, line: str) -> None:
    path = tmp_path / "bad.env"
    path.write_text(f"OK=1\n# c\n{line}\n")
    with pytest.raises(SpawnError) as info:
        read_env_file(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message
    assert "s3cr3t" not in message


def test_env_file_missing(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match=r"env file '.*missing\.env' not found"):
        read_env_file(tmp_path / "missing.env")


def test_build_env_precedence(tmp_path: Path) -> None:
    path = tmp_path / "e.env"
    path.write_text("A=file\nB=file\nC=file\n")
    merged = build_env(
        {"A": "base", "B": "base", "C": "base", "D": "base", "SYNCD_TASK_ID": "base"},
        path,
        {"B": "env", "C": "env"},
        {"C": "task", "SYNCD_TASK_ID": "7"},
    )
    assert merged == {"A": "file", "B": "env", "C": "task", "D": "base", "SYNCD_TASK_ID": "7"}
    assert build_env({"X": "1"}, None, {}, {}) == {"X": "1"}
