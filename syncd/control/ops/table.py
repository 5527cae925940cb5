"""Every op the daemon answers: importing each handler module declares its ops in the one
registry, and nothing else may add to it."""

from __future__ import annotations

from syncd.control.ops import freshness, metrics, pool, routes, sources, streams, tasks
from syncd.control.ops.base import OPS
from syncd.control.protocol import Registry

HANDLER_MODULES = (pool, tasks, routes, streams, freshness, metrics, sources)


def registry() -> Registry:
    return OPS


def markdown() -> str:
    """The README's op table, derived from the registry (tests/test_docs.py compares them)."""
    lines = ["| op | args | mutating | syncctl | what |", "|---|---|---|---|---|"]
    for row in OPS.docs_table():
        kind = "yes" if row["mutating"] else "no"
        stream = " (stream)" if row["stream"] else ""
        args = f"`{row['args']}`" if row["args"] else ""
        lines.append(
            f"| `{row['op']}` | {args} | {kind} | `syncctl {row['command']}` |"
            f" {row['summary']}{stream} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m syncd.control.ops.table > the README's op table
    print(markdown(), end="")
