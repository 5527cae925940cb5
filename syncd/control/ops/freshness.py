"""The `freshness` op: each route's last success against its target (read-only)."""

from __future__ import annotations

from typing import Any

from syncd.control.auth import Peer
from syncd.control.ops.base import OPS, Context
from syncd.control.protocol import Arg
from syncd.service.freshness import freshness as route_freshness


@OPS.op(
    "freshness",
    "each route's last success against its freshness_minutes target",
    {"all": Arg("bool", False, help="every route, also those without a target")},
    command="freshness",
    mutating=False,
)
def freshness(ctx: Context, args: dict[str, Any], peer: Peer) -> Any:
    d = ctx.d
    return route_freshness(
        d.dispatcher.routes, d.store, d.clock.now(), all_routes=bool(args.get("all"))
    )
