"""VXLAN overlay devices (flannel.1, vxlan.calico, cilium_vxlan, ...), read over netlink with
pyroute2. What breaks: a VXLAN device that is down drops every pod packet to other nodes; an
MTU above the underlay's MTU minus the 50-byte VXLAN overhead (70 over IPv6) makes large
packets vanish (TLS handshakes and big responses hang while ping works); a route via the
device whose gateway has no permanent neighbour entry, or whose neighbour MAC has no FDB entry
pointing at a node, black-holes one peer's pod subnet (flannel/Calico program all three and a
restart or a race can leave a gap); and the known checksum-offload bug (kernel or NIC computing
a bad UDP checksum for encapsulated packets, `UdpInCsumErrors` rising on the receiver) is
worked around by turning tx checksum offload off on the VXLAN device.

Applies to VXLAN overlays only: no VXLAN device is `info` (Calico BGP, Cilium native routing,
host-gw flannel are fine without one).

The same pure evaluation (`evaluate_link_state`) runs on pasted `ip -d link` / `bridge fdb`
text in `netdiag analyze` (`evaluate_iproute_text`).

Checksum counter sampling: `UdpInCsumErrors` counts since boot, so one value cannot say
"rising". Only when it is non-zero (and so cheap to skip otherwise) are the VXLAN devices'
tx offload read and the counter sampled a second time `CSUM_SAMPLE_INTERVAL_S` later: rising
with offload on is a warning; non-zero but flat is info (re-run under traffic to confirm).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass, field
from typing import Mapping

from agent.checks.base import CheckContext, CheckSpec, FindingSpec
from agent.host import Host
from agent.parsers.iproute_text import parse_bridge_fdb, parse_ip_link_details
from agent.parsers.link_types import Link, LinkState
from agent.parsers.netlink_vxlan import (link_names, parse_netlink_addresses, parse_netlink_fdb,
                                         parse_netlink_links, parse_netlink_neighbours,
                                         parse_netlink_routes)
from agent.parsers.snmp import parse_proc_net_snmp, udp_in_csum_errors
from agent.report import Finding, OverlayDevice, Severity

VXLAN_OVERHEAD_IPV4_BYTES = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
VXLAN_OVERHEAD_IPV6_BYTES = 70  # outer IPv6 40 instead of 20
CSUM_SAMPLE_INTERVAL_S = 0.2
TX_CSUM_FEATURE = "tx-checksum-ip-generic"
AF_BRIDGE = 7  # socket.AF_BRIDGE is missing on some Python builds

SPEC = CheckSpec(
    name="vxlan",
    findings=(
        FindingSpec(
            id="vxlan.device-down",
            title="VXLAN device is down: no pod traffic to other nodes",
            why="Every packet to a pod on another node is encapsulated by this device; while it "
                "is down they are dropped.",
            remediation="ip link set <dev> up, then find out why it went down (the CNI agent's "
                        "logs: flanneld, calico-node, cilium-agent); restarting the CNI pod "
                        "recreates it.",
        ),
        FindingSpec(
            id="vxlan.mtu-too-large",
            title="VXLAN MTU exceeds the underlay MTU minus the encapsulation overhead",
            why="Encapsulated packets larger than the underlay MTU are dropped (or fragmented "
                "and dropped by the fabric): small requests work, large ones hang.",
            remediation="Set the CNI's MTU to the underlay MTU - 50 (IPv6 underlay: - 70) "
                        "(flannel: net-conf.json / FLANNEL_MTU; Calico: vxlanMTU in "
                        "FelixConfiguration; Cilium: --mtu), or raise the underlay MTU, then "
                        "restart the CNI pods.",
        ),
        FindingSpec(
            id="vxlan.fdb-missing-peer",
            title="A route via the VXLAN device has no neighbour/FDB entry to a node",
            why="The kernel sends a peer's pod subnet to its VXLAN gateway; without a permanent "
                "neighbour (gateway -> VTEP MAC) and an FDB entry (MAC -> node address) the "
                "packets are dropped (or flooded nowhere, with learning off).",
            remediation="Restart the CNI agent on this node (flanneld / calico-node) so it "
                        "reprograms routes, neighbours and FDB; if it recurs, check the peer "
                        "node's VTEP annotations (flannel.alpha.coreos.com/backend-data).",
        ),
        FindingSpec(
            id="vxlan.checksum-offload-suspect",
            title="UDP checksum errors rising while tx checksum offload is on for VXLAN",
            why="A known kernel/NIC bug computes bad checksums for VXLAN-encapsulated UDP when "
                "tx checksum offload is on (seen with vmxnet3, some ENA/virtio versions): the "
                "receiver drops the packets and counts UdpInCsumErrors; Service traffic over "
                "the overlay times out.",
            remediation="ethtool -K <dev> tx-checksum-ip-generic off (persist it: flannel and "
                        "Calico have options, else a udev rule or systemd unit).",
        ),
        FindingSpec(
            id="vxlan.no-device",
            title="No VXLAN device on this node",
            why="Not a fault by itself: the CNI may route without an overlay (Calico BGP, "
                "Cilium native routing, flannel host-gw). Overlay probes need a VXLAN device.",
            remediation="Nothing to do unless this node should have one: then check the CNI "
                        "agent's pod on this node.",
        ),
    ),
)


@dataclass(frozen=True)
class ChecksumSample:
    """UdpInCsumErrors once or twice, and each VXLAN device's tx checksum offload."""

    before: int | None
    after: int | None = None  # second sample, taken only when `before` is non-zero
    interval_s: float = CSUM_SAMPLE_INTERVAL_S
    offload: Mapping[str, bool | None] = field(default_factory=dict)  # dev -> on/off/unknown
    note: str = ""


