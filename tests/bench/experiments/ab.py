#!/usr/bin/env python3
"""Interleaved A/B of syncd trees on one machine, run by hand (never by pytest):

    python tests/bench/experiments/ab.py /path/to/tree-a /path/to/tree-b --rounds 5

Each round runs, for each tree in turn, N x /bin/true (max_workers 2) twice on a fresh
daemon: a sequential producer (one `submit` per job, each waiting for its reply) and
`submit_many`. Per tree it prints the medians over the rounds: the sequential submit rate,
e2e wall times, the daemon's CPU per job and the row span (started_at -> finished_at).
A shared VM moves wall times by tens of percent between runs; interleaving the trees and
reading the CPU per job is what makes two trees comparable.

The patches beside this script are the experiments the README's Performance section
reports (apply one to a worktree of the commit named there, then compare it with that
commit): no_fsync_bound.patch (synchronous = OFF, a bound, never shipped) and
claim_ahead_take.patch (the next task spawned at an exit, before the finish's commit).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

PROBE = r"""
import json, os, statistics, sys, time
import psutil
sys.path.insert(0, os.path.join(os.environ["PYTHONPATH"], "tests", "bench"))
import bench
from syncd.core.clock import parse_iso

n = int(sys.argv[1])
out = {}
for mode in ("seq", "many"):
    with bench.daemon(bench.routes_of([bench.TRUE])) as d:
        conn = d.conn()
        conn.call("ping")
        proc = psutil.Process(d.proc.pid)
        cpu0 = sum(proc.cpu_times()[:2])
        t0 = time.perf_counter()
        if mode == "seq":
            for item in bench.items(n):
                conn.call("submit", **item)
            out["seq_rate"] = n / (time.perf_counter() - t0)
        else:
            bench.submit_all(conn, bench.items(n))
        deadline = time.monotonic() + 300
        while bench.unfinished(conn):
            if time.monotonic() > deadline:
                raise SystemExit(f"{mode}: jobs not done within 300 s")
            time.sleep(0.02)
        out[mode + "_wall"] = time.perf_counter() - t0
        out[mode + "_cpu_ms"] = (sum(proc.cpu_times()[:2]) - cpu0) / n * 1e3
        tasks = conn.call("history", status=["completed"], limit=n + 10)["tasks"]
        if len(tasks) != n:
            raise SystemExit(f"{mode}: {len(tasks)} of {n} jobs completed")
        out[mode + "_span_ms"] = statistics.median(
            (parse_iso(t["finished_at"]) - parse_iso(t["started_at"])).total_seconds() * 1e3
            for t in tasks
        )
print(json.dumps(out))
"""


def run_once(tree: str, n: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(n)],
        env=env,
        capture_output=True,
        text=True,
        cwd="/tmp",
        timeout=900,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"{tree}: probe failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("trees", nargs="+", help="syncd checkouts (their root directories)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=1000, help="jobs per run")
    args = p.parse_args()
    results: dict[str, list[dict[str, float]]] = {tree: [] for tree in args.trees}
    for r in range(args.rounds):
        for tree in args.trees:
            results[tree].append(run_once(tree, args.n))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    for tree, runs in results.items():
        medians: dict[str, Any] = {
            key: round(statistics.median(run[key] for run in runs), 3) for key in runs[0]
        }
        print(tree, json.dumps(medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
