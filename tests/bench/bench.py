#!/usr/bin/env python3
"""syncd benchmark suite (issue 7). Run by hand, never by pytest (the name does not match
test_*.py, and nothing here is a test):

    python tests/bench/bench.py                      # everything, default sizes (< 10 min)
    python tests/bench/bench.py --only e2e,gap       # a subset
    python tests/bench/bench.py --depths 10000,100000,1000000 --idle-seconds 60

Each section starts its own real `syncd` subprocess on a fresh state dir under /tmp (the
same DaemonProc the end-to-end tests use), shipped settings (WAL, durable commits synced),
and talks to it over the socket only. It prints a markdown table and writes tests/bench/results.json
(gitignored). Sections:

  e2e     N tasks of /bin/true, max_workers 2, 4 routes; submit_many, then status polling
          until nothing is queued or running; beside it ThreadPool(2)+subprocess.run (the
          floor) and `xargs -P 2`. Median of --repeat runs.
  gap     slot-free -> next-start. Jobs are `/bin/date +%s.%N` (exec'd directly, ~1 ms), whose
          output (one timestamp) lands in the task log; the same job under ThreadPool(2) gives
          the floor, so "overhead" is what syncd adds. Also from the daemon's own row
          timestamps (finished_at of one task -> started_at of the next), and process exit
          -> slot given to the next task (the job's clock -> the next row's started_at).
  submit  single `submit` requests over one connection (jobs/s); `submit_many` (tasks/s).
  depth   at each queue depth (dispatch paused, seeded through submit_many): latency of
          status, list --queued limit 50, submit; one dispatch (the store's next-task query,
          in-process, plus the daemon-clock gap of a short run of date jobs at that depth);
          RSS; start-to-ready after a restart.
  idle    CPU time and RSS of the daemon over --idle-seconds with etc/syncd.toml (schedules
          moved to a far-future cron, stub `python` on PATH).
  cli     wall time of `syncctl status` as a whole process, median of 20.
  held    --held-depth tasks queued for one held-back source (`crm`: max_concurrent 1 with a
          long task running, then also paused, then only out of its rate) and one task of
          another source submitted: its submit -> start delay (daemon clock, row times),
          median of 20 per phase, beside the same delay with an empty queue.
  peers   syncd beside Huey and Celery + Redis (when installed: pip install '.[bench]';
          Celery also needs redis-server on PATH) and the ThreadPool(2) floor, on the same
          jobs with three producers (sequential, pipelined, batch): see peers.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.helpers.daemon import Conn, DaemonProc, render_config, wait_for  # noqa: E402

RESULTS = Path(__file__).with_name("results.json")
ROUTES = 4
TRUE = "/bin/true"
DATE = ["/bin/date", "+%s.%N"]
PIPELINE_DEPTH = 64
BATCH = 1000  # submit_many's per-request cap


# -- helpers --------------------------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def daemon(
    sources: dict[str, dict[str, Any]], settings: dict[str, Any] | None = None
) -> Iterator[DaemonProc]:
    """A fresh daemon on a fresh state dir under /tmp (short socket path), stopped after."""
    work = Path(tempfile.mkdtemp(prefix="sdb-", dir="/tmp"))
    conf = {"max_workers": 2, "state_dir": "state", "socket": str(work / "syncd.sock")}
    conf.update(settings or {})
    d = DaemonProc(work, render_config(conf, sources))
    try:
        d.start()
        yield d
    finally:
        if d.proc is not None:
            d.stop()
        shutil.rmtree(work, ignore_errors=True)


def routes_of(argv: list[str], prefix: str = "r") -> dict[str, dict[str, Any]]:
    return {"bench": {"routes": {f"{prefix}{i}": {"argv": argv} for i in range(ROUTES)}}}


def items(n: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [
        {"source": "bench", "sync_type": f"{prefix}{i % ROUTES}", "allow_duplicate": True}
        for i in range(n)
    ]


def submit_all(conn: Conn, todo: list[dict[str, Any]]) -> list[int]:
    ids: list[int] = []
    for start in range(0, len(todo), BATCH):
        result = conn.call("submit_many", items=todo[start : start + BATCH])
        ids += [r["id"] for r in result["results"]]
    return ids


def unfinished(conn: Conn) -> int:
    """Queued + running from the store's counters (`list` totals are O(1) for these)."""
    return int(conn.call("list", status=["queued", "running"], limit=1)["total"])


