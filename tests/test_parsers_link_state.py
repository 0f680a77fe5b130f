"""Parsers of link state: pyroute2 netlink dumps (recorded in a lab namespace), pasted
`ip -d link show` / `bridge fdb show` text (real published output), and /proc/net/snmp."""

from __future__ import annotations

import json

import pytest

from agent.parsers.iproute_text import IprouteTextError, parse_bridge_fdb, parse_ip_link_details
from agent.parsers.link_types import FdbEntry, Neighbour, Route, VxlanInfo
from agent.parsers.netlink_vxlan import (link_names, nud_state_name, parse_netlink_addresses,
                                         parse_netlink_fdb, parse_netlink_links,
                                         parse_netlink_neighbours, parse_netlink_routes)
from agent.parsers.snmp import parse_proc_net_snmp, udp_in_csum_errors
from tests.conftest import read_fixture


def netlink(name: str) -> dict:
    return json.loads(read_fixture(f"netlink-vxlan/{name}"))


# --- netlink ---------------------------------------------------------------------------------

def test_netlink_vxlan_link_has_vni_port_local_parent_mtu_mac_address() -> None:
    d = netlink("flannel-two-peers-healthy.json")
    links = parse_netlink_links(d["links"], parse_netlink_addresses(d["addresses"]))
    by_name = {link.name: link for link in links}
    assert set(by_name) == {"lo", "eth0", "eth0p", "flannel.1"}
    fl = by_name["flannel.1"]
    assert fl.kind == "vxlan" and fl.mtu == 1450 and fl.admin_up and fl.operstate == "UNKNOWN"
    assert fl.mac == "8a:38:e9:13:05:a3" and fl.addresses == ("10.244.1.0/32",)
    assert fl.vxlan == VxlanInfo(vni=1, port=8472, local="172.80.0.4", parent="eth0",
                                 learning=False, udp_csum=True)
    assert not fl.is_down
    assert by_name["eth0"].vxlan is None and by_name["eth0"].addresses == ("172.80.0.4/24",)


def test_netlink_routes_neighbours_fdb_resolve_device_names() -> None:
    d = netlink("flannel-two-peers-healthy.json")
    names = link_names(parse_netlink_links(d["links"]))
    routes = parse_netlink_routes(d["routes"], names)
    assert Route("10.244.2.0/24", "10.244.2.0", "flannel.1", onlink=True) in routes
    assert Route("default", "172.80.0.1", "eth0") in routes
    assert all(r.table != 255 for r in routes)  # local/broadcast routes are not unicast
    neigh = parse_netlink_neighbours(d["neighbours"], names)
    assert Neighbour("10.244.2.0", "3a:bb:55:60:be:4e", "flannel.1", True, "PERMANENT") in neigh
    fdb = [e for e in parse_netlink_fdb(d["fdb"], names) if e.dev == "flannel.1"]
    assert FdbEntry("3a:bb:55:60:be:4e", "flannel.1", "172.80.0.3", True, True) in fdb
    assert len(fdb) == 2


def test_netlink_down_link_is_down() -> None:
    d = netlink("flannel-device-down.json")
    fl = next(x for x in parse_netlink_links(d["links"]) if x.name == "flannel.1")
    assert fl.is_down and not fl.admin_up and fl.operstate == "DOWN"


def test_nud_state_names() -> None:
    assert nud_state_name(0x80) == "PERMANENT"
    assert nud_state_name(0xC0) == "NOARP|PERMANENT"
    assert nud_state_name(0) == "NONE"


# --- ip -d link show ---------------------------------------------------------------------------

