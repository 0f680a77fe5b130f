"""Lab tests for the VXLAN check on the real kernel: a namespace with a veth underlay and a
flannel-style VXLAN device (route + PERMANENT neighbour + FDB entry per fake peer); faults are
injected and `netdiag check --only vxlan` run inside the namespace must report them and stop
reporting them once repaired. Everything lives in one namespace we create and delete."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.lab.netns import NetNS, scratch_namespace

pytestmark = pytest.mark.lab

ROOT = Path(__file__).parent.parent
CHECK_TIMEOUT_S = 30.0
LOCAL = "172.80.0.4"
#: (pod subnet, gateway = peer's flannel.1 address, peer VTEP MAC, peer node address)
PEERS = (("10.244.0.0/24", "10.244.0.0", "e6:7d:c5:e2:80:1a", "172.80.0.2"),
         ("10.244.2.0/24", "10.244.2.0", "3a:bb:55:60:be:4e", "172.80.0.3"))
VXLAN = "flannel.1"  # the scenario's name; it exists only inside our own namespace


@pytest.fixture
def node() -> Iterator[tuple[NetNS, str]]:
    with scratch_namespace("h2") as ns:
        run = ns.name.split("-")[0]  # nd<run id>: unique, short enough for link names
        underlay = f"{run}u0"
        ns.exec(["ip", "link", "add", underlay, "type", "veth", "peer", "name", f"{run}u1"])
        ns.exec(["ip", "link", "set", f"{run}u1", "up"])
        ns.exec(["ip", "link", "set", underlay, "mtu", "1500", "up"])
        ns.exec(["ip", "addr", "add", f"{LOCAL}/24", "dev", underlay])
        ns.exec(["ip", "link", "add", VXLAN, "type", "vxlan", "id", "1", "local", LOCAL, "dev",
                 underlay, "dstport", "8472", "nolearning"])
        ns.exec(["ip", "link", "set", VXLAN, "mtu", "1450", "up"])
        ns.exec(["ip", "addr", "add", "10.244.1.0/32", "dev", VXLAN])
        add_peer_state(ns)
        yield ns, underlay


def add_peer_state(ns: NetNS) -> None:
    for subnet, gw, mac, vtep in PEERS:
        ns.exec(["ip", "route", "replace", subnet, "via", gw, "dev", VXLAN, "onlink"])
        ns.exec(["ip", "neigh", "replace", gw, "lladdr", mac, "dev", VXLAN, "nud", "permanent"])
        ns.exec(["bridge", "fdb", "replace", mac, "dev", VXLAN, "dst", vtep, "self",
                 "permanent"])


def check(ns: NetNS) -> dict:
    proc = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-m", "agent.cli",
                           "check", "--json", "--only", "vxlan"], capture_output=True, text=True,
                          timeout=CHECK_TIMEOUT_S, cwd=ROOT)
    assert proc.returncode in (0, 1, 2), proc.stderr
    return json.loads(proc.stdout)


def ids(report: dict, severity: str = "error") -> list[str]:
    return [f["id"] for f in report["findings"] if f["severity"] == severity]


def finding(report: dict, fid: str) -> dict:
    return next(f for f in report["findings"] if f["id"] == fid)


def test_healthy_vxlan_device_is_reported_in_overlay(node) -> None:
    ns, underlay = node
    report = check(ns)
    [dev] = report["overlay"]
    assert (dev["name"], dev["vni"], dev["port"], dev["mtu"], dev["local"], dev["parent"]) == \
        (VXLAN, 1, 8472, 1450, LOCAL, underlay)
    assert dev["addresses"] == ["10.244.1.0/32"] and dev["up"] is True
    assert report["node"]["underlay_ip"] == LOCAL
    assert report["facts"]["vxlan"] == {VXLAN: {"vni": 1, "port": 8472, "mtu": 1450}}
    assert ids(report) == [] and ids(report, "ok") == ["vxlan.device-down"]


def test_link_down_is_reported_and_clears_when_up(node) -> None:
    ns, _ = node
    ns.exec(["ip", "link", "set", VXLAN, "down"])
    report = check(ns)
    assert "vxlan.device-down" in ids(report)
    assert report["overlay"][0]["up"] is False
    ns.exec(["ip", "link", "set", VXLAN, "up"])
    add_peer_state(ns)  # the kernel dropped the device's routes and neighbours with it
    assert ids(check(ns)) == []


def test_mtu_above_parent_minus_50_is_reported(node) -> None:
    ns, underlay = node
    # The kernel refuses a VXLAN MTU above its parent's - 50, so lower the parent under it
    # (what an underlay MTU change does on a real node).
    ns.exec(["ip", "link", "set", underlay, "mtu", "1400"])
    report = check(ns)
    assert "vxlan.mtu-too-large" in ids(report)
    assert f"{VXLAN} mtu 1450 > {underlay} mtu 1400 - 50 = 1350" in \
        finding(report, "vxlan.mtu-too-large")["evidence"]
    ns.exec(["ip", "link", "set", underlay, "mtu", "1500"])
    assert "vxlan.mtu-too-large" not in ids(check(ns))


def test_deleted_fdb_entry_names_the_gap(node) -> None:
    ns, _ = node
    subnet, gw, mac, vtep = PEERS[1]
    ns.exec(["bridge", "fdb", "del", mac, "dev", VXLAN, "dst", vtep, "self"])
    report = check(ns)
    gap = finding(report, "vxlan.fdb-missing-peer")
    assert gap["severity"] == "error"
    assert f"route {subnet} via {gw} dev {VXLAN} onlink" in gap["evidence"]
    assert f"neighbour {gw} dev {VXLAN} lladdr {mac} PERMANENT" in gap["evidence"]
    assert f"no FDB entry {mac} dev {VXLAN} dst <node>" in gap["evidence"]
    assert PEERS[0][0] not in gap["evidence"]
    add_peer_state(ns)
    assert ids(check(ns)) == []


def in_ns(ns: NetNS, code: str) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_tx_checksum_offload_read_through_pyroute2_ethtool(node) -> None:
    ns, _ = node
    read = ("from agent.host import Host; "
            f"print(Host().ethtool_features({VXLAN!r})['tx-checksum-ip-generic'])")
    assert in_ns(ns, read) == "True"
    ns.exec(["ethtool", "-K", VXLAN, "tx-checksum-ip-generic", "off"])
    assert in_ns(ns, read) == "False"


def test_kube_proxy_endpoints_answer_refused_and_status(node) -> None:
    ns, _ = node
    probe = ("from agent.host import Host; "
             "from agent.checks.kube_components import query_endpoint; "
             "print(query_endpoint(Host(), 'http://127.0.0.1:10256/healthz').text())")
    assert in_ns(ns, probe) == "GET http://127.0.0.1:10256/healthz: connection refused"
    server = ns.popen([sys.executable, "-c", (
        "import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(503); self.end_headers(); self.wfile.write(b'stale')\n"
        "    def log_message(self, *a): pass\n"
        "s = h.HTTPServer(('127.0.0.1', 10256), H); print('ready', flush=True); "
        "s.serve_forever()\n")], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        assert in_ns(ns, probe) == "GET http://127.0.0.1:10256/healthz -> 503 stale"
    finally:
        server.kill()
        server.wait(timeout=5)
