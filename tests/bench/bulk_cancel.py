#!/usr/bin/env python3
"""Bulk cancels against a real `syncd` (issue 11, item 14). Run by hand, never by pytest:

    python tests/bench/bulk_cancel.py                         # 1M queued, cancel 10,000
    python tests/bench/bulk_cancel.py --queue 100000 --cancel-n 5000

A fresh daemon (shipped settings, dispatch paused) is seeded through submit_many. Then:
`cancel` of --cancel-n ids spread over the queue (once with nobody watching, once with a
`watch` client reading every task event), `clear-queue` of what is left, and `reset-state`
of a second seeding. Throughout each, another client submits one task at a time on its own
connection and `ping`s; the longest wait of those is what a bulk cancel costs everybody
else (the store lock is held for one batch at a time). Prints a markdown table."""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.bench import daemon, items, ms, routes_of, rss_mb, submit_all  # noqa: E402
from tests.helpers.daemon import Conn, DaemonProc  # noqa: E402

TRUE = "/bin/true"


class Prober:
    """Another client during the bulk operation: submit + ping in a loop, latencies kept."""

    def __init__(self, d: DaemonProc):
        self.conn = d.conn()
        self.stop = threading.Event()
        self.submits: list[float] = []
        self.pings: list[float] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        one = {"source": "bench", "sync_type": "r1", "allow_duplicate": True}
        while not self.stop.is_set():
            t = time.perf_counter()
            self.conn.call("submit", **one)
            self.submits.append(time.perf_counter() - t)
            t = time.perf_counter()
            self.conn.call("ping")
            self.pings.append(time.perf_counter() - t)

    def __enter__(self) -> Prober:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        self.conn.close()

    def summary(self) -> dict[str, Any]:
        return {
            "probe_submits": len(self.submits),
            "submit_max_ms": ms(max(self.submits, default=0.0)),
            "submit_median_ms": ms(statistics.median(self.submits or [0.0])),
            "ping_max_ms": ms(max(self.pings, default=0.0)),
        }


class Watcher:
    """A `watch` client that reads every task event (counts the `cancelled` ones)."""

    def __init__(self, d: DaemonProc):
        self.conn = Conn(d.socket, timeout=120)
        self.cancelled = 0
        self.conn.send_raw(b'{"v":1,"id":"w","op":"watch","args":{"events":["task"]}}\n')
        time.sleep(0.5)  # a bench, not a test: let the subscription register
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            while True:
                event = self.conn.read_reply().get("result") or {}
                if event.get("status") == "cancelled":
                    self.cancelled += 1
        except (OSError, ConnectionError, ValueError):
            return


def timed_op(d: DaemonProc, op: str, **args: Any) -> tuple[float, Any, dict[str, Any]]:
    conn = Conn(d.socket, timeout=600)
    try:
        with Prober(d) as probe:
            while not probe.submits:  # the prober is up before the operation starts
                time.sleep(0.001)
            t = time.perf_counter()
            result = conn.call(op, **args)
            took = time.perf_counter() - t
    finally:
        conn.close()
    return took, result, probe.summary()


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with daemon(routes_of([TRUE]), {"heartbeat_seconds": 5}) as d:
        conn = d.conn()
        conn.call("pause")
        t = time.perf_counter()
        ids = submit_all(conn, items(args.queue))
        conn.close()
        out["seed_s"] = round(time.perf_counter() - t, 1)
        rng = random.Random(11)
        for watched in (False, True):
            chosen = sorted(rng.sample(ids, args.cancel_n))
            ids = sorted(set(ids) - set(chosen))
            watcher = Watcher(d) if watched else None
            took, result, probe = timed_op(d, "cancel", ids=chosen)
            assert len(result["cancelled"]) == args.cancel_n, result["skipped"][:3]
            row = {"s": round(took, 2), **probe}
            if watcher is not None:
                deadline = time.monotonic() + 60
                while watcher.cancelled < args.cancel_n and time.monotonic() < deadline:
                    time.sleep(0.05)
                row["events_seen"] = watcher.cancelled
                watcher.conn.close()
            out["cancel_watched" if watched else "cancel"] = row
            print(f"  cancel (watched={watched}): {row}", file=sys.stderr, flush=True)
        left = d.call("status")["queued"]
        took, result, probe = timed_op(d, "clear_queue")
        out["clear_queue"] = {"queued": left, "cancelled": result["cancelled"],
                              "s": round(took, 2), **probe}  # fmt: skip
        print(f"  clear_queue: {out['clear_queue']}", file=sys.stderr, flush=True)
        conn = d.conn()
        submit_all(conn, items(args.queue))
        conn.close()
        left = d.call("status")["queued"]
        took, result, probe = timed_op(d, "reset_state")
        out["reset_state"] = {"queued": left, "cancelled": result["cancelled"],
                              "s": round(took, 2), **probe}  # fmt: skip
        print(f"  reset_state: {out['reset_state']}", file=sys.stderr, flush=True)
        assert d.proc is not None
        out["rss_mb"] = rss_mb(d.proc.pid)
    return out


def table(r: dict[str, Any], args: argparse.Namespace) -> str:
    lines = ["| operation | time | other client: submit max / median, ping max |", "|---|---|---|"]
    for key, what in (
        ("cancel", f"`cancel` of {args.cancel_n:,} ids in a {args.queue:,} queue"),
        ("cancel_watched", f"`cancel` of {args.cancel_n:,} ids, a `watch` client reading"),
        ("clear_queue", "`clear-queue`"),
        ("reset_state", "`reset-state`"),
    ):
        row = r[key]
        size = f" of {row['cancelled']:,}" if "cancelled" in row else ""
        lines.append(
            f"| {what}{size} | {row['s']} s | {row['submit_max_ms']} / "
            f"{row['submit_median_ms']} ms, {row['ping_max_ms']} ms |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--queue", type=int, default=1_000_000, help="tasks queued before each")
    p.add_argument("--cancel-n", type=int, default=10_000, help="ids per cancel request")
    args = p.parse_args(argv)
    results = run(args)
    print(f"\nseeded in {results['seed_s']} s; daemon RSS at the end {results['rss_mb']} MB\n")
    print(table(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