@pytest.mark.parametrize("fixture, name, vni, port, local, parent, mtu, addresses", [
    ("calico-vxlan-aws-jumbo-mtu-8951.txt", "vxlan.calico", 4096, 4789, "10.0.2.200", "ens5",
     8951, ("10.244.97.0/32",)),
    ("flannel1-aws-jumbo-mtu-8951.txt", "flannel.1", 1, 8472, "10.0.2.200", "ens5", 8951,
     ("10.244.1.0/32",)),
    ("flannel1-gce-mtu-1410-old-iproute2.txt", "flannel.1", 1, 8472, "10.146.0.2", "ens4", 1410,
     ()),
    ("flannel1-kind-worker-ipvs-mode-healthy.txt", "flannel.1", 1, 8472, "172.80.0.4", "eth0",
     1450, ()),
])
def test_ip_link_details_vxlan(fixture, name, vni, port, local, parent, mtu, addresses) -> None:
    [link] = parse_ip_link_details(read_fixture(f"vxlan-link/{fixture}"))
    assert (link.name, link.kind, link.mtu, link.addresses) == (name, "vxlan", mtu, addresses)
    assert link.vxlan is not None
    assert (link.vxlan.vni, link.vxlan.port, link.vxlan.local, link.vxlan.parent) == \
        (vni, port, local, parent)
    assert link.admin_up and link.lower_up and link.operstate == "UNKNOWN"
    assert link.vxlan.learning is False


def test_ip_link_names_strip_peer_suffix_and_read_down_state() -> None:
    text = ("7: eth0@if6: <BROADCAST,MULTICAST> mtu 1500 qdisc noqueue state DOWN mode DEFAULT\n"
            "    link/ether 5a:52:e9:7c:8b:6a brd ff:ff:ff:ff:ff:ff promiscuity 0\n"
            "    veth addrgenmode eui64\n")
    [link] = parse_ip_link_details(text)
    assert (link.name, link.kind, link.admin_up, link.operstate) == ("eth0", "veth", False, "DOWN")
    assert link.is_down


def test_ip_link_garbage_is_a_clear_error() -> None:
    with pytest.raises(IprouteTextError, match="expected `ip -d link show` output"):
        parse_ip_link_details("Chain INPUT (policy ACCEPT)\n")
    assert parse_ip_link_details("") == []


# --- bridge fdb show ---------------------------------------------------------------------------

def test_bridge_fdb_filtered_by_device_takes_dev_from_caller() -> None:
    entries = parse_bridge_fdb(read_fixture("bridge-fdb/flannel1-two-peers-self-permanent.txt"),
                               default_dev="flannel.1")
    assert entries == [FdbEntry("e6:7d:c5:e2:80:1a", "flannel.1", "172.80.0.2", True, True),
                       FdbEntry("3a:bb:55:60:be:4e", "flannel.1", "172.80.0.3", True, True)]


def test_bridge_fdb_dev_from_pasted_command_line() -> None:
    text = "$ bridge fdb show dev flannel.1\n" + read_fixture(
        "bridge-fdb/k3s-1719-flannel1-fdb-stale-vtep-mac.txt")
    assert parse_bridge_fdb(text) == [
        FdbEntry("d6:ad:6b:77:37:eb", "flannel.1", "192.168.1.73", True, True)]


def test_bridge_fdb_unfiltered_old_syntax() -> None:
    entries = parse_bridge_fdb(
        read_fixture("bridge-fdb/flannel-203-unfiltered-fdb-no-flannel1-entries.txt"))
    assert len(entries) == 9 and not any(e.dev == "flannel.1" for e in entries)
    learned = [e for e in entries if not e.permanent]
    assert [(e.mac, e.dev, e.self_) for e in learned] == [("02:42:c0:a8:d0:02", "veth603752d",
                                                           False)]


def test_bridge_fdb_garbage_is_a_clear_error() -> None:
    with pytest.raises(IprouteTextError, match="expected `bridge fdb show` output"):
        parse_bridge_fdb("hello world\n")


# --- /proc/net/snmp -----------------------------------------------------------------------------

def test_snmp_udp_counters_from_published_paste() -> None:
    tables = parse_proc_net_snmp(read_fixture(
        "proc-net-snmp/arthurchiao-udp-lines-noports-no-bufferrors.txt"))
    assert tables["Udp"]["InDatagrams"] == 3251496 and tables["Udp"]["NoPorts"] == 356
    assert udp_in_csum_errors(tables) == 0
    assert tables["UdpLite"]["InCsumErrors"] == 0


def test_snmp_old_kernel_without_csum_column() -> None:
    text = ("Udp: InDatagrams NoPorts InErrors OutDatagrams\n"
            "Udp: 10 0 2 11\n")
    assert udp_in_csum_errors(parse_proc_net_snmp(text)) is None
