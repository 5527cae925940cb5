"""The bench's Celery app (imported by the bench and by `celery worker`): broker and results
in the private redis-server named by BENCH_REDIS_URL (db 0 the queue, db 1 the results),
Celery's defaults otherwise (early ack, prefetch multiplier 4)."""

from __future__ import annotations

import os
import subprocess
import time

from celery import Celery

_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
app = Celery("bench", broker=f"{_URL}/0", backend=f"{_URL}/1")
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=None,  # no periodic cleanup task during the run
)


@app.task(name="bench.run_true")
def run_true(_: int = 0) -> tuple[float, float]:
    """The job every runner runs: /bin/true in a child; returns its own (start, finish)."""
    t0 = time.time()
    subprocess.run(["/bin/true"], check=True)
    return t0, time.time()
