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

from agent.report import Severity
from collector.correlate.base import (ClusterView, RuleResult, _Acc, diagnosis, name_list,
                                      pair_lines, plural, vxlan_dev, vxlan_port)
from collector.correlate.model import PATH_KINDS, PairStatus

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


def _maps(view: ClusterView, k: int) -> tuple[dict[str, list[PairStatus]],
                                              dict[str, list[PairStatus]]]:
    fin: dict[str, list[PairStatus]] = {}
    fout: dict[str, list[PairStatus]] = {}
    for st in view.round_failures(k):
        if st.kinds & PATH_KINDS and st.target not in view.blamed \
                and st.sender not in view.blamed:
            fin.setdefault(st.target, []).append(st)
            fout.setdefault(st.sender, []).append(st)
    return fin, fout


def evaluate(view: ClusterView) -> RuleResult:
    acc = _Acc()
    cfg = view.config
    need = view.rounds_to_confirm()
    if not need:
        return acc.result()
    maps = [_maps(view, k) for k in range(need)]

    def inbound(x: str, rounds: int = need) -> bool:
        for k, (fin, _) in enumerate(maps[:rounds]):
            fails = {st.sender for st in fin.get(x, [])}
            if not (len(fails) >= cfg.min_senders
                    and len(fails) > cfg.blame_fraction * view.trusted_probers(x, k)):
                return False
        return True

    def outbound(x: str, arrived_excuses: bool) -> bool:
        """X's probes fail to most targets. With `arrived_excuses` (X is inbound-blocked),
        a probe the target's capture saw arrive does not count: its answer died on the way
        back into X, which the inbound verdict already explains."""
        if x not in view.live:
            return False
        for k, (_, fout) in enumerate(maps):
            fails = {st.target for st in fout.get(x, [])
                     if not (arrived_excuses and st.wire_seen != 0)}
            if not (len(fails) >= cfg.min_senders
                    and len(fails) > cfg.blame_fraction * view.probed_out(x, k)):
                return False
        return True

    fin, fout = maps[0]
    for x in sorted(set(fin) | set(fout)):
        if x in view.stale:
            continue
        is_in = inbound(x)
        pending = not is_in and inbound(x, rounds=1)
        # while X's inbound fails (even before it is confirmed), X's probes that arrived but
        # got no answer are explained by that, not by X's egress: no outbound verdict on them
        is_out = outbound(x, arrived_excuses=is_in or pending)
        if pending and not is_out:
            # the inbound verdict is one round from confirmation: hold its symptoms back
            # rather than report them as pair failures for one round
            acc.explains.update((st.sender, x) for st in fin.get(x, []))
            acc.explains.update((x, st.target) for st in fout.get(x, []) if st.wire_seen != 0)
        if not (is_in or is_out):
            continue
        d = view.live.get(x)
        port, dev = vxlan_port(d), vxlan_dev(d)
        ins, outs = fin.get(x, []), fout.get(x, [])
        replies = [st for st in outs if st.wire_seen != 0] if is_in and not is_out else []
        evidence = []
        if is_in and is_out:
            where, why = _where(x, ins)
            title = (f"{x} is cut off from the overlay: {len(ins)} of "
                     f"{view.trusted_probers(x)} peers cannot reach it, it cannot reach "
                     f"{len(outs)} of {view.probed_out(x)} targets")
            evidence += [f"inbound: {why}"] + pair_lines(ins)
            evidence += ["outbound:"] + pair_lines(outs)
            acc.diagnoses.append(diagnosis("overlay.node-isolated", Severity.ERROR, (x,), title,
                                           evidence, ISOLATED_FIX.format(node=x, port=port,
                                                                          dev=dev)))
        elif is_in:
            where, why = _where(x, ins)
            tcp_ok = [st for st in ins if st.tcp_ok]
            place = {"fabric": "the fabric (security group / ACL) drops UDP "
                               f"{port} to {x}",
                     "host": f"{x}'s host drops them (firewall, rp_filter or VXLAN config)",
                     "mixed": f"the fabric and/or {x}'s host",
                     "unknown": f"{x} or the fabric in front of it"}[where]
            title = (f"overlay traffic to {x} fails from {len(ins)} of "
                     f"{view.trusted_probers(x)} peers: {place}")
            evidence.append(why)
            if tcp_ok:
                evidence.append(f"TCP to {x}'s agent port works from "
                                f"{plural(len(tcp_ok), 'peer')}: {x} is up")
            evidence += pair_lines(ins)
            if replies:
                evidence.append(f"{x}'s own probes to {plural(len(replies), 'peer')} arrive "
                                f"(their captures saw them) but the answers back into {x} "
                                f"are lost on the same path:")
                evidence += pair_lines(replies)
            fix = {"fabric": FABRIC_FIX, "host": HOST_FIX}.get(where, FABRIC_FIX + " " + HOST_FIX)
            acc.diagnoses.append(diagnosis("overlay.node-inbound-blocked", Severity.ERROR, (x,),
                                           title, evidence,
                                           fix.format(node=x, port=port, dev=dev)))
        else:
            never = [st for st in outs if st.wire_seen == 0]
            title = (f"overlay traffic from {x} fails to {len(outs)} of "
                     f"{view.probed_out(x)} targets while others reach them")
            if never and len(never) == len(outs):
                evidence.append(f"the targets' captures never saw {x}'s VXLAN packets: "
                                f"{x}'s egress (security group egress, OUTPUT firewall, "
                                f"VXLAN device) drops them")
            elif any(st.wire_seen for st in outs):
                evidence.append(f"targets saw {x}'s packets arrive; their answers do not "
                                f"come back to {x} (return path, {x}'s rp_filter/firewall)")
            evidence += pair_lines(outs)
            acc.diagnoses.append(diagnosis("overlay.node-outbound-blocked", Severity.ERROR,
                                           (x,), title, evidence,
                                           OUTBOUND_FIX.format(node=x, port=port, dev=dev)))
        acc.blames.add(x)
        if is_in:
            acc.explains.update((st.sender, x) for st in ins)
            acc.explains.update((x, st.target) for st in replies)
        if is_out:
            acc.explains.update((x, st.target) for st in outs)
    return acc.result()
