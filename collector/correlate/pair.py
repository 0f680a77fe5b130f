"""`overlay.pair-failure`: confirmed overlay failures that no node-level cause explains — one
sender failing to one receiver while others reach that receiver (and the sender reaches
others). The receiver is NOT blamed: the evidence cannot separate the sender, the receiver and
the path between them, and the title says so. `nodes` holds the pair (sender, receiver).

Reported pair by pair up to `max_pair_diagnoses`, then summarised in one more diagnosis.
Severity warning; info when the overlay path works and only a control probe fails.
"""

from __future__ import annotations

from agent.report import Severity
from collector.correlate.base import (ClusterView, RuleResult, _Acc, diagnosis, pair_lines,
                                      plural)
from collector.correlate.model import PATH_KINDS, PairStatus

FIX = ("Compare the path between {s} and {t}: `ip route get {t_ip}` on {s}, security group / "
       "ACL rules between exactly these two (a rule by source IP?), `bridge fdb show dev "
       "{dev}` on {s} (a stale forwarding entry for {t}'s VTEP?) and `ip neigh` for {t}'s "
       "VXLAN address; and each side's firewall for rules naming the other's address.")


def _detail(view: ClusterView, st: PairStatus) -> list[str]:
    lines = [st.describe()]
    sd = view.live.get(st.sender)
    if sd:
        if st.tcp_ok and "udp-control" in st.kinds:
            lines.append("UDP to the agent port is lost, TCP works")
        elif st.tcp_ok:
            lines.append("TCP to the agent port works: both nodes are up")
    others = view.trusted_probers(st.target) - 1
    if others > 0:
        lines.append(f"{plural(others, 'other peer')} probed {st.target}; none of them failed "
                     f"in a way that blames it")
    else:
        lines.append(f"no other peer probed {st.target}: insufficient evidence to tell "
                     f"{st.sender}, {st.target} and the path apart")
    return lines


def evaluate(view: ClusterView) -> RuleResult:
    acc = _Acc()
    pairs = sorted((st for st, kinds in view.confirmed_failures()
                    if kinds & (PATH_KINDS | {"udp-control", "tcp-control"})),
                   key=lambda st: (st.sender, st.target))
    limit = view.config.max_pair_diagnoses
    for st in pairs[:limit]:
        d = view.live.get(st.sender)
        t = view.digests.get(st.target)
        dev = d.report.overlay[0].name if d and d.report.overlay else "<vxlan device>"
        t_ip = t.report.node.underlay_ip if t else st.target
        what = "overlay probes" if st.kinds & PATH_KINDS else \
            "control probes (" + ", ".join(sorted(st.kinds)) + ")"
        title = (f"{st.sender} -> {st.target}: {what} fail for {st.rounds} rounds; other paths "
                 f"work (insufficient evidence to blame {st.target} or {st.sender})")
        # the overlay path works and only a control probe fails: worth knowing, not a fault
        severity = Severity.WARNING if st.kinds & PATH_KINDS else Severity.INFO
        acc.diagnoses.append(diagnosis("overlay.pair-failure", severity,
                                       (st.sender, st.target), title, _detail(view, st),
                                       FIX.format(s=st.sender, t=st.target, t_ip=t_ip,
                                                  dev=dev)))
    if len(pairs) > limit:
        more = pairs[limit:]
        acc.diagnoses.append(diagnosis(
            "overlay.pair-failure", Severity.WARNING,
            sorted({st.sender for st in more} | {st.target for st in more}),
            f"{len(more)} more failing pairs (not attributable to a node)",
            pair_lines(more), FIX.format(s="each sender", t="its target",
                                                       t_ip="<target IP>", dev="<vxlan dev>")))
    acc.explains.update((st.sender, st.target) for st in pairs)
    return acc.result()
