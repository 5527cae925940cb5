"""The `metrics` op's JSON as the Prometheus text exposition: the one conversion both
`syncctl metrics` and `syncd web`'s /metrics use, built with prometheus_client's collector
API so names, escaping and histogram suffixes follow its rules."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label_names(samples: list[Mapping[str, Any]]) -> list[str]:
    names: list[str] = []
    for sample in samples:
        for key in sample.get("labels") or {}:
            if key not in names:
                names.append(key)
    return names


def _values(sample: Mapping[str, Any], names: list[str]) -> list[str]:
    labels = sample.get("labels") or {}
    return [str(labels.get(n, "")) for n in names]


def families(result: Mapping[str, Any]) -> Iterator[Metric]:
    """One metric family per entry of the op's counters, gauges and histograms."""
    for name, fam in sorted((result.get("counters") or {}).items()):
        samples = fam.get("samples") or []
        names = _label_names(samples)
        # prometheus_client appends `_total` itself: give it the bare name.
        counter = CounterMetricFamily(
            name.removesuffix("_total"), fam.get("help", name), labels=names
        )
        for s in samples:
            counter.add_metric(_values(s, names), float(s["value"]))
        yield counter
    for name, fam in sorted((result.get("gauges") or {}).items()):
        samples = fam.get("samples") or []
        names = _label_names(samples)
        gauge = GaugeMetricFamily(name, fam.get("help", name), labels=names)
        for s in samples:
            gauge.add_metric(_values(s, names), float(s["value"]))
        yield gauge
    for name, fam in sorted((result.get("histograms") or {}).items()):
        samples = fam.get("samples") or []
        names = _label_names(samples)
        hist = HistogramMetricFamily(name, fam.get("help", name), labels=names)
        for s in samples:
            buckets = [(_le(bound), float(n)) for bound, n in s.get("buckets") or []]
            buckets.append(("+Inf", float(s.get("count", 0))))
            hist.add_metric(_values(s, names), buckets, float(s.get("sum", 0.0)))
        yield hist


def _le(bound: float) -> str:
    return repr(float(bound))


class _Snapshot(Collector):
    def __init__(self, result: Mapping[str, Any]):
        self.result = result

    def collect(self) -> Iterator[Metric]:
        return families(self.result)


def exposition(result: Mapping[str, Any]) -> bytes:
    """The text exposition (format 0.0.4) of one `metrics` reply."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(result))
    return generate_latest(registry)
