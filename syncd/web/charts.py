"""Server-rendered SVG charts of the `series` op: 24 h of quarter-hour bars. No script and no
inline style (the CSP forbids both): colours come from the stylesheet by class, each bar
carries a <title> with its exact numbers for hover, and a text summary sits beside it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 600, 120
LEFT, BOTTOM, TOP = 36, 18, 8
STACK = ("completed", "failed", "cancelled", "deferred")


def _nice_max(value: float) -> int:
    for power in range(0, 12):
        for step in (1, 2, 5):
            top: int = step * 10**power
            if top >= value:
                return top
    return int(value)


def _frame(title: str, top: int, bars: list[str], labels: Sequence[str]) -> Markup:
    plot_h = HEIGHT - BOTTOM - TOP
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{top}</text>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
        *bars,
    ]
    for i, label in enumerate(labels):
        x = LEFT + (WIDTH - LEFT) * i / max(1, len(labels) - 1)
        anchor = "start" if i == 0 else "end" if i == len(labels) - 1 else "middle"
        parts.append(
            f'<text class="tick" x="{x:.0f}" y="{HEIGHT - 4}" text-anchor="{anchor}">'
            f"{escape(label)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _slot(i: int, n: int) -> tuple[float, float]:
    width = (WIDTH - LEFT) / n
    return LEFT + i * width + 0.5, max(1.0, width - 1.0)


def throughput(series: Mapping[str, Any]) -> Markup:
    """Finished tasks per quarter hour, stacked by status."""
    buckets: list[Mapping[str, Any]] = list(series.get("buckets") or [])
    n = max(1, len(buckets))
    top = _nice_max(max([sum(int(b[k]) for k in STACK) for b in buckets] or [0]) or 1)
    plot_h = HEIGHT - BOTTOM - TOP
    bars = []
    for i, b in enumerate(buckets):
        x, w = _slot(i, n)
        y = float(TOP + plot_h)
        tip = f"{b['start']}: " + ", ".join(f"{b[k]} {k}" for k in STACK)
        group = [f"<g><title>{escape(tip)}</title>"]
        for key in STACK:
            h = plot_h * int(b[key]) / top
            if h > 0:
                y -= h
                group.append(
                    f'<rect class="bar {key}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}"'
                    f' height="{h:.1f}"/>'
                )
        group.append("</g>")
        if len(group) > 2:
            bars.append("".join(group))
    return _frame("Finished tasks per 15 minutes, last 24 hours", top, bars, _labels())


def queue_depth(series: Mapping[str, Any]) -> Markup:
    """The deepest queue sampled in each quarter hour; no bar where nothing was sampled."""
    buckets: list[Mapping[str, Any]] = list(series.get("buckets") or [])
    n = max(1, len(buckets))
    values = [b.get("queued") for b in buckets]
    top = _nice_max(max([v for v in values if v is not None] or [0]) or 1)
    plot_h = HEIGHT - BOTTOM - TOP
    bars = []
    for i, (b, v) in enumerate(zip(buckets, values, strict=True)):
        if v is None:
            continue
        x, w = _slot(i, n)
        h = max(1.0 if v else 0.0, plot_h * int(v) / top)
        tip = f"{b['start']}: {v} queued at most"
        bars.append(
            f"<g><title>{escape(tip)}</title>"
            f'<rect class="bar queued" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{w:.1f}"'
            f' height="{h:.1f}"/></g>'
        )
    return _frame("Deepest queue per 15 minutes, last 24 hours", top, bars, _labels())


def _labels() -> list[str]:
    return ["-24 h", "-18 h", "-12 h", "-6 h", "now"]


def totals(series: Mapping[str, Any]) -> dict[str, int]:
    """The 24 h sums shown as text beside the chart (the chart is not the only carrier)."""
    buckets = series.get("buckets") or []
    return {k: sum(int(b[k]) for b in buckets) for k in STACK}