@dataclass(frozen=True)
class Facts:
    state: LinkState
    underlay_ip: str
    csum: ChecksumSample | None = None

    def overlay_devices(self) -> tuple[OverlayDevice, ...]:
        return tuple(
            OverlayDevice(name=link.name, vni=link.vxlan.vni, port=link.vxlan.port,
                          local=link.vxlan.local, parent=link.vxlan.parent, mtu=link.mtu,
                          mac=link.mac, addresses=link.addresses, up=not link.is_down)
            for link in self.state.vxlan_links() if link.vxlan is not None)


def gather(host: Host, ctx: CheckContext) -> Facts:
    ipr = host.netlink()
    addresses = parse_netlink_addresses(m.dump() for m in ipr.get_addr(family=socket.AF_INET))
    links = parse_netlink_links((m.dump() for m in ipr.get_links()), addresses)
    names = link_names(links)
    routes = parse_netlink_routes((m.dump() for m in ipr.get_routes(family=socket.AF_INET)),
                                  names)
    vxlan_names = {link.name for link in links if link.vxlan is not None}
    neighbours = fdb = None
    if vxlan_names:
        neighbours = [n for n in parse_netlink_neighbours(
            (m.dump() for m in ipr.get_neighbours(family=socket.AF_INET)), names)
            if n.dev in vxlan_names]
        fdb = [e for e in parse_netlink_fdb(
            (m.dump() for m in ipr.get_neighbours(family=AF_BRIDGE)), names)
            if e.dev in vxlan_names]
    state = LinkState(tuple(links), tuple(routes),
                      None if neighbours is None else tuple(neighbours),
                      None if fdb is None else tuple(fdb))
    csum = _sample_checksum_errors(host, sorted(vxlan_names)) if vxlan_names else None
    return Facts(state, underlay_address(state), csum)


