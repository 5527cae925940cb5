"""(source, sync_type, params) → the argv to run. Routing is data: one generic resolver over
the route tables of the config, with no knowledge of any particular source."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from syncd.core.errors import SyncdError
from syncd.core.models import ErrorCode

if TYPE_CHECKING:
    from syncd.config.model import Config, Route, Source

MAX_PARAM_BYTES = 1024


@dataclass(frozen=True)
class Resolution:
    source: str
    sync_type: str  # as requested, normalised
    route: Route
    rule: str  # "exact" | "fallback"
    params: dict[str, Any]
    argv: tuple[str, ...]  # route.argv + rendered params


def normalise(name: str | None) -> str:
    """Lower-case and strip; used for both source names and sync types."""
    return (name or "").strip().lower()


class RouteTable:
    def __init__(self, sources: Mapping[str, Source]) -> None:
        self._sources = {normalise(s.name): s for s in sources.values()}

    @classmethod
    def from_config(cls, config: Config) -> RouteTable:
        return cls(config.sources)

    def sources(self) -> list[Source]:
        return [self._sources[name] for name in sorted(self._sources)]

    def source(self, name: str) -> Source | None:
        return self._sources.get(normalise(name))

    def route(self, source: str, sync_type: str) -> Route | None:
        """The route declared for exactly this sync type (no fallback)."""
        src = self.source(source)
        return None if src is None else src.routes.get(normalise(sync_type))

    def resolve(
        self,
        source: str,
        sync_type: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Resolution:
        if not isinstance(source, str) or (
            sync_type is not None and not isinstance(sync_type, str)
        ):
            raise SyncdError(ErrorCode.INVALID_ARGS, "source and sync_type must be strings")
        name = normalise(source)
        src = self._sources.get(name)
        if src is None:
            known = sorted(self._sources)
            raise SyncdError(
                ErrorCode.UNKNOWN_SOURCE,
                f"unknown source {source!r}; known sources: {', '.join(known) or 'none'}",
                {"known": known},
            )
        stype = normalise(sync_type) or "all"
        route, rule = src.routes.get(stype), "exact"
        if route is None and src.fallback is not None:
            route, rule = src.routes.get(src.fallback), "fallback"
        if route is None:
            types = sorted(src.routes)
            raise SyncdError(
                ErrorCode.UNKNOWN_ROUTE,
                f"source {name!r} has no route {stype!r} and no fallback; "
                f"sync types: {', '.join(types)}",
                {"sync_types": types},
            )
        checked = check_params(route, params or {})
        return Resolution(name, stype, route, rule, checked, route.argv + render_params(checked))


def check_params(route: Route, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every key must be allowed by the route and every value a plain, short, printable
    scalar: the values become argv elements, never shell text."""
    if not isinstance(params, Mapping):
        raise SyncdError(ErrorCode.INVALID_ARGS, "params must be an object")
    allowed = ", ".join(route.allowed_params) or "none"
    for key, val in params.items():
        if not isinstance(key, str) or key not in route.allowed_params:
            raise SyncdError(
                ErrorCode.PARAM_NOT_ALLOWED,
                f"param {key!r} is not allowed for {route.source}.{route.sync_type} "
                f"(allowed: {allowed})",
                {"param": str(key), "allowed": list(route.allowed_params)},
            )
        _check_value(key, val)
    return dict(params)


def _check_value(key: str, val: Any) -> None:
    problem = None
    if isinstance(val, bool):
        return
    if not isinstance(val, (str, int, float)):
        problem = f"a value must be a string, number or boolean, not {type(val).__name__}"
    elif isinstance(val, float) and not math.isfinite(val):
        problem = f"{val} is not a finite number"
    elif len(str(val).encode("utf-8", "surrogatepass")) > MAX_PARAM_BYTES:
        problem = f"value over {MAX_PARAM_BYTES} bytes"
    elif any(unicodedata.category(ch) in ("Cc", "Cs") for ch in str(val)):
        problem = "control characters (newline, NUL, ...) are not allowed"
    if problem is not None:
        details = {"arg": "params", "param": key}
        raise SyncdError(ErrorCode.INVALID_ARGS, f"param {key!r}: {problem}", details)


def render_params(params: Mapping[str, Any]) -> tuple[str, ...]:
    """`{"since": "2025-01-01", "full": True}` → `--full --since=2025-01-01` (sorted keys);
    False omits the flag."""
    out: list[str] = []
    for key in sorted(params):
        val = params[key]
        if val is True:
            out.append(f"--{key}")
        elif val is not False:
            out.append(f"--{key}={val}")
    return tuple(out)
