"""The `peers` section of bench.py: syncd beside Huey and Celery + Redis in one run, on the
same jobs (/bin/true through a child process, concurrency 2) and three producers:

  sequential  one request per job, each waiting for its acknowledgement, one connection
              (syncd `submit`; Huey `task()`; Celery `apply_async()`), while jobs run.
  pipelined   syncd: `submit` lines on one connection, up to 64 in flight, each still
              answered after its own commit. The peers' clients have no pipelined mode
              (each enqueue waits for its reply), so they have no figure here.
  batch       syncd `submit_many` (1000 per request); Huey `task.map()` (its own helper:
              an enqueue per item, each its own commit); Celery `group(...).apply_async()`
              (one producer, one message per item).

Per run: e2e wall (first enqueue -> all done, polled every 20 ms), the enqueue rate (jobs
/ time the producer took, while the workers already run), and each job's start -> finish
from the runner's own record of it (Huey and Celery: the task's own clock around
`subprocess.run`; syncd: the row's started_at -> finished_at, the span it holds the slot;
the floor: a ThreadPool(2) thread's clock around `subprocess.run`).

Peers run as their users run them: a `huey_consumer` process (thread workers, -w 2) on a
SqliteHuey file; a `celery worker` process (prefork, -c 2: Celery's default pool and the
one a Celery deployment runs) on a private `redis-server` (localhost, a free port, no
persistence), started here only when `redis-server` is on PATH. Every peer process is in
its own session, gets SIGKILL if the bench dies (PR_SET_PDEATHSIG) and is killed with its
group when its run ends; every wait has a deadline.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
MODES = ("sequential", "pipelined", "batch")
POLL = 0.02
RUN_DEADLINE = 300.0  # seconds for one run of n jobs; a stuck run fails, it never hangs
_PR_SET_PDEATHSIG = 1
NONE = "\u2013"  # an en dash: no figure


def _die_with_parent() -> None:
    """In the child before exec: its own session, and SIGKILL when the bench dies."""
    os.setsid()
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - the child holds it
    try:
        return subprocess.Popen(
            argv,
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    finally:
        out.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """TERM the whole group, KILL it after 10 s: nothing of a peer outlives its run."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            # prefork children may outlive their parent for a moment: KILL the group anyway
            os.killpg(proc.pid, signal.SIGKILL)
            break
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY", "HUEY"))}
    env["PYTHONPATH"] = str(HERE)
    env.update(extra)
    return env


