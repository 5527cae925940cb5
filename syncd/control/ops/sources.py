"""Ops on the sources' protection: the state of each source, and an operator's pause,
resume and reset (close the breaker, clear the throttle)."""

from __future__ import annotations

import logging
from typing import Any

from syncd.control.auth import Peer
from syncd.control.ops.base import OPS, Context
from syncd.control.protocol import Arg
from syncd.core.errors import SyncdError
from syncd.core.models import ErrorCode
from syncd.service.sources import describe, known

log = logging.getLogger(__name__)

SOURCE_NAME = Arg("str", required=True, help="source name")


def _one(ctx: Context, name: str) -> dict[str, Any]:
    ctx.d.dispatcher.wake()  # a hold lifted or set: dispatch looks again
    row = next((r for r in describe(ctx.d) if r["name"] == name), None)
    if row is None:  # a reload removed it meanwhile: the change was made and saved
        raise SyncdError(ErrorCode.UNKNOWN_SOURCE, f"source {name} was removed by a reload")
    return {"source": row}


@OPS.op("sources", "each source's limits, use and protection state", command="sources",
        mutating=False)  # fmt: skip
def sources(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    return {"sources": describe(ctx.d)}


@OPS.op(
    "source_pause",
    "hold back every task of a source (for a while, or until resumed)",
    {"name": SOURCE_NAME, "seconds": Arg("float", min=0, max=1e8, exclusive_min=True)},
    command="source pause",
)
def source_pause(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    name = known(ctx.d, args["name"])
    ctx.d.dispatcher.sources.pause(name, args.get("seconds"), peer.user)
    return _one(ctx, name)


@OPS.op("source_resume", "end a source's pause", {"name": SOURCE_NAME}, command="source resume")
def source_resume(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    name = known(ctx.d, args["name"])
    ctx.d.dispatcher.sources.resume(name, peer.user)
    return _one(ctx, name)


@OPS.op(
    "source_reset",
    "close a source's breaker and clear its throttle",
    {"name": SOURCE_NAME},
    command="source reset",
)
def source_reset(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    name = known(ctx.d, args["name"])
    ctx.d.dispatcher.sources.reset(name, peer.user)
    return _one(ctx, name)
