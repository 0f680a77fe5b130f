"""`overlay.node-inbound-blocked`, `overlay.node-outbound-blocked`, `overlay.node-isolated`:
one node's overlay traffic fails in one direction (or both) while the rest of the cluster is
fine.

Inbound: most senders that probed X (>= `min_senders` and more than `blame_fraction` of them)
fail to reach X, in each of the last `min_failed_rounds` rounds (the senders may differ from
round to round when peers rotate), while X itself reaches most of its targets.
Where the probes die comes from X's capture:
- X's capture never saw them: the fabric drops them before X (security group / ACL blocks UDP
  8472 to X);
- X saw them arrive but did not answer: X's host firewall (INPUT), rp_filter or VXLAN config;
- no capture data (X has no wire prober): "X or the fabric in front of it".
Outbound is the mirror image (X's probes to most targets fail while others reach them);
isolated is both at once (new id `overlay.node-isolated`).
"""

from __future__ import annotations

from dataclasses import replace

from agent.report import Finding, Severity
from collector.correlate.base import (ClusterView, RuleResult, _Acc, answers_lost, diagnosis,
                                      fold, group_pairs, most_fail, name_list, pair_lines,
                                      per_round, plural, vxlan_dev, vxlan_port)
from collector.correlate.model import PATH_KINDS, NodeDigest, PairStatus

FABRIC_FIX = ("Open UDP {port} (VXLAN) inbound to {node} from the other nodes: compare "
              "{node}'s security group(s) and subnet network ACL with a working node's; e.g. "
              "add an ingress rule `udp {port} from <node security group>` to {node}'s "
              "security group (AWS: `aws ec2 authorize-security-group-ingress --group-id <sg> "
              "--protocol udp --port {port} --source-group <node sg>`).")
HOST_FIX = ("On {node}: look for a DROP/REJECT of udp dport {port} in `iptables -S INPUT` / "
            "`nft list ruleset`; check `sysctl net.ipv4.conf.all.rp_filter "
            "net.ipv4.conf.{dev}.rp_filter` (strict = 1 drops decapsulated packets: set 2 "
            "or 0 and persist it); check `ip -d link show {dev}` (VNI, dstport, local "
            "address) against a working node.")
OUTBOUND_FIX = ("On {node}: check egress rules of its security group / network ACL for UDP "
                "{port}, `iptables -S OUTPUT` and `iptables -S FORWARD` for drops of udp "
                "dport {port}, `ip -d link show {dev}` (local address, parent device) and "
                "`ip route get <peer underlay IP>` (the underlay route).")
ISOLATED_FIX = ("{node} can neither send nor receive overlay traffic: check {node}'s "
                "security group (ingress and egress UDP {port}), its VXLAN device "
                "(`ip -d link show {dev}`: up? right parent and local address?), its "
                "firewall (`iptables -S`) and rp_filter.")


def _where(target: str, fails: list[PairStatus]) -> tuple[str, str]:
    """(verdict, explanation) of where the probes die, from the target's capture."""
    never = [st for st in fails if st.wire_seen == 0]
    seen = [st for st in fails if st.wire_seen]
    if never and not seen:
        return "fabric", (f"{target}'s capture never saw their VXLAN packets: they are dropped "
                          f"before {target} (security group / network ACL)")
    if seen and not never:
        return "host", (f"{target}'s capture saw them arrive but {target} did not answer: "
                        f"{target}'s host firewall, rp_filter or VXLAN config")
    if seen and never:
        return "mixed", (f"{target}'s capture saw packets from {name_list(s.sender for s in seen)}"
                         f" but not from {name_list(s.sender for s in never)}: both the fabric "
                         f"and {target} may drop them")
    return "unknown", (f"no capture data from {target}: {target} or the fabric in front of it "
                       f"(cannot tell which)")


