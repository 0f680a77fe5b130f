"""Pure parts of the probes: frames, marker, classifier, BPF program, sampling, tallies.

scapy is used here only as an independent dissector: every frame we build by hand must read
back the same through scapy's layers.
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess

import pytest

from agent.probes import Peer, ProberConfig
from agent.probes.bpf import (CAPTURE_SNAPLEN_BYTES, attach_filter, build_udp_dst_port_filter,
                              parse_tcpdump_dd)
from agent.probes.frames import (ETHERTYPE_PROBE, FrameError, UNKNOWN_PEER_MAC,
                                 build_echo_frame, build_icmp_echo, build_ipv4, build_marker,
                                 build_vxlan_payload, build_wire_frame, classify_probe_frame,
                                 classify_vxlan_packet, internet_checksum, mac_bytes,
                                 parse_marker, sender_id)
from agent.probes.sampling import (ring_order, rounds_to_cover, select_peers,
                                   send_interval_s)
from agent.probes.tally import ProbeTally, result_from_tally, rtt_stats, seen_counts


@pytest.fixture(scope="module")
def scapy_layers():
    from scapy.config import conf

    conf.route_autoload = False   # do not read the routing table (see bench/probe_bench.py)
    conf.route6_autoload = False
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN

    return Ether, IP, UDP, ICMP, VXLAN


def _outer(payload: bytes, src="192.168.77.11", dst="192.168.77.12", dport=8472) -> bytes:
    """Outer Ethernet/IPv4/UDP as the peer's capture sees our UDP socket's datagram."""
    udp = (40000).to_bytes(2, "big") + dport.to_bytes(2, "big") + \
        (8 + len(payload)).to_bytes(2, "big") + b"\0\0" + payload
    ip = build_ipv4(src, dst, 17, udp, ident=7, df=True)
    return mac_bytes("aa:bb:cc:00:00:02") + mac_bytes("aa:bb:cc:00:00:01") + b"\x08\x00" + ip


# --- marker ---------------------------------------------------------------------------------

def test_marker_round_trips_kind_seq_time_and_sender():
    raw = build_marker("echo", 42, 123456789012, "node1")
    m = parse_marker(raw)
    assert m is not None
    assert (m.kind, m.seq, m.send_ns, m.sender) == ("echo", 42, 123456789012, "node1")
    assert m.sender_id == sender_id("node1") != sender_id("node2")


def test_marker_truncates_long_names_and_ignores_strangers():
    m = parse_marker(build_marker("wire", 1, 0, "n" * 300))
    assert m is not None and m.sender == "n" * 63
    assert parse_marker(b"") is None
    assert parse_marker(b"GET / HTTP/1.1\r\n\r\n" * 3) is None
    assert parse_marker(build_marker("wire", 1, 0, "node1")[:-2]) is None  # truncated name
    with pytest.raises(FrameError):
        build_marker("ping", 1, 0, "x")


def test_internet_checksum_of_rfc1071_example():
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert internet_checksum(data) == ~0xDDF2 & 0xFFFF


# --- frames against scapy --------------------------------------------------------------------

def test_wire_probe_parses_in_scapy_as_vxlan_with_the_vni(scapy_layers):
    Ether, IP, UDP, ICMP, VXLAN = scapy_layers
    marker = build_marker("wire", 7, 99, "node1")
    frame = build_wire_frame("ee:ed:39:ba:2e:bd", "a6:c0:b3:5f:86:71", marker)
    packet = _outer(build_vxlan_payload(4096, frame))
    pkt = Ether(packet)
    assert pkt[UDP].dport == 8472
    pkt = Ether(bytes(packet))
    vx = VXLAN(bytes(pkt[UDP].payload))
    assert vx.vni == 4096 and vx.flags & 0x08
    inner = Ether(bytes(vx.payload))
    assert inner.dst == "ee:ed:39:ba:2e:bd" and inner.src == "a6:c0:b3:5f:86:71"
    assert inner.type == ETHERTYPE_PROBE
    assert bytes(inner.payload).startswith(marker)


def test_echo_probe_is_a_valid_icmp_echo_with_df_in_scapy(scapy_layers):
    Ether, IP, UDP, ICMP, VXLAN = scapy_layers
    marker = build_marker("echo", 9, 5, "node1")
    frame = build_echo_frame("ee:ed:39:ba:2e:bd", "a6:c0:b3:5f:86:71", "10.244.1.0",
                             "10.244.2.0", marker, ident=0x1234, seq=9)
    pkt = Ether(frame)
    assert pkt[IP].src == "10.244.1.0" and pkt[IP].dst == "10.244.2.0"
    assert pkt[IP].flags.DF
    assert pkt[ICMP].type == 8 and pkt[ICMP].id == 0x1234 and pkt[ICMP].seq == 9
    # checksums as scapy computes them
    ip_ck, icmp_ck = pkt[IP].chksum, pkt[ICMP].chksum
    del pkt[IP].chksum, pkt[ICMP].chksum
    again = Ether(bytes(pkt))
    assert (again[IP].chksum, again[ICMP].chksum) == (ip_ck, icmp_ck)
    assert bytes(pkt[ICMP].payload) == marker


def test_mtu_probe_inner_packet_is_exactly_the_device_mtu(scapy_layers):
    Ether, IP, UDP, ICMP, VXLAN = scapy_layers
    marker = build_marker("mtu", 1, 0, "node1")
    frame = build_echo_frame("", "a6:c0:b3:5f:86:71", "10.244.1.0", "10.244.2.0", marker,
                             ident=1, seq=1, ip_total_len=1450)
    pkt = Ether(frame)
    assert pkt[IP].len == 1450 and len(frame) == 1450 + 14
    assert pkt.dst == UNKNOWN_PEER_MAC
    assert len(build_vxlan_payload(1, frame)) + 8 + 20 == 1500  # + outer UDP + IPv4
    with pytest.raises(FrameError):
        build_echo_frame("", "a6:c0:b3:5f:86:71", "10.244.1.0", "10.244.2.0", marker,
                         ident=1, seq=1, ip_total_len=40)


# --- classify --------------------------------------------------------------------------------

def test_classify_wire_probe_from_a_captured_packet():
    frame = build_wire_frame("", "a6:c0:b3:5f:86:71", build_marker("wire", 3, 1, "node1"))
    got = classify_vxlan_packet(_outer(build_vxlan_payload(1, frame)), vxlan_port=8472)
    assert got is not None
    assert (got.outer_src, got.outer_dst, got.dst_port, got.vni) == \
        ("192.168.77.11", "192.168.77.12", 8472, 1)
    assert got.frame.marker.kind == "wire" and got.frame.marker.seq == 3
    assert not got.frame.is_reply
    assert classify_vxlan_packet(_outer(build_vxlan_payload(1, frame)), vxlan_port=4789) is None


def test_classify_echo_reply_built_as_the_peer_kernel_would():
    marker = build_marker("echo", 11, 1000, "node1")
    icmp = build_icmp_echo(0x1234, 11, marker, reply=True)
    ip = build_ipv4("10.244.2.0", "10.244.1.0", 1, icmp)
    frame = mac_bytes("a6:c0:b3:5f:86:71") + mac_bytes("ee:ed:39:ba:2e:bd") + b"\x08\x00" + ip
    got = classify_vxlan_packet(_outer(build_vxlan_payload(1, frame),
                                       src="192.168.77.12", dst="192.168.77.11"))
    assert got is not None and got.frame.is_reply
    assert (got.frame.src_ip, got.frame.dst_ip) == ("10.244.2.0", "10.244.1.0")
    assert got.frame.marker.sender == "node1" and got.frame.marker.seq == 11


def test_classify_survives_truncation_to_the_capture_snaplen():
    marker = build_marker("mtu", 5, 1, "a-rather-long-node-name.eu-west-1.compute.internal")
    frame = build_echo_frame("", "a6:c0:b3:5f:86:71", "10.244.1.0", "10.244.2.0", marker,
                             ident=1, seq=5, ip_total_len=1450)
    packet = _outer(build_vxlan_payload(1, frame))[:CAPTURE_SNAPLEN_BYTES]
    got = classify_vxlan_packet(packet)
    assert got is not None and got.frame.marker.kind == "mtu"


@pytest.mark.parametrize("junk", [b"", b"\x00" * 13, b"\xff" * 64,
                                  bytes(14) + b"\x45" + bytes(40)])
def test_classify_returns_none_for_junk(junk):
    assert classify_vxlan_packet(junk) is None
    assert classify_probe_frame(junk) is None


def test_classify_ignores_real_vxlan_traffic_that_is_not_a_probe():
    icmp = build_icmp_echo(1, 1, b"abcdefgh" * 8)  # an ordinary pod ping
    ip = build_ipv4("10.244.1.5", "10.244.2.7", 1, icmp)
    frame = bytes(6) + bytes(6) + b"\x08\x00" + ip
    assert classify_vxlan_packet(_outer(build_vxlan_payload(1, frame))) is None


def test_classify_skips_a_vlan_tag():
    frame = build_wire_frame("", "a6:c0:b3:5f:86:71", build_marker("wire", 1, 1, "n1"))
    plain = _outer(build_vxlan_payload(1, frame))
    tagged = plain[:12] + b"\x81\x00\x00\x0a" + plain[12:]
    assert classify_vxlan_packet(tagged) is not None


# --- BPF -------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
@pytest.mark.parametrize("port", [8472, 4789])
def test_bpf_program_is_what_tcpdump_compiles(port):
    out = subprocess.run(["tcpdump", "-dd", "-s", str(CAPTURE_SNAPLEN_BYTES),
                          f"ip and udp dst port {port}"], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0, out.stderr
    assert build_udp_dst_port_filter(port) == parse_tcpdump_dd(out.stdout)


def test_bpf_program_attaches_to_a_socket():
    # SO_ATTACH_FILTER works on any socket; a UDP socket needs no privilege.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        attach_filter(s, build_udp_dst_port_filter(8472))
    with pytest.raises(ValueError):
        build_udp_dst_port_filter(0)


# --- sampling ---------------------------------------------------------------------------------

def _peers(n):
    return [Peer(f"node{i}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(n)]


@pytest.mark.parametrize("n,k", [(1, 16), (16, 16), (17, 16), (100, 16), (1000, 16), (5, 2)])
def test_every_peer_is_probed_within_ceil_n_over_k_rounds(n, k):
    peers = _peers(n)
    for start_round in (0, 7):
        covered = set()
        for r in range(start_round, start_round + math.ceil(n / k)):
            chosen = select_peers("nodeX", peers, r, k)
            assert len(chosen) == min(n, k)
            assert len({p.name for p in chosen}) == len(chosen)
            covered |= {p.name for p in chosen}
        assert covered == {p.name for p in peers}
    assert rounds_to_cover(n, k) == math.ceil(n / k)


def test_rotation_is_deterministic_and_differs_between_nodes():
    peers = _peers(50)
    assert select_peers("a", peers, 3) == select_peers("a", list(reversed(peers)), 3)
    assert [p.name for p in select_peers("node1", peers, 3)] != \
        [p.name for p in select_peers("node2", peers, 3)]


@pytest.mark.parametrize("n,k", [(17, 16), (200, 16), (1000, 16), (40, 8)])
def test_every_node_is_observed_by_k_peers_in_every_round(n, k):
    # The collector blames a node only when several senders agree: no node may go unobserved.
    nodes = _peers(n)
    for r in (0, 1, 5):
        observers = {p.name: 0 for p in nodes}
        for me in nodes:
            for p in select_peers(me.name, [q for q in nodes if q.name != me.name], r, k):
                observers[p.name] += 1
        assert set(observers.values()) == {k}


def test_removing_a_node_keeps_the_others_in_ring_order():
    names = [p.name for p in _peers(30)]
    before = ring_order(names)
    assert ring_order([n for n in names if n != "node4"]) == [n for n in before if n != "node4"]


def test_round_pacing_fits_budget():
    cfg = ProberConfig()
    packets = cfg.peers_per_round * cfg.probes_per_kind * len(cfg.kinds)
    assert packets * send_interval_s(cfg.packets_per_s) + cfg.reply_timeout_s < 2.0
    with pytest.raises(ValueError):
        send_interval_s(0)


# --- tallies ----------------------------------------------------------------------------------

def test_wire_tally_has_no_answered_and_errors_are_distinct():
    r = result_from_tally(ProbeTally("node2", "192.168.77.12", "wire", sent=3, answered=None,
                                     errors=["x", "x", "y"]))
    assert r.answered is None and r.error == "x; y" and r.rtt_ms is None


def test_echo_tally_rtt_stats():
    r = result_from_tally(ProbeTally("node2", "192.168.77.12", "echo", sent=3, answered=2,
                                     rtts_ms=[0.5, 0.25]))
    assert (r.sent, r.answered) == (3, 2)
    assert (r.rtt_ms.min, r.rtt_ms.avg, r.rtt_ms.max) == (0.25, 0.375, 0.5)
    assert rtt_stats([]) is None


def test_seen_counts_sorted_and_zero_dropped():
    seen = seen_counts({("node3", "10.0.0.3", "wire"): 3, ("node2", "10.0.0.2", "echo"): 3,
                        ("node2", "10.0.0.2", "wire"): 3, ("node4", "10.0.0.4", "mtu"): 0})
    assert [(s.peer, s.kind, s.count) for s in seen] == \
        [("node2", "wire", 3), ("node2", "echo", 3), ("node3", "wire", 3)]


def test_echo_reply_filter_attaches_and_classify_reads_a_raw_ipv4_reply():
    from agent.probes.bpf import build_echo_reply_filter
    from agent.probes.frames import MARKER_MAGIC, classify_probe_ipv4

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        attach_filter(s, build_echo_reply_filter(MARKER_MAGIC))
    marker = build_marker("mtu", 4, 1, "node1")
    ip = build_ipv4("10.244.2.0", "10.244.1.0", 1, build_icmp_echo(1, 4, marker, reply=True))
    got = classify_probe_ipv4(ip)
    assert got is not None and got.is_reply and got.marker.kind == "mtu"
    with pytest.raises(ValueError):
        build_echo_reply_filter(b"NDP")


# --- the capture filter, run on bytes by a small classic-BPF interpreter ----------------------

def run_bpf(program, packet: bytes) -> int:
    """Enough of the classic BPF machine (linux/filter.h) for our programs: returns the
    number of bytes the kernel would keep (0 = drop). Out-of-packet loads drop, as in the
    kernel."""
    a = x = 0
    pc = 0
    for _ in range(len(program) + 1):
        code, jt, jf, k = program[pc]
        pc += 1
        try:
            if code == 0x28:
                a = int.from_bytes(_at(packet, k, 2), "big")
            elif code == 0x30:
                a = packet[k]
            elif code == 0x48:
                a = int.from_bytes(_at(packet, x + k, 2), "big")
            elif code == 0x40:
                a = int.from_bytes(_at(packet, x + k, 4), "big")
            elif code == 0x50:
                a = packet[x + k]
            elif code == 0xB1:
                x = 4 * (packet[k] & 0x0F)
            elif code == 0x15:
                pc += jt if a == k else jf
            elif code == 0x45:
                pc += jt if a & k else jf
            elif code == 0x06:
                return k
            else:
                raise AssertionError(f"opcode {code:#x} not modelled")
        except IndexError:
            return 0
    raise AssertionError("program did not return")


def _at(packet: bytes, off: int, n: int) -> bytes:
    if off + n > len(packet):
        raise IndexError
    return packet[off:off + n]


def test_probe_capture_filter_keeps_probes_and_replies_only():
    from agent.probes.bpf import build_probe_capture_filter
    from agent.probes.frames import MARKER_MAGIC

    prog = build_probe_capture_filter(8472, MARKER_MAGIC)
    wire = _outer(build_vxlan_payload(1, build_wire_frame(
        "", "a6:c0:b3:5f:86:71", build_marker("wire", 1, 1, "node1"))))
    echo = _outer(build_vxlan_payload(1, build_echo_frame(
        "", "a6:c0:b3:5f:86:71", "10.244.1.0", "10.244.2.0",
        build_marker("mtu", 1, 1, "node1"), ident=1, seq=1, ip_total_len=1450)))
    marker = build_marker("echo", 2, 1, "node1")
    reply_ip = build_ipv4("10.244.2.0", "10.244.1.0", 1, build_icmp_echo(1, 2, marker, True))
    reply = _outer(build_vxlan_payload(1, bytes(12) + b"\x08\x00" + reply_ip))
    pod_ping = _outer(build_vxlan_payload(1, bytes(12) + b"\x08\x00" + build_ipv4(
        "10.244.1.5", "10.244.2.7", 1, build_icmp_echo(1, 1, b"x" * 56))))
    for packet in (wire, echo, reply):
        assert run_bpf(prog, packet) == CAPTURE_SNAPLEN_BYTES
    assert run_bpf(prog, pod_ping) == 0                              # real overlay traffic
    assert run_bpf(prog, _outer(build_vxlan_payload(1, b""), dport=8472)) == 0  # short
    assert run_bpf(prog, _outer(build_vxlan_payload(1, wire[50:]), dport=4789)) == 0
    # the plain port filter (what tcpdump compiles) keeps all VXLAN, probes or not
    plain = build_udp_dst_port_filter(8472)
    assert run_bpf(plain, pod_ping) == CAPTURE_SNAPLEN_BYTES
    assert run_bpf(plain, _outer(b"x" * 20, dport=53)) == 0


def test_echo_reply_filter_keeps_only_our_replies():
    from agent.probes.bpf import build_echo_reply_filter
    from agent.probes.frames import MARKER_MAGIC

    prog = build_echo_reply_filter(MARKER_MAGIC)
    marker = build_marker("echo", 2, 1, "node1")
    ours = build_ipv4("10.244.2.0", "10.244.1.0", 1, build_icmp_echo(1, 2, marker, True))
    request = build_ipv4("10.244.2.0", "10.244.1.0", 1, build_icmp_echo(1, 2, marker))
    other = build_ipv4("10.244.2.0", "10.244.1.0", 1, build_icmp_echo(1, 2, b"x" * 56, True))
    assert run_bpf(prog, ours) == CAPTURE_SNAPLEN_BYTES
    assert run_bpf(prog, request) == 0 and run_bpf(prog, other) == 0


# --- the pure modules stay pure; the round plan ----------------------------------------------

PURE_PROBE_MODULES = ("frames", "sampling", "tally", "peers", "verdict")


@pytest.mark.parametrize("module", PURE_PROBE_MODULES)
def test_pure_probe_modules_do_no_io(module):
    import ast
    from pathlib import Path

    from tests.test_layers import FORBIDDEN

    path = Path(__file__).parent.parent / "agent" / "probes" / f"{module}.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert not names & (FORBIDDEN - {"agent"}), f"{module} imports {names & FORBIDDEN}"


def _prober(overlay=None, **cfg):
    from agent.probes.prober import Prober
    from agent.report import OverlayDevice

    overlay = overlay or OverlayDevice("flannel.1", vni=1, port=8472, mtu=1450,
                                       mac="0e:00:00:00:00:01", addresses=("10.244.1.0/32",))
    return Prober("node1", overlay, "192.168.77.11", "eth0", ProberConfig(**cfg))


def test_plan_skips_echo_for_peers_without_vxlan_address_and_excludes_self():
    flannel = Peer("node2", "192.168.77.12", vxlan_ip="10.244.2.0", vxlan_mac="0e:00:00:00:00:02")
    cilium = Peer("node3", "192.168.77.13")
    me = Peer("node1", "192.168.77.11", vxlan_ip="10.244.1.0", vxlan_mac="0e:00:00:00:00:01")
    plans = {p.peer.name: p.kinds for p in _prober().plan([flannel, cilium, me])}
    assert set(plans) == {"node2", "node3"}
    assert plans["node2"] == ["wire", "echo", "udp-control", "tcp-control", "mtu"]
    assert plans["node3"] == ["wire", "udp-control", "tcp-control"]


def test_plan_without_own_vxlan_address_sends_wire_only():
    from agent.report import OverlayDevice

    cilium_here = OverlayDevice("cilium_vxlan", port=8472, mac="0e:00:00:00:00:01")
    peer = Peer("node2", "192.168.77.12", vxlan_ip="10.244.2.0", vxlan_mac="0e:00:00:00:00:02")
    assert _prober(cilium_here).plan([peer])[0].kinds == ["wire", "udp-control", "tcp-control"]


def test_plan_takes_at_most_k_peers_and_rotates():
    peers = [Peer(f"n{i}", f"10.0.0.{i}") for i in range(2, 12)]
    prober = _prober(peers_per_round=4)
    first = [p.peer.name for p in prober.plan(peers)]
    assert len(first) == 4
    prober._round_no += 1
    second = [p.peer.name for p in prober.plan(peers)]
    assert not set(first) & set(second)


def test_run_round_before_start_is_a_clear_error():
    with pytest.raises(RuntimeError, match="before start"):
        _prober().run_round([])
