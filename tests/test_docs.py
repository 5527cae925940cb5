"""Docs bound to code: every syncctl command is in the README, every op has a command."""

from __future__ import annotations

from pathlib import Path

import click

from syncd.control.ops.table import markdown, registry
from syncd.ctl.main import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def command_paths(group: click.Group, prefix: str = "") -> list[str]:
    paths = []
    for name, cmd in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(cmd, click.Group):
            paths += command_paths(cmd, f"{path} ")
        else:
            paths.append(path)
    return paths


def test_every_syncctl_command_is_in_the_readme_with_an_example() -> None:
    missing = [p for p in command_paths(main) if f"`syncctl {p}" not in README]
    assert missing == []


def test_every_op_has_a_syncctl_command() -> None:
    """The command each op declares exists; every command not listed here sends an op."""
    declared = {spec.command for spec in registry().values()}
    commands = set(command_paths(main))
    assert declared - commands == set()
    local = {"monitor", "completion", "top"}  # views composed from other ops, or local
    assert commands - declared - local == set()


def test_every_command_help_has_an_example() -> None:
    def walk(group: click.Group) -> list[click.Command]:
        out: list[click.Command] = []
        for cmd in group.commands.values():
            out += walk(cmd) if isinstance(cmd, click.Group) else [cmd]
        return out

    assert [c.name for c in walk(main) if "Example:" not in (c.epilog or "")] == []


def test_readme_names_the_demo_and_test_commands() -> None:
    assert "syncd demo" in README
    assert "python -m pytest" in README


def test_readme_op_table_is_the_registry() -> None:
    """Regenerate with `python -m syncd.control.ops.table` after declaring an op."""
    block = README.split("<!-- ops:start -->\n", 1)[1].split("<!-- ops:end -->", 1)[0]
    assert block == markdown()