def _sample_checksum_errors(host: Host, devices: list[str]) -> ChecksumSample:
    try:
        before = udp_in_csum_errors(parse_proc_net_snmp(host.read_proc("net/snmp")))
    except OSError as exc:
        return ChecksumSample(None, note=f"/proc/net/snmp unreadable: {exc}")
    if not before:
        return ChecksumSample(before)
    offload: dict[str, bool | None] = {}
    notes = []
    for dev in devices:
        try:  # pyroute2's ethtool API (genetlink, ioctl fallback): works, no `ethtool` binary
            offload[dev] = host.ethtool_features(dev).get(TX_CSUM_FEATURE)
        except OSError as exc:
            offload[dev] = None
            notes.append(f"{dev}: ethtool features unreadable ({exc})")
    if not any(offload.values()):
        return ChecksumSample(before, offload=offload, note="; ".join(notes))
    time.sleep(CSUM_SAMPLE_INTERVAL_S)
    try:
        after = udp_in_csum_errors(parse_proc_net_snmp(host.read_proc("net/snmp")))
    except OSError as exc:
        after = None
        notes.append(f"second /proc/net/snmp read failed: {exc}")
    return ChecksumSample(before, after, CSUM_SAMPLE_INTERVAL_S, offload, "; ".join(notes))


# --- pure ---------------------------------------------------------------------------------

def underlay_address(state: LinkState) -> str:
    """The node's underlay address: a VXLAN device's local address, else its parent's first
    IPv4 address, else the first address of the default route's device."""
    for link in state.vxlan_links():
        if link.vxlan and link.vxlan.local:
            return link.vxlan.local
    for link in state.vxlan_links():
        parent = state.link(link.vxlan.parent) if link.vxlan and link.vxlan.parent else None
        if parent and parent.addresses:
            return parent.addresses[0].split("/")[0]
    for route in state.routes or ():
        if route.dst == "default" and route.dev:
            dev = state.link(route.dev)
            if dev and dev.addresses:
                return dev.addresses[0].split("/")[0]
    return ""


def evaluate(facts: Facts, ctx: CheckContext) -> tuple[Finding, ...]:
    return evaluate_link_state(facts.state, ctx.node, facts.csum)


def evaluate_link_state(state: LinkState, node: str,
                        csum: ChecksumSample | None = None) -> tuple[Finding, ...]:
    devices = state.vxlan_links()
    if not devices:
        return (SPEC.finding("vxlan.no-device", Severity.INFO, node,
                             evidence=f"no link of kind vxlan among {len(state.links)} links"),)
    findings: list[Finding] = []
    for dev in devices:
        own = [*_device_state(dev, node), *_mtu(dev, state, node), *_fdb_chain(dev, state, node)]
        if not own:
            own.append(SPEC.finding("vxlan.device-down", Severity.OK, node,
                                    title=f"VXLAN device {dev.name} is up",
                                    evidence=_describe(dev)))
        findings.extend(own)
    findings.extend(_checksum(csum, node))
    return tuple(findings)


def _describe(dev: Link) -> str:
    vx = dev.vxlan
    assert vx is not None
    return (f"{dev.name}: vxlan id {vx.vni} dstport {vx.port} local {vx.local or '?'} "
            f"dev {vx.parent or '?'} mtu {dev.mtu} ({dev.state_text})")


def _device_state(dev: Link, node: str) -> list[Finding]:
    if not dev.is_down:
        return []
    return [SPEC.finding("vxlan.device-down", Severity.ERROR, node,
                         title=f"VXLAN device {dev.name} is down: no pod traffic to other nodes",
                         evidence=_describe(dev))]


def _mtu(dev: Link, state: LinkState, node: str) -> list[Finding]:
    vx = dev.vxlan
    if vx is None or dev.mtu is None:
        return []
    parent = state.link(vx.parent) if vx.parent else None
    if parent is None and vx.local:
        parent = next((link for link in state.links
                       if any(a.split("/")[0] == vx.local for a in link.addresses)), None)
    if parent is None or parent.mtu is None:
        return []  # underlay unknown (a paste of the VXLAN device alone): nothing to compare
    overhead = VXLAN_OVERHEAD_IPV4_BYTES
    if _ip_version(vx.local) == 6:
        overhead = VXLAN_OVERHEAD_IPV6_BYTES
    limit = parent.mtu - overhead
    if dev.mtu <= limit:
        return []
    return [SPEC.finding(
        "vxlan.mtu-too-large", Severity.ERROR, node,
        title=f"VXLAN device {dev.name} MTU {dev.mtu} exceeds {parent.name} MTU {parent.mtu} "
              f"- {overhead}",
        evidence=f"{dev.name} mtu {dev.mtu} > {parent.name} mtu {parent.mtu} - {overhead} "
                 f"= {limit}: encapsulated packets over {limit} bytes of payload are dropped")]


