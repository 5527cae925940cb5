"""What a reload would change, by name: routes, sources, schedules and daemon settings."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from syncd.config.model import Config


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
