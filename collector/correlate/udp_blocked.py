"""`overlay.udp-blocked`: the overlay path fails and UDP to the agent's control port fails too,
while TCP to the agent's port works. The node is up and routable; something drops *all UDP*
(the classic case: a cloud security group that allows only TCP between nodes, seed 004, where
VXLAN on UDP 8472 dies and DNS "flaps" across nodes).

Scope, from the confirmed pairs showing it:
- one target X (>= `min_senders` senders, a majority of X's probers): UDP into X is blocked;
- one sender X (most of its targets): UDP out of X is blocked;
- otherwise, more than `cluster_wide_fraction` of all probed pairs: UDP is blocked between
  the nodes (every node involved is in `nodes`);
- anything less is left to `overlay.pair-failure` (its evidence says UDP/TCP).
Pairs whose wire probes the target's capture saw are not counted: UDP reached the target, so
its host drops it (the node rules say so).
This runs before the node rules: "all UDP blocked" explains "VXLAN to X blocked".
"""

from __future__ import annotations

from agent.report import Severity
from agent.ports import AGENT_PORT
from collector.correlate.base import (ClusterView, RuleResult, _Acc, diagnosis, group_pairs,
                                      most_fail, name_list, pair_lines, per_round, vxlan_port)
from collector.correlate.model import PATH_KINDS, PairStatus

CONTROL_OR_MTU = frozenset({"udp-control", "tcp-control", "mtu"})
FIX = ("Allow UDP between the nodes: add rules for UDP {port} (VXLAN) and UDP {agent_port} "
       "(netdiag agent) — or all UDP — from the node security group to {scope} (security "
       "group / network ACL / firewall between node groups). TCP already passes, so the node is "
       "up; only UDP is filtered. Alternatively run the CNI in direct-routing mode instead "
       "of VXLAN where the underlay allows it.")


def _udp_only(view: ClusterView, k: int) -> list[PairStatus]:
    out = []
    for st in view.round_failures(k):
        if st.sender in view.blamed or st.target in view.blamed:
            continue
        if st.wire_seen:
            continue  # the target's capture saw the VXLAN packets: not the fabric
        if st.kinds & PATH_KINDS and "udp-control" in st.kinds and st.tcp_ok:
            out.append(st)
    return out


def evaluate(view: ClusterView) -> RuleResult:
    acc = _Acc()
    cfg = view.config
    rounds = per_round(view, _udp_only)
    need = len(rounds)
    if not need or not rounds[0]:
        return acc.result()
    pairs = rounds[0]
    grouped = [group_pairs(p) for p in rounds]

    def cluster_wide(k: int) -> bool:
        probed = sum(view.matrix.rounds[k].probed_out.values())
        return len(rounds[k]) >= 2 and len(rounds[k]) > cfg.cluster_wide_fraction * probed

    def to_node(x: str, k: int) -> bool:
        return most_fail(cfg, len(grouped[k][0].get(x, ())), view.trusted_probers(x, k))

    def from_node(x: str, k: int) -> bool:
        return most_fail(cfg, len(grouped[k][1].get(x, ())), view.probed_out(x, k))

    by_target, by_sender = grouped[0]
    used: set[tuple[str, str]] = set()
    if all(cluster_wide(k) for k in range(need)):
        involved = sorted({st.sender for st in pairs} | {st.target for st in pairs})
        port = vxlan_port(view.live.get(involved[0]))
        title = (f"UDP between nodes is dropped (TCP works): {len(pairs)} of "
                 f"{view.matrix.pairs_probed} probed pairs lose VXLAN and UDP control probes")
        evidence = [f"nodes involved: {name_list(involved, 10)}",
                    "TCP connect to each peer's agent port succeeds: the nodes are up"]
        evidence += pair_lines(pairs)
        acc.diagnoses.append(diagnosis("overlay.udp-blocked", Severity.ERROR, involved, title,
                                       evidence, FIX.format(agent_port=AGENT_PORT, port=port,
                                                            scope="every node")))
        acc.blames.update(involved)
        used.update((st.sender, st.target) for st in pairs)
    else:
        for x in sorted(by_target):
            if not all(to_node(x, k) for k in range(need)):
                continue
            fails = by_target[x]
            title = (f"UDP to {x} is dropped (TCP works): {len(fails)} of "
                     f"{view.trusted_probers(x)} peers lose VXLAN and UDP control probes")
            evidence = [f"TCP to {x}'s agent port works: {x} is up; UDP (VXLAN and "
                        f"control) never gets through"] + pair_lines(fails)
            # X's own UDP control probes: their answers are UDP into X, lost the same way
            back = [st for st in view.round_failures(0) if st.sender == x
                    and st.kinds <= CONTROL_OR_MTU and "udp-control" in st.kinds]
            if back:
                evidence.append(f"{x}'s own UDP control probes get no answer either (the "
                                f"answers are UDP into {x}): "
                                + ", ".join(st.target for st in back))
                used.update((x, st.target) for st in back)
            acc.diagnoses.append(diagnosis(
                "overlay.udp-blocked", Severity.ERROR, (x,), title, evidence,
                FIX.format(agent_port=AGENT_PORT, port=vxlan_port(view.live.get(x)), scope=x)))
            acc.blames.add(x)
            used.update((st.sender, x) for st in fails)
        for x in sorted(by_sender):
            if x in acc.blames or not all(from_node(x, k) for k in range(need)):
                continue
            fails = [st for st in by_sender[x] if (x, st.target) not in used]
            title = (f"UDP from {x} is dropped (TCP works): {len(fails)} of "
                     f"{view.probed_out(x)} targets lose its VXLAN and UDP control probes")
            evidence = [f"TCP from {x} to its targets works; UDP does not"]
            evidence += pair_lines(fails)
            acc.diagnoses.append(diagnosis(
                "overlay.udp-blocked", Severity.ERROR, (x,), title, evidence,
                FIX.format(agent_port=AGENT_PORT, port=vxlan_port(view.live.get(x)),
                           scope=f"the other nodes from {x} (egress)")))
            acc.blames.add(x)
            used.update((x, st.target) for st in fails)
    acc.explains.update(used)
    return acc.result()