#: The node's own findings that name a local cause of overlay loss: quoted as corroboration.
LOCAL_CAUSE_PREFIXES = ("vxlan.", "iptables.overlay-port-blocked", "sysctl.rp-filter-strict",
                        "sysctl.ip-forward-off")


def _own_causes(d: NodeDigest | None) -> list[Finding]:
    if d is None:
        return []
    return [f for f in d.report.findings
            if f.severity >= Severity.WARNING and f.id.startswith(LOCAL_CAUSE_PREFIXES)]


def _never_arrived(st: PairStatus) -> bool:
    return st.wire_seen == 0 or st.wire_sent is None


def _maps(view: ClusterView, k: int) -> tuple[dict[str, list[PairStatus]],
                                              dict[str, list[PairStatus]]]:
    blamed = view.blamed
    return group_pairs(st for st in view.round_failures(k) if st.kinds & PATH_KINDS
                       and st.target not in blamed and st.sender not in blamed)


def evaluate(view: ClusterView) -> RuleResult:
    acc = _Acc()
    cfg = view.config
    maps = per_round(view, _maps)
    need = len(maps)
    if not need:
        return acc.result()

    def holds(x: str, inbound: bool, strong: bool, rounds: int = need) -> bool:
        """Most of X's probers fail to reach it (inbound) or most of X's targets are not
        reached (outbound), in each of `rounds` rounds. `strong`: count only probes that never
        arrived (the receiver's capture saw none; or no wire probe went, so the echo is all
        there is); a probe that arrived but got no answer may have lost its answer on the way
        back, and one the receiver has not reported on yet proves nothing either way."""
        if not inbound and x not in view.live:
            return False
        for k in range(rounds):
            fin, fout = maps[k]
            if inbound:
                fails = {st.sender for st in fin.get(x, ()) if not strong or _never_arrived(st)}
                base = view.trusted_probers(x, k)
            else:
                fails = {st.target for st in fout.get(x, ()) if not strong or _never_arrived(st)}
                base = view.probed_out(x, k)
            if not most_fail(cfg, len(fails), base):
                return False
        return True

    fin, fout = maps[0]
    for x in sorted(set(fin) | set(fout)):
        if x in view.stale:
            continue
        ins, outs = fin.get(x, []), fout.get(x, [])
        if len(ins) < cfg.min_senders and len(outs) < cfg.min_senders:
            continue  # too few failures for any node verdict (the common case: noise)
        strong_in, strong_out = holds(x, True, True), holds(x, False, True)
        if strong_in and strong_out:
            verdict = "isolated"
        elif strong_in:
            verdict = "inbound"
        elif strong_out:
            verdict = "outbound"
        elif holds(x, True, False):
            verdict = "inbound"  # X's capture saw them: X's host drops or does not answer
        elif holds(x, False, False) and not holds(x, True, False, rounds=1):
            # (while X's inbound fails, X's unanswered probes are explained by it)
            verdict = "outbound"
        else:
            if holds(x, True, False, rounds=1) or holds(x, False, False, rounds=1):
                # a node-level verdict is one round from confirmation: hold its symptoms
                # back rather than report them as pair failures for one round
                acc.explains.update((st.sender, x) for st in ins)
                acc.explains.update((x, st.target) for st in outs)
            continue
        d = view.live.get(x)
        port, dev = vxlan_port(d), vxlan_dev(d)
        evidence: list[str] = []
        own = _own_causes(d)
        own_note = f"; {x}'s own check: {', '.join(sorted({f.id for f in own}))}" if own else ""
        evidence += [f"{x}'s own check reports {f.id}: {f.title}" for f in own]
        if verdict == "isolated":
            where, why = _where(x, ins)
            title = (f"{x} is cut off from the overlay: {len(ins)} of "
                     f"{view.trusted_probers(x)} peers cannot reach it, it cannot reach "
                     f"{len(outs)} of {view.probed_out(x)} targets{own_note}")
            evidence += [f"inbound: {why}"] + pair_lines(ins)
            evidence += ["outbound:"] + pair_lines(outs)
            acc.diagnoses.append(diagnosis("overlay.node-isolated", Severity.ERROR, (x,), title,
                                           evidence, ISOLATED_FIX.format(node=x, port=port,
                                                                          dev=dev)))
            acc.explains.update((st.sender, x) for st in ins)
            acc.explains.update((x, st.target) for st in outs)
        elif verdict == "inbound":
            where, why = _where(x, ins)
            tcp_ok = [st for st in ins if st.tcp_ok]
            place = {"fabric": "the fabric (security group / ACL) drops UDP "
                               f"{port} to {x}",
                     "host": f"{x}'s host drops them (firewall, rp_filter or VXLAN config)",
                     "mixed": f"the fabric and/or {x}'s host",
                     "unknown": f"{x} or the fabric in front of it"}[where]
            title = (f"overlay traffic to {x} fails from {len(ins)} of "
                     f"{view.trusted_probers(x)} peers: {place}{own_note}")
            evidence.append(why)
            if tcp_ok:
                evidence.append(f"TCP to {x}'s agent port works from "
                                f"{plural(len(tcp_ok), 'peer')}: {x} is up")
            evidence += pair_lines(ins)
            replies = answers_lost(outs)
            fold(evidence, replies,
                  f"{x}'s own probes to {plural(len(replies), 'peer')} get no answer though "
                  f"nothing shows them lost on the way out: the answers back into {x} are "
                  f"lost on the same path:")
            fix = {"fabric": FABRIC_FIX, "host": HOST_FIX}.get(where, FABRIC_FIX + " " + HOST_FIX)
            acc.diagnoses.append(diagnosis("overlay.node-inbound-blocked", Severity.ERROR, (x,),
                                           title, evidence,
                                           fix.format(node=x, port=port, dev=dev)))
            acc.explains.update((st.sender, x) for st in ins)
            acc.explains.update((x, st.target) for st in replies)
        else:
            never = [st for st in outs if st.wire_seen == 0]
            title = (f"overlay traffic from {x} fails to {len(outs)} of "
                     f"{view.probed_out(x)} targets while others reach them{own_note}")
            if never and len(never) == len(outs):
                evidence.append(f"the targets' captures never saw {x}'s VXLAN packets: "
                                f"{x}'s egress (security group egress, OUTPUT firewall, "
                                f"VXLAN device) drops them")
            elif any(st.wire_seen for st in outs):
                evidence.append(f"targets saw {x}'s packets arrive; their answers do not "
                                f"come back to {x} (return path, {x}'s rp_filter/firewall)")
            evidence += pair_lines(outs)
            answers = answers_lost(ins)
            fold(evidence, answers,
                  f"peers' probes to {x} get no answer though nothing shows them lost on the "
                  f"way in: {x}'s answers die on the same way out:")
            acc.diagnoses.append(diagnosis("overlay.node-outbound-blocked", Severity.ERROR,
                                           (x,), title, evidence,
                                           OUTBOUND_FIX.format(node=x, port=port, dev=dev)))
            acc.explains.update((x, st.target) for st in outs)
            acc.explains.update((st.sender, x) for st in answers)
        # control/MTU probes whose answers cross the blocked direction fail as a consequence
        back_in = verdict in ("inbound", "isolated")
        back_out = verdict in ("outbound", "isolated")
        side = [st for st in view.round_failures(0) if not (st.kinds & PATH_KINDS)
                and ((back_in and st.sender == x) or (back_out and st.target == x))]
        if side:
            acc.explains.update((st.sender, st.target) for st in side)
            d = acc.diagnoses[-1]
            acc.diagnoses[-1] = replace(d, evidence=d.evidence + (
                f"\n{plural(len(side), 'control/MTU probe pair')} involving {x} fail as well "
                f"(their answers cross the same blocked direction)"))
        acc.blames.add(x)
    return acc.result()
