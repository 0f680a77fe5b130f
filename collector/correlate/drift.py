"""`drift.<fact>`: one node (or a few) differs from the clear majority on a fact the agents
report (NodeReport.facts, nested dicts flattened to dotted keys and compared key by key; one
diagnosis per top-level fact, e.g. `drift.rp_filter` for rp_filter.all and rp_filter.eth0):
rp_filter, hairpin, conntrack binary present, ip_forward, bridge-nf-call-iptables, kube-proxy
mode, CNI config digest, ... Any scalar fact is compared the same way. Nodes of one cluster are
meant to be alike; the odd one out is where "works on every node but one" comes from.

Only with a clear majority (more than `drift_majority` of the nodes that report the fact, and
at least `drift_min_nodes` of them); counters, timestamps and per-node identities
(`drift_ignore_keys`, `drift_ignore_suffixes`) are not compared; `service_vips_digest` has its
own rule (kube-proxy.rules-diverged). Severity warning once a node was the odd one out in
`min_failed_rounds` (2) reports (each against its round's majority: a rollout in progress is
not drift), info before; also info when every odd node's own check already flags the fact
(e.g. `sysctl.ip-forward-off` for `ip_forward`): the root cause is then reported once, by the
node, and the drift only adds that the node is the odd one out.
"""

from __future__ import annotations

from collections import Counter
from itertools import chain
from operator import methodcaller
from typing import Any, Mapping, Sequence

from agent.report import Severity
from collector.correlate.base import (ClusterView, RuleResult, _Acc, clear_majority, diagnosis,
                                      name_list)

FIX = ("Bring {nodes} in line with the rest of the cluster on `{key}` (majority: "
       "{value}): find what set it there (a sysctl.d file, a hand edit, a different image or "
       "node pool template) and fix it at the source, so the node is like its peers.")


#: a fact a node does not report (None is a value)
_MISSING = object()
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
    pair_counts = Counter(chain.from_iterable(map(methodcaller("items"),
                                                  [d.facts for d in view.live.values()])))
    votes: dict[str, Counter] = {}
    for (key, value), n in pair_counts.items():
        c = votes.get(key)
        if c is None:
            c = votes[key] = Counter()
        c[value] = n
    # per top-level fact: the dotted keys that drift, with their odd nodes
    drifting: dict[str, list[tuple[str, Any, dict[str, Any], int, int]]] = {}
    names, facts = list(view.live), [d.facts for d in view.live.values()]
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
        # C-level lookups: 5,000 nodes' facts are read once per drifting key
        odd: dict[str, Any] = {n: v for n, v in zip(names, map(methodcaller("get", key, value),
                                                                facts))
                               if v != value}
        drifting.setdefault(key.split(".", 1)[0], []).append(
            (key, value, odd, counts[value], total))
    if not drifting:
        return acc.result()
    # the round before: each node's previous facts, to see whether the odd ones were odd then
    # too (against that round's majority: a rollout in progress is not drift yet)
    need = cfg.min_failed_rounds
    m = view.matrix
    if need > 1 and m.previous is not None and need - 1 <= m.previous_limit:
        # every live node's earlier rounds as the matrix keeps them (a node without any is
        # left out, as an empty list would be skipped below): only rounds < need - 1 are read
        previous: Mapping[str, Sequence] = m.previous
    else:
        previous = {n: view.previous(n, need - 1) for n in view.live} if need > 1 else {}
    for fact, keys in drifting.items():
        wrong = sorted({n for _, _, odd, _, _ in keys for n in odd})
        persisted = set(wrong)
        for k in range(need - 1):
            facts_k = [p[k].facts for p in previous.values() if len(p) > k]
            for key, _, odd, _, _ in keys:
                votes_k = Counter(map(methodcaller("get", key, _MISSING), facts_k))
                votes_k.pop(_MISSING, None)
                major_k = clear_majority(votes_k, cfg.drift_majority)
                for n in list(persisted):
                    if n not in odd:
                        continue
                    p = previous.get(n, [])
                    if (major_k is None or len(p) <= k or key not in p[k].facts
                            or p[k].facts[key] == major_k[0]):
                        persisted.discard(n)
        # a node whose own check already flags this fact has its root cause reported once
        # (its finding); the cross-node view then only adds that it is the odd one out
        flagged = {n: _own_finding(view, n, fact) for n in wrong}
        severity = (Severity.WARNING if any(n in persisted and not flagged[n] for n in wrong)
                    else Severity.INFO)
        evidence = []
        for key, value, odd, top, total in keys:
            evidence += [f"{n}: {key} = {odd[n]!r}"
                         + (f" (its own check: {flagged[n]})" if flagged[n] else "")
                         for n in sorted(odd)]
            evidence.append(f"majority: {key} = {value!r} on {top} of {total} nodes")
        if len(keys) == 1:
            key, value, odd, top, total = keys[0]
            shown = ", ".join(f"{n}={odd[n]!r}" for n in wrong[:4])
            more = f" and {len(wrong) - 4} more" if len(wrong) > 4 else ""
            title = f"{key} differs on {shown}{more}; {top} of {total} nodes have {value!r}"
        else:
            parts = ", ".join(f"{k.split('.', 1)[1] if '.' in k else k} {v!r}"
                              for k, v, _, _, _ in keys[:4])
            title = (f"{fact} differs on {name_list(wrong, 4)} from the majority "
                     f"({parts}{' ...' if len(keys) > 4 else ''})")
        if not persisted:
            title += " (one report so far)"
        majority = ", ".join(f"{k} = {v!r}" for k, v, _, _, _ in keys)
        acc.diagnoses.append(diagnosis(f"drift.{fact}", severity, wrong, title, evidence,
                                       FIX.format(nodes=name_list(wrong), key=fact,
                                                  value=majority)))
    return acc.result()
