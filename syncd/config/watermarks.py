"""Watermarks in a route's argv: `{last_success_started_at}` and `{last_success_finished_at}`
become the time of the last completed task of the same route and params, so an incremental
sync resumes where the last good run started. Filled in at spawn, not at submit: a task that
waited hours gets the newest value.

Only the route's own words are filled in. The rendered params that follow them are the
submitter's text and stay as given, braces included, and every other brace is literal."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from syncd.config.model import LAST_SUCCESS_FINISHED, LAST_SUCCESS_STARTED
from syncd.config.routing import render_params

PLACEHOLDER = re.compile(
    "|".join(re.escape(p) for p in (LAST_SUCCESS_STARTED, LAST_SUCCESS_FINISHED))
)


def route_words(argv: Sequence[str], params: Mapping[str, Any]) -> int:
    """How many leading words of a task's argv are the route's (the rest are its params)."""
    return max(0, len(argv) - len(render_params(params)))


def has_watermarks(argv: Sequence[str], params: Mapping[str, Any]) -> bool:
    return any(PLACEHOLDER.search(word) for word in argv[: route_words(argv, params)])


def fill_watermarks(
    argv: Sequence[str], params: Mapping[str, Any], started: str, finished: str
) -> list[str]:
    """The argv to run: each placeholder of the route's words replaced in one pass (a value
    holding a placeholder's text is not expanded again)."""
    values = {LAST_SUCCESS_STARTED: started, LAST_SUCCESS_FINISHED: finished}
    n = route_words(argv, params)
    head = [PLACEHOLDER.sub(lambda m: values[m.group(0)], word) for word in argv[:n]]
    return head + list(argv[n:])


def next_run_argv(
    argv: Sequence[str],
    params: Mapping[str, Any],
    last: tuple[str, str | None] | None,
    default: str,
) -> list[str]:
    """The argv a run starting now gets, from the (started_at, finished_at) of the last
    completed task of its route and params, or `default` (watermark_default) if none."""
    started, finished = (default, default) if last is None else (last[0], last[1] or default)
    return fill_watermarks(argv, params, started, finished)
