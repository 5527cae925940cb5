"""Process identity, group signalling rules and tree sampling, on real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from syncd.pool import procs
from syncd.pool.procs import (
    PidWindow,
    ProcIdentity,
    TreeSampler,
    boot_id,
    group_members,
    kill_identified_group,
    proc_starttime,
    signal_tree,
)
from tests.helpers.procs import live, live_in_group, pause, read_pids, wait_until

PY = sys.executable


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Popen objects started by a test; whatever survives is killed and reaped."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def session(spawned: list[subprocess.Popen[bytes]], code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([PY, "-c", code], start_new_session=True, stdin=subprocess.DEVNULL)
    spawned.append(proc)
    return proc


# -- identity ---------------------------------------------------------------------------------


def test_boot_id_and_starttime_of_self() -> None:
    assert len(boot_id()) == 36
    field22 = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    assert proc_starttime(os.getpid()) == field22
    assert proc_starttime(2**22 + 12345) is None


def test_starttime_parses_names_with_spaces_and_parens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = ["S", "1", "77", "77"] + [str(i) for i in range(7, 22)] + ["987654"] + ["0"] * 30
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "stat").write_text("77 (evil) 1 2 (x) y) " + " ".join(fields) + "\n")
    monkeypatch.setattr(procs, "_PROC", tmp_path)
    assert proc_starttime(77) == 987654
    assert group_members(77) == [77]


def test_identity_rejects_recycled_pid_and_other_boot(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    proc = session(spawned, "import time; time.sleep(60)")
    real = ProcIdentity.of(proc.pid)
    assert real.is_alive()
    assert not ProcIdentity(proc.pid, real.starttime + 1, real.boot_id).is_alive()
    assert not ProcIdentity(proc.pid, real.starttime, "0" * 36).is_alive()
    proc.kill()
    proc.wait()
    assert not real.is_alive()


def test_kill_identified_group_never_signals_a_stranger(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    """R3/R4: a recycled pid (other start time) or another boot is left alone."""
    proc = session(spawned, "import time; time.sleep(60)")
    real = ProcIdentity.of(proc.pid)
    assert not kill_identified_group(
        ProcIdentity(proc.pid, real.starttime - 1, real.boot_id), 0.1
    ).sent
    assert not kill_identified_group(ProcIdentity(proc.pid, real.starttime, "x" * 36), 0.1).sent
    assert proc.poll() is None and live(proc.pid)


def test_kill_identified_group_kills_group_and_descendants(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    pids = tmp_path / "pids"
    code = f"""
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
runaway = subprocess.Popen([sys.executable, "-c",
    "import os, signal, time; os.setsid(); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open({str(pids)!r} + '.r', 'w').write('x'); time.sleep(60)"])
while not os.path.exists({str(pids)!r} + '.r'):
    time.sleep(0.01)
