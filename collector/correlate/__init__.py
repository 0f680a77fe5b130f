"""Cross-node correlation: the latest NodeReport of every node -> Diagnoses naming root causes.

Pure (no I/O, no clock: `now` is a parameter; tests/test_layers.py enforces the imports).

Public API (what the collector calls)
-------------------------------------
    from collector.correlate import correlate, correlate_with_matrix, digest_report, \
        build_matrix, explain_timeline, CorrelationConfig, DEFAULT_CONFIG

    diagnoses = correlate(reports, now, history=None, config=DEFAULT_CONFIG,
                          received_at=None)            -> tuple[Diagnosis, ...]
    diagnoses, matrix = correlate_with_matrix(reports, now, history, config, received_at)
    digest = digest_report(report)                     -> NodeDigest (cache it at ingest)
    matrix = build_matrix(reports, history=None, exclude=())  -> ReachabilityMatrix
    lines = explain_timeline(history, diagnosis)       -> tuple[str, ...]

- `reports`: Mapping[node name, NodeReport | NodeDigest] (the latest report per node) or a
  Sequence of them (the newest per node is used). Passing NodeDigests computed once at ingest
  (`digest_report`) keeps whole-cluster correlation in the tens of milliseconds at 5,000 nodes.
- `history`: Mapping[node name, Sequence[NodeReport | NodeDigest]] — each node's recent reports
  (any order, oldest first is cheapest; the latest may be included; 3-5 rounds are plenty).
  **Verdicts need it**: a node-level verdict (inbound/outbound blocked, UDP blocked, MTU,
  partition) must hold in each of the last `config.min_failed_rounds` (2) rounds — the
  senders may differ from round to round when peer samples rotate — and a pair failure must
  repeat in 2 rounds in which that pair was probed. Without history every failure stays
  "unconfirmed" (shown in the matrix as `x`, no diagnosis).
- `received_at`: Mapping[node name, float] — when the collector received each latest report
  (used by `agent.stale` instead of the agent's own clock when given).
- `now`: the collector's clock, seconds since the epoch.
- Result: Diagnoses (agent.report.Diagnosis: id, severity, node, title, evidence,
  remediation, nodes) sorted worst first. Node findings are NOT repeated here: the renderer
  lists each report's own findings per node (`collector.render`).

Trust: a node is blamed only when >= `min_senders` (2) senders, more than half of those that
probed it, fail to reach it; one sender failing to one receiver is an `overlay.pair-failure`
that blames neither. A sender reporting `agent.round-overrun` is not evidence. A probe that
never arrived (the receiver's capture saw none) weighs more than one that arrived unanswered
(its answer may have died on the way back), which is how inbound, outbound and both are told
apart. Where the evidence cannot separate causes the title says so ("node2 or the fabric in
front of it", "insufficient evidence to blame ...").

Data (model.py): `NodeDigest` (one report indexed: targets, lost kinds per peer, wire probes
seen, scalar facts flattened to dotted keys; ~3.6 kB as a collector keeps it),
`ReachabilityMatrix` (failing pairs per round as `PairStatus`, probed counts). Thresholds:
`CorrelationConfig` (base.py).

Rules (one module each, run root causes first; an earlier diagnosis folds the probe failures
it explains so they are not reported again):
    stale.py            agent.stale
    config_mismatch.py  overlay.config-mismatch (VNI / port / MTU differ between nodes)
    partition.py        overlay.partition
    udp_blocked.py      overlay.udp-blocked (UDP control fails, TCP control works)
    node_blocked.py     overlay.node-inbound-blocked, overlay.node-outbound-blocked,
                        overlay.node-isolated (new id: both directions)
    mtu.py              overlay.mtu-blackhole
    pair.py             overlay.pair-failure (what no node-level cause explains)
    drift.py            drift.<fact> (a node differs from the clear majority)
    kube_proxy.py       kube-proxy.rules-diverged (service_vips_digest differs)
    timeline.py         explain_timeline (what changed when, for /report)
"""

