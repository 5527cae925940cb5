"""The `freshness` op: each route's last success against its target (read-only). Its
declaration sits in protocol.py and its command in ctl/freshness.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from syncd.control.ops import Ops, op
from syncd.service.freshness import freshness

if TYPE_CHECKING:
    from syncd.control.auth import Peer


@op("freshness")
def _freshness(self: Ops, args: dict[str, Any], peer: Peer) -> Any:
    d = self.d
    return freshness(d.dispatcher.routes, d.store, d.clock.now(), all_routes=bool(args.get("all")))
