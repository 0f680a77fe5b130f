"""`kube-proxy.rules-diverged`: a node's programmed Service VIP set (the `service_vips_digest`
fact, a digest of the Service VIPs found in its iptables/IPVS rules) differs from the clear
majority. The usual cause is a stale kube-proxy: it stopped syncing (lost its API watch,
crash-looping, conntrack missing), so new or changed Services do not work from that node.

kube-proxy syncs on its own schedule, so one differing report may be a sync in progress: the
verdict is a warning only when the node's previous report also differed from the majority of
that earlier round (`min_failed_rounds` reports); a single report is info.
"""

from __future__ import annotations

from collections import Counter

from agent.report import Severity
from collector.correlate.base import (ClusterView, RuleResult, _Acc, clear_majority, diagnosis,
                                      name_list)

FACT_SUFFIX = "service_vips_digest"
FIX = ("Restart kube-proxy on {nodes} (`kubectl -n kube-system delete pod -l "
       "k8s-app=kube-proxy --field-selector spec.nodeName=<node>`) and read its log for why it "
       "stopped syncing (API watch errors, `conntrack` binary missing, iptables lock); compare "
       "`iptables-save -t nat | grep -c KUBE-SVC` (or `ipvsadm -Ln | wc -l`) with a healthy "
       "node.")


def evaluate(view: ClusterView) -> RuleResult:
    acc = _Acc()
    key = FACT_SUFFIX
    values = {name: d.service_vips for name, d in view.live.items()
              if d.service_vips not in (None, "")}
    if len(values) < 3:
        return acc.result()
    counts = Counter(values.values())
    major = clear_majority(counts, 0.5)
    if major is None or len(counts) < 2:
        return acc.result()
    value = major[0]
    wrong = sorted(n for n, v in values.items() if v != value)
    # earlier rounds, each against the majority of its own time (a Service added between two
    # rounds changes every node's digest: a node one sync behind is not stale)
    need = view.config.min_failed_rounds
    earlier: dict[str, list] = {n: [p.service_vips for p in view.previous(n, need - 1)]
                                for n in view.live}
    majorities = []
    for k in range(need - 1):
        vals = Counter(v[k] for v in earlier.values() if len(v) > k and v[k] not in (None, ""))
        m = clear_majority(vals, 0.5) if len(vals) >= 1 else None
        majorities.append(m[0] if m else None)
    confirmed, single = [], []
    for n in wrong:
        rounds = 1
        for k, maj in enumerate(majorities):
            old = earlier[n][k] if len(earlier[n]) > k else None
            if maj is None or old in (None, "") or old == maj:
                break
            rounds += 1
        (confirmed if rounds >= need else single).append((n, rounds))
    for group, severity, note in ((confirmed, Severity.WARNING, ""),
                                  (single, Severity.INFO, " (one report: may be a sync in "
                                                           "progress)")):
        if not group:
            continue
        names = [n for n, _ in group]
        title = (f"kube-proxy rules on {name_list(names, 4)} differ from {counts[value]} of "
                 f"{len(values)} nodes: stale Service VIPs{note}")
        evidence = [f"{n}: {key} = {values[n]} ({r} report{'s' if r != 1 else ''})"
                    for n, r in group]
        evidence.append(f"majority: {key} = {value} on {counts[value]} of {len(values)} nodes")
        acc.diagnoses.append(diagnosis("kube-proxy.rules-diverged", severity, names, title,
                                       evidence, FIX.format(nodes=name_list(names))))
    return acc.result()