def _until(done: Callable[[], bool], what: str, deadline: float = RUN_DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not done():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not done within {deadline} s")
        time.sleep(POLL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _summary(
    wall: float, enqueue: float, n: int, spans: list[tuple[float, float]]
) -> dict[str, Any]:
    if len(spans) != n:
        raise AssertionError(f"{len(spans)} of {n} jobs reported")
    return {
        "wall_s": round(wall, 3),
        "enqueue_per_s": round(n / enqueue),
        "span_ms": round(statistics.median(e - s for s, e in spans) * 1000, 3),
    }


# -- the floor ------------------------------------------------------------------------------


def floor(n: int) -> dict[str, Any]:
    def one(_: int) -> tuple[float, float]:
        t0 = time.time()
        subprocess.run(["/bin/true"], check=True)
        return t0, time.time()

    t = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        spans = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t
    return {
        "wall_s": round(wall, 3),
        "span_ms": round(statistics.median(e - s for s, e in spans) * 1000, 3),
    }


# -- syncd ----------------------------------------------------------------------------------


def syncd_run(bench: ModuleType, n: int, mode: str) -> dict[str, Any]:
    from syncd.core.clock import parse_iso

    with bench.daemon(bench.routes_of([bench.TRUE])) as d:
        conn = d.conn()
        conn.call("ping")
        todo = bench.items(n)
        cost = _DaemonCost(d.proc.pid)
        t0 = time.perf_counter()
        if mode == "sequential":
            for item in todo:
                conn.call("submit", **item)
        elif mode == "pipelined":
            _pipelined(conn, todo, bench.PIPELINE_DEPTH)
        else:
            bench.submit_all(conn, todo)
        enqueue = time.perf_counter() - t0
        _until(lambda: bench.unfinished(conn) == 0, "syncd jobs")
        wall = time.perf_counter() - t0
        per_job = cost.per_job(n)
        tasks = conn.call("history", status=["completed"], limit=n + 10)["tasks"]
        conn.close()
    spans = []
    for t in tasks:
        s, e = parse_iso(t["started_at"]), parse_iso(t["finished_at"])
        assert s is not None and e is not None
        spans.append((s.timestamp(), e.timestamp()))
    return {**_summary(wall, enqueue, n, spans), **per_job}


class _DaemonCost:
    """The daemon's own CPU time and bytes written to storage over a run, per job: figures
    a noisy shared machine moves far less than wall times, so runs can be compared by them."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self._cpu, self._written = self._now()

    def _now(self) -> tuple[float, int]:
        times = self._proc.cpu_times()
        return times.user + times.system, self._proc.io_counters().write_bytes

    def per_job(self, n: int) -> dict[str, float]:
        cpu, written = self._now()
        return {
            "cpu_ms_per_job": round((cpu - self._cpu) / n * 1000, 3),
            "written_kb_per_job": round((written - self._written) / n / 1024, 1),
        }


def _pipelined(conn: Any, todo: list[dict[str, Any]], depth: int) -> None:
    """`submit` requests on one connection, up to `depth` in flight (refilled by halves)."""
    lines = [(json.dumps({"v": 1, "id": i, "op": "submit", "args": a}) + "\n").encode()
             for i, a in enumerate(todo)]  # fmt: skip
    sent = answered = 0
    while answered < len(lines):
        in_flight = sent - answered
        burst = min(depth - in_flight, len(lines) - sent) if in_flight <= depth // 2 else 0
        if burst > 0:
            conn.send_raw(b"".join(lines[sent : sent + burst]))
            sent += burst
        reply = conn.read_reply()
        if not reply["ok"]:
            raise AssertionError(reply)
        answered += 1


# -- Huey -----------------------------------------------------------------------------------


@contextmanager
def huey_consumer(work: Path) -> Iterator[ModuleType]:
    db = work / "huey.db"
    os.environ["BENCH_HUEY_DB"] = str(db)
    sys.modules.pop("jobs_huey", None)  # a fresh app on this run's file
    import jobs_huey

    argv = [sys.executable, "-m", "huey.bin.huey_consumer", "jobs_huey.huey"]
    argv += ["--workers", "2", "--worker-type", "thread", "--quiet"]
    proc = _spawn(argv, _env(BENCH_HUEY_DB=str(db)), work / "huey.log")
    try:
        warm = jobs_huey.run_true(0)  # the consumer is up and polling at its shortest delay
        warm.get(blocking=True, timeout=60)
        yield jobs_huey
    except Exception as exc:
        raise AssertionError(f"huey: {exc}\n{(work / 'huey.log').read_text()[-2000:]}") from exc
    finally:
        _stop(proc)


def huey_run(n: int, mode: str) -> dict[str, Any] | None:
    if mode == "pipelined":
        return None
    work = Path(tempfile.mkdtemp(prefix="sdb-huey-", dir="/tmp"))
    try:
        with huey_consumer(work) as jobs:
            t0 = time.perf_counter()
            if mode == "sequential":
                results = [jobs.run_true(i) for i in range(n)]
            else:
                results = list(jobs.run_true.map(range(n)))
            enqueue = time.perf_counter() - t0
            _until(lambda: jobs.huey.result_count() >= n, "huey jobs")
            wall = time.perf_counter() - t0
            spans = [tuple(r.get(blocking=True, timeout=10)) for r in results]
            sync = jobs.huey.storage.conn.execute("PRAGMA synchronous").fetchone()[0]
        out = _summary(wall, enqueue, n, spans)  # type: ignore[arg-type]
        out["synchronous"] = int(sync)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- Celery + Redis -------------------------------------------------------------------------


@contextmanager
def redis_server(work: Path) -> Iterator[str]:
    port = _free_port()
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(work), "--daemonize", "no"]
    proc = _spawn(argv, _env(), work / "redis.log")
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError((work / "redis.log").read_text()[-2000:])
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        _until(up, "redis-server start", 30)
        client.close()
        yield f"redis://127.0.0.1:{port}"
    finally:
        _stop(proc)


@contextmanager
def celery_worker(work: Path, url: str) -> Iterator[ModuleType]:
    os.environ["BENCH_REDIS_URL"] = url
    sys.modules.pop("jobs_celery", None)
    import jobs_celery

    argv = [sys.executable, "-m", "celery", "-A", "jobs_celery", "worker", "--pool", "prefork"]
    argv += ["--concurrency", "2", "--loglevel", "WARNING", "--without-gossip"]
    argv += ["--without-mingle", "--without-heartbeat"]
    proc = _spawn(argv, _env(BENCH_REDIS_URL=url), work / "celery.log")
    try:
        jobs_celery.run_true.apply_async((0,)).get(timeout=60)  # the worker is consuming
        yield jobs_celery
    except Exception as exc:
        raise AssertionError(f"celery: {exc}\n{(work / 'celery.log').read_text()[-2000:]}") from exc
    finally:
        _stop(proc)


def celery_run(url: str, n: int, mode: str) -> dict[str, Any] | None:
    if mode == "pipelined":
        return None
    import redis
    from celery import group

    work = Path(tempfile.mkdtemp(prefix="sdb-celery-", dir="/tmp"))
    results_db = redis.Redis.from_url(f"{url}/1")
    try:
        results_db.flushall()
        with celery_worker(work, url) as jobs:
            results_db.flushdb()  # the warm-up's result
            t0 = time.perf_counter()
            if mode == "sequential":
                ids = [jobs.run_true.apply_async((i,)).id for i in range(n)]
            else:
                ids = [r.id for r in group(jobs.run_true.s(i) for i in range(n)).apply_async()]
            enqueue = time.perf_counter() - t0
            _until(lambda: int(results_db.dbsize()) >= n, "celery jobs")
            wall = time.perf_counter() - t0
            metas = results_db.mget([f"celery-task-meta-{i}" for i in ids])
        spans = [tuple(json.loads(m)["result"]) for m in metas if m is not None]
        return _summary(wall, enqueue, n, spans)  # type: ignore[arg-type]
    finally:
        results_db.close()
        shutil.rmtree(work, ignore_errors=True)


# -- the section ----------------------------------------------------------------------------


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))]
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}
    out["all_wall_s"] = [r["wall_s"] for r in runs]
    return out


def bench_peers(args: Any, bench: ModuleType) -> dict[str, Any]:
    n, reps = args.peers_n, args.repeat
    have_huey = have_celery = True
    try:
        import huey  # noqa: F401
    except ImportError:
        have_huey = False
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        have_celery = False
    skipped: dict[str, str] = {}
    if not have_huey:
        skipped["huey"] = "huey not installed (pip install '.[bench]')"
    if not have_celery:
        skipped["celery"] = "celery/redis not installed (pip install '.[bench]')"
    elif shutil.which("redis-server") is None:
        skipped["celery"] = "no redis-server on PATH (apt-get install redis-server)"
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    floors: list[dict[str, Any]] = []

    def record(name: str, mode: str, result: dict[str, Any] | None) -> None:
        if result is not None:
            runs.setdefault(name, {}).setdefault(mode, []).append(result)
            print(f"  {name} {mode}: {result}", file=sys.stderr, flush=True)

    redis_work = Path(tempfile.mkdtemp(prefix="sdb-redis-", dir="/tmp"))
    try:
        with _maybe_redis("celery" not in skipped, redis_work) as url:
            for _ in range(reps):  # runners interleaved, so a disturbance hits them alike
                floors.append(floor(n))
                print(f"  floor: {floors[-1]}", file=sys.stderr, flush=True)
                for mode in MODES:
                    record("syncd", mode, syncd_run(bench, n, mode))
                    if "huey" not in skipped:
                        record("huey", mode, huey_run(n, mode))
                    if url is not None:
                        record("celery", mode, celery_run(url, n, mode))
    finally:
        shutil.rmtree(redis_work, ignore_errors=True)
    out: dict[str, Any] = {"n": n, "runs": reps, "skipped": skipped, "floor": _median_of(floors)}
    for name, by_mode in runs.items():
        out[name] = {mode: _median_of(r) for mode, r in by_mode.items()}
    out["goals"] = goals(out)
    return out


@contextmanager
def _maybe_redis(wanted: bool, work: Path) -> Iterator[str | None]:
    if not wanted:
        yield None
        return
    with redis_server(work) as url:
        yield url


def goals(r: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals as ratios of figures from this run (None: a figure is missing)."""
    s, h, f = r.get("syncd", {}), r.get("huey", {}), r["floor"]

    def get(d: dict[str, Any], mode: str, key: str) -> float | None:
        v = d.get(mode, {}).get(key)
        return float(v) if v is not None else None

    seq, hseq = get(s, "sequential", "wall_s"), get(h, "sequential", "wall_s")
    batch = get(s, "batch", "wall_s")
    enq, henq = get(s, "sequential", "enqueue_per_s"), get(h, "sequential", "enqueue_per_s")
    span = get(s, "sequential", "span_ms")
    return {
        "e2e_sequential_vs_huey": None if seq is None or not hseq else round(seq / hseq, 3),
        "e2e_batch_vs_floor": None if batch is None else round(batch / f["wall_s"], 2),
        "enqueue_sequential_vs_huey": None if enq is None or not henq else round(enq / henq, 2),
        "span_overhead_ms": None if span is None else round(span - f["span_ms"], 3),
    }


def table(r: dict[str, Any]) -> str:
    """The side-by-side table and the goals, ready to paste."""
    f = r["floor"]
    lines = [
        f"{r['n']:,} x `/bin/true`, concurrency 2, median of {r['runs']}; e2e wall / enqueue "
        "rate while jobs run, per producer; job start → finish (median, the runner's own record)",
        "",
        "| | e2e sequential | e2e pipelined | e2e batch | enqueue sequential | enqueue pipelined"
        " | enqueue batch | start → finish |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| ThreadPool(2) floor | {f['wall_s']} s | {' | '.join([NONE] * 5)} | {f['span_ms']} ms |",
    ]
    labels = {"huey": "Huey (SqliteHuey, 2 threads)", "celery": "Celery + Redis (prefork, 2)",
              "syncd": "syncd"}  # fmt: skip
    for name in ("huey", "celery", "syncd"):
        if name not in r:
            if name in r["skipped"]:
                lines.append(f"| {labels[name]} | skipped: {r['skipped'][name]} | | | | | | |")
            continue
        m = r[name]
        walls = [f"{m[k]['wall_s']} s" if k in m else NONE for k in MODES]
        rates = [f"{m[k]['enqueue_per_s']:,.0f} /s" if k in m else NONE for k in MODES]
        span = m["sequential"]["span_ms"]
        lines.append(f"| {labels[name]} | {' | '.join(walls)} | {' | '.join(rates)} | {span} ms |")
    if "syncd" in r:
        m = r["syncd"]
        cpu = " / ".join(f"{m[k]['cpu_ms_per_job']} ms" for k in MODES if k in m)
        kb = " / ".join(f"{m[k]['written_kb_per_job']} KB" for k in MODES if k in m)
        lines += ["", f"syncd's daemon per job (sequential / pipelined / batch): CPU {cpu};"
                      f" written to storage {kb}"]  # fmt: skip
    g = r["goals"]

    def show(v: Any) -> str:
        return "n/a" if v is None else str(v)

    lines += [
        "",
        "| goal | measured | target |",
        "|---|---:|---|",
        f"| syncd e2e sequential ÷ Huey's | {show(g['e2e_sequential_vs_huey'])}"
        " | ≤ 0.667 (1 / 1.5) |",
        f"| syncd e2e `submit_many` ÷ ThreadPool floor | {show(g['e2e_batch_vs_floor'])} | ≤ 2 |",
        f"| syncd enqueue sequential ÷ Huey's | {show(g['enqueue_sequential_vs_huey'])} | ≥ 1 |",
        f"| syncd start → finish minus the floor's | {show(g['span_overhead_ms'])} ms | ≤ 1 ms |",
    ]
    return "\n".join(lines)
