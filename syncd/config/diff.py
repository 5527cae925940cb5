"""What a reload would change, by name: routes, sources, schedules and daemon settings, and
which changed settings a running daemon cannot take on (they wait for a restart)."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from syncd.config.model import Config

# Bound once at start: the socket is bound and the state dir locked and opened.
RESTART_ONLY = ("socket", "socket_mode", "state_dir")


def _items(cfg: Config) -> dict[str, Any]:
    items: dict[str, Any] = {}
    for name, source in cfg.sources.items():
        items[f"source {name}"] = (source.max_concurrent, source.fallback, source.rate,
                                   source.breaker)  # fmt: skip
        for sync_type, route in source.routes.items():
            items[f"route {name}.{sync_type}"] = repr(route)
    for schedule in cfg.schedules:
        items[f"schedule {schedule.name}"] = repr(schedule)
    for key, value in asdict(cfg.daemon).items():
        items[f"setting {key}"] = repr(value)
    return items


def diff_configs(old: Config, new: Config) -> dict[str, list[str]]:
    before, after = _items(old), _items(new)
    return {
        "added": sorted(k for k in after if k not in before),
        "removed": sorted(k for k in before if k not in after),
        "changed": sorted(k for k in after if k in before and after[k] != before[k]),
    }


def restart_required(old: Config, new: Config) -> list[str]:
    """The [daemon] keys whose new value only a restart can apply."""
    return [k for k in RESTART_ONLY if getattr(old.daemon, k) != getattr(new.daemon, k)]


def applicable(old: Config, new: Config) -> Config:
    """`new` with the restart-only keys kept at their running values: the config a running
    daemon can actually switch to (and report, e.g. in config_get)."""
    kept = {k: getattr(old.daemon, k) for k in RESTART_ONLY}
    return replace(new, daemon=replace(new.daemon, **kept))