def _ip_version(text: str) -> int | None:
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return None


def _fdb_chain(dev: Link, state: LinkState, node: str) -> list[Finding]:
    if state.routes is None or state.neighbours is None or state.fdb is None:
        return []  # not collected (pasted text): the chain cannot be checked
    gaps = []
    routes = [r for r in state.routes if r.dev == dev.name and r.gateway]
    for route in routes:
        neigh = next((n for n in state.neighbours
                      if n.dev == dev.name and n.ip == route.gateway), None)
        if neigh is None:
            gaps.append(f"route {route.text()}: no neighbour entry for {route.gateway} "
                        f"on {dev.name}")
            continue
        if not neigh.permanent or not neigh.mac:
            gaps.append(f"route {route.text()}: neighbour {neigh.text()} is not PERMANENT "
                        f"with a MAC")
            continue
        fdb = [e for e in state.fdb if e.dev == dev.name and e.mac.lower() == neigh.mac.lower()]
        if not any(e.dst for e in fdb):
            have = f" (entry without dst: {fdb[0].text()})" if fdb else ""
            gaps.append(f"route {route.text()}: neighbour {neigh.text()}; no FDB entry "
                        f"{neigh.mac} dev {dev.name} dst <node>{have}")
    if not gaps:
        return []
    return [SPEC.finding(
        "vxlan.fdb-missing-peer", Severity.ERROR, node,
        title=f"{dev.name}: {len(gaps)} of {len(routes)} route(s) via the VXLAN device have no "
              f"path to a node",
        evidence="\n".join(gaps))]


def _checksum(csum: ChecksumSample | None, node: str) -> list[Finding]:
    if csum is None or not csum.before:
        return []
    on = sorted(d for d, v in csum.offload.items() if v)
    if not on:
        return []
    fix = "; ".join(f"ethtool -K {d} {TX_CSUM_FEATURE} off" for d in on)
    offload_text = ", ".join(f"{d} {TX_CSUM_FEATURE}: on" for d in on)
    if csum.after is not None and csum.after > csum.before:
        return [SPEC.finding(
            "vxlan.checksum-offload-suspect", Severity.WARNING, node,
            evidence=f"/proc/net/snmp Udp InCsumErrors {csum.before} -> {csum.after} in "
                     f"{csum.interval_s:g}s; {offload_text}",
            remediation=f"{fix} (persist it: flannel/Calico options, or a udev rule).")]
    return [SPEC.finding(
        "vxlan.checksum-offload-suspect", Severity.INFO, node,
        title="UDP checksum errors seen since boot while tx checksum offload is on for VXLAN",
        evidence=f"/proc/net/snmp Udp InCsumErrors = {csum.before}, did not rise in "
                 f"{csum.interval_s:g}s; {offload_text}"
                 + (f"; {csum.note}" if csum.note else ""),
        remediation=f"Re-run under overlay traffic; if the counter rises: {fix}.")]


def summarize(facts: Facts) -> dict[str, object]:
    return {"vxlan": {link.name: {"vni": link.vxlan.vni, "port": link.vxlan.port,
                                  "mtu": link.mtu}
                      for link in facts.state.vxlan_links() if link.vxlan is not None}}


def evaluate_iproute_text(ip_link_text: str, fdb_text: str | None = None, node: str = "",
                          fdb_dev: str = "") -> tuple[Finding, ...]:
    """`netdiag analyze`: the same findings from pasted `ip -d link show` (and optionally
    `bridge fdb show`) output. Routes and neighbours are not in a paste, so the FDB chain is
    not checked; device state and MTU (when the parent is in the paste) are. Raises
    IprouteTextError on text that is not that output."""
    links = tuple(parse_ip_link_details(ip_link_text))
    fdb = tuple(parse_bridge_fdb(fdb_text, fdb_dev)) if fdb_text is not None else None
    return evaluate_link_state(LinkState(links, None, None, fdb), node)
