"""`syncd import celery-beat` from input text to output text: parse the dump, convert it
against the config's routes, and prove the TOML passes `syncd check` once pasted into that
config before anyone is told to paste it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from syncd.bridge.beat import Conversion, Converter, MapError, Target, parse_map
from syncd.bridge.dumpdata import DumpError, parse_dump
from syncd.bridge.emit import report_lines, schedules_toml
from syncd.config.load import loads_config
from syncd.config.model import Config, ConfigError
from syncd.config.routing import RouteTable

__all__ = ["DumpError", "ImportResult", "MapError", "import_celery_beat"]


@dataclass(frozen=True)
class ImportResult:
    conversion: Conversion
    toml: str  # for stdout: the [[schedules]] tables
    report: list[str]  # for stderr
    problems: list[str]  # what `syncd check` would say of the config with the TOML pasted

    @property
    def exit_code(self) -> int:
        """0 every periodic task converted (or not needed), 1 otherwise."""
        return 1 if self.conversion.not_converted or self.problems else 0


def import_celery_beat(
    text: str, config: Config, config_text: str, maps: Sequence[str], now: datetime
) -> ImportResult:
    """DumpError for input that is no dump, MapError for a --map naming no route."""
    routes = RouteTable.from_config(config)
    targets: dict[str, Target] = {}
    for entry in maps:
        task, target = parse_map(entry, routes)
        if task in targets and targets[task] != target:
            raise MapError(f"{entry!r}: task {task!r} is mapped twice")
        targets[task] = target
    dump = parse_dump(text)
    taken = {s.name for s in config.schedules}
    conversion = Converter(routes, maps=targets, taken_names=taken, now=now).convert(dump)
    toml = schedules_toml(conversion)
    problems = _pasted_problems(config, config_text, toml) if toml else []
    return ImportResult(conversion, toml, report_lines(conversion), problems)


def _pasted_problems(config: Config, config_text: str, toml: str) -> list[str]:
    """The errors of the config with the output appended (none, unless the config has
    something a paste cannot go after, such as an inline `schedules = [...]`)."""
    assert config.path is not None
    try:
        loads_config(
            config_text.rstrip("\n") + "\n\n" + toml,
            base_dir=config.path.parent,
            source_name=str(config.path),
        )
    except ConfigError as exc:
        return [str(p) for p in exc.errors]
    return []
