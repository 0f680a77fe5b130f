"""What one node's probe results towards one peer say, in one line that names the direction.
Pure; used by the per-peer table (agent.render.render_probe_table).

One node alone cannot always tell "my packets die on the way out" from "they die on the way
in to the peer": the wire probe's delivery is only confirmed by the peer's capture (the
collector compares both sides). What one node can tell, it says: all UDP vs. the VXLAN port
only vs. nothing at all, MTU black holes, and whether the peer's own probes reach us.
"""

from __future__ import annotations

from typing import Mapping

from agent.probes.tally import NIC_DROP_PHRASE
from agent.report import ProbeResult


def probe_status(r: ProbeResult | None) -> str:
    """ok | lost | partial | refused | error | n/a | sent (wire: delivery unknown here).
    `refused`: nothing answered, but the peer's kernel refused the port (TCP RST, ICMP port
    unreachable): the peer is reachable, no agent listens there."""
    if r is None:
        return "n/a"
    if r.sent == 0:
        return "error" if r.error else "n/a"
    if r.answered is None:
        return "sent"
    if r.answered >= r.sent:
        return "ok"
    if r.answered == 0:
        return "refused" if is_refusal(r.error) else "lost"
    return "partial"


def is_refusal(error: str) -> bool:
    return "connection refused" in error or "port unreachable" in error


def classify_peer_path(peer: str, results: Mapping[str, ProbeResult],
                       seen_from_peer: Mapping[str, int], mtu: int | None = None) -> str:
    """One line: what works and what dies between this node and `peer`, and which way."""
    st = {k: probe_status(results.get(k)) for k in
          ("wire", "echo", "mtu", "udp-control", "tcp-control")}
    tcp_up = st["tcp-control"] in ("ok", "partial", "refused")
    udp_up = st["udp-control"] in ("ok", "partial", "refused")
    no_agent = st["tcp-control"] == st["udp-control"] == "refused"
    arrives_here = sum(seen_from_peer.get(k, 0) for k in ("wire", "echo", "mtu")) > 0
    came = (f"{peer}'s own VXLAN probes do arrive here, so the drop is on the way to {peer} "
            f"or in {peer}'s host firewall" if arrives_here else
            f"{peer}'s capture tells which way: saw our wire probes = {peer}'s host firewall "
            f"drops them, saw nothing = the fabric or a security group")
    failed = [results[k] for k in ("wire", "echo") if st[k] == "error"]
    if failed:
        control = (f"UDP and TCP reach {peer}" if udp_up and tcp_up else
                   f"UDP to {peer} is dropped while TCP passes" if tcp_up else
                   f"{peer}'s agent port does not answer")
        return f"could not probe {peer}: {failed[0].error}; {control}"
    if st["echo"] in ("lost", "n/a") and st["udp-control"] in ("lost", "n/a") and not tcp_up \
            and st["tcp-control"] != "n/a":
        return (f"nothing comes back from {peer} (VXLAN, UDP, TCP): {peer} is down or cut "
                f"off from this node entirely")
    if any(NIC_DROP_PHRASE in results[k].error for k in ("echo", "mtu") if k in results):
        return (f"{peer} answers our VXLAN echoes and the replies reach this node's NIC, but "
                f"this node drops them: check this node's host firewall for its VXLAN port "
                f"(and rp_filter on the VXLAN device)")
    if st["echo"] == "ok":
        if st["mtu"] == "lost":
            size = f"{mtu}-byte" if mtu else "full-size"
            return (f"MTU black hole between here and {peer}: small VXLAN packets pass, "
                    f"{size} ones (the overlay MTU, DF set) are lost; lower the overlay MTU "
                    f"or fix the path MTU")
        if st["mtu"] == "partial":
            return f"full-size VXLAN packets to {peer} are partly lost (MTU or congestion)"
        return f"VXLAN to {peer} and back works (the peer's kernel answered our echoes)"
    if st["echo"] in ("lost", "partial"):
        some = "some" if st["echo"] == "partial" else "all"
        if st["udp-control"] == "lost" and tcp_up:
            return (f"all UDP between here and {peer} is dropped, TCP passes: a security "
                    f"group/ACL drops UDP (VXLAN included); {came}")
        if tcp_up or udp_up:
            answers = (f"{peer} answers UDP and TCP (no agent there: its kernel refuses the "
                       f"agent port)" if no_agent else "the agent port answers")
            return (f"VXLAN echoes to {peer}: {some} lost while {answers}: the VXLAN port is "
                    f"blocked on the path; {came}")
        return f"VXLAN echoes to {peer}: {some} lost; {came}"
    # No echo possible (Cilium-style device without an address): the wire probe only.
    parts = [f"wire probes only ({peer} has no VXLAN address known here): delivery is "
             f"confirmed by {peer}'s capture"]
    if st["udp-control"] == "lost" and tcp_up:
        parts.append("UDP to the agent is dropped while TCP passes: UDP is blocked")
    elif udp_up:
        parts.append("UDP and TCP to the agent pass")
    if arrives_here:
        parts.append(f"{peer}'s VXLAN probes arrive here")
    return "; ".join(parts)
