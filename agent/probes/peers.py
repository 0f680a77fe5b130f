"""Which local overlay device to probe from, and what the local tables say about a peer. Pure.

On a flannel (or Calico VXLAN) node the kernel tables already map every peer:
the VXLAN device's FDB maps the peer's VXLAN MAC -> the peer's underlay IP (`bridge fdb show
dev flannel.1`: `ee:ed:.. dst 192.168.77.12 self permanent`), and the neighbour table maps
the peer's VXLAN address -> that MAC (`ip neigh show dev flannel.1`: `10.244.2.0 lladdr
ee:ed:..`). Given only `--peer node2=192.168.77.12`, the two together give the echo probe its
destination MAC and IP. A Cilium-style node has neither: only the wire probe applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from agent.probes import Peer
from agent.report import OverlayDevice


@dataclass(frozen=True)
class FdbEntry:
    mac: str
    dst: str


@dataclass(frozen=True)
class NeighbourEntry:
    ip: str
    mac: str


def choose_overlay(devices: Sequence[OverlayDevice]) -> OverlayDevice | None:
    """The device the node's pod traffic uses: up with an address first, then up, then any."""
    def rank(d: OverlayDevice) -> tuple[int, int]:
        return (0 if d.up else 1, 0 if d.addresses else 1)
    return min(devices, key=rank) if devices else None


def match_peer_overlay(peer_ip: str, fdb: Iterable[FdbEntry],
                       neighbours: Iterable[NeighbourEntry]) -> tuple[str, str]:
    """(peer VXLAN MAC, peer VXLAN IP) for the peer at underlay `peer_ip`; empty strings when
    the tables do not say. Multicast/broadcast and all-zero FDB entries (flood lists) are no
    peer's MAC."""
    macs = [e.mac.lower() for e in fdb
            if e.dst == peer_ip and e.mac and not _group_or_zero(e.mac)]
    if not macs:
        return "", ""
    by_mac = {}
    for n in neighbours:
        if n.mac and n.ip and ":" not in n.ip:
            by_mac.setdefault(n.mac.lower(), n.ip)
    for mac in macs:
        if mac in by_mac:
            return mac, by_mac[mac]
    return macs[0], ""


def peers_from_tables(pairs: Iterable[tuple[str, str]], fdb: Sequence[FdbEntry],
                      neighbours: Sequence[NeighbourEntry]) -> tuple[Peer, ...]:
    """`--peer NAME=IP` pairs -> Peers, with VXLAN MAC/IP filled from the local tables."""
    out = []
    for name, ip in pairs:
        mac, vip = match_peer_overlay(ip, fdb, neighbours)
        out.append(Peer(name=name, underlay_ip=ip, vxlan_ip=vip, vxlan_mac=mac))
    return tuple(out)


def _group_or_zero(mac: str) -> bool:
    try:
        first = int(mac.split(":")[0], 16)
    except ValueError:
        return True
    return bool(first & 1) or mac.strip(":0") == ""
