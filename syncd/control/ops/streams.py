"""The streaming ops: a task's output (followed until it ends) and the event feed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from syncd.control.auth import Peer
from syncd.control.ops.base import ID, OPS, Context
from syncd.control.protocol import Arg
from syncd.core import paths
from syncd.core.events import EVENT_KINDS
from syncd.core.models import FINAL
from syncd.tasklog.reader import read_log, read_slice

LOG_FOLLOW_POLL_SECONDS = 0.2
READ_MAX = 1 << 20  # bytes of output in one reply (a stream frame, or a plain read)


@OPS.op(
    "logs",
    "a task's output; with follow, a stream until the task ends",
    {
        "id": ID,
        "follow": Arg("bool", False),
        "offset": Arg("int", 0, min=0),
        # At least 4: a read from a character's start then always holds a whole one.
        "limit": Arg("int", READ_MAX, min=4, max=READ_MAX, help="bytes per reply"),
    },
    command="logs",
    mutating=False,
    stream=True,
)
def logs(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    task = ctx.task(args["id"])
    path = paths.task_log(ctx.d.dispatcher.log_dir, task.id)
    offset = args.get("offset", 0)
    if not args.get("follow"):
        try:
            got = read_slice(path, offset, args.get("limit", READ_MAX), final=task.status in FINAL)
        except FileNotFoundError:  # not started yet, spawn failed early, or pruned
            return {"text": "", "size": 0, "end": 0, "truncated": False}
        # `size`: where this text ends (the next offset); `end`: the output's length so far.
        return {"text": got.text, "size": got.next_offset, "end": got.end,
                "truncated": got.capped}  # fmt: skip
    return _follow_log(ctx, task.id, path, offset)


def _follow_log(
    ctx: Context, task_id: int, path: Path, offset: int
) -> Iterator[tuple[dict[str, Any], bool] | None]:
    while True:
        task = ctx.d.store.get(task_id)
        final = task is None or task.status in FINAL
        try:
            text, size, _ = read_log(path, offset, final=final)
        except FileNotFoundError:
            text, size = "", offset
        if text:
            offset = size
            yield {"text": text, "offset": offset}, True
            continue  # a read is capped at 1 MiB: read on before sleeping or ending
        if final:
            yield (
                {
                    "status": task.status.value if task else None,
                    "exit_code": task.exit_code if task else None,
                },
                False,
            )
            return
        yield None
        time.sleep(LOG_FOLLOW_POLL_SECONDS)


@OPS.op(
    "watch",
    "a stream of task, pool, schedule and config events",
    {"events": Arg("str_list", choices=tuple(EVENT_KINDS), min_items=1)},
    command="watch",
    mutating=False,
    stream=True,
)
def watch(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    return ctx.d.events.subscribe(args.get("events"))