def wait_drained(conn: Conn, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while unfinished(conn):
        if time.monotonic() > deadline:
            raise AssertionError("tasks did not finish in time")
        time.sleep(0.02)  # coarse enough not to compete with the daemon; +-20 ms on seconds


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def gaps(intervals: list[tuple[float, float]], slots: int) -> list[float]:
    """Slot-free -> next-start: replay (start, end) pairs; every start after the first
    `slots` takes the earliest slot freed before it."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, 0) for _, e in intervals])
    free: list[float] = []
    started = 0
    out = []
    for t, kind in events:
        if kind == 0:
            free.append(t)
        else:
            started += 1
            if started > slots and free:
                free.sort()
                out.append(t - free.pop(0))
    return out


# -- e2e ------------------------------------------------------------------------------------


def floor_threadpool(n: int, argv: list[str]) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: subprocess.run(argv, check=True), range(n)))
    return time.perf_counter() - t


def floor_xargs(n: int) -> float:
    data = "\n".join("x" for _ in range(n)) + "\n"
    t = time.perf_counter()
    subprocess.run(["xargs", "-P", "2", "-n", "1", TRUE], input=data, text=True, check=True)
    return time.perf_counter() - t


def syncd_e2e(n: int) -> dict[str, float]:
    with daemon(routes_of([TRUE])) as d:
        conn = d.conn()
        todo = items(n)
        assert d.proc is not None
        cpu0 = cpu_seconds(d.proc.pid)
        t0 = time.perf_counter()
        submit_all(conn, todo)
        t_enq = time.perf_counter() - t0
        wait_drained(conn, 600)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(d.proc.pid) - cpu0
        done = conn.call("list", status=["completed"], limit=1)["total"]
        conn.close()
        if done != n:
            raise AssertionError(f"{done} of {n} completed")
        return {"wall": wall, "enqueue": t_enq, "daemon_cpu": cpu}


def bench_e2e(args: argparse.Namespace) -> dict[str, Any]:
    n, runs = args.n, args.repeat
    walls, floors, xs, cpus = [], [], [], []
    for _ in range(runs):
        floors.append(floor_threadpool(n, [TRUE]))
        xs.append(floor_xargs(n))
        run = syncd_e2e(n)
        walls.append(run["wall"])
        cpus.append(run["daemon_cpu"])
    wall, floor, xargs = (statistics.median(v) for v in (walls, floors, xs))
    return {
        "n": n,
        "runs": runs,
        "syncd_s": round(wall, 3),
        "threadpool_s": round(floor, 3),
        "xargs_s": round(xargs, 3),
        "ratio_threadpool": round(wall / floor, 2),
        "ratio_xargs": round(wall / xargs, 2),
        "all_syncd_s": [round(w, 3) for w in walls],
        "daemon_cpu_s": round(statistics.median(cpus), 3),  # its own CPU, children excluded
    }


# -- gap ------------------------------------------------------------------------------------


def parse_stamp(text: str) -> float:
    return float(text.strip().splitlines()[0])


def floor_gap(n: int) -> list[float]:
    def one(_: int) -> float:
        return parse_stamp(subprocess.run(DATE, capture_output=True, text=True).stdout)

    with ThreadPoolExecutor(2) as pool:
        stamps = list(pool.map(one, range(n)))
    return gaps([(s, s) for s in stamps], 2)


def row_gaps(tasks: list[dict[str, Any]]) -> list[float]:
    from syncd.core.clock import parse_iso

    spans = []
    for t in tasks:
        s, e = parse_iso(t["started_at"]), parse_iso(t["finished_at"])
        assert s is not None and e is not None
        spans.append((s.timestamp(), e.timestamp()))
    return gaps(spans, 2)


def run_gap(d: DaemonProc, conn: Conn, n: int) -> dict[str, Any]:
    """Resume, let `n` date jobs run, pause; gaps from their output and their rows."""
    before = conn.call("list", status=["completed"], limit=1)["total"]
    conn.call("resume")
    wait_for(
        lambda: conn.call("list", status=["completed"], limit=1)["total"] >= before + n,
        600,
        "date jobs",
    )
    conn.call("pause")
    wait_for(lambda: conn.call("status")["active"] == 0, 60, "running jobs to end")
    done = conn.call("history", status=["completed"], limit=10000)["tasks"]
    done = [t for t in done if t["id"] not in d.seen_ids]  # type: ignore[attr-defined]
    d.seen_ids.update(t["id"] for t in done)  # type: ignore[attr-defined]
    stamps = []
    for t in done:
        text = (d.state_dir / "logs" / f"{t['id']}.log").read_text()
        s = parse_stamp(text)
        stamps.append((s, s))
    job = gaps(stamps, 2)
    rows = row_gaps(done)
    freed = exit_to_free(done, [s for s, _ in stamps])
    return {
        "ran": len(done),
        "job_median_ms": ms(statistics.median(job)),
        "job_p95_ms": ms(pct(job, 95)),
        "daemon_median_ms": ms(statistics.median(rows)),
        "daemon_p95_ms": ms(pct(rows, 95)),
        "exit_free_median_ms": ms(statistics.median(freed)),
        "exit_free_p95_ms": ms(pct(freed, 95)),
    }


def exit_to_free(tasks: list[dict[str, Any]], ends: list[float]) -> list[float]:
    """Process exit -> its slot given to the next task (issue 15: within 1 ms). The exit is
    the job's own last act (date prints its clock, then exits: an upper bound by the exit's
    own cost); the slot is given away when the finish's transaction claims the next task,
    whose row `started_at` is stamped with that instant (same machine, same real-time
    clock). Replayed over 2 slots like the gaps: every claim after the first two takes the
    slot freed earliest before it."""
    from syncd.core.clock import parse_iso

    spans = []
    for t, end in zip(tasks, ends, strict=True):
        start = parse_iso(t["started_at"])
        assert start is not None
        spans.append((start.timestamp(), end))
    return gaps(spans, 2)


def bench_gap(args: argparse.Namespace) -> dict[str, Any]:
    floor = floor_gap(args.gap_n)
    with daemon(routes_of(DATE, "g"), {"heartbeat_seconds": 5}) as d:
        d.seen_ids = set()  # type: ignore[attr-defined]
        conn = d.conn()
        conn.call("pause")
        submit_all(conn, items(args.gap_n, "g"))
        out = run_gap(d, conn, args.gap_n)
        conn.close()
    out["floor_median_ms"] = ms(statistics.median(floor))
    out["floor_p95_ms"] = ms(pct(floor, 95))
    out["overhead_median_ms"] = round(out["job_median_ms"] - out["floor_median_ms"], 3)
    return out


# -- submit ---------------------------------------------------------------------------------


def bench_submit(args: argparse.Namespace) -> dict[str, Any]:
    with daemon(routes_of([TRUE])) as d:
        conn = d.conn()
        conn.call("pause")
        one = {"source": "bench", "sync_type": "r0", "allow_duplicate": True}
        for _ in range(200):  # warm up
            conn.call("submit", **one)
        n = args.submit_n
        t = time.perf_counter()
        for _ in range(n):
            conn.call("submit", **one)
        single = n / (time.perf_counter() - t)
        pipelined = submit_pipelined(conn, one, n, PIPELINE_DEPTH)
        batch = items(BATCH)
        submit_all(conn, batch)  # warm up
        reps = max(1, args.submit_many_n // BATCH)
        t = time.perf_counter()
        for _ in range(reps):
            conn.call("submit_many", items=batch)
        many = reps * BATCH / (time.perf_counter() - t)
        conn.close()
    return {
        "submit_per_s": round(single),
        "submit_pipelined_per_s": round(pipelined),
        "pipeline_depth": PIPELINE_DEPTH,
        "submit_many_tasks_per_s": round(many),
        "n": n,
    }


def submit_pipelined(conn: Conn, args: dict[str, Any], n: int, depth: int) -> float:
    """Single submit requests on one connection, `depth` in flight: each is its own request
    with its own reply (sent only after its commit); the daemon commits what is buffered
    together."""
    line = (json.dumps({"v": 1, "id": 0, "op": "submit", "args": args}) + "\n").encode()
    t = time.perf_counter()
    sent = answered = 0
    while answered < n:
        in_flight = sent - answered
        burst = min(depth - in_flight, n - sent) if in_flight <= depth // 2 else 0
        if burst > 0:  # refill in halves, as a pipelining client does: lines arrive together
            conn.send_raw(line * burst)
            sent += burst
        reply = conn.read_reply()
        if not reply["ok"]:
            raise AssertionError(reply)
        answered += 1
    return n / (time.perf_counter() - t)


# -- depth ----------------------------------------------------------------------------------


def dispatch_query_ms(db: Path) -> float:
    """The store's next-task query (what one dispatch selects), in-process on the file."""
    from syncd.core.clock import SystemClock, iso
    from syncd.store.facade import Store

    store = Store.open(db)
    try:
        now = iso(SystemClock().now())
        busy = {("bench", "g0")}
        times = timed(lambda: store.next_queued(now, exclude_routes=busy), 50)
    finally:
        store.close()
    return ms(statistics.median(times))


