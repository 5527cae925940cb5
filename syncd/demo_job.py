"""`python -m syncd.demo_job NAME [--flag[=value]]...`: a simulated sync for `syncd demo`.

It behaves like a real one as far as syncd can tell: it takes a while (1-8 s, divided by
$SYNCD_DEMO_SPEED), prints ordinary log lines and `::progress` lines, and sometimes fails
(exit 1, message on stderr; $SYNCD_DEMO_FAIL_RATE, default 0.1). Standard library only."""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Mapping, Sequence

DEFAULT_FAIL_RATE = 0.1
STEPS = 8


def _env_float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SystemExit(f"demo_job: ${name}={text!r} is not a number") from None
    if not lo <= value <= hi:
        raise SystemExit(f"demo_job: ${name}={text!r} is out of range {lo:g}..{hi:g}")
    return value


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    names = [a for a in args if not a.startswith("--")]
    if len(names) != 1:
        print("usage: python -m syncd.demo_job NAME [--flag[=value]]...", file=sys.stderr)
        return 2
    name, flags = names[0], [a for a in args if a.startswith("--")]
    speed = _env_float(env, "SYNCD_DEMO_SPEED", 1.0, 1e-3, 1e6)
    fail_rate = _env_float(env, "SYNCD_DEMO_FAIL_RATE", DEFAULT_FAIL_RATE, 0.0, 1.0)
    rng = random.Random()
    duration = rng.uniform(1.0, 8.0) / speed
    total = rng.randrange(100, 2000, 10)
    # Decide up front whether (and at which step) this run fails, so a failure comes mid-way
    # with partial progress, as a real API error would.
    fail_at = rng.randrange(1, STEPS + 1) if rng.random() < fail_rate else None
    task = env.get("SYNCD_TASK_ID", "?")
    print(f"sync {name}: starting (task {task}, flags: {' '.join(flags) or 'none'})", flush=True)
    for step in range(1, STEPS + 1):
        time.sleep(duration / STEPS)
        done = total * step // STEPS
        if step == fail_at:
            print(
                f"sync {name}: error: upstream API answered 503 after {done} records",
                file=sys.stderr,
                flush=True,
            )
            return 1
        print(f"::progress fetched {done}/{total} records", flush=True)
        if step % 3 == 0:
            print(f"sync {name}: page {step} stored", flush=True)
    print(f"sync {name}: done, {total} records in {duration:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
