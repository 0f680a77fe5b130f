"""Pure parts around the probes: peer MAC/IP from the local tables, the per-peer verdict, the
per-peer table, and where the one-shot takes the overlay from."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from agent.parsers.iproute_text import parse_bridge_fdb
from agent.probes.oneshot import overlay_from_outcomes
from agent.probes.peers import (FdbEntry, NeighbourEntry, choose_overlay, match_peer_overlay,
                                peers_from_tables)
from agent.probes.verdict import classify_peer_path, probe_status
from agent.render import render_node_report, render_probe_table
from agent.report import NodeInfo, NodeReport, OverlayDevice, ProbeResult, RttStats, SeenCount
from tests.conftest import read_fixture

# --- tables -----------------------------------------------------------------------------------

def test_peer_mac_and_vxlan_ip_from_a_real_flannel_fdb():
    fdb = parse_bridge_fdb(read_fixture("bridge-fdb/flannel1-two-peers-self-permanent.txt"),
                           "flannel.1")
    neigh = [NeighbourEntry("10.244.0.0", "e6:7d:c5:e2:80:1a"),
             NeighbourEntry("10.244.2.0", "3A:BB:55:60:BE:4E")]
    assert match_peer_overlay("172.80.0.3", fdb, neigh) == ("3a:bb:55:60:be:4e", "10.244.2.0")
    assert match_peer_overlay("172.80.0.2", fdb, neigh) == ("e6:7d:c5:e2:80:1a", "10.244.0.0")
    assert match_peer_overlay("172.80.0.9", fdb, neigh) == ("", "")


def test_flood_entries_are_no_peer_mac_and_missing_neighbour_keeps_the_mac():
    fdb = [FdbEntry("00:00:00:00:00:00", "10.0.0.2"), FdbEntry("01:00:5e:00:00:01", "10.0.0.2"),
           FdbEntry("aa:bb:cc:00:00:02", "10.0.0.2")]
    assert match_peer_overlay("10.0.0.2", fdb, []) == ("aa:bb:cc:00:00:02", "")
    assert match_peer_overlay("10.0.0.2", fdb[:2], []) == ("", "")


def test_peers_from_tables_cilium_style_has_no_vxlan_address():
    peers = peers_from_tables([("node2", "10.0.0.2"), ("node3", "10.0.0.3")],
                              [FdbEntry("aa:bb:cc:00:00:02", "10.0.0.2")],
                              [NeighbourEntry("10.244.2.0", "aa:bb:cc:00:00:02")])
    assert (peers[0].vxlan_mac, peers[0].vxlan_ip) == ("aa:bb:cc:00:00:02", "10.244.2.0")
    assert (peers[1].vxlan_mac, peers[1].vxlan_ip) == ("", "")


def test_choose_overlay_prefers_up_and_addressed():
    down = OverlayDevice("flannel.1", up=False, addresses=("10.244.1.0/32",))
    cilium = OverlayDevice("cilium_vxlan")
    flannel = OverlayDevice("flannel.1", addresses=("10.244.1.0/32",))
    assert choose_overlay([down, cilium, flannel]) is flannel
    assert choose_overlay([down, cilium]) is cilium
    assert choose_overlay([]) is None


@dataclass
class _Raw:
    underlay_ip: str

    def overlay_devices(self):
        return (OverlayDevice("flannel.1", vni=1, port=8472),)


@dataclass
class _Outcome:
    raw: object


def test_overlay_comes_from_the_vxlan_checks_raw_facts():
    devices, underlay = overlay_from_outcomes([_Outcome(None), _Outcome(_Raw("192.168.77.11"))])
    assert [d.name for d in devices] == ["flannel.1"] and underlay == "192.168.77.11"
    assert overlay_from_outcomes([]) == ((), "")


# --- verdicts ---------------------------------------------------------------------------------

def _r(kind, sent=3, answered=3, error="", peer="node2"):
    if kind == "wire":
        answered = None
    return ProbeResult(peer, "192.168.77.12", kind, sent, answered, error=error)


def _results(**answered):
    out = {"wire": _r("wire")}
    for kind in ("echo", "mtu", "udp-control", "tcp-control"):
        key = kind.replace("-", "_")
        if answered.get(key, 3) is not None:
            out[kind] = _r(kind, answered=answered.get(key, 3))
    return out


def test_status_of_each_shape():
    assert probe_status(None) == "n/a"
    assert probe_status(_r("wire")) == "sent"
    assert probe_status(_r("echo", answered=1)) == "partial"
    assert probe_status(_r("echo", answered=0)) == "lost"
    assert probe_status(_r("echo", sent=0, answered=0, error="needs CAP_NET_RAW")) == "error"


@pytest.mark.parametrize("answered,seen,expect", [
    ({}, {}, "VXLAN to node2 and back works"),
    ({"mtu": 0}, {}, "MTU black hole between here and node2"),
    ({"echo": 0, "mtu": 0, "udp_control": 0}, {},
     "all UDP between here and node2 is dropped, TCP passes"),
    ({"echo": 0, "mtu": 0}, {}, "the VXLAN port is blocked on the path; node2's capture tells "
                                "which way"),
    ({"echo": 0, "mtu": 0}, {"wire": 3}, "node2's own VXLAN probes do arrive here, so the drop "
                                         "is on the way to node2"),
    ({"echo": 0, "mtu": 0, "udp_control": 0, "tcp_control": 0}, {},
     "node2 is down or cut off"),
    ({"echo": None, "mtu": None}, {"wire": 3}, "wire probes only"),
    ({"echo": None, "mtu": None, "udp_control": 0}, {}, "UDP is blocked"),
])
def test_verdict_names_the_fault(answered, seen, expect):
    assert expect in classify_peer_path("node2", _results(**answered), seen, mtu=1450)


def test_verdict_refused_tcp_still_means_the_node_is_up():
    res = _results(echo=0, mtu=0, udp_control=0, tcp_control=0)
    res["tcp-control"] = _r("tcp-control", answered=0,
                            error="connection refused: 192.168.77.12 answered")
    assert "all UDP between here and node2 is dropped" in classify_peer_path("node2", res, {})


def test_verdict_says_when_probing_was_impossible():
    res = _results()
    res["echo"] = _r("echo", sent=0, answered=0, error="the capture needs CAP_NET_RAW")
    assert "could not probe node2: the capture needs CAP_NET_RAW" in \
        classify_peer_path("node2", res, {})


# --- the table --------------------------------------------------------------------------------

def _report(probes, seen=()):
    return NodeReport(node=NodeInfo("node1", "192.168.77.11", "6.1.0", "0.1.0"),
                      collected_at=0.0,
                      overlay=(OverlayDevice("flannel.1", vni=1, port=8472, mtu=1450),),
                      probes=tuple(probes), seen=tuple(seen))


def test_table_names_direction_for_udp_blocked():
    probes = [_r("wire"), _r("echo", answered=0), _r("mtu", answered=0),
              _r("udp-control", answered=0),
              ProbeResult("node2", "192.168.77.12", "tcp-control", 3, 3,
                          rtt_ms=RttStats(0.4, 0.5, 0.6))]
    text = render_probe_table(_report(probes, [SeenCount("node3", "192.168.77.13", "wire", 3)]))
    assert text.splitlines() == [
        'Probes from node1 (answered/sent; "seen here" = what node1\'s capture saw arrive '
        'from that peer)',
        "  node2 (192.168.77.12)",
        "    wire         sent 3, node2 saw ? (needs node2's capture); seen here from node2: 0",
        "    echo         LOST    0/3 (3 lost)",
        "    mtu          LOST    0/3 (3 lost)",
        "    udp-control  LOST    0/3 (3 lost)",
        "    tcp-control  OK      3/3  rtt 0.40/0.50/0.60 ms",
        "    => all UDP between here and node2 is dropped, TCP passes: a security group/ACL "
        "drops UDP (VXLAN included); node2's capture tells which way: saw our wire probes = "
        "node2's host firewall drops them, saw nothing = the fabric or a security group",
        "  Seen here from peers not probed this round:",
        "    node3 (192.168.77.13): wire 3",
    ]


def test_table_marks_echo_not_applicable_for_cilium_style_peer():
    text = render_probe_table(_report([_r("wire", peer="node4"), _r("udp-control", peer="node4"),
                                       _r("tcp-control", peer="node4")]))
    assert "echo         n/a (peer has no VXLAN address/MAC here)" in text
    assert "wire probes only (node4 has no VXLAN address known here)" in text


def test_node_report_shows_the_table_only_with_probes():
    assert "Probes from" not in render_node_report(_report([]))
    assert "Probes from node1" in render_node_report(_report([_r("wire")]))


def test_replies_seen_at_the_nic_but_not_the_stack_blame_this_node():
    from agent.probes.tally import ProbeTally, result_from_tally

    echo = result_from_tally(ProbeTally("node2", "192.168.77.12", "echo", sent=3, answered=3,
                                        replies_at_nic=3, replies_dropped_here=3))
    assert (echo.sent, echo.answered) == (3, 3)  # answered = reached this node, like `seen`
    assert "3 replies reached this node's NIC but not its stack" in echo.error
    res = _results()
    res["echo"] = echo
    assert "this node drops them: check this node's host firewall" in \
        classify_peer_path("node2", res, {})
    ok = result_from_tally(ProbeTally("node2", "192.168.77.12", "echo", sent=3, answered=3,
                                      replies_at_nic=3, replies_in_stack=3))
    assert ok.error == ""


def test_no_agent_on_the_peer_is_not_mistaken_for_udp_blocked():
    res = _results(echo=0, mtu=0, udp_control=0, tcp_control=0)
    res["udp-control"] = _r("udp-control", answered=0,
                            error="port unreachable: 192.168.77.12 answered (UDP reaches it)")
    res["tcp-control"] = _r("tcp-control", answered=0,
                            error="connection refused: 192.168.77.12 answered")
    assert probe_status(res["udp-control"]) == probe_status(res["tcp-control"]) == "refused"
    verdict = classify_peer_path("node2", res, {})
    assert "all UDP" not in verdict
    assert "node2 answers UDP and TCP (no agent there" in verdict
    assert "the VXLAN port is blocked on the path" in verdict