def ready_after_restart(d: DaemonProc) -> float:
    d.stop()
    t = time.perf_counter()
    d.start(wait=False)
    while True:
        try:
            c = Conn(d.socket, timeout=5)
            try:
                c.call("ping")
                break
            finally:
                c.close()
        except (OSError, RuntimeError):
            assert d.proc is not None and d.proc.poll() is None, d.stderr()
            time.sleep(0.002)
    return time.perf_counter() - t


def op_latencies(conn: Conn) -> dict[str, float]:
    st = timed(lambda: conn.call("status"), 100)
    ls = timed(lambda: conn.call("list", status=["queued"], limit=50), 30)
    one = {"source": "bench", "sync_type": "g0", "allow_duplicate": True}
    sb = timed(lambda: conn.call("submit", **one), 50)  # 50 more queued tasks
    return {
        "status_ms": ms(statistics.median(st)),
        "status_p95_ms": ms(pct(st, 95)),
        "list_ms": ms(statistics.median(ls)),
        "submit_ms": ms(statistics.median(sb)),
    }


def bench_depth(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with daemon(routes_of(DATE, "g"), {"heartbeat_seconds": 5}) as d:
        d.seen_ids = set()  # type: ignore[attr-defined]
        conn = d.conn()
        conn.call("pause")
        queued = 0
        for depth in args.depths:
            t = time.perf_counter()
            submit_all(conn, items(depth - queued, "g"))
            seed_s = time.perf_counter() - t
            queued = depth
            row: dict[str, Any] = {"seed_s": round(seed_s, 1)}
            row.update(op_latencies(conn))
            queued += 50
            assert d.proc is not None
            row["rss_mb"] = rss_mb(d.proc.pid)
            g = run_gap(d, conn, args.depth_gap_n)
            queued -= g["ran"]
            row["gap_job_median_ms"] = g["job_median_ms"]
            row["gap_daemon_median_ms"] = g["daemon_median_ms"]
            row["gap_daemon_p95_ms"] = g["daemon_p95_ms"]
            conn.close()
            row["ready_s"] = round(ready_after_restart(d), 3)
            assert d.proc is not None
            d.stop()  # the query below opens the file itself
            row["dispatch_query_ms"] = dispatch_query_ms(d.state_dir / "syncd.db")
            d.start()
            conn = d.conn()
            row["rss_after_restart_mb"] = rss_mb(d.proc.pid)
            row["queued"] = conn.call("status")["queued"]
            out[str(depth)] = row
            print(f"  depth {depth}: {row}", file=sys.stderr, flush=True)
        conn.close()
    return out


# -- held ------------------------------------------------------------------------------------


def start_delays(conn: Conn, d: DaemonProc, n: int = 20) -> list[float]:
    """submit -> started_at of `other` tasks, one at a time (daemon clock)."""
    out = []
    for _ in range(n):
        task_id = conn.call("submit", source="other", sync_type="b", allow_duplicate=True)
        task = d.wait_status(task_id["task"]["id"], {"completed", "failed"}, timeout=60)
        out.append(parse_iso_s(task["started_at"]) - parse_iso_s(task["submitted_at"]))
    return out


def parse_iso_s(text: str) -> float:
    from syncd.core.clock import parse_iso

    when = parse_iso(text)
    assert when is not None
    return when.timestamp()


def bench_held(args: argparse.Namespace) -> dict[str, Any]:
    sources = {
        "crm": {"max_concurrent": 1, "rate": "1/day", "routes": {"a": {"argv": ["/bin/sleep",
                "600"]}, "c": {"argv": [TRUE]}}},
        "other": {"routes": {"b": {"argv": [TRUE]}}},
    }  # fmt: skip
    out: dict[str, Any] = {"depth": args.held_depth}
    with daemon(sources, {"heartbeat_seconds": 5}) as d:
        conn = d.conn()
        out["empty_queue_ms"] = ms(statistics.median(start_delays(conn, d)))
        long = conn.call("submit", source="crm", sync_type="a")["task"]["id"]
        d.wait_status(long, {"running"})
        todo = [{"source": "crm", "sync_type": "c", "allow_duplicate": True}] * args.held_depth
        t = time.perf_counter()
        submit_all(conn, todo)
        out["seed_s"] = round(time.perf_counter() - t, 1)
        phases = {}
        phases["full_ms"] = start_delays(conn, d)  # max_concurrent (and rate) hold crm back
        conn.call("source_pause", name="crm")
        phases["paused_ms"] = start_delays(conn, d)
        conn.call("cancel", ids=[long])
        d.wait_status(long, {"cancelled"})
        conn.call("source_resume", name="crm")
        phases["rate_only_ms"] = start_delays(conn, d)  # crm used its one start of the day
        for name, values in phases.items():
            out[name] = ms(statistics.median(values))
            out[name.replace("_ms", "_max_ms")] = ms(max(values))
        out["still_queued"] = conn.call("status")["queued"]
        conn.close()
    return out


# -- idle -----------------------------------------------------------------------------------


def idle_config(work: Path) -> Path:
    text = (REPO / "etc" / "syncd.toml").read_text()
    text = re.sub(r'(?m)^cron = ".*"', 'cron = "0 0 29 2 *"', text)  # next: a leap day
    extra = f'state_dir = "{work / "state"}"\nsocket = "{work / "syncd.sock"}"\n'
    text = text.replace("[daemon]\n", "[daemon]\n" + extra, 1)
    path = work / "syncd.toml"
    path.write_text(text)
    return path


def bench_idle(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sdi-", dir="/tmp"))
    stub = work / "bin"
    stub.mkdir()
    (stub / "python").write_text("#!/bin/sh\nexit 0\n")
    (stub / "python").chmod(0o755)
    config = idle_config(work)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{stub}:/usr/bin:/bin"}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("MAX_SYNC_WORKERS", None)
    err = open(work / "daemon.stderr", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=err,
        stderr=err,
        env=env,
    )
    try:
        sock = work / "syncd.sock"

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError((work / "daemon.stderr").read_text())
            try:
                c = Conn(sock, timeout=2)
            except OSError:
                return False
            try:
                return bool(c.call("ping"))
            finally:
                c.close()

        wait_for(up, 30, "idle daemon")
        c = Conn(sock)
        schedules = len(c.call("schedules")["schedules"])
        c.close()
        time.sleep(2)  # let start-up work settle (this is the measurement, not a wait)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        return {
            "seconds": round(t1 - t0, 1),
            "cpu_s": round(cpu1 - cpu0, 3),
            "cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
            "rss_mb": rss_mb(proc.pid),
            "schedules": schedules,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        err.close()
        shutil.rmtree(work, ignore_errors=True)


# -- cli ------------------------------------------------------------------------------------


def bench_peers(args: argparse.Namespace) -> dict[str, Any]:
    import peers  # beside this file; it imports huey/celery only when they are installed

    return peers.bench_peers(args, sys.modules[__name__])


def bench_cli(args: argparse.Namespace) -> dict[str, Any]:
    with daemon(routes_of([TRUE])) as d:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        exe = shutil.which("syncctl", path=str(Path(sys.executable).parent))
        cmd = [exe] if exe else [sys.executable, "-c", "from syncd.ctl.main import main; main()"]
        cmd += ["--socket", str(d.socket), "status"]
        subprocess.run(cmd, env=env, check=True, capture_output=True)  # warm the page cache
        times = timed(lambda: subprocess.run(cmd, env=env, check=True, capture_output=True), 20)
    return {"median_ms": ms(statistics.median(times)), "p95_ms": ms(pct(times, 95))}


# -- report ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
    }


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    e = results.get("e2e")
    if e:
        rows += [
            (f"e2e: {e['n']} x /bin/true, 2 workers (median of {e['runs']})",
             f"{e['syncd_s']} s", "≤ 1.5 x floor"),
            ("  ThreadPool(2) floor / xargs -P 2", f"{e['threadpool_s']} s / {e['xargs_s']} s", ""),
            ("  ratio to floor / to xargs", f"{e['ratio_threadpool']} / {e['ratio_xargs']}",
             "≤ 1.5"),
        ]  # fmt: skip
    g = results.get("gap")
    if g:
        rows += [
            ("gap slot-free → next start, job clocks (median / p95)",
             f"{g['job_median_ms']} / {g['job_p95_ms']} ms", ""),
            ("  same job under ThreadPool(2) (exec floor)",
             f"{g['floor_median_ms']} / {g['floor_p95_ms']} ms", ""),
            ("  syncd overhead over the floor (median)", f"{g['overhead_median_ms']} ms",
             "≤ 0.5 ms"),
            ("  daemon clock: finish → next claim, row times (median / p95)",
             f"{g['daemon_median_ms']} / {g['daemon_p95_ms']} ms", "≤ 0.5 / 2 ms"),
            ("  process exit → slot given to the next task (median / p95)",
             f"{g['exit_free_median_ms']} / {g['exit_free_p95_ms']} ms", "≤ 1 ms"),
        ]  # fmt: skip
    s = results.get("submit")
    if s:
        rows += [
            ("submit, one connection, sequential", f"{s['submit_per_s']:,} /s", "≥ 9,000 /s"),
            (
                f"submit, one connection, {s['pipeline_depth']} in flight",
                f"{s['submit_pipelined_per_s']:,} /s",
                "≥ 9,000 /s",
            ),
            ("submit_many (1000 per request)", f"{s['submit_many_tasks_per_s']:,} tasks/s",
             "≥ 50,000 /s"),
        ]  # fmt: skip
    for depth, r in (results.get("depth") or {}).items():
        rows += [
            (f"depth {int(depth):,} queued: status / list 50 / submit",
             f"{r['status_ms']} / {r['list_ms']} / {r['submit_ms']} ms", "status ≤ 20 ms"),
            ("  one dispatch: next-task query / job-clock gap median",
             f"{r['dispatch_query_ms']} / {r['gap_job_median_ms']} ms",
             "≤ 1 ms / ≤ 1.5 x at 10k"),
            ("  RSS / ready after restart", f"{r['rss_mb']} MB / {r['ready_s']} s",
             "≤ 60 MB / ≤ 2 s"),
            ("  seeding through submit_many", f"{r['seed_s']} s", ""),
        ]  # fmt: skip
    i = results.get("idle")
    if i:
        rows.append(
            (f"idle {i['seconds']} s, shipped catalog, {i['schedules']} schedules: CPU / RSS",
             f"{i['cpu_pct']} % ({i['cpu_s']} s) / {i['rss_mb']} MB", "≤ 0.1 % / ≤ 40 MB")
        )  # fmt: skip
    h = results.get("held")
    if h:
        rows += [
            (f"{h['depth']:,} queued for a held source: another source's submit → start, "
             "median (max)", "", "within one dispatch gap"),
            ("  empty queue", f"{h['empty_queue_ms']} ms", ""),
            ("  source at max_concurrent", f"{h['full_ms']} ({h['full_max_ms']}) ms", ""),
            ("  source paused", f"{h['paused_ms']} ({h['paused_max_ms']}) ms", ""),
            ("  source out of its rate", f"{h['rate_only_ms']} ({h['rate_only_max_ms']}) ms",
             ""),
        ]  # fmt: skip
    c = results.get("cli")
    if c:
        rows.append(("`syncctl status` whole process (median / p95 of 20)",
                     f"{c['median_ms']} / {c['p95_ms']} ms", "≤ 120 ms"))  # fmt: skip
    lines = ["| measure | result | goal |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "e2e": bench_e2e,
    "gap": bench_gap,
    "submit": bench_submit,
    "depth": bench_depth,
    "idle": bench_idle,
    "cli": bench_cli,
    "held": bench_held,
    "peers": bench_peers,
}


def compile_as_installed() -> None:
    """Measure syncd as `pip install .` leaves it: with its modules compiled to bytecode.
    An editable checkout run under PYTHONDONTWRITEBYTECODE=1 would compile every module
    from source at each start instead (syncctl status: about 110 ms instead of 75)."""
    import compileall

    if not compileall.compile_dir(str(REPO / "syncd"), quiet=1):
        raise SystemExit("could not compile syncd to bytecode")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    p.add_argument("--n", type=int, default=2000, help="e2e tasks")
    p.add_argument("--repeat", type=int, default=3, help="e2e runs (the median is reported)")
    p.add_argument("--gap-n", type=int, default=500, help="date jobs in the gap run")
    p.add_argument("--submit-n", type=int, default=5000, help="single submits")
    p.add_argument("--submit-many-n", type=int, default=50000, help="tasks via submit_many")
    p.add_argument("--depths", default="10000,100000,1000000", help="queue depths")
    p.add_argument("--depth-gap-n", type=int, default=100, help="date jobs run at each depth")
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--held-depth", type=int, default=1_000_000, help="queued for a held source")
    p.add_argument("--peers-n", type=int, default=2000, help="jobs per run in the peers section")
    p.add_argument("--json", type=Path, default=RESULTS, help="where to write results")
    args = p.parse_args(argv)
    args.depths = [int(x) for x in args.depths.split(",") if x]
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    compile_as_installed()
    results: dict[str, Any] = {"machine": machine(), "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}  # fmt: skip
    for name in wanted:
        t = time.perf_counter()
        print(f"{name} ...", file=sys.stderr, flush=True)
        results[name] = SECTIONS[name](args)
        print(f"{name}: {results[name]} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    print(f"\nRun on {m['date']} at commit {m['commit']}. Machine: `nproc` = {m['nproc']},"
          f" \"{m['cpu']}\", kernel {m['kernel']}, Python {m['python']},"
          f" SQLite {m['sqlite']}.\n")  # fmt: skip
    if set(results) - {"machine", "args", "peers"}:
        print(table(results))
    if "peers" in results:
        import peers

        print()
        print(peers.table(results["peers"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
