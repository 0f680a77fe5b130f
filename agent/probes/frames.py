"""Probe packets as bytes: the marker, the inner Ethernet frames, the VXLAN header, and the
classifiers that read them back out of a captured packet. Pure: no sockets, no clock.

Why hand-built bytes and not scapy: the frames are fixed and small (Ethernet, IPv4, ICMP, a
VXLAN header), building them with `struct` costs microseconds and no memory, while importing
scapy's layers costs ~45 MB (more on a node with many routes) and its `send()` manages ~40
packets/s. The unit tests check every frame against scapy's dissectors instead.

Layout of one probe as it crosses the fabric (what the peer's capture sees):

    outer Ethernet | outer IPv4 (src our underlay, dst peer underlay) | UDP dst <vxlan port>
    | VXLAN (flags 0x08, VNI) | inner Ethernet (dst peer VXLAN MAC, src our VXLAN MAC) | ...

    wire probe:  ... | ethertype 0x88B5 (IEEE local experimental) | marker
                 (the peer kernel decapsulates it and drops it: no protocol handler)
    echo probe:  ... | IPv4 (our VXLAN addr -> peer VXLAN addr, DF) | ICMP echo | marker [pad]
                 (the peer kernel answers through its own VXLAN device; the reply carries
                 the marker back, so our capture matches it and measures the RTT)
    mtu probe:   an echo probe padded so the inner IPv4 packet is exactly the device MTU.

The marker: magic "NDPR", version, kind code, sequence, sender's send time (ns, the sender's
monotonic clock: only the sender compares it), an 8-byte id of the sender's node name, and the
name itself (<= 63 bytes) so a receiver can name the peer without a peer list.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from dataclasses import dataclass

MARKER_MAGIC = b"NDPR"
MARKER_VERSION = 1
#: magic, version, kind, seq, send_ns, sender_id, name length; then the name bytes.
_MARKER_HEAD = struct.Struct("!4sBBIQ8sB")
MARKER_NAME_MAX_BYTES = 63
KIND_CODES = {"wire": 1, "echo": 2, "mtu": 3, "udp-control": 4, "tcp-control": 5}
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_VLAN = 0x8100
#: IEEE 802 Local Experimental Ethertype 1: no kernel protocol handler, dropped harmlessly.
ETHERTYPE_PROBE = 0x88B5
IPPROTO_ICMP = 1
IPPROTO_UDP = 17
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
IPV4_FLAG_DF = 0x4000
IPV4_TTL = 64
VXLAN_FLAG_VNI = 0x08
VXLAN_HEADER_BYTES = 8
ETH_HEADER_BYTES = 14
IPV4_HEADER_BYTES = 20
ICMP_HEADER_BYTES = 8
UDP_HEADER_BYTES = 8
#: Outer IPv4 + UDP + VXLAN + inner Ethernet: what VXLAN adds to every inner packet.
VXLAN_OVERHEAD_BYTES = IPV4_HEADER_BYTES + UDP_HEADER_BYTES + VXLAN_HEADER_BYTES + ETH_HEADER_BYTES
#: Used as the inner destination MAC when the peer's VXLAN MAC is unknown: locally
#: administered, unicast, owned by nobody, so the peer kernel drops it as "other host".
UNKNOWN_PEER_MAC = "02:00:00:00:00:00"


class FrameError(ValueError):
    pass


@dataclass(frozen=True)
class ProbeMarker:
    kind: str
    seq: int
    send_ns: int
    sender_id: bytes
    sender: str


@dataclass(frozen=True)
class ProbeFrame:
    """What an inner Ethernet frame says about a probe: whose, which kind, and whether it is
    the peer kernel's echo reply (an answer to *our* echo/mtu probe) or a request/wire probe."""

    marker: ProbeMarker
    is_reply: bool
    src_ip: str = ""
    dst_ip: str = ""


@dataclass(frozen=True)
class CapturedProbe:
    """A probe found in a packet captured on the underlay."""

    outer_src: str
    outer_dst: str
    dst_port: int
    vni: int
    frame: ProbeFrame


def sender_id(node_name: str) -> bytes:
    """8 bytes naming a node in every marker (a hash, so any name length fits)."""
    return hashlib.blake2b(node_name.encode("utf-8"), digest_size=8).digest()