open({str(pids)!r}, "w").write(" ".join(str(k.pid) for k in [*kids, runaway]))
time.sleep(60)
"""
    leader = session(spawned, code)
    members = read_pids(pids, 3)
    ident = ProcIdentity.of(leader.pid)
    start = time.monotonic()
    result = kill_identified_group(ident, 0.5)
    assert result.sent and result.survivors == ()
    assert time.monotonic() - start < 5
    leader.wait(timeout=10)
    wait_until(lambda: not any(live(p) for p in members), what="descendants to die")
    assert live_in_group(leader.pid) == []


def test_a_process_that_outlives_sigkill_is_reported(
    spawned: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process stuck in the kernel survives SIGKILL; the caller must learn its pid (it
    decides not to requeue the task). The stuck state is simulated by what wait_gone sees."""
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([PY, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
    spawned.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    ident = ProcIdentity.of(proc.pid)
    monkeypatch.setattr(procs, "wait_gone", lambda pgid, recorded, timeout: [proc.pid])
    result = kill_identified_group(ident, 0.1)
    assert result.sent and result.survivors == (proc.pid,)


def marked(spawned: list[subprocess.Popen[bytes]], store_id: str, task_id: int) -> int:
    env = {**os.environ, procs.STORE_ID_VAR: store_id, procs.TASK_ID_VAR: str(task_id)}
    proc = subprocess.Popen(
        [PY, "-c", "import time; time.sleep(60)"], env=env, start_new_session=True
    )
    spawned.append(proc)
    return proc.pid


def test_task_processes_finds_marked_processes_with_their_identity(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    mine, other = marked(spawned, "a" * 16, 7), marked(spawned, "b" * 16, 8)
    found = procs.task_processes("a" * 16)
    assert found == {7: [ProcIdentity.of(mine)]}
    assert found[7][0].is_alive() and other not in [i.pid for i in found[7]]


def test_task_processes_skips_a_pid_recycled_while_it_was_read(
    spawned: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start time read before the environ differs from the one after: the environ may be
    another process's, so the pid is not taken (it would be killed as the task's)."""
    pid = marked(spawned, "c" * 16, 9)
    real = procs.proc_starttime
    monkeypatch.setattr(
        procs, "proc_starttime", lambda p: (real(p) or 0) - 1 if p == pid else real(p)
    )
    assert procs.task_processes("c" * 16) == {}


# -- the killpg rule --------------------------------------------------------------------------


def test_signal_tree_never_killpgs_an_unverified_group(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: calls.append((pgid, sig)))
    assert not signal_tree(123456, signal.SIGTERM, leader_unreaped=False, recorded=[])
    assert calls == []
    assert signal_tree(123456, signal.SIGTERM, leader_unreaped=True, recorded=[])
    assert calls == [(123456, signal.SIGTERM)]


def test_signal_tree_killpgs_when_a_recorded_process_is_still_a_member(
    spawned: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = session(spawned, "import time; time.sleep(60)")
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: calls.append((pgid, sig)))
    me = psutil.Process(proc.pid)
    signal_tree(proc.pid, 0, leader_unreaped=False, recorded=[me])
    assert calls == [(proc.pid, 0)]
    calls.clear()
    signal_tree(proc.pid + 1, 0, leader_unreaped=False, recorded=[me])  # not a member
    assert calls == []


# -- sampling ---------------------------------------------------------------------------------


def test_busy_tree_cpu_grows_and_is_cumulative(spawned: list[subprocess.Popen[bytes]]) -> None:
    code = """
import subprocess, sys, time
busy = "import time\\nt = time.time() + 1.0\\nwhile time.time() < t: pass"
kid = subprocess.Popen([sys.executable, "-c", busy])
kid.wait()
time.sleep(60)
"""
    proc = session(spawned, code)
    sampler = TreeSampler(proc.pid)
    first = sampler.sample()
    assert first.processes >= 1 and first.rss_bytes > 0
    wait_until(lambda: sampler.sample().processes == 2, what="the busy grandchild")
    wait_until(lambda: sampler.sample().cpu_seconds > first.cpu_seconds + 0.3, what="cpu growth")
    wait_until(lambda: sampler.sample().processes == 1, what="the grandchild to exit")
    after = sampler.sample().cpu_seconds
    assert after > first.cpu_seconds + 0.3  # a finished member's CPU time is not forgotten
    assert sampler.sample().cpu_seconds >= after


def test_sleeping_tree_shows_no_cpu_growth(spawned: list[subprocess.Popen[bytes]]) -> None:
    proc = session(spawned, "import time; print('up', flush=True); time.sleep(60)")
    sampler = TreeSampler(proc.pid)
    wait_until(lambda: sampler.sample().rss_bytes > 5_000_000, what="interpreter start")
    pause(0.3)  # let start-up CPU settle
    before = sampler.sample()
    pause(0.6)
    after = sampler.sample()
    assert after.cpu_seconds - before.cpu_seconds < 0.05
    assert after.io_bytes == before.io_bytes
    assert after.cpu_percent < 5


def test_io_counts_as_activity(tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    target = tmp_path / "out"
    code = f"""
import time
with open({str(target)!r}, "wb", buffering=0) as f:
    while True:
        f.write(b"x" * 4096); f.seek(0); time.sleep(0.01)
"""
    proc = session(spawned, code)
    sampler = TreeSampler(proc.pid)
    first = sampler.sample().io_bytes
    wait_until(lambda: sampler.sample().io_bytes > first + 100_000, what="io growth")


def test_sampler_tolerates_a_vanished_tree(spawned: list[subprocess.Popen[bytes]]) -> None:
    proc = session(spawned, "pass")
    proc.wait()
    sampler = TreeSampler(proc.pid)
    sample = sampler.sample()
    assert sample.processes == 0 and sample.rss_bytes == 0
    assert sampler.descendants() == []


def test_sampler_remembers_a_descendant_that_escaped(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    """Double fork + setsid: once seen, the escaped process is still known (for killing)."""
    pids = tmp_path / "pids"
    go = tmp_path / "go"
    code = f"""
import os, subprocess, sys, time
mid = subprocess.Popen([sys.executable, "-c", '''
import os, subprocess, sys, time
kid = subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(60)"])
open({str(pids)!r}, "w").write(str(kid.pid))
while not os.path.exists({str(go)!r}):
    time.sleep(0.01)
'''])
mid.wait()
time.sleep(60)
"""
    proc = session(spawned, code)
    sampler = TreeSampler(proc.pid)
    (escaped,) = read_pids(pids, 1)
    wait_until(lambda: escaped in {p.pid for p in sampler.descendants()}, what="first sight")
    go.write_text("go")
    wait_until(lambda: sampler.sample().processes == 1 + 1, what="the middle process to exit")
    assert escaped not in {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    assert escaped in {p.pid for p in sampler.descendants()}
    os.kill(escaped, signal.SIGKILL)
    wait_until(lambda: escaped not in {p.pid for p in sampler.descendants()}, what="forget")


# -- the pid window of a task's exit scan ------------------------------------------------------


def fake_proc(tmp_path: Path, pid_max: int, last: int, forks: int, stats: dict[int, int]) -> Path:
    """A /proc with pid_max, ns_last_pid, the fork counter and one stat per pid (its pgid)."""
    (tmp_path / "sys/kernel").mkdir(parents=True, exist_ok=True)
    (tmp_path / "sys/kernel/pid_max").write_text(f"{pid_max}\n")
    (tmp_path / "sys/kernel/ns_last_pid").write_text(f"{last}\n")
    (tmp_path / "stat").write_text(f"cpu  1 2 3\nctxt 5\nprocesses {forks}\nprocs_running 1\n")
    for pid, pgid in stats.items():
        (tmp_path / str(pid)).mkdir(exist_ok=True)
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (x) S 1 {pgid} {pgid} 0\n")
    return tmp_path


@pytest.mark.parametrize(
    ("first", "last", "stats", "members"),
    [
        # Pid 400 claims group 500 too, but a pid below the leader's was allocated before
        # it and cannot be a member: the window never reads it (a full scan would).
        (500, 800, {400: 500, 500: 500, 700: 500, 750: 9}, [500, 700]),
        # Wrapped once: the window spans the end of the pid space and its start.
        (32000, 350, {31000: 32000, 32000: 32000, 32700: 32000, 320: 32000}, [320, 32000, 32700]),
        # Narrow windows (the usual exit) are read pid by pid instead of listing /proc.
        (500, 520, {400: 500, 500: 500, 510: 500, 515: 9, 530: 500}, [500, 510]),
        (
            32760,
            5,
            {32700: 32760, 32760: 32760, 32765: 32760, 3: 32760, 9: 32760},
            [3, 32760, 32765],
        ),
    ],
)
def test_window_reads_only_pids_created_since_the_leader(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    first: int,
    last: int,
    stats: dict[int, int],
    members: list[int],
) -> None:
    monkeypatch.setattr(procs, "_PROC", fake_proc(tmp_path, 32768, first, 1000, {}))
    window = PidWindow.starting_at(first)
    fake_proc(tmp_path, 32768, last, 1100, stats)
    assert window.forks_at_start == 1000
    assert sorted(group_members(first, window)) == members
    assert sorted(group_members(first)) == sorted(p for p, g in stats.items() if g == first)


def test_window_falls_back_to_a_full_scan_when_pids_may_have_come_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procs, "_PROC", fake_proc(tmp_path, 32768, 800, 1000, {}))
    window = PidWindow.starting_at(500)
    # 16384 forks since: the allocator may have gone all the way round; 400 may be a member.
    fake_proc(tmp_path, 32768, 800, 1000 + 16384, {400: 500, 500: 500})
    assert sorted(group_members(500, window)) == [400, 500]
    (tmp_path / "sys/kernel/ns_last_pid").unlink()  # /proc cannot say: scan everything
    fake_proc_stat_only = PidWindow(500, 1000)
    assert sorted(group_members(500, fake_proc_stat_only)) == [400, 500]


def test_window_finds_a_real_grandchild(spawned: list[subprocess.Popen[bytes]]) -> None:
    code = (
        "import subprocess, sys, time\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(kid.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [PY, "-c", code], start_new_session=True, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    spawned.append(proc)
    window = PidWindow.starting_at(proc.pid)
    assert proc.stdout is not None
    kid = int(proc.stdout.readline())
    assert sorted(group_members(proc.pid, window)) == sorted([proc.pid, kid])
