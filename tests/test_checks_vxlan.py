"""The VXLAN check: gather replaying recorded netlink dumps, evaluate per finding id, and the
text path `netdiag analyze` uses giving the same verdicts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from agent.checks import vxlan
from agent.checks.base import CheckContext, run_check
from agent.host import Host
from agent.node import build_node_report
from agent.parsers.link_types import LinkState
from agent.report import NodeInfo, Severity
from tests.conftest import read_fixture

CTX = CheckContext(node="n1")


class RecordedMsg:
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def dump(self) -> dict[str, Any]:
        return self._data


class RecordedNetlink:
    """Answers the IPRoute calls gather makes from a recorded fixture."""

    def __init__(self, data: dict[str, list]) -> None:
        self.data = data

    def _msgs(self, key: str) -> list[RecordedMsg]:
        return [RecordedMsg(m) for m in self.data[key]]

    def get_links(self):
        return self._msgs("links")

    def get_addr(self, family: int):
        return self._msgs("addresses")

    def get_routes(self, family: int):
        return self._msgs("routes")

    def get_neighbours(self, family: int):
        return self._msgs("fdb" if family == vxlan.AF_BRIDGE else "neighbours")


class RecordedHost(Host):
    def __init__(self, tmp_path: Path, fixture: str, snmp: list[str] | None = None,
                 offload: bool = True) -> None:
        super().__init__(root=tmp_path, proc=tmp_path / "proc", sys=tmp_path / "sys")
        self.recorded = RecordedNetlink(json.loads(read_fixture(f"netlink-vxlan/{fixture}")))
        self.snmp = list(snmp or ["0"])
        self.offload = offload
        self.ethtool_calls: list[str] = []

    def netlink(self):
        return self.recorded

    def read_proc(self, rel: str, limit: int = 1 << 20) -> str:
        assert rel == "net/snmp"
        value = self.snmp.pop(0) if len(self.snmp) > 1 else self.snmp[0]
        return ("Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors "
                "InCsumErrors IgnoredMulti\n"
                f"Udp: 3251496 356 0 3251774 0 0 {value} 0\n")

    def ethtool_features(self, ifname: str) -> dict[str, bool]:
        self.ethtool_calls.append(ifname)
        return {"tx-checksum-ip-generic": self.offload, "tx-checksum-ipv4": False}


def findings(host: Host):
    facts = vxlan.gather(host, CTX)
    return facts, vxlan.evaluate(facts, CTX)


def worst(fs, fid):
    return [f for f in fs if f.id == fid]


def test_healthy_flannel_node_reports_device_ok_and_fills_overlay(tmp_path: Path) -> None:
    host = RecordedHost(tmp_path, "flannel-two-peers-healthy.json")
    facts, fs = findings(host)
    assert [(f.id, f.severity) for f in fs] == [("vxlan.device-down", Severity.OK)]
    assert facts.underlay_ip == "172.80.0.4"
    [dev] = facts.overlay_devices()
    assert (dev.name, dev.vni, dev.port, dev.local, dev.parent, dev.mtu, dev.up) == \
        ("flannel.1", 1, 8472, "172.80.0.4", "eth0", 1450, True)
    assert dev.addresses == ("10.244.1.0/32",) and dev.mac == "8a:38:e9:13:05:a3"
    assert vxlan.summarize(facts) == {"vxlan": {"flannel.1": {"vni": 1, "port": 8472,
                                                              "mtu": 1450}}}
    assert host.ethtool_calls == []  # zero checksum errors: offload not even read


def test_node_report_carries_overlay_and_underlay(tmp_path: Path) -> None:
    host = RecordedHost(tmp_path, "flannel-two-peers-healthy.json")
    outcome = run_check(vxlan, host, CTX)
    report = build_node_report(NodeInfo("n1", outcome.raw.underlay_ip), [outcome], 0.0)
    assert report.overlay[0].name == "flannel.1" and report.node.underlay_ip == "172.80.0.4"
    assert report.facts["vxlan"]["flannel.1"]["vni"] == 1


def test_device_down_is_an_error(tmp_path: Path) -> None:
    facts, fs = findings(RecordedHost(tmp_path, "flannel-device-down.json"))
    [down] = worst(fs, "vxlan.device-down")
    assert down.severity == Severity.ERROR and "admin DOWN, operstate DOWN" in down.evidence
    assert facts.overlay_devices()[0].up is False


def test_parent_mtu_lowered_and_fdb_gap_are_errors(tmp_path: Path) -> None:
    _, fs = findings(RecordedHost(tmp_path, "flannel-fdb-gap-parent-mtu-lowered.json"))
    [mtu] = worst(fs, "vxlan.mtu-too-large")
    assert mtu.severity == Severity.ERROR
    assert mtu.evidence.startswith("flannel.1 mtu 1450 > eth0 mtu 1400 - 50 = 1350")
    [gap] = worst(fs, "vxlan.fdb-missing-peer")
    assert gap.severity == Severity.ERROR and "1 of 2 route(s)" in gap.title
    assert gap.evidence == ("route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink: neighbour "
                            "10.244.2.0 dev flannel.1 lladdr 3a:bb:55:60:be:4e PERMANENT; no FDB "
                            "entry 3a:bb:55:60:be:4e dev flannel.1 dst <node>")
    assert "172.80.0.2" not in gap.evidence  # the healthy peer is not blamed


def _healthy_state() -> LinkState:
    facts = vxlan.gather(RecordedHost(Path("/nonexistent"), "flannel-two-peers-healthy.json"),
                         CTX)
    return facts.state


def test_missing_or_non_permanent_neighbour_is_a_gap() -> None:
    state = _healthy_state()
    assert state.neighbours is not None
    no_neigh = dataclasses.replace(state, neighbours=tuple(
        n for n in state.neighbours if n.ip != "10.244.0.0"))
    [gap] = worst(vxlan.evaluate_link_state(no_neigh, "n1"), "vxlan.fdb-missing-peer")
    assert "route 10.244.0.0/24 via 10.244.0.0 dev flannel.1 onlink: no neighbour entry" \
        in gap.evidence
    stale = dataclasses.replace(state, neighbours=tuple(
        dataclasses.replace(n, permanent=False, state="STALE") for n in state.neighbours))
    [gap] = worst(vxlan.evaluate_link_state(stale, "n1"), "vxlan.fdb-missing-peer")
    assert gap.title.startswith("flannel.1: 2 of 2") and "STALE is not PERMANENT" in gap.evidence


def test_fdb_entry_without_dst_is_a_gap() -> None:
    state = _healthy_state()
    assert state.fdb is not None
    no_dst = dataclasses.replace(state, fdb=tuple(
        dataclasses.replace(e, dst="") if e.mac == "e6:7d:c5:e2:80:1a" else e for e in state.fdb))
    [gap] = worst(vxlan.evaluate_link_state(no_dst, "n1"), "vxlan.fdb-missing-peer")
    assert "(entry without dst: e6:7d:c5:e2:80:1a dev flannel.1 self permanent)" in gap.evidence


def test_no_vxlan_device_is_info_and_underlay_from_default_route() -> None:
    state = _healthy_state()
    plain = LinkState(tuple(x for x in state.links if x.vxlan is None), state.routes, None, None)
    fs = vxlan.evaluate_link_state(plain, "n1")
    assert [(f.id, f.severity) for f in fs] == [("vxlan.no-device", Severity.INFO)]
    assert vxlan.underlay_address(plain) == "172.80.0.4"


def test_rising_checksum_errors_with_offload_on_warn_with_the_fix(tmp_path: Path) -> None:
    host = RecordedHost(tmp_path, "flannel-two-peers-healthy.json", snmp=["7", "12"])
    _, fs = findings(host)
    [csum] = worst(fs, "vxlan.checksum-offload-suspect")
    assert csum.severity == Severity.WARNING
    assert "InCsumErrors 7 -> 12 in 0.2s" in csum.evidence
    assert csum.remediation.startswith("ethtool -K flannel.1 tx-checksum-ip-generic off")
    assert host.ethtool_calls == ["flannel.1"]


def test_flat_checksum_errors_are_info_and_offload_off_is_silent(tmp_path: Path) -> None:
    _, fs = findings(RecordedHost(tmp_path, "flannel-two-peers-healthy.json", snmp=["7", "7"]))
    [csum] = worst(fs, "vxlan.checksum-offload-suspect")
    assert csum.severity == Severity.INFO and "did not rise" in csum.evidence
    _, fs = findings(RecordedHost(tmp_path, "flannel-two-peers-healthy.json", snmp=["7", "9"],
                                  offload=False))
    assert worst(fs, "vxlan.checksum-offload-suspect") == []


def test_ipv6_underlay_allows_70_bytes_overhead() -> None:
    state = _healthy_state()
    links = []
    for link in state.links:
        if link.vxlan is not None:
            link = dataclasses.replace(link, mtu=1440, vxlan=dataclasses.replace(
                link.vxlan, local="fd00::4"))
        links.append(link)
    [mtu] = worst(vxlan.evaluate_link_state(dataclasses.replace(state, links=tuple(links)), "n1"),
                  "vxlan.mtu-too-large")
    assert "eth0 mtu 1500 - 70 = 1430" in mtu.evidence


# --- the text path (netdiag analyze) -----------------------------------------------------------

def test_text_analysis_healthy_paste_is_ok() -> None:
    fs = vxlan.evaluate_iproute_text(
        read_fixture("vxlan-link/flannel1-kind-worker-ipvs-mode-healthy.txt"),
        read_fixture("bridge-fdb/flannel1-two-peers-self-permanent.txt"), "k8s-worker",
        fdb_dev="flannel.1")
    assert [(f.id, f.severity) for f in fs] == [("vxlan.device-down", Severity.OK)]


def test_text_analysis_same_findings_as_netlink_for_down_and_mtu() -> None:
    text = ("7: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1400 qdisc noqueue state UP\n"
            "    link/ether 5a:52:e9:7c:8b:6a brd ff:ff:ff:ff:ff:ff\n"
            + read_fixture("vxlan-link/flannel1-kind-worker-ipvs-mode-healthy.txt")
            .replace("<BROADCAST,MULTICAST,UP,LOWER_UP>", "<BROADCAST,MULTICAST>")
            .replace("state UNKNOWN", "state DOWN"))
    fs = vxlan.evaluate_iproute_text(text, node="k8s-worker")
    assert {(f.id, f.severity) for f in fs} == {("vxlan.device-down", Severity.ERROR),
                                                ("vxlan.mtu-too-large", Severity.ERROR)}
