"""`overlay.partition`: the nodes fall into groups that reach each other inside but not across
(node groups in different security groups, subnets whose ACLs do not allow each other).

Groups are the connected components of the "probe worked" graph. A partition needs at least
two groups each holding >= `partition_min_side_fraction` of the live nodes (and >= 2 nodes),
with confirmed failures across them: so 2 of 20 nodes failing is *not* a partition (those are
node-level causes, found by the next rules). Every node of every side is in `nodes`.

Cost: union-find over the working pairs, run only when at least
`partition_min_failing_fraction` of probed pairs fail (a healthy cluster skips it).
"""

from __future__ import annotations

import math
from itertools import repeat
from collections.abc import Mapping

from agent.report import Severity
from collector.correlate.base import (ClusterView, RuleResult, _Acc, diagnosis, name_list,
                                      pair_lines, vxlan_port)
from collector.correlate.model import PATH_KINDS, path_known

FIX = ("Allow overlay traffic between the groups: UDP {port} (VXLAN) in both directions "
       "between their security groups / subnets (ingress rule on each group's security group "
       "with the other group as source; check network ACLs and routes between the subnets). "
       "Nodes of one node group usually share a security group: compare them.")


def components(nodes: list[str], stars) -> dict[str, str]:
    """Connected components (node -> its group's root) of the edges given as stars (node,
    its neighbours): union-find, each star joined under its centre's root."""
    parent = {n: n for n in nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, others in stars:
        ra = find(a)
        for b in others:
            rb = parent[b]
            if parent[rb] != rb:  # b is not a root's child (most are, once groups form)
                rb = find(rb)
            if rb != ra:
                parent[rb] = ra
    return {n: find(n) for n in nodes}


def failing_paths(view: ClusterView) -> Mapping[str, frozenset[str] | set[str]]:
    """Sender -> its targets whose overlay path fails in the latest round (every failing
    pair of the matrix): `view.path_out` when the matrix's builder kept it, else worked out
    pair by pair from the failures (the same sets)."""
    if view.path_out is not None:
        return view.path_out
    out: dict[str, set[str]] = {}
    for (s, t), st in view.matrix.failures.items():
        if not PATH_KINDS.isdisjoint(st.kinds):
            out.setdefault(s, set()).add(t)
    return out


def evaluate(view: ClusterView) -> RuleResult:
    acc = _Acc()
    cfg = view.config
    m = view.matrix
    live = [n for n in view.live if n not in view.blamed]
    if len(live) < 4 or not m.pairs_probed:
        return acc.result()
    # sender -> targets whose overlay path fails (usually as the matrix found them)
    fail_out = failing_paths(view)
    n_path = sum(map(len, fail_out.values()))
    if n_path < cfg.partition_min_failing_fraction * m.pairs_probed:
        return acc.result()
    live_set = set(live)

    windows = m.windows

    def ok_stars():
        # a pair whose outcome is not known yet (wire probes the receiver has not reported
        # on) is no evidence that the groups reach each other
        for s in live:
            d = view.live[s]
            ok = d.targets & live_set
            failing = fail_out.get(s)
            if failing:
                ok -= failing
            if windows is not None and not ok <= d.echo_known:
                ok = [t for t in ok if path_known(d, t, windows)]
            yield s, ok

    comp = components(live, ok_stars())
    groups: dict[str, list[str]] = {}
    for n, root in comp.items():
        groups.setdefault(root, []).append(n)
    min_side = max(2, math.ceil(cfg.partition_min_side_fraction * len(live)))
    sides = sorted((sorted(g) for g in groups.values() if len(g) >= min_side),
                   key=lambda g: (-len(g), g[0]))
    if len(sides) < 2:
        return acc.result()
    side_of = {n: i for i, g in enumerate(sides) for n in g}

    def crossing(statuses) -> list:
        """The failing pairs across the sides (their overlay path fails)."""
        out = []
        for st in statuses:
            a, b = side_of.get(st.sender), side_of.get(st.target)
            if a is not None and b is not None and a != b and st.kinds & PATH_KINDS:
                out.append(st)
        return out

    need = view.rounds_to_confirm()
    # each earlier round: counted sender by sender from the sides' nodes until enough, so a
    # partition confirmed by its first pairs does not compute the round around thousands
    if not need or any(view.count_failures(k, crossing, cfg.min_senders, side_of)
                       < cfg.min_senders for k in range(1, need)):
        return acc.result()
    across = crossing(view.round_failures(0))
    if len(across) < cfg.min_senders:
        return acc.result()
    nodes = sorted(side_of)
    sizes = " | ".join(f"[{name_list(g, 4)}]" for g in sides)
    title = (f"the overlay is partitioned into {len(sides)} groups that reach each other "
             f"inside but not across ({' + '.join(str(len(g)) for g in sides)} nodes)")
    seen = [st for st in across if st.wire_seen]
    never = [st for st in across if st.wire_seen == 0]
    if never and not seen:
        where = ("the receivers' captures never saw the packets: dropped in the fabric "
                 "between the groups")
    elif seen:
        where = (f"{len(seen)} of {len(across)} failing pairs were seen by the receiver's "
                 f"capture: the receivers' hosts drop part of it")
    else:
        where = "no capture verdict on these probes yet (the receivers have not reported since)"
    evidence = [f"groups: {sizes}",
                f"{len(across)} probed pairs across the groups fail and none across works; "
                f"inside each group the probes work", where]
    evidence += pair_lines(across)
    acc.diagnoses.append(diagnosis("overlay.partition", Severity.ERROR, nodes, title, evidence,
                                   FIX.format(port=vxlan_port(view.live.get(nodes[0])))))
    acc.blames.update(nodes)
    # every failing path pair across the sides: all of a sender's when none of its failing
    # targets is on its own side or outside the sides (a partition's usual case), else pair
    # by pair
    others = [frozenset(side_of).difference(g) for g in sides]
    for s, ts in fail_out.items():
        a = side_of.get(s)
        if a is None:
            continue
        # (pair tuples made by C-level zip: tens of thousands of them)
        acc.explains.update(zip(repeat(s), ts if ts <= others[a] else ts & others[a]))
    return acc.result()
