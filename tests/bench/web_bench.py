#!/usr/bin/env python3
"""The dashboard's costs at depth, run by hand (pytest collects nothing here):

    python tests/bench/web_bench.py                       # 1M queued, 50 requests per page
    python tests/bench/web_bench.py --queued 100000 --browsers 20

A real daemon (dispatch paused) seeded with --queued tasks through submit_many plus a few
hundred finished ones, and a real `syncd web` beside it. Measured from outside, over HTTP:
server time of each page (median and p95 of --requests GETs, one at a time), and the live
fan-out: --browsers SSE streams open at once, one submit, how long until every stream has
the re-rendered sections, and how many daemon requests that cost (the same for 1 browser or
50: one shared watch, one rebuild per change)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.bench import daemon, items, machine, ms, pct, rss_mb, submit_all  # noqa: E402
from tests.helpers.web import start_web  # noqa: E402

PAGES = ["/", "/history", "/schedules", "/routes", "/metrics", "/healthz", "/tasks/1"]


def page_times(base: str, path: str, n: int) -> dict[str, float]:
    times = []
    with httpx.Client(timeout=30) as c:
        c.get(base + path)  # warm: templates compiled, connections pooled
        for _ in range(n):
            t = time.perf_counter()
            r = c.get(base + path)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, (path, r.status_code)
    return {"median_ms": ms(statistics.median(times)), "p95_ms": ms(pct(times, 95))}


OVERVIEW_OPS = [
    ("status", {"verbose": True}),
    ("list", {"status": ["queued"], "limit": 50, "explain": True}),
    ("history", {"limit": 50}),
    ("routes", {}),
    ("metrics", {}),
    ("series", {}),
]


def op_times(socket: Path, n: int) -> dict[str, float]:
    """Median time of each daemon read the overview makes, over the socket."""
    from syncd.ctl.client import Client

    out = {}
    with Client(socket) as c:
        for op, args in OVERVIEW_OPS:
            times = []
            for _ in range(n):
                t = time.perf_counter()
                c.call(op, **args)
                times.append(time.perf_counter() - t)
            out[op] = ms(statistics.median(times))
    return out


def fan_out(base: str, browsers: int, submit: Any) -> dict[str, float]:
    """Open `browsers` SSE streams, submit once, time until every stream got fragments."""
    ready = threading.Barrier(browsers + 1)
    got: list[float] = []
    lock = threading.Lock()
    t0: list[float] = []

    def listen() -> None:
        with httpx.Client(timeout=60) as c, c.stream("GET", base + "/events?page=overview") as r:
            lines = r.iter_lines()
            next(lines)  # retry: the stream is open
            ready.wait()
            for line in lines:
                if line.startswith("event: fragments") and t0:
                    with lock:
                        got.append(time.perf_counter() - t0[0])
                    return

    threads = [threading.Thread(target=listen, daemon=True) for _ in range(browsers)]
    for th in threads:
        th.start()
    ready.wait()
    time.sleep(1.0)  # let the first rebuilds (one per new listener) pass
    t0.append(time.perf_counter())
    submit()
    for th in threads:
        th.join(30)
    return {
        "browsers": browsers,
        "all_updated_ms": ms(max(got)) if len(got) == browsers else float("nan"),
        "median_ms": ms(statistics.median(got)) if got else float("nan"),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queued", type=int, default=1_000_000)
    p.add_argument("--finished", type=int, default=300)
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--browsers", type=int, default=50)
    args = p.parse_args()
    sources = {f"src{i}": {"routes": {f"r{j}": {"argv": ["/bin/true"]} for j in range(4)}}
               for i in range(10)}  # fmt: skip
    out: dict[str, Any] = {"machine": machine(), "queued": args.queued}
    with daemon(sources, {"heartbeat_seconds": 5}) as d:
        conn = d.conn()
        todo = [{"source": f"src{i % 10}", "sync_type": f"r{i % 4}", "allow_duplicate": True}
                for i in range(args.finished)]  # fmt: skip
        submit_all(conn, todo)
        while conn.call("status")["queued"] or conn.call("status")["active"]:
            time.sleep(0.1)
        conn.call("pause")
        t = time.perf_counter()
        seed = [{**it, "source": f"src{n % 10}"} for n, it in enumerate(items(args.queued))]
        for it in seed:
            it["sync_type"] = "r" + it["sync_type"][-1]
        submit_all(conn, seed)
        out["seed_s"] = round(time.perf_counter() - t, 1)
        out["ops_median_ms"] = op_times(d.socket, args.requests)
        print(f"  ops: {out['ops_median_ms']}", file=sys.stderr, flush=True)
        web = start_web(d.config, "--socket", str(d.socket))
        try:
            base = web.url.rstrip("/")
            out["pages"] = {path: page_times(base, path, args.requests) for path in PAGES}
            for path, row in out["pages"].items():
                print(f"  {path}: {row}", file=sys.stderr, flush=True)

            def submit() -> None:
                conn.call("submit", source="src0", sync_type="r0", allow_duplicate=True)

            out["fan_out_1"] = fan_out(base, 1, submit)
            out["fan_out"] = fan_out(base, args.browsers, submit)
            out["web_rss_mb"] = rss_mb(web.proc.pid)
            assert d.proc is not None
            out["daemon_rss_mb"] = rss_mb(d.proc.pid)
        finally:
            web.stop()
        conn.close()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
