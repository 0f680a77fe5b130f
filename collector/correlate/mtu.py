"""`overlay.mtu-blackhole`: small echo probes get through, echo probes padded to the overlay
MTU with DF set are lost (confirmed over rounds). Small packets work, so pings and DNS look
fine while TLS handshakes, image pulls and large responses hang.

Scope: one target X when >= `min_senders` senders (a majority of X's probers) see it (X's
underlay or VXLAN MTU is smaller); otherwise one diagnosis for all affected paths.
X's own MTU-sized probes that fail while their small echo passes are folded into X's verdict
(listed in its evidence): their full-size answers come back into X over the same path.
"""

from __future__ import annotations

from agent.report import Severity
from collector.correlate.base import (ClusterView, RuleResult, _Acc, answers_lost, diagnosis,
                                      fold, group_pairs, most_fail, name_list, per_round, plural)
from collector.correlate.model import PATH_KINDS, PairStatus

FIX = ("Make the overlay MTU fit the underlay path: VXLAN adds 50 bytes, so the VXLAN device "
       "MTU must be <= underlay MTU - 50 (e.g. 1450 on a 1500 underlay). Check `ip link show` "
       "MTU of {scope} (VXLAN device and parent), test the underlay path with "
       "`ping -M do -s <overlay MTU + 22> <peer underlay IP>`, and allow ICMP "
       "'fragmentation needed' (type 3 code 4) in security groups so PMTU discovery works.")


def _mtu_of(view: ClusterView, node: str) -> str:
    d = view.digests.get(node)
    if d and d.report.overlay:
        dev = d.report.overlay[0]
        return f"{node}: {dev.name} mtu {dev.mtu}"
    return f"{node}: no overlay device reported"


def _mtu_only(view: ClusterView, k: int) -> dict[str, list[PairStatus]]:
    """Round k's pairs where only the MTU-sized probe fails, by target."""
    return group_pairs(st for st in view.round_failures(k)
                       if "mtu" in st.kinds and not (st.kinds & PATH_KINDS))[0]


def evaluate(view: ClusterView) -> RuleResult:
    acc = _Acc()
    cfg = view.config
    rounds = per_round(view, _mtu_only)
    need = len(rounds)
    if not need or not rounds[0]:
        return acc.result()

    def towards(x: str, k: int) -> bool:
        return most_fail(cfg, len(rounds[k].get(x, ())), view.trusted_probers(x, k))

    blamed = [x for x in sorted(rounds[0]) if all(towards(x, k) for k in range(need))]
    from_blamed: dict[str, list[PairStatus]] = {}
    for st in view.round_failures(0):
        if st.sender in blamed and "mtu" in st.kinds and not (st.kinds & PATH_KINDS):
            from_blamed.setdefault(st.sender, []).append(st)
    for x in blamed:
        fails = rounds[0][x]
        title = (f"MTU black hole at {x}: full-size overlay packets from "
                 f"{len(fails)} of {view.trusted_probers(x)} peers are lost, small ones pass")
        evidence = [_mtu_of(view, x)] + [f"{st.sender} -> {x}: echo ok, MTU-sized echo "
                                           f"(DF) lost ({st.rounds} rounds)" for st in fails]
        # X's own MTU-sized probes that may have arrived: their full-size answers come back
        # into X over the same path
        back = answers_lost(from_blamed.get(x, ()))
        fold(evidence, back,
             f"{x}'s own MTU-sized probes fail too ({plural(len(back), 'peer')}): the "
             f"full-size answers cross the same path back into {x}:")
        acc.diagnoses.append(diagnosis("overlay.mtu-blackhole", Severity.ERROR, (x,), title,
                                       evidence, FIX.format(scope=x)))
        acc.explains.update((st.sender, x) for st in fails)
        acc.explains.update((x, st.target) for st in back)
    rest = [st for st, kinds in view.confirmed_failures()
            if "mtu" in kinds and not (st.kinds & PATH_KINDS)
            and (st.sender, st.target) not in acc.explains]
    if rest:
        involved = sorted({st.sender for st in rest} | {st.target for st in rest})
        title = (f"MTU black hole on {plural(len(rest), 'path')}: full-size overlay packets "
                 f"are lost, small ones pass ({name_list(involved, 4)})")
        evidence = [_mtu_of(view, n) for n in involved[:6]]
        evidence += [f"{st.sender} -> {st.target}: echo ok, MTU-sized echo (DF) lost "
                     f"({st.rounds} rounds)" for st in rest]
        acc.diagnoses.append(diagnosis("overlay.mtu-blackhole", Severity.WARNING, involved,
                                       title, evidence, FIX.format(scope=name_list(involved))))
        acc.explains.update((st.sender, st.target) for st in rest)
    return acc.result()
