"""The namespace lab itself: healthy pods reach each other over VXLAN, each fault breaks
exactly what it should, and clear() restores it. Real kernel networking; needs root."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.lab import cluster
from tests.lab.cluster import FAULTS, Lab
from tests.lab.netns import LabError, list_lab_namespaces

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parent.parent
TCP_PORT = 9100
UDP_PORT = 9101
HAIRPIN_VIP = "10.96.0.99"
HAIRPIN_PORT = 80
HAIRPIN_TARGET_PORT = 9102
#: The lab answers in well under a millisecond: half a second is a generous "no answer".
T = 0.5


@pytest.fixture(scope="module")
def lab(lab4: Lab) -> Iterator[Lab]:
    """lab4 with a TCP server and a UDP echo on node2's underlay, a TCP server in node2's
    pod and a hairpin Service VIP on node2 pointing at it."""
    try:
        lab4.add_service("node2", HAIRPIN_VIP, HAIRPIN_PORT, HAIRPIN_TARGET_PORT)
    except LabError as e:
        pytest.skip(str(e))
    with lab4.server("node2", "tcp", TCP_PORT), lab4.server("node2", "udp", UDP_PORT), \
            lab4.server("node2/pod", "tcp", HAIRPIN_TARGET_PORT):
        yield lab4


#: What each probe does; every fault test names the probes it expects to fail and to pass.
PROBES: dict[str, Callable[[Lab], bool]] = {
    "pod1->pod2": lambda lab: lab.ping("node1/pod", lab.pod_ip("node2"), timeout=T),
    "pod2->pod1": lambda lab: lab.ping("node2/pod", lab.pod_ip("node1"), timeout=T),
    "pod1->pod3": lambda lab: lab.ping("node1/pod", lab.pod_ip("node3"), timeout=T),
    "pod3->pod4": lambda lab: lab.ping("node3/pod", lab.pod_ip("node4"), timeout=T),
    "pod4->pod2": lambda lab: lab.ping("node4/pod", lab.pod_ip("node2"), timeout=T),
    "pod1->pod2 1400 DF": lambda lab: lab.ping("node1/pod", lab.pod_ip("node2"), size=1400,
                                               df=True, timeout=T),
    "node1->node2 tcp": lambda lab: lab.tcp_connect("node1", lab.node("node2").underlay_ip,
                                                    TCP_PORT, timeout=T),
    "node1->node2 udp": lambda lab: lab.udp_ask("node1", lab.node("node2").underlay_ip,
                                                UDP_PORT, timeout=T),
    "pod1->node2 underlay": lambda lab: lab.ping("node1/pod", lab.node("node2").underlay_ip,
                                                 timeout=T),
    "pod2->own VIP": lambda lab: lab.tcp_connect("node2/pod", HAIRPIN_VIP, HAIRPIN_PORT,
                                                 timeout=T),
}

# fault, target, probes that must fail, probes that must still work
CASES = [
    ("fabric-drop-udp-8472-in", "node2", ["pod1->pod2", "pod2->pod1"],
     ["pod1->pod3", "node1->node2 tcp", "node1->node2 udp"]),
    ("fabric-drop-udp-in", "node2", ["pod1->pod2", "node1->node2 udp"],
     ["pod1->pod3", "node1->node2 tcp"]),
    ("fabric-drop-udp-8472-out", "node2", ["pod2->pod1", "pod1->pod2"],
     ["pod1->pod3", "node1->node2 udp"]),
    ("fabric-mtu-blackhole-in", "node2", ["pod1->pod2 1400 DF"],
     ["pod1->pod2", "pod1->pod3", "node1->node2 tcp"]),
    ("partition", ["node1", "node2"], ["pod1->pod3", "pod4->pod2"],
     ["pod1->pod2", "pod3->pod4", "node1->node2 tcp"]),
    ("host-firewall-drop-8472", "node2", ["pod1->pod2", "pod2->pod1"],
     ["pod1->pod3", "node1->node2 udp", "node1->node2 tcp"]),
    ("rp-filter-strict", "node2", ["pod1->node2 underlay"], ["pod1->pod2", "pod2->pod1"]),
    ("hairpin-off", "node2", ["pod2->own VIP"], ["pod1->pod2", "pod2->pod1"]),
    ("ip-forward-off", "node2", ["pod1->pod2", "pod2->pod1"],
     ["pod1->pod3", "node1->node2 tcp"]),
    ("forward-drop", "node2", ["pod1->pod2", "pod2->pod1"], ["pod1->pod3", "node1->node2 tcp"]),
    ("vxlan-down", "node2", ["pod1->pod2", "pod2->pod1"], ["pod1->pod3", "node1->node2 tcp"]),
    ("vxlan-port-mismatch", "node2", ["pod1->pod2", "pod2->pod1"],
     ["pod1->pod3", "node1->node2 udp"]),
    ("vni-mismatch", "node2", ["pod1->pod2", "pod2->pod1"], ["pod1->pod3", "pod3->pod4"]),
]


def test_every_fault_has_a_lab_test() -> None:
    assert sorted(c[0] for c in CASES) == sorted(FAULTS)


def test_pods_reach_each_other_across_vxlan_when_healthy(lab: Lab) -> None:
    broken = [name for name, probe in PROBES.items() if not probe(lab)]
    assert not broken, f"healthy lab: {broken} failed"


@pytest.mark.parametrize("fault,target,fails,works", CASES, ids=[c[0] for c in CASES])
def test_fault_breaks_exactly_what_it_should_and_clear_restores(
        lab: Lab, fault: str, target: str | list[str], fails: list[str],
        works: list[str]) -> None:
    lab.inject(fault, target)
    try:
        broken_too_little = [p for p in fails if PROBES[p](lab)]
        broken_too_much = [p for p in works if not PROBES[p](lab)]
    finally:
        lab.clear(fault, target)
    assert not broken_too_little, f"{fault}: these still work: {broken_too_little}"
    assert not broken_too_much, f"{fault}: these broke too: {broken_too_much}"
    not_restored = [p for p in fails if not PROBES[p](lab)]
    assert not not_restored, f"{fault} cleared but still broken: {not_restored}"


def test_fabric_faults_are_nft_bridge_tables_in_the_fabric_only(lab: Lab) -> None:
    lab.inject("fabric-drop-udp-8472-in", "node2")
    try:
        tables = lab.fabric.exec(["nft", "list", "tables"]).stdout
        assert "table bridge nd_fabric_drop_udp_8472_in_node2" in tables
        ruleset = lab.fabric.exec(["nft", "list", "ruleset"]).stdout
        assert f'oifname "{lab.node("node2").fabric_port}" udp dport 8472 drop' in ruleset
    finally:
        lab.clear("fabric-drop-udp-8472-in", "node2")
    assert "nd_fabric" not in lab.fabric.exec(["nft", "list", "tables"]).stdout


def test_unknown_fault_or_node_is_a_clear_error(lab: Lab) -> None:
    with pytest.raises(LabError, match="unknown fault"):
        lab.inject("no-such-fault", "node2")
    with pytest.raises(LabError, match="no node"):
        lab.inject("vxlan-down", "node9")


def test_node_devices_look_like_flannel(lab: Lab) -> None:
    n2 = lab.node("node2")
    link = lab.exec("node2", ["ip", "-d", "link", "show", "flannel.1"]).stdout
    assert "vxlan id 1 local 192.168.77.12 dev eth0" in link and "dstport 8472" in link
    assert "nolearning" in link and "mtu 1450" in link and n2.vxlan_mac in link
    fdb = lab.exec("node2", ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
    for peer in ("node1", "node3", "node4"):
        p = lab.node(peer)
        assert f"{p.vxlan_mac} dst {p.underlay_ip} self permanent" in fdb
    hairpin = lab.exec("node2", ["cat", "/sys/class/net/veth1/brport/hairpin_mode"]).stdout
    assert hairpin.strip() == "1"


def test_cilium_node_without_vxlan_address_still_routes_pod_traffic(
        make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=3, variants={"node3": "cilium"})
    cil = lab.exec("node3", ["ip", "-d", "addr", "show", "cilium_vxlan"]).stdout
    assert "external" in cil and "inet " not in cil and lab.node("node3").vxlan_ip is None
    assert lab.ping("node1/pod", lab.pod_ip("node3"), timeout=T)
    assert lab.ping("node3/pod", lab.pod_ip("node2"), timeout=T)


def test_calico_lab_uses_vxlan_calico_on_4789(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=3, cni="calico")
    link = lab.exec("node1", ["ip", "-d", "link", "show", "vxlan.calico"]).stdout
    assert "vxlan id 4096" in link and "dstport 4789" in link
    assert lab.ping("node1/pod", lab.pod_ip("node2"), timeout=T)
    assert lab.ping("node3/pod", lab.pod_ip("node1"), timeout=T)


def test_mixed_ports_lab_is_healthy_through_per_peer_fdb_port_and_vni(
        make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=3, variants={"node3": "calico"})
    fdb = lab.exec("node1", ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
    assert f"{lab.node('node3').vxlan_mac} dst 192.168.77.13 port 4789 vni 4096" in fdb
    assert lab.ping("node1/pod", lab.pod_ip("node3"), timeout=T)
    assert lab.ping("node3/pod", lab.pod_ip("node2"), timeout=T)


def test_cilium_beside_another_port_is_refused() -> None:
    with pytest.raises(LabError, match="own port"):
        Lab(nodes=3, cni="calico", variants={"node3": "cilium"})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.lab", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _leftovers(run_id: str) -> list[str]:
    names = [n for n in list_lab_namespaces() if run_id in n]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names += [line for line in links.splitlines() if f"nd{run_id}" in line]
    names += [n for n in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                        text=True).stdout.splitlines() if run_id in n]
    if (cluster.STATE_DIR / f"{run_id}.json").exists():
        names.append("state file")
    if (cluster.STATE_DIR / run_id).exists():
        names.append("host-root directory")
    return names


def test_up_then_down_leaves_nothing_behind() -> None:
    up = _cli("up", "--nodes", "4", "--fault", "fabric-drop-udp-8472-in:node2")
    assert up.returncode == 0, up.stderr
    found = re.search(r"^run id: (\w+)$", up.stdout, re.M)
    assert found, up.stdout
    run_id = found.group(1)
    try:
        assert len([n for n in list_lab_namespaces() if run_id in n]) == 1 + 4 + 4
        assert "nd" + run_id in _cli("status").stdout
    finally:
        down = _cli("down", run_id)
    assert down.returncode == 0, down.stderr
    assert _leftovers(run_id) == []


def test_cleanup_removes_a_killed_run_and_spares_live_labs(lab: Lab) -> None:
    code = ("from tests.lab.cluster import Lab; import sys, time\n"
            "lab = Lab(nodes=2).up(); print(lab.run_id, flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        assert run_id and [n for n in list_lab_namespaces() if run_id in n]
    finally:
        os.kill(proc.pid, signal.SIGKILL)       # no atexit, no finally: a crashed run
        proc.wait(timeout=10)
    removed = _cli("cleanup")
    assert removed.returncode == 0, removed.stderr
    assert run_id in removed.stdout
    assert _leftovers(run_id) == []
    assert lab.fabric.name in list_lab_namespaces()          # our live lab survived
    assert PROBES["pod1->pod3"](lab)


def test_lab_tears_down_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError):
        with Lab(nodes=2) as lab:
            run_id = lab.run_id
            raise RuntimeError("test failed inside the lab")
    deadline = time.monotonic() + 5
    while _leftovers(run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _leftovers(run_id) == []


def test_demo_without_collector_shows_the_fault_in_netdiag_check() -> None:
    out = _cli("demo", "--no-collector", "--nodes", "2", "--fault", "vxlan-down:node2")
    assert out.returncode == 0, out.stdout + out.stderr
    before, after = out.stdout.split(">>> injected vxlan-down")
    assert "ERROR   vxlan.device-down" not in before
    assert "ERROR   vxlan.device-down" in after
    run_id = re.search(r"run id (\w+)", out.stdout).group(1)  # type: ignore[union-attr]
    assert _leftovers(run_id) == []


@pytest.mark.skipif(not __import__("tests.lab.demo", fromlist=["x"]).collector_available(),
                    reason="collector not built yet")
def test_demo_collector_names_udp_blocked_into_node3() -> None:
    out = _cli("demo", "--nodes", "4", "--interval", "1", "--wait", "40",
               "--fault", "fabric-drop-udp-in:node3")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    healthy, after = out.stdout.split(">>> injected fabric-drop-udp-in")
    assert "no cross-node problem found" in healthy
    assert "overlay.udp-blocked  [node3]" in after
    run_id = re.search(r"run id (\w+)", out.stdout).group(1)  # type: ignore[union-attr]
    assert _leftovers(run_id) == []


def test_a_run_id_in_use_is_refused_and_the_other_lab_survives(lab: Lab) -> None:
    twin = Lab(nodes=2, run_id=lab.run_id)
    with pytest.raises(LabError, match="in use"):
        twin.up()
    twin.down()                                          # must not touch lab's namespaces
    assert lab.fabric.name in list_lab_namespaces()
    assert PROBES["pod1->pod2"](lab)


def test_twenty_node_lab_routes_first_to_last(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=20)
    assert lab.ping("node1/pod", lab.pod_ip("node20"), timeout=T)
    assert lab.ping("node20/pod", lab.pod_ip("node11"), timeout=T)
    fdb = lab.exec("node20", ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
    assert len([line for line in fdb.splitlines() if " dst 192.168.77." in line]) == 19
