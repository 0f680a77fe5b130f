"""`agent.stale`: a node whose agent has not reported for `stale_intervals` (3) intervals.

Its last report is old, so its probes and captures are not evidence about now; probe failures
*to* it are folded into this diagnosis (a node that is down is not also "inbound blocked").
When live peers' probes to it fail as well (TCP to its agent port included), it is likely down
or cut off, which makes the diagnosis an error. A node that peers probe but that never sent a
report (or was forgotten) is an info `agent.stale`, and the failures to it blame no one.
"""

from __future__ import annotations

from agent.report import Severity
from collector.correlate.base import (ClusterView, RuleResult, _Acc, diagnosis, name_list,
                                      pair_lines)
from collector.correlate.model import NodeDigest

REMEDIATION = ("Check the node and its agent: `kubectl get node {node}` (Ready?), "
               "`kubectl -n kube-system get pod -l app=netdiag-agent -o wide --field-selector "
               "spec.nodeName={node}` and the agent's logs (can it reach the collector?). "
               "If the node is down, its pods' traffic fails too: drain or replace it.")


def stale_nodes(digests: dict[str, NodeDigest], now: float, received_at: dict[str, float],
                stale_intervals: float, default_interval_s: float) -> dict[str, float]:
    """name -> age in seconds, for nodes with no report for `stale_intervals` intervals."""
    out = {}
    for name, d in digests.items():
        last = received_at.get(name, d.collected_at)
        age = now - last
        interval = d.interval_s if d.interval_s > 0 else default_interval_s
        if age > stale_intervals * interval:
            out[name] = age
    return out


def evaluate(view: ClusterView, ages: dict[str, float]) -> RuleResult:
    acc = _Acc()
    # one pass over the failing pairs: those to stale nodes and to nodes never reported
    failing_in: dict[str, list] = {}
    unknown: dict[str, list] = {}
    stale, digests = view.stale, view.digests
    for st in view.matrix.failures.values():
        t = st.target
        if t in stale:
            failing_in.setdefault(t, []).append(st)
        elif t not in digests:
            unknown.setdefault(t, []).append(st)
    for name in sorted(view.stale):
        d = view.digests[name]
        interval = d.interval_s if d.interval_s > 0 else view.config.default_interval_s
        age = ages[name]
        in_fail = [st for st in failing_in.get(name, []) if st.sender in view.live]
        tcp_fail = [st for st in in_fail if "tcp-control" in st.kinds]
        evidence = [f"last report from {name} {age:.0f} s ago (interval {interval:.0f} s)"]
        severity = Severity.WARNING
        title = f"{name}: no report for {age:.0f} s ({age / interval:.1f} intervals)"
        if in_fail:
            evidence.append(f"live peers' probes to {name} fail: "
                            f"{name_list({st.sender for st in in_fail})}")
            evidence += pair_lines(in_fail)
        tcp_ok = [n for n, d in view.live.items() if name in d.tcp_answered]
        if tcp_fail and not tcp_ok:
            severity = Severity.ERROR
            title += "; peers cannot reach it either (node down or cut off)"
        elif tcp_ok:
            title += "; its agent still answers peers (it cannot post to the collector)"
            evidence.append(f"TCP to {name}'s agent port answered from "
                            f"{name_list(tcp_ok)}: the node and its agent are up")
        acc.diagnoses.append(diagnosis("agent.stale", severity, (name,), title, evidence,
                                       REMEDIATION.format(node=name)))
        acc.blames.add(name)
        acc.explains.update((st.sender, name) for st in failing_in.get(name, []))
    # peers probe a node the collector has no report from at all (it never reported, or was
    # forgotten): nothing to compare with, so its failures blame no one else
    for name in sorted(unknown):
        fails = unknown[name]
        acc.diagnoses.append(diagnosis(
            "agent.stale", Severity.INFO, (name,),
            f"{name}: peers probe it but there is no report from it",
            [f"probes to {name} fail from {name_list({st.sender for st in fails})}"]
            + pair_lines(fails), REMEDIATION.format(node=name)))
        acc.blames.add(name)
    if stale or unknown:
        for key in view.matrix.failures:
            if key[0] in stale or key[1] in stale or key[1] in unknown:
                acc.explains.add(key)
    return acc.result()
