"""Probes between nodes (see DESIGN.md "Probes"): the wire probe, the capture that counts
peers' probes, the echo, control and MTU probes.

The contract the agent daemon and `netdiag check --peer` use:

    prober = Prober(node_name, overlay, underlay_ip, underlay_dev, config)
    prober.start()                      # capture + UDP/TCP control responders
    probes, seen = prober.run_round(peers)   # one bounded round -> ProbeResult, SeenCount
    prober.stop()

`peers` are `Peer` values (from the collector's peer list or `--peer NAME=IP`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Peer:
    name: str
    underlay_ip: str
    #: The peer's VXLAN device address and MAC when known (echo and MTU probes need them);
    #: empty for a Cilium-style device without an address: only wire probes apply.
    vxlan_ip: str = ""
    vxlan_mac: str = ""
    vxlan_port: int | None = None
    vni: int | None = None
    mtu: int | None = None
