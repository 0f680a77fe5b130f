"""Hairpin check on recorded namespace trees (cni0 with two veth ports) and real CNI configs."""

from __future__ import annotations

import shutil

from agent.checks import hairpin
from agent.checks.hairpin import Bridge, CniHairpin, Facts
from agent.report import Severity
from tests.checks_A_support import CTX, FIXTURES, RecordedHost, proc
from tests.conftest import read_fixture

BAD = "node-trees/flannel-strict-rp-hairpin-off"
GOOD = "node-trees/flannel-healthy"


def _only(findings):
    (f,) = findings
    assert f.id == "bridge.hairpin-off"
    return f


def _tree(tmp_path, base, cni_fixture=None, name="10-flannel.conflist", kubelet_config=None):
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / base, tree, symlinks=True)
    if cni_fixture:
        d = tree / "root/etc/cni/net.d"
        d.mkdir(parents=True)
        (d / name).write_text(read_fixture(cni_fixture))
    if kubelet_config:
        d = tree / "root/var/lib/kubelet"
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(read_fixture(kubelet_config))
    return tree


def test_names_each_port_with_hairpin_off_on_cni0(tmp_path):
    tree = _tree(tmp_path, BAD, "cni-config/cni-320-flannel-conf-no-hairpin.txt", "10-flannel.conf",
                 "kubelet-config/minikube-kubeadm-generated-no-resolvconf-no-hairpin.txt")
    facts = hairpin.gather(RecordedHost(tree, processes=(proc(9, "/usr/bin/kubelet"),)), CTX)
    f = _only(hairpin.evaluate(facts, CTX))
    assert f.severity is Severity.WARNING
    assert "/sys/class/net/cni0/brif/veth4bfbfe74/hairpin_mode = 0" in f.evidence
    assert "/sys/class/net/cni0/brif/vethfc2a18c5/hairpin_mode = 0" in f.evidence
    assert "(not PROMISC)" in f.evidence
    assert "kubelet hairpin mode not set (default promiscuous-bridge)" in f.evidence
    assert "CNI config /etc/cni/net.d/10-flannel.conf: hairpinMode not set" in f.evidence
    assert 'Set "hairpinMode": true in /etc/cni/net.d/10-flannel.conf' in f.remediation
    assert hairpin.summarize(facts) == {"hairpin": {"pod_bridge": "cni0", "ports": 2,
                                                    "hairpin_off_ports": 2, "promisc": False}}


def test_cni_enabling_hairpin_but_ports_off_says_recreate_pods(tmp_path):
    tree = _tree(tmp_path, BAD, "cni-config/flannel-conflist-hairpin-portmap-crio.txt")
    host = RecordedHost(tree, processes=(proc(9, "kubelet", "--hairpin-mode=hairpin-veth"),))
    f = _only(hairpin.evaluate(hairpin.gather(host, CTX), CTX))
    assert f.severity is Severity.WARNING
    assert "kubelet hairpin mode hairpin-veth (kubelet --hairpin-mode)" in f.evidence
    assert "hairpinMode true for bridge(s) cni0" in f.evidence
    assert "already enables hairpinMode" in f.remediation


def test_ok_when_every_port_has_hairpin():
    f = _only(hairpin.evaluate(hairpin.gather(RecordedHost(GOOD), CTX), CTX))
    assert f.severity is Severity.OK


def test_promiscuous_bridge_is_fine_and_docker0_is_not_a_pod_bridge():
    promisc = Facts((Bridge("cbr0", 0x1103, (("veth1", 0),)),), None, True, None, "")
    assert _only(hairpin.evaluate(promisc, CTX)).severity is Severity.OK
    docker = Facts((Bridge("docker0", 0x1003, (("veth1", 0),)),), None, False, None, "")
    f = _only(hairpin.evaluate(docker, CTX))
    assert f.severity is Severity.OK and "not applicable" in f.title


def test_bridge_named_in_cni_config_counts_and_kubelet_none_is_named():
    facts = Facts((Bridge("mybr0", 0x1003, (("vethA", 0), ("vethB", 1))),),
                  CniHairpin("/etc/cni/net.d/10-bridge.conf", ("mybr0",), False), True, "none",
                  "/var/lib/kubelet/config.yaml: hairpinMode")
    f = _only(hairpin.evaluate(facts, CTX))
    assert f.severity is Severity.WARNING
    assert "/sys/class/net/mybr0/brif/vethA/hairpin_mode = 0" in f.evidence
    assert "vethB" not in f.evidence.split("; ")[0]
    assert "hairpin mode none" in f.remediation