from __future__ import annotations

from dataclasses import replace
from itertools import compress
from operator import not_
from typing import Mapping, Sequence

from agent.report import Diagnosis
from collector.correlate import (config_mismatch, drift, kube_proxy, mtu, node_blocked, pair,
                                 partition, stale, udp_blocked)
from collector.correlate.base import DEFAULT_CONFIG, ClusterView, CorrelationConfig, RuleResult
from collector.correlate.model import (PAIR_OF, NodeDigest, PairStatus, ReachabilityMatrix,
                                       ReportLike, as_digests, build_matrix,
                                       build_matrix_and_paths, digest_indexed, digest_report,
                                       flatten_facts, index_probe_rows)
from collector.correlate.timeline import explain_timeline

__all__ = ["correlate", "correlate_with_matrix", "digest_report", "digest_indexed",
           "index_probe_rows", "build_matrix",
           "explain_timeline", "CorrelationConfig", "DEFAULT_CONFIG", "NodeDigest",
           "PairStatus", "ReachabilityMatrix", "flatten_facts", "sort_diagnoses"]

#: Overlay rules in order: root causes first.
_OVERLAY_RULES = (config_mismatch, partition, udp_blocked, node_blocked, mtu, pair)
#: Rules over facts (independent of probes).
_FACT_RULES = (drift, kube_proxy)


def sort_diagnoses(diagnoses: Sequence[Diagnosis]) -> tuple[Diagnosis, ...]:
    return tuple(sorted(diagnoses, key=lambda d: (-d.severity, d.id, d.nodes, d.title)))


def correlate_with_matrix(reports: Mapping[str, ReportLike] | Sequence[ReportLike], now: float,
                          history: Mapping[str, Sequence[ReportLike]] | None = None,
                          config: CorrelationConfig = DEFAULT_CONFIG,
                          received_at: Mapping[str, float] | None = None,
                          ) -> tuple[tuple[Diagnosis, ...], ReachabilityMatrix]:
    digests = as_digests(reports)
    ages = stale.stale_nodes(digests, now, dict(received_at or {}), config.stale_intervals,
                             config.default_interval_s)
    stale_set = frozenset(ages)
    live = {n: d for n, d in digests.items() if n not in stale_set}
    matrix, path_out = build_matrix_and_paths(
        digests, history, exclude=stale_set, min_senders=config.min_senders,
        full_rounds_back=max(1, config.min_failed_rounds - 1))
    view = ClusterView(now=now, config=config, digests=digests, live=live, stale=stale_set,
                       matrix=matrix, history=history or {}, path_out=path_out,
                       unhealthy=tuple(d for d in live.values() if d.unhealthy))
    out: list[Diagnosis] = []

    def absorb(res: RuleResult) -> None:
        nonlocal view
        out.extend(res.diagnoses)
        # the rounds' failing pairs already listed stay valid minus the newly explained ones
        # (sorted lists stay sorted): a partition's tens of thousands are not re-sorted per rule
        new = res.explains
        memo = {k: list(compress(sts, map(not_, map(new.__contains__, map(PAIR_OF, sts)))))
                if new else sts for k, sts in view.memo.items()}
        view = replace(view, explained=view.explained | new if new else view.explained,
                       blamed=view.blamed | res.blames, memo=memo)

    absorb(stale.evaluate(view, ages))
    for rule in _OVERLAY_RULES:
        absorb(rule.evaluate(view))
    for rule in _FACT_RULES:
        out.extend(rule.evaluate(view).diagnoses)
    return sort_diagnoses(out), matrix


def correlate(reports: Mapping[str, ReportLike] | Sequence[ReportLike], now: float,
              history: Mapping[str, Sequence[ReportLike]] | None = None,
              config: CorrelationConfig = DEFAULT_CONFIG,
              received_at: Mapping[str, float] | None = None) -> tuple[Diagnosis, ...]:
    """The cluster's diagnoses, worst first (see the module docstring)."""
    return correlate_with_matrix(reports, now, history, config, received_at)[0]
