"""`drift.<fact>`: one node (or a few) differs from the clear majority on a fact the agents
report (NodeReport.facts, nested dicts flattened to dotted keys): rp_filter, hairpin,
conntrack binary present, ip_forward, bridge-nf-call-iptables, kube-proxy mode, CNI config
digest, ... Any scalar fact is compared the same way. Nodes of one cluster are meant to be
alike; the odd one out is where "works on every node but one" comes from.

Only with a clear majority (more than `drift_majority` of the nodes that report the fact, and
at least `drift_min_nodes` of them); counters, timestamps and per-node identities
(`drift_ignore_keys`, `drift_ignore_suffixes`) are not compared; `service_vips_digest` has its
own rule (kube-proxy.rules-diverged). Severity warning; info when every odd node's own check
already flags the fact (e.g. `sysctl.ip-forward-off` for `ip_forward`): the root cause is then
reported once, by the node, and the drift only adds that the node is the odd one out.
"""

from __future__ import annotations

from collections import Counter
from itertools import chain
from typing import Any

from agent.report import Severity
from collector.correlate.base import (ClusterView, RuleResult, _Acc, clear_majority, diagnosis,
                                      name_list)

FIX = ("Bring {nodes} in line with the rest of the cluster on `{key}` (majority value "
       "{value!r}): find what set it there (a sysctl.d file, a hand edit, a different image or "
       "node pool template) and fix it at the source, so the node is like its peers.")


#: VXLAN device settings are compared by overlay.config-mismatch (from NodeReport.overlay);
#: the same values in the facts (`vxlan.<dev>.vni`) are not reported twice.
OVERLAY_PREFIXES = ("vxlan.", "overlay.")
OVERLAY_SETTINGS = ("vni", "port", "dstport", "mtu")


def _ignored(key: str, cfg) -> bool:
    last = key.rsplit(".", 1)[-1]
    if key.startswith(OVERLAY_PREFIXES) and last in OVERLAY_SETTINGS:
        return True
    return (key in cfg.drift_ignore_keys or last in cfg.drift_ignore_keys
            or key.endswith(cfg.drift_ignore_suffixes))


def _own_finding(view: ClusterView, node: str, key: str) -> str:
    """The id of the node's own finding (warning or worse) about this fact, or ""."""
    head = key.split(".", 1)[0].replace("_", "-")
    d = view.live.get(node)
    if d is None or len(head) < 4:
        return ""
    for f in d.report.findings:
        if f.severity >= Severity.WARNING and head in f.id.replace(".", "-"):
            return f.id
    return ""


def evaluate(view: ClusterView) -> RuleResult:
    acc = _Acc()
    cfg = view.config
    # one C-level pass over every (key, value) of every live node
    pair_counts = Counter(chain.from_iterable(d.facts.items() for d in view.live.values()))
    votes: dict[str, Counter] = {}
    for (key, value), n in pair_counts.items():
        c = votes.get(key)
        if c is None:
            c = votes[key] = Counter()
        c[value] = n
    for key in sorted(votes):
        counts = votes[key]
        if len(counts) < 2 or _ignored(key, cfg):
            continue
        total = sum(counts.values())
        if total < cfg.drift_min_nodes:
            continue
        major = clear_majority(counts, cfg.drift_majority)
        if major is None:
            continue
        value: Any = major[0]
        odd: dict[str, Any] = {}
        for name, d in view.live.items():
            v = d.facts.get(key, value)
            if v != value:
                odd[name] = v
        wrong = sorted(odd)
        # a node whose own check already flags this fact has its root cause reported once
        # (its finding); the cross-node view then only adds that it is the odd one out
        flagged = {n: _own_finding(view, n, key) for n in wrong}
        severity = Severity.INFO if all(flagged.values()) else Severity.WARNING
        shown = ", ".join(f"{n}={odd[n]!r}" for n in wrong[:4])
        more = f" and {len(wrong) - 4} more" if len(wrong) > 4 else ""
        title = (f"{key} differs on {shown}{more}; {counts[value]} of {total} nodes have "
                 f"{value!r}")
        evidence = [f"{n}: {key} = {odd[n]!r}"
                    + (f" (its own check: {flagged[n]})" if flagged[n] else "") for n in wrong]
        evidence.append(f"majority: {key} = {value!r} on {counts[value]} of {total} nodes")
        acc.diagnoses.append(diagnosis(f"drift.{key}", severity, wrong, title, evidence,
                                       FIX.format(nodes=name_list(wrong), key=key,
                                                  value=value)))
    return acc.result()
