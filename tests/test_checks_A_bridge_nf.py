"""bridge-nf-call-iptables check on recorded trees and built facts."""

from __future__ import annotations

import shutil

from agent.checks import bridge_nf
from agent.checks.kube_components import KubeProxyMode
from agent.report import Severity
from tests.checks_A_support import CTX, FIXTURES, RecordedHost, proc
from tests.conftest import read_fixture

BAD = "node-trees/flannel-strict-rp-hairpin-off"
GOOD = "node-trees/flannel-healthy"
KUBE_PROXY = proc(42, "/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
                  "--hostname-override=node-a")


def _only(findings):
    (f,) = findings
    assert f.id == "sysctl.bridge-nf-call-iptables-off"
    return f


def test_warns_when_off_with_bridge_and_kube_proxy_mode_unknown():
    facts = bridge_nf.gather(RecordedHost(BAD, processes=(KUBE_PROXY,)), CTX)
    assert facts.value == 0 and facts.bridges == ("cni0",)
    f = _only(bridge_nf.evaluate(facts, CTX))
    assert f.severity is Severity.WARNING
    assert "/proc/sys/net/bridge/bridge-nf-call-iptables = 0" in f.evidence
    assert "assumed iptables" in f.evidence and "could not be read" in f.evidence
    assert bridge_nf.summarize(facts) == {"bridge_nf_call_iptables": 0}


def test_mode_from_flag_and_from_config_through_proc_root(tmp_path):
    ipvs = bridge_nf.gather(RecordedHost(BAD, processes=(
        proc(7, "kube-proxy", "--proxy-mode", "ipvs"),)), CTX)
    assert ipvs.kube_proxy == KubeProxyMode(True, "ipvs", "kube-proxy --proxy-mode=ipvs")
    assert _only(bridge_nf.evaluate(ipvs, CTX)).severity is Severity.INFO
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / BAD, tree, symlinks=True)
    conf = tree / "proc/42/root/var/lib/kube-proxy/config.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(read_fixture("kube-proxy-config/k8s-112185-kubeadm-style-ipvs-lc-full.txt"))
    from_config = bridge_nf.gather(RecordedHost(tree, processes=(KUBE_PROXY,)), CTX)
    assert from_config.kube_proxy == KubeProxyMode(
        True, "ipvs", "/proc/42/root/var/lib/kube-proxy/config.conf: mode: ipvs")


def test_ok_when_on_and_not_applicable_without_kube_proxy():
    good = bridge_nf.gather(RecordedHost(GOOD, processes=(KUBE_PROXY,)), CTX)
    assert _only(bridge_nf.evaluate(good, CTX)).severity is Severity.OK
    no_kp = bridge_nf.gather(RecordedHost(BAD), CTX)
    f = _only(bridge_nf.evaluate(no_kp, CTX))
    assert f.severity is Severity.OK and "not applicable" in f.title


def test_absent_file_means_module_not_loaded():
    facts = bridge_nf.Facts(None, "absent (br_netfilter module not loaded)", ("cni0",),
                            KubeProxyMode(True, "iptables", "kube-proxy --proxy-mode=iptables"))
    f = _only(bridge_nf.evaluate(facts, CTX))
    assert f.severity is Severity.WARNING and "br_netfilter" in f.evidence
    no_bridge = bridge_nf.Facts(None, "absent", (), facts.kube_proxy)
    assert _only(bridge_nf.evaluate(no_bridge, CTX)).severity is Severity.OK
