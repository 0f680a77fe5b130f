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
Folded into the verdict (listed in its evidence, not reported again): the failing pairs in the
other direction whose answers cross the blocked one — X's own probes that may have arrived
(the peer saw the wire probes, or cannot say) and lost only UDP answers (VXLAN echo, MTU,
UDP control) while TCP works: with UDP into X blocked, every answer into X is lost too.
This runs before the node rules: "all UDP blocked" explains "VXLAN to X blocked".
"""

from __future__ import annotations

import math
from functools import partial
from operator import itemgetter

from agent.report import Severity
from agent.ports import AGENT_PORT
from typing import Iterable

from collector.correlate.base import (ClusterView, RuleResult, _Acc, answers_lost, diagnosis,
                                      fold, group_pairs, most_fail, name_list, pair_lines,
                                      per_round, plural, vxlan_port)
from collector.correlate.model import PAIR_OF, PATH_KINDS, PairStatus

#: a PairStatus's sender, target
_SENDER, _TARGET = itemgetter(0), itemgetter(1)
#: The probe kinds answered over UDP (the VXLAN echo and its MTU-sized twin, UDP control).
UDP_ANSWER_KINDS = frozenset({"echo", "mtu", "udp-control"})
FIX = ("Allow UDP between the nodes: add rules for UDP {port} (VXLAN) and UDP {agent_port} "
       "(netdiag agent) — or all UDP — from the node security group to {scope} (security "
       "group / network ACL / firewall between node groups). TCP already passes, so the node is "
       "up; only UDP is filtered. Alternatively run the CNI in direct-routing mode instead "
       "of VXLAN where the underlay allows it.")


def _showing_udp_blocked(view: ClusterView, statuses: Iterable[PairStatus]
                         ) -> list[PairStatus]:
    """The pairs that show UDP blocked: the overlay path and UDP control fail, TCP works,
    and the target's capture did not see the VXLAN packets (else the target's host drops
    them). (One comprehension, no call per pair: when all UDP is blocked every pair is one.)"""
    blamed = view.blamed
    return [st for st in statuses
            if st.tcp_ok and not st.wire_seen and "udp-control" in st.kinds
            and not PATH_KINDS.isdisjoint(st.kinds)
            and st.sender not in blamed and st.target not in blamed]


def _udp_only(view: ClusterView, k: int) -> list[PairStatus]:
    return _showing_udp_blocked(view, view.round_failures(k))


def _udp_answers_lost(pairs: Iterable[PairStatus]) -> list[PairStatus]:
    """Pairs whose probes may have arrived and that lost only UDP answers while TCP works:
    explained by UDP blocked in the answers' direction."""
    return [st for st in answers_lost(pairs) if st.tcp_ok and st.kinds <= UDP_ANSWER_KINDS]


def _what(pairs: list[PairStatus]) -> str:
    if all(st.kinds == {"udp-control"} for st in pairs):
        return "UDP control"
    return "overlay (VXLAN echo) and UDP control"


def evaluate(view: ClusterView) -> RuleResult:
    acc = _Acc()
    cfg = view.config
    rounds = per_round(view, _udp_only)
    need = len(rounds)
    if not need or not rounds[0]:
        return acc.result()
    pairs = rounds[0]
    grouped = per_round(view, lambda v, k: group_pairs(rounds[k]))

    def cluster_wide(k: int) -> bool:
        # more than `cluster_wide_fraction` of the probed pairs, and >= 2
        probed = sum(view.matrix.rounds[k].probed_out.values())
        enough = max(2, math.floor(cfg.cluster_wide_fraction * probed) + 1)
        found = len(pairs) if k == 0 else view.count_failures(
            k, partial(_showing_udp_blocked, view), enough)
        return found >= enough

    def to_node(x: str, k: int) -> bool:
        return most_fail(cfg, len(grouped[k][0].get(x, ())), view.trusted_probers(x, k))

    def from_node(x: str, k: int) -> bool:
        return most_fail(cfg, len(grouped[k][1].get(x, ())), view.probed_out(x, k))

    used: set[tuple[str, str]] = set()
    if all(cluster_wide(k) for k in range(need)):
        # (C-level passes: when all UDP is blocked `pairs` is every probed pair, ~80,000)
        involved = sorted(set(map(_SENDER, pairs)).union(map(_TARGET, pairs)))
        port = vxlan_port(view.live.get(involved[0]))
        title = (f"UDP between nodes is dropped (TCP works): {len(pairs)} of "
                 f"{view.matrix.pairs_probed} probed pairs lose VXLAN and UDP control probes")
        evidence = [f"nodes involved: {name_list(involved, 10)}",
                    "TCP connect to each peer's agent port succeeds: the nodes are up"]
        evidence += pair_lines(pairs)
        used.update(map(PAIR_OF, pairs))
        inv = set(involved)
        back = [st for st in _udp_answers_lost(view.round_failures(0))
                if st.sender in inv and st.target in inv and (st.sender, st.target) not in used]
        fold(evidence, back,
             f"{plural(len(back), 'more pair')} lose only the answers (UDP back to the sender), "
             f"the same way:")
        used.update((st.sender, st.target) for st in back)
        acc.diagnoses.append(diagnosis("overlay.udp-blocked", Severity.ERROR, involved, title,
                                       evidence, FIX.format(agent_port=AGENT_PORT, port=port,
                                                            scope="every node")))
        acc.blames.update(involved)
    else:
        by_target, by_sender = grouped[0]
        # every unexplained failing pair of round 0 (not only the UDP-only ones), grouped once:
        # the other direction's symptoms a verdict folds
        all_in, all_out = group_pairs(view.round_failures(0))
        for x in sorted(by_target):
            if not all(to_node(x, k) for k in range(need)):
                continue
            fails = by_target[x]
            title = (f"UDP to {x} is dropped (TCP works): {len(fails)} of "
                     f"{view.trusted_probers(x)} peers lose VXLAN and UDP control probes")
            evidence = [f"TCP to {x}'s agent port works: {x} is up; UDP (VXLAN and "
                        f"control) never gets through"] + pair_lines(fails)
            # X's own probes: their answers are UDP into X, lost the same way
            back = [st for st in _udp_answers_lost(all_out.get(x, ()))
                    if (x, st.target) not in used]
            fold(evidence, back,
                 f"{x}'s own {_what(back)} probes get no answer either "
                 f"({plural(len(back), 'peer')}), though nothing shows them lost on the way "
                 f"out: the answers are UDP into {x}, dropped the same way:")
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
            used.update((x, st.target) for st in fails)
            # peers' probes that reached X: X's answers are UDP out of X, lost the same way
            back = [st for st in _udp_answers_lost(all_in.get(x, ()))
                    if (st.sender, x) not in used]
            fold(evidence, back,
                 f"peers' {_what(back)} probes to {x} get no answer either "
                 f"({plural(len(back), 'peer')}), though nothing shows them lost on the way in: "
                 f"{x}'s answers are UDP out of {x}, dropped the same way:")
            used.update((st.sender, x) for st in back)
            acc.diagnoses.append(diagnosis(
                "overlay.udp-blocked", Severity.ERROR, (x,), title, evidence,
                FIX.format(agent_port=AGENT_PORT, port=vxlan_port(view.live.get(x)),
                           scope=f"the other nodes from {x} (egress)")))
            acc.blames.add(x)
    acc.explains.update(used)
    return acc.result()
