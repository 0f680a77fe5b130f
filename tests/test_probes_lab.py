"""The probes on a real kernel: a 3-node lab (node1, node2 flannel; node3 Cilium-style, a VXLAN
device without an address), every fault the probes must tell apart, and what BOTH sides say:
the probing node's results and the receiving node's capture (`seen`).

node1 probes with `python -m agent.probes.oneshot` inside its namespace; each receiving node
runs `python -m agent.probes.responder --capture-dev eth0` (UDP echo + TCP accept on the agent
port, and the capture), which prints what it saw when its stdin closes.
"""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from typing import Iterator

import pytest

from tests.lab.cluster import Lab
from tests.lab.fixtures import fault
from tests.lab.netns import require_root

pytestmark = pytest.mark.lab

READY_TIMEOUT_S = 10.0
PROBE_RUN_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = require_root()
    if reason:
        pytest.skip(reason)
    with Lab(nodes=3, variants={"node3": "cilium"}) as lab:
        yield lab


class Receiver:
    def __init__(self) -> None:
        self.seen: list[dict] = []

    def count(self, peer: str, kind: str) -> int:
        return sum(s["count"] for s in self.seen if s["peer"] == peer and s["kind"] == kind)


@contextmanager
def receiver(lab: Lab, node: str) -> Iterator[Receiver]:
    """The responder + capture in `node` for the duration of the block."""
    n = lab.node(node)
    proc = lab.popen(node, [sys.executable, "-m", "agent.probes.responder", "--capture-dev",
                            n.underlay_dev, "--vxlan-port", str(n.vxlan_port), "--node-name",
                            node, "--json"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    result = Receiver()
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
        line = proc.stdout.readline().strip() if ready else ""
        if line != "ready":
            proc.kill()
            raise AssertionError(f"responder in {node} did not start: {proc.stderr.read()}")
        yield result
        out, err = proc.communicate("", timeout=READY_TIMEOUT_S)
        assert proc.returncode == 0, err
        result.seen = json.loads(out.strip().splitlines()[-1])["seen"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def receivers(lab: Lab, *nodes: str) -> Iterator[dict[str, Receiver]]:
    with ExitStack() as stack:
        yield {n: stack.enter_context(receiver(lab, n)) for n in nodes}


def probe(lab: Lab, src: str, *peers: str, prefix: list[str] | None = None) -> dict:
    argv = [sys.executable, "-m", "agent.probes.oneshot", "--node-name", src, "--json"]
    for p in peers:
        argv += ["--peer", f"{p}={lab.node(p).underlay_ip}"]
    proc = lab.exec(src, [*(prefix or []), *argv], check=False, timeout=PROBE_RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    data["by"] = {(p["peer"], p["kind"]): p for p in data["probes"]}
    return data


def answered(result: dict, peer: str, kind: str) -> tuple[int, int | None]:
    p = result["by"][(peer, kind)]
    return p["sent"], p["answered"]


def test_healthy_mesh_every_probe_answered_and_seen(lab):
    with receivers(lab, "node2", "node3") as rx:
        r = probe(lab, "node1", "node2", "node3")
    for kind in ("echo", "mtu", "udp-control", "tcp-control"):
        assert answered(r, "node2", kind) == (3, 3), kind
    assert answered(r, "node2", "wire") == (3, None)
    assert r["by"][("node2", "echo")]["rtt_ms"]["max"] > 0
    for kind in ("wire", "echo", "mtu", "udp-control"):
        assert rx["node2"].count("node1", kind) == 3, kind
    # node3 (Cilium-style) got the wire probes; node1's tables describe it flannel-style,
    # so node1 also tried echoes, which node3 (no address) cannot answer.
    assert rx["node3"].count("node1", "wire") == 3
    assert answered(r, "node3", "udp-control") == (3, 3)
    assert answered(r, "node3", "tcp-control") == (3, 3)


def test_cilium_style_node_sends_wire_probes_only_and_they_are_counted(lab):
    with receivers(lab, "node1", "node2") as rx:
        r = probe(lab, "node3", "node1", "node2")
    kinds = {k for (_, k) in r["by"]}
    assert kinds == {"wire", "udp-control", "tcp-control"}
    for peer in ("node1", "node2"):
        assert answered(r, peer, "wire") == (3, None)
        assert answered(r, peer, "udp-control") == (3, 3)
        assert rx[peer].count("node3", "wire") == 3
        assert rx[peer].count("node3", "echo") == 0


def test_host_firewall_drop_8472_capture_sees_probes_but_no_echo_replies(lab):
    with fault(lab, "host-firewall-drop-8472", "node2"):
        with receivers(lab, "node2") as rx:
            r = probe(lab, "node1", "node2")
    assert answered(r, "node2", "echo") == (3, 0)
    assert answered(r, "node2", "udp-control") == (3, 3)
    assert answered(r, "node2", "tcp-control") == (3, 3)
    # the capture is before the firewall: node2 saw every probe arrive
    assert rx["node2"].count("node1", "wire") == 3
    assert rx["node2"].count("node1", "echo") == 3


def test_fabric_drops_8472_into_node2_capture_sees_nothing(lab):
    with fault(lab, "fabric-drop-udp-8472-in", "node2"):
        with receivers(lab, "node2") as rx:
            r = probe(lab, "node1", "node2")
    assert answered(r, "node2", "echo") == (3, 0)
    assert answered(r, "node2", "udp-control") == (3, 3)
    assert answered(r, "node2", "tcp-control") == (3, 3)
    assert rx["node2"].count("node1", "wire") == 0
    assert rx["node2"].count("node1", "echo") == 0
    assert rx["node2"].count("node1", "udp-control") == 3


def test_fabric_drops_all_udp_into_node2_udp_control_fails_tcp_works(lab):
    with fault(lab, "fabric-drop-udp-in", "node2"):
        with receivers(lab, "node2") as rx:
            r = probe(lab, "node1", "node2")
    assert answered(r, "node2", "udp-control") == (3, 0)
    assert answered(r, "node2", "tcp-control") == (3, 3)
    assert answered(r, "node2", "echo") == (3, 0)
    assert rx["node2"].count("node1", "wire") == 0
    assert rx["node2"].count("node1", "udp-control") == 0


def test_fabric_mtu_black_hole_small_echo_ok_mtu_echo_lost(lab):
    with fault(lab, "fabric-mtu-blackhole-in", "node2"):
        with receivers(lab, "node2") as rx:
            r = probe(lab, "node1", "node2")
    assert answered(r, "node2", "echo") == (3, 3)
    assert answered(r, "node2", "mtu") == (3, 0)
    assert rx["node2"].count("node1", "echo") == 3
    assert rx["node2"].count("node1", "mtu") == 0


def test_without_cap_net_raw_says_which_capability_is_missing(lab):
    capsh = shutil.which("capsh")
    setpriv = shutil.which("setpriv")
    if setpriv:
        prefix = [setpriv, "--inh-caps=-net_raw", "--bounding-set=-net_raw", "--"]
    elif capsh:
        prefix = [capsh, "--drop=cap_net_raw", "--"]
    else:
        pytest.skip("needs setpriv or capsh to drop CAP_NET_RAW")
    with receivers(lab, "node2") as rx:
        r = probe(lab, "node1", "node2", prefix=prefix)
    echo = r["by"][("node2", "echo")]
    assert echo["sent"] == 0 and "CAP_NET_RAW" in echo["error"]
    # sending needs no privilege: the wire and control probes still go
    assert answered(r, "node2", "wire") == (3, None)
    assert answered(r, "node2", "udp-control") == (3, 3)
    assert rx["node2"].count("node1", "wire") == 3


def test_netdiag_check_prints_the_per_peer_table_naming_the_direction(lab):
    with fault(lab, "fabric-drop-udp-in", "node2"), receivers(lab, "node2"):
        proc = lab.exec("node1", [sys.executable, "-m", "agent.cli", "check", "--node-name",
                                  "node1", "--color", "never", "--peer",
                                  f"node2={lab.node('node2').underlay_ip}"],
                        check=False, timeout=PROBE_RUN_TIMEOUT_S)
    assert proc.returncode in (0, 1, 2), proc.stderr
    out = proc.stdout
    assert "Probes from node1" in out
    assert "sent 3, node2 saw ? (needs node2's capture)" in out
    assert "udp-control  LOST    0/3" in out
    assert "tcp-control  OK      3/3" in out
    assert "all UDP between here and node2 is dropped, TCP passes" in out


def test_two_long_lived_probers_see_each_other_across_rounds(lab):
    """The daemon's shape: each node keeps a Prober (capture + UDP responder) up across
    rounds and probes the other; each node's `seen` counts the other's probes, and a host
    firewall on node2 shows up as "node2 saw node1's probes, node1 got no echo back"."""
    def start(src, dst):
        return lab.popen(src, [sys.executable, "-m", "agent.probes.oneshot", "--node-name", src,
                               "--peer", f"{dst}={lab.node(dst).underlay_ip}", "--rounds", "3",
                               "--interval", "0.6", "--serve", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def finish(proc):
        out, err = proc.communicate(timeout=PROBE_RUN_TIMEOUT_S)
        assert proc.returncode == 0, err
        rounds = json.loads(out)["rounds"]
        probes = [p for r in rounds for p in r["probes"]]
        seen = [s for r in rounds for s in r["seen"]]
        return probes, seen, rounds[-1]["probes"]

    def total(items, kind, key, who):
        return sum(i[key] or 0 for i in items if i["kind"] == kind
                   and i["peer"] == who)

    with fault(lab, "host-firewall-drop-8472", "node2"):
        p1, p2 = start("node1", "node2"), start("node2", "node1")
        (probes1, seen1, last1), (probes2, seen2, _) = finish(p1), finish(p2)
    # node1 -> node2: echoes die in node2's firewall, yet node2's capture counted them
    assert total(probes1, "echo", "sent", "node2") == 9
    assert total(probes1, "echo", "answered", "node2") == 0
    assert total(seen2, "echo", "count", "node1") > 0
    assert total(seen2, "wire", "count", "node1") > 0
    # node2 -> node1: its echoes reach node1 and node1's replies reach node2's NIC (answered:
    # the same vantage point as `seen`), but node2's own firewall drops them, which node2 says
    assert total(probes2, "echo", "answered", "node1") == 9
    assert total(seen1, "echo", "count", "node2") > 0
    echo2 = [p for p in probes2 if p["kind"] == "echo"]
    assert all("reached this node's NIC but not its stack" in p["error"] for p in echo2)
    # UDP control is answered by each Prober's own responder (up on both sides by the last
    # round: the two processes start at the same time); nobody serves TCP here
    assert total(last1, "udp-control", "answered", "node2") == 3
    tcp = [p for p in probes1 if p["kind"] == "tcp-control"]
    assert tcp and all("refused" in p["error"] for p in tcp)


def test_calico_vxlan_probes_use_the_devices_port_and_vni(make_lab):
    calico = make_lab(nodes=2, cni="calico")
    with receivers(calico, "node2") as rx:
        r = probe(calico, "node1", "node2")
    for kind in ("echo", "mtu", "udp-control", "tcp-control"):
        assert answered(r, "node2", kind) == (3, 3), kind
    assert rx["node2"].count("node1", "wire") == 3   # captured on UDP 4789


def test_without_an_agent_on_the_peer_refusals_still_tell_udp_blocked_apart(lab):
    """One-shot against a node with no agent: its kernel refuses the agent port (TCP RST,
    ICMP port unreachable), which still proves UDP and TCP reach it; with all UDP dropped in
    the fabric only the UDP refusal disappears."""
    r = probe(lab, "node1", "node2")
    assert answered(r, "node2", "echo") == (3, 3)
    assert "port unreachable" in r["by"][("node2", "udp-control")]["error"]
    assert "connection refused" in r["by"][("node2", "tcp-control")]["error"]
    with fault(lab, "fabric-drop-udp-in", "node2"):
        r = probe(lab, "node1", "node2")
        table = lab.exec("node1", [sys.executable, "-m", "agent.probes.oneshot", "--node-name",
                                   "node1", "--peer", f"node2={lab.node('node2').underlay_ip}"],
                         timeout=PROBE_RUN_TIMEOUT_S).stdout
    assert answered(r, "node2", "udp-control") == (3, 0)
    assert r["by"][("node2", "udp-control")]["error"] == ""
    assert "connection refused" in r["by"][("node2", "tcp-control")]["error"]
    assert "all UDP between here and node2 is dropped, TCP passes" in table


def test_netdiag_check_json_with_probes_matches_the_schema(lab):
    import jsonschema

    from agent.report import NodeReport
    from tests.test_schema import SCHEMA

    with receivers(lab, "node2"):
        proc = lab.exec("node1", [sys.executable, "-m", "agent.cli", "check", "--json",
                                  "--node-name", "node1", "--peer",
                                  f"node2={lab.node('node2').underlay_ip}", "--peer",
                                  f"node3={lab.node('node3').underlay_ip}"],
                        check=False, timeout=PROBE_RUN_TIMEOUT_S)
    assert proc.returncode in (0, 1, 2), proc.stderr
    data = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    report = NodeReport.from_dict(data)
    kinds = {(p.peer, p.kind) for p in report.probes}
    assert ("node2", "echo") in kinds and ("node3", "wire") in kinds
    assert any(o.name == "flannel.1" for o in report.overlay)
