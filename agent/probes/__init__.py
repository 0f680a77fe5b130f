"""Probes between nodes (see DESIGN.md "Probes"): the wire probe, the capture that counts
peers' probes, the echo, control and MTU probes.

The contract the agent daemon and `netdiag check --peer` use:

    prober = Prober(node_name, overlay, underlay_ip, underlay_dev, config)
    prober.start()                      # capture, echo-reply socket, UDP control responder
    probes, seen = prober.run_round(peers)   # one bounded round -> ProbeResult, SeenCount
    prober.stop()

`peers` are `Peer` values (from the collector's peer list or `--peer NAME=IP`, see
`oneshot.prepare_prober`). `start()` never fails for lack of privilege: what could not start
is in `capture_error` / `responder_error`, and the affected probe kinds say so in `error`.

What the numbers mean (the collector relies on it):
- `wire`: `answered` is None; the peer's `seen` counts arrivals at its NIC.
- `echo`, `mtu`: `answered` = the peer kernel's reply reached this node's NIC (the same vantage
  point as `seen`, before this node's firewall); a reply the NIC got but this node's stack did
  not is named in `error` ("... reached this node's NIC but not its stack ...").
- `udp-control`, `tcp-control`: `answered` = the peer's agent echoed / accepted. A refusal by
  the peer's kernel (no agent there) is `answered` 0 with "port unreachable" / "connection
  refused" in `error` (`verdict.is_refusal`): the peer is reachable over that protocol.
- `seen`: per (peer, kind), the probes this node's capture (or UDP responder, for
  udp-control) saw since the previous round.

Modules: `frames` (bytes in/out, pure), `bpf` (kernel filters), `sampling` (which peers, pure),
`tally` (counts -> wire values, pure), `peers` (local tables -> Peer, pure), `verdict` (one
line per peer for the table, pure), `capture`/`responder`/`prober` (the edge: sockets and
threads), `discover` (netlink reads), `oneshot` (`netdiag check --peer`).
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
