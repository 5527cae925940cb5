"""A configurable fake sync job for end-to-end tests (run by the daemon as a real child).

Flags arrive as the daemon renders params: --sleep=1.5 --exit=3 --record=/path --trap ..."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--exit", type=int, default=0)
    p.add_argument("--record", default=None)
    p.add_argument("--trap", action="store_true", help="ignore SIGTERM")
    p.add_argument("--term-record", default=None, help="trap SIGTERM, appending its time here")
    p.add_argument("--grandchildren", type=int, default=0)
    p.add_argument("--busy", type=float, default=0.0, help="burn CPU silently for N s")
    p.add_argument("--progress", default=None)
    p.add_argument("--output-bytes", type=int, default=0)
    p.add_argument("--pidfile", default=None)
    p.add_argument("--retry-after", default=None, help="print `::retry-after VALUE` at the end")
    p.add_argument("--throttle", default=None, help="print `::throttle VALUE` at the start")
    p.add_argument("--gate", default=None, help="after the progress line, wait for this file")
    a = p.parse_args()

    if a.trap:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if a.term_record:

        def on_term(*_: object) -> None:
            with open(a.term_record, "a") as f:
                f.write(f"sigterm {a.name} {time.time():.6f} {os.environ.get('SYNCD_TASK_ID')}\n")

        signal.signal(signal.SIGTERM, on_term)
    if a.pidfile:
        with open(a.pidfile, "a") as f:
            f.write(f"{os.getpid()}\n")
    if a.record:
        with open(a.record, "a") as f:
            f.write(f"start {a.name} {time.time():.6f} {os.environ.get('SYNCD_TASK_ID')}\n")
    print(f"job {a.name} starting", flush=True)
    if a.progress:
        print(f"::progress {a.progress}", flush=True)
    if a.throttle:
        print(f"::throttle {a.throttle}", flush=True)
    gate_deadline = time.monotonic() + 60
    while a.gate and not os.path.exists(a.gate) and time.monotonic() < gate_deadline:
        time.sleep(0.01)
    for _ in range(a.grandchildren):
        kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        if a.pidfile:
            with open(a.pidfile, "a") as f:
                f.write(f"{kid.pid}\n")
    if a.output_bytes:
        chunk = b"x" * 1023 + b"\n"
        out = sys.stdout.buffer
        out.write(b"FIRST-LINE\n")
        for _ in range(a.output_bytes // 1024):
            out.write(chunk)
        out.write(b"LAST-LINE\n")
        out.flush()
    deadline = time.monotonic() + a.busy
    while time.monotonic() < deadline:
        pass
    time.sleep(a.sleep)
    if a.record:
        with open(a.record, "a") as f:
            f.write(f"end {a.name} {time.time():.6f} {os.environ.get('SYNCD_TASK_ID')}\n")
    print(f"job {a.name} done", flush=True)
    if a.retry_after:
        print(f"::retry-after {a.retry_after}", flush=True)
    return a.exit


if __name__ == "__main__":
    sys.exit(main())
