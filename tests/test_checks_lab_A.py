"""Lab tests for the node checks A on the real kernel: a network namespace built like a
flannel node (underlay veth with the default route, VXLAN flannel.1 on it, bridge cni0 with a
veth port, node-local-dns address), then `netdiag check` run inside it while sysctls and
bridge ports are flipped. Inside `ip netns exec` /proc/sys/net and /sys/class/net are the
namespace's, so the agent reads what we set; the host's /etc is replaced by a temporary
--host-root. Namespaces are deleted even when a test fails."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.netns import NetNS, scratch_namespace

pytestmark = pytest.mark.lab
REPO = Path(__file__).parent.parent
CHECK_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def node():
    with scratch_namespace("h1") as ns:
        for argv in (
            ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"],
            ["ip", "addr", "add", "192.168.77.11/24", "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "eth0p", "up"],
            ["ip", "route", "add", "default", "via", "192.168.77.1"],
            ["ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "8472",
             "dev", "eth0", "local", "192.168.77.11"],
            ["ip", "addr", "add", "10.244.0.0/32", "dev", "flannel.1"],
            ["ip", "link", "set", "flannel.1", "up"],
            ["ip", "route", "add", "10.244.1.0/24", "via", "10.244.1.0", "dev", "flannel.1",
             "onlink"],
            ["ip", "link", "add", "cni0", "type", "bridge"],
            ["ip", "addr", "add", "10.244.0.1/24", "dev", "cni0"],
            ["ip", "link", "set", "cni0", "up"],
            ["ip", "link", "add", "vethpod1", "type", "veth", "peer", "name", "ndpodeth0"],
            ["ip", "link", "set", "vethpod1", "master", "cni0"],
            ["ip", "link", "set", "vethpod1", "up"],
            ["ip", "link", "add", "nodelocaldns", "type", "veth", "peer", "name", "ndnld"],
            ["ip", "addr", "add", "169.254.20.10/32", "dev", "nodelocaldns"],
            ["ip", "link", "set", "nodelocaldns", "up"],
        ):
            ns.exec(argv)
        ns.sysctl("net.ipv4.ip_forward", 1)
        ns.sysctl("net.ipv4.conf.all.rp_filter", 0)
        ns.sysctl("net.ipv4.conf.default.rp_filter", 0)
        for dev in ("eth0", "flannel/1", "cni0"):
            ns.sysctl(f"net.ipv4.conf.{dev}.rp_filter", 2)
        set_hairpin(ns, 1)
        yield ns


def set_hairpin(ns: NetNS, value: int) -> None:
    ns.exec(["sh", "-c", f"echo {value} > /sys/class/net/cni0/brif/vethpod1/hairpin_mode"])


def check(ns: NetNS, host_root: Path, *only: str) -> tuple[int, dict[str, dict]]:
    argv = [sys.executable, "-m", "agent.cli", "check", "--json", "--node-name", "lab-node",
            "--host-root", str(host_root)]
    for name in only:
        argv += ["--only", name]
    proc = subprocess.run(["ip", "netns", "exec", ns.name, *argv], capture_output=True,
                          text=True, timeout=CHECK_TIMEOUT_S, cwd=REPO)
    assert proc.returncode in (0, 1, 2), proc.stderr
    report = json.loads(proc.stdout)
    return proc.returncode, {f["id"]: f for f in report["findings"]}


def bad(findings: dict[str, dict], finding_id: str) -> dict | None:
    f = findings.get(finding_id)
    return f if f and f["severity"] in ("warning", "error") else None


def test_strict_rp_filter_on_flannel_appears_and_disappears(node, tmp_path):
    rc, got = check(node, tmp_path, "rp-filter")
    assert rc == 0 and not bad(got, "sysctl.rp-filter-strict"), got
    node.sysctl("net.ipv4.conf.flannel/1.rp_filter", 1)
    try:
        rc, got = check(node, tmp_path, "rp-filter")
        f = bad(got, "sysctl.rp-filter-strict")
        assert f and rc != 0
        assert "/proc/sys/net/ipv4/conf/flannel.1/rp_filter = 1" in f["evidence"]
    finally:
        node.sysctl("net.ipv4.conf.flannel/1.rp_filter", 2)
    rc, got = check(node, tmp_path, "rp-filter")
    assert rc == 0 and not bad(got, "sysctl.rp-filter-strict")


def test_strict_all_reaches_the_vxlan_parent_and_persisted_file_is_named(node, tmp_path):
    conf = tmp_path / "etc/sysctl.d/90-hardening.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("# hardening\nnet.ipv4.conf.all.rp_filter = 1\n")
    rc, got = check(node, tmp_path, "rp-filter")
    f = bad(got, "sysctl.rp-filter-persisted")
    assert f and "/etc/sysctl.d/90-hardening.conf:2: net.ipv4.conf.all.rp_filter = 1" \
        in f["evidence"]
    assert not bad(got, "sysctl.rp-filter-strict")  # not applied yet
    node.sysctl("net.ipv4.conf.eth0.rp_filter", 0)
    node.exec(["sysctl", "-q", "-p", str(conf)])  # what a reboot would do, in our namespace
    try:
        rc, got = check(node, tmp_path, "rp-filter")
        f = bad(got, "sysctl.rp-filter-strict")
        assert f and rc != 0
        # all=1 makes eth0 (0) strict by max; flannel.1 and cni0 (2) stay loose
        assert ("/proc/sys/net/ipv4/conf/eth0/rp_filter = 0 (all = 1, effective 1; "
                "parent of VXLAN flannel.1)") in f["evidence"]
        assert "conf/flannel.1/" not in f["evidence"] and "conf/cni0/" not in f["evidence"]
    finally:
        node.sysctl("net.ipv4.conf.all.rp_filter", 0)
        node.sysctl("net.ipv4.conf.eth0.rp_filter", 2)


def test_strict_parent_is_an_error_when_a_vxlan_peer_routes_out_of_another_nic(node, tmp_path):
    # flannel --iface style: flannel.1 is bound to eth0, but the peer 192.168.88.5 is routed
    # out of eth1; with eth0 strict, every encapsulated packet from that peer is dropped
    node.exec(["ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p"])
    node.exec(["ip", "addr", "add", "192.168.88.1/24", "dev", "eth1"])
    node.exec(["ip", "link", "set", "eth1", "up"])
    node.exec(["ip", "link", "set", "eth1p", "up"])
    node.sysctl("net.ipv4.conf.eth0.rp_filter", 1)
    try:
        rc, got = check(node, tmp_path, "rp-filter")
        f = bad(got, "sysctl.rp-filter-strict")
        assert f and f["severity"] == "warning", f  # strict, but no peer is known yet
        node.exec(["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "flannel.1",
                   "dst", "192.168.88.5"])
        rc, got = check(node, tmp_path, "rp-filter")
        f = bad(got, "sysctl.rp-filter-strict")
        assert f and f["severity"] == "error" and rc == 2
        assert "VXLAN peer 192.168.88.5 (flannel.1 on eth0) is routed out of eth1" \
            in f["evidence"]
    finally:
        node.sysctl("net.ipv4.conf.eth0.rp_filter", 2)
        node.exec(["bridge", "fdb", "del", "00:00:00:00:00:00", "dev", "flannel.1",
                   "dst", "192.168.88.5"], check=False)
        node.exec(["ip", "link", "del", "eth1"], check=False)


def test_hairpin_off_names_the_port(node, tmp_path):
    set_hairpin(node, 0)
    try:
        rc, got = check(node, tmp_path, "hairpin")
        f = bad(got, "bridge.hairpin-off")
        assert f and rc == 1
        assert "/sys/class/net/cni0/brif/vethpod1/hairpin_mode = 0" in f["evidence"]
    finally:
        set_hairpin(node, 1)
    rc, got = check(node, tmp_path, "hairpin")
    assert rc == 0 and not bad(got, "bridge.hairpin-off")


def test_ip_forward_off_and_on(node, tmp_path):
    node.sysctl("net.ipv4.ip_forward", 0)
    try:
        rc, got = check(node, tmp_path, "ip-forward")
        assert bad(got, "sysctl.ip-forward-off") and rc == 2
    finally:
        node.sysctl("net.ipv4.ip_forward", 1)
    rc, got = check(node, tmp_path, "ip-forward")
    assert rc == 0 and not bad(got, "sysctl.ip-forward-off")


def test_nodelocaldns_listener(node, tmp_path):
    rc, got = check(node, tmp_path, "dns")
    f = bad(got, "dns.nodelocaldns-not-listening")
    assert f and "169.254.20.10 is a local address" in f["evidence"]
    server = node.popen([sys.executable, "-c",
                         "import socket, time\n"
                         "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                         "u.bind(('169.254.20.10', 53))\n"
                         "t = socket.socket(); t.bind(('169.254.20.10', 53)); t.listen()\n"
                         "print('up', flush=True); time.sleep(30)\n"],
                        stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "up"
        rc, got = check(node, tmp_path, "dns")
        assert not bad(got, "dns.nodelocaldns-not-listening"), got
    finally:
        server.kill()
        server.wait(timeout=10)


def test_bridge_nf_off_with_kube_proxy_unknown_mode_is_not_a_failure_without_kube_proxy(
        node, tmp_path):
    # no kube-proxy runs on this VM: whatever the sysctl, the verdict is "not applicable"
    start = time.monotonic()
    rc, got = check(node, tmp_path, "bridge-nf", "conntrack")
    assert time.monotonic() - start < CHECK_TIMEOUT_S
    assert got["sysctl.bridge-nf-call-iptables-off"]["severity"] in ("ok", "info")
    assert "conntrack.module-missing" in got
