"""The collector's Prometheus metrics, on a registry created per app (tests get a fresh one).

Per-node verdict gauges and a few aggregate counters. No (source, target) pair labels: the
series count grows with N, not N*N; pair detail lives in the JSON `/report`.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter as PromCounter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from agent.report import Diagnosis, Severity


class CollectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reports_received = PromCounter(
            "netdiag_reports_received", "Node reports accepted and stored.", registry=r)
        self.reports_rejected = PromCounter(
            "netdiag_reports_rejected", "Node reports rejected, by reason.", ["reason"],
            registry=r)
        self.nodes = Gauge("netdiag_nodes", "Nodes with a stored report.", registry=r)
        # The two per-node series are made from plain dicts when scraped: a labelled Gauge
        # keeps an object with a lock per child (7 MB for 5,000 nodes x 2, measured) and
        # costs ~10 us per report to look up.
        self.node_worst: dict[str, int] = {}
        self.node_last_report: dict[str, float] = {}
        r.register(_PerNodeGauges(self))
        self.diagnoses = Gauge(
            "netdiag_diagnoses", "Current cross-node diagnoses, by id and severity.",
            ["id", "severity"], registry=r)
        self.correlation_seconds = Histogram(
            "netdiag_correlation_seconds", "Time to load, correlate and render the report.",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self._diag_labels: set[tuple[str, str]] = set()
        for reason in ("unauthorized", "too_large", "media_type", "bad_json", "schema"):
            self.reports_rejected.labels(reason)

    def rejected(self, reason: str) -> None:
        self.reports_rejected.labels(reason).inc()

    def observe_report(self, node: str, received_at: float) -> None:
        """A report was accepted and stored."""
        self.reports_received.inc()
        self.node_reported(node, received_at)

    def node_reported(self, node: str, received_at: float) -> None:
        self.node_last_report[node] = received_at

    def set_verdicts(self, node_worst: dict[str, Severity],
                     diagnoses: Iterable[Diagnosis]) -> None:
        """After each correlation: per-node worst and the diagnosis counts (old series reset)."""
        diagnoses = list(diagnoses)
        worst = dict(node_worst)
        for d in diagnoses:
            for n in d.nodes:
                if n in worst:
                    worst[n] = max(worst[n], d.severity)
        for node in self.node_last_report.keys() - worst.keys():  # forgotten nodes
            del self.node_last_report[node]
        self.node_worst = {node: int(sev) for node, sev in worst.items()}
        self.nodes.set(len(worst))
        counts = Counter((d.id, d.severity.label) for d in diagnoses)
        for labels in self._diag_labels - set(counts):
            self.diagnoses.labels(*labels).set(0)
        for labels, n in counts.items():
            self.diagnoses.labels(*labels).set(n)
        self._diag_labels |= set(counts)


class _PerNodeGauges:
    """A prometheus_client custom collector: the per-node gauges, read at scrape time."""

    def __init__(self, metrics: CollectorMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families({}, {}))

    def collect(self) -> list[GaugeMetricFamily]:
        # Scrapes run off the event loop (collector.app), which keeps adding nodes: iterate
        # over copies (a dict copy is one step under the GIL).
        return list(self._families(self.metrics.node_worst.copy(),
                                   self.metrics.node_last_report.copy()))

    @staticmethod
    def _families(worst: dict[str, int], last: dict[str, float]) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "netdiag_node_worst_severity",
            "Worst severity concerning the node (0 ok, 1 info, 2 warning, 3 error): its own "
            "findings and the diagnoses that blame it.", labels=["node"])
        for node, value in sorted(worst.items()):
            family.add_metric([node], value)
        yield family
        family = GaugeMetricFamily(
            "netdiag_node_last_report_timestamp_seconds",
            "When the node's latest report was received (Unix time).", labels=["node"])
        for node, at in sorted(last.items()):
            family.add_metric([node], at)
        yield family