def build_marker(kind: str, seq: int, send_ns: int, sender: str) -> bytes:
    if kind not in KIND_CODES:
        raise FrameError(f"unknown probe kind {kind!r}")
    name = sender.encode("utf-8")[:MARKER_NAME_MAX_BYTES]
    return _MARKER_HEAD.pack(MARKER_MAGIC, MARKER_VERSION, KIND_CODES[kind], seq & 0xFFFFFFFF,
                             send_ns & 0xFFFFFFFFFFFFFFFF, sender_id(sender), len(name)) + name


def parse_marker(data: bytes) -> ProbeMarker | None:
    """The marker at the start of `data`, or None when it is not one of ours (any bytes are
    safe to pass: a stranger's packet, a truncated capture)."""
    if len(data) < _MARKER_HEAD.size or data[:4] != MARKER_MAGIC:
        return None
    magic, version, code, seq, send_ns, sid, name_len = _MARKER_HEAD.unpack_from(data)
    if version != MARKER_VERSION or code not in KIND_NAMES:
        return None
    end = _MARKER_HEAD.size + name_len
    if name_len > MARKER_NAME_MAX_BYTES or len(data) < end:
        return None
    name = bytes(data[_MARKER_HEAD.size:end]).decode("utf-8", errors="replace")
    return ProbeMarker(KIND_NAMES[code], seq, send_ns, bytes(sid), name)


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise FrameError(f"not a MAC address: {mac!r}") from None
    if len(raw) != 6 or any(len(p) not in (1, 2) for p in parts):
        raise FrameError(f"not a MAC address: {mac!r}")
    return raw


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement sum, as IPv4 and ICMP headers carry it."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_vxlan_header(vni: int) -> bytes:
    if not 0 <= vni < (1 << 24):
        raise FrameError(f"VNI out of range: {vni}")
    return struct.pack("!B3sI", VXLAN_FLAG_VNI, b"\0\0\0", vni << 8)


def build_vxlan_payload(vni: int, inner_frame: bytes) -> bytes:
    """The UDP payload of a VXLAN packet: header + inner Ethernet frame. Sent through a plain
    UDP socket, the kernel adds the outer IP/UDP (so no raw socket is needed to send)."""
    return build_vxlan_header(vni) + inner_frame


def build_ethernet(dst_mac: str, src_mac: str, ethertype: int, payload: bytes) -> bytes:
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ethertype) + payload


def build_wire_frame(dst_mac: str, src_mac: str, marker: bytes) -> bytes:
    return build_ethernet(dst_mac or UNKNOWN_PEER_MAC, src_mac, ETHERTYPE_PROBE, marker)


def build_ipv4(src_ip: str, dst_ip: str, proto: int, payload: bytes, ident: int = 0,
               df: bool = True, ttl: int = IPV4_TTL) -> bytes:
    total = IPV4_HEADER_BYTES + len(payload)
    if total > 0xFFFF:
        raise FrameError(f"IPv4 packet too large: {total}")
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF,
                         IPV4_FLAG_DF if df else 0, ttl, proto, 0,
                         ipaddress.IPv4Address(src_ip).packed,
                         ipaddress.IPv4Address(dst_ip).packed)
    csum = internet_checksum(header)
    return header[:10] + struct.pack("!H", csum) + header[12:] + payload


