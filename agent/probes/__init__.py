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
from typing import TYPE_CHECKING, Any

from agent.ports import AGENT_PORT
from agent.probes.sampling import DEFAULT_PACKETS_PER_S, DEFAULT_PEERS_PER_ROUND
from agent.report import PROBE_KINDS

if TYPE_CHECKING:  # the edge (sockets, threads) is imported only when a Prober is built
    from agent.probes.prober import Prober

#: How long a round waits for the last answers after its last packet.
PROBE_TIMEOUT_S = 0.5
DEFAULT_PROBES_PER_KIND = 3


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


@dataclass(frozen=True)
class ProberConfig:
    #: Probes of each kind sent to each chosen peer per round.
    probes_per_kind: int = DEFAULT_PROBES_PER_KIND
    #: The node's whole packet budget (every probe packet and TCP connect counts).
    packets_per_s: float = DEFAULT_PACKETS_PER_S
    #: At most this many peers per round; the sample rotates (see agent.probes.sampling).
    peers_per_round: int = DEFAULT_PEERS_PER_ROUND
    reply_timeout_s: float = PROBE_TIMEOUT_S
    kinds: tuple[str, ...] = PROBE_KINDS
    control_port: int = AGENT_PORT
    #: Run the capture (needs CAP_NET_RAW): peers' probes seen here, replies to our echoes.
    capture: bool = True
    #: Answer peers' udp-control probes on UDP `control_port` (the daemon's HTTP server holds
    #: the TCP side of that port; `python -m agent.probes.responder` runs both).
    udp_responder: bool = True


def __getattr__(name: str) -> Any:
    if name == "Prober":
        from agent.probes.prober import Prober

        return Prober
    raise AttributeError(name)