def build_icmp_echo(ident: int, seq: int, payload: bytes, reply: bool = False) -> bytes:
    icmp_type = ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST
    head = struct.pack("!BBHHH", icmp_type, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    csum = internet_checksum(head + payload)
    return head[:2] + struct.pack("!H", csum) + head[4:] + payload


def build_echo_frame(dst_mac: str, src_mac: str, src_ip: str, dst_ip: str, marker: bytes,
                     ident: int, seq: int, ip_total_len: int | None = None) -> bytes:
    """Ethernet/IPv4(DF)/ICMP echo carrying `marker`; with `ip_total_len` the payload is
    zero-padded so the inner IPv4 packet is exactly that long (the MTU probe)."""
    payload = marker
    if ip_total_len is not None:
        room = ip_total_len - IPV4_HEADER_BYTES - ICMP_HEADER_BYTES
        if room < len(marker):
            raise FrameError(f"MTU {ip_total_len} too small for the probe marker")
        payload = marker + b"\0" * (room - len(marker))
    icmp = build_icmp_echo(ident, seq, payload)
    ip = build_ipv4(src_ip, dst_ip, IPPROTO_ICMP, icmp, ident=seq, df=True)
    return build_ethernet(dst_mac or UNKNOWN_PEER_MAC, src_mac, ETHERTYPE_IPV4, ip)


def classify_probe_frame(frame: bytes) -> ProbeFrame | None:
    """An inner Ethernet frame -> the probe it carries, or None when it is not a probe of
    ours. Tolerates truncation after the marker (captures keep only the first bytes)."""
    if len(frame) < ETH_HEADER_BYTES:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == ETHERTYPE_PROBE:
        marker = parse_marker(frame[ETH_HEADER_BYTES:])
        return ProbeFrame(marker, is_reply=False) if marker else None
    if ethertype != ETHERTYPE_IPV4:
        return None
    return classify_probe_ipv4(frame[ETH_HEADER_BYTES:])


def classify_probe_ipv4(ip: bytes) -> ProbeFrame | None:
    """An IPv4 packet (as a raw ICMP socket reads it) -> the echo/MTU probe or reply in it."""
    parsed = _ipv4(ip)
    if parsed is None:
        return None
    proto, src, dst, ihl = parsed
    if proto != IPPROTO_ICMP or len(ip) < ihl + ICMP_HEADER_BYTES:
        return None
    icmp_type = ip[ihl]
    if icmp_type not in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY):
        return None
    marker = parse_marker(ip[ihl + ICMP_HEADER_BYTES:])
    if marker is None or marker.kind not in ("echo", "mtu"):
        return None
    return ProbeFrame(marker, is_reply=icmp_type == ICMP_ECHO_REPLY, src_ip=src, dst_ip=dst)


def classify_vxlan_packet(packet: bytes, vxlan_port: int | None = None) -> CapturedProbe | None:
    """A packet captured on the underlay (starting at its Ethernet header) -> the probe in its
    VXLAN payload, or None. `vxlan_port`, when given, must match the UDP destination port."""
    if len(packet) < ETH_HEADER_BYTES:
        return None
    offset = 12
    ethertype = struct.unpack_from("!H", packet, offset)[0]
    if ethertype == ETHERTYPE_VLAN and len(packet) >= 18:
        offset += 4
        ethertype = struct.unpack_from("!H", packet, offset)[0]
    if ethertype != ETHERTYPE_IPV4:
        return None
    ip = packet[offset + 2:]
    parsed = _ipv4(ip)
    if parsed is None:
        return None
    proto, src, dst, ihl = parsed
    frag = struct.unpack_from("!H", ip, 6)[0] & 0x1FFF
    if proto != IPPROTO_UDP or frag or len(ip) < ihl + UDP_HEADER_BYTES + VXLAN_HEADER_BYTES:
        return None
    dport = struct.unpack_from("!H", ip, ihl + 2)[0]
    if vxlan_port is not None and dport != vxlan_port:
        return None
    vx = ihl + UDP_HEADER_BYTES
    flags, vni_word = ip[vx], struct.unpack_from("!I", ip, vx + 4)[0]
    if not flags & VXLAN_FLAG_VNI:
        return None
    frame = classify_probe_frame(ip[vx + VXLAN_HEADER_BYTES:])
    if frame is None:
        return None
    return CapturedProbe(src, dst, dport, vni_word >> 8, frame)


def _ipv4(ip: bytes) -> tuple[int, str, str, int] | None:
    if len(ip) < IPV4_HEADER_BYTES or ip[0] >> 4 != 4:
        return None
    ihl = (ip[0] & 0x0F) * 4
    if ihl < IPV4_HEADER_BYTES or len(ip) < ihl:
        return None
    src = str(ipaddress.IPv4Address(bytes(ip[12:16])))
    dst = str(ipaddress.IPv4Address(bytes(ip[16:20])))
    return ip[9], src, dst, ihl
