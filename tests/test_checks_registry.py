"""The whole registry: every finding id any check in ALL_CHECKS declares has a failing case
here that raises it at warning or error (the two ids that are informational by design are
raised at info), built from the same real fixtures the per-check tests use. A new id without a
case fails `test_every_declared_id_has_a_failing_case`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from agent.checks import (ALL_CHECKS, cni, ip_forward, iptables, ipvs, kube_proxy, vxlan)
from agent.checks.base import CheckContext, validate_registry
from agent.checks.kube_components import KubeProxyMode
from agent.host import ProcessInfo
from agent.parsers.ipvsadm import parse_ipvsadm
from agent.report import Finding, Severity
from tests import test_checks_A_registry as checks_a
from tests.conftest import read_fixture
from tests.test_checks_cni import CRIO, FLANNEL, host_tree
from tests.test_checks_iptables import KUBE_PROXY_MINIMAL, facts_for, fixture
from tests.test_checks_kube_proxy import FakeHost
from tests.test_checks_vxlan import RecordedHost as VxlanHost

CTX = CheckContext(node="node-r")
#: Ids that say "expected here" or "nothing to check": raised at info, never worse.
INFO_BY_DESIGN = frozenset({"kube-proxy.replaced-by-cilium", "vxlan.no-device"})
IPTABLES_MODE = KubeProxyMode(True, "iptables", "kube-proxy --proxy-mode=iptables")
IPVS_TABLE = "ipvsadm/kubeadm-2205-nodeport-on-every-local-address.txt"

Case = Callable[[Path], tuple[Finding, ...]]


def _checks_a(finding_id: str) -> Case:
    def case(_tmp: Path) -> tuple[Finding, ...]:
        check, facts = checks_a.FAILING[finding_id]()
        return tuple(check.evaluate(facts, CTX))
    return case


def _cni(configs: dict[str, str] | None, binaries: tuple[str, ...] = ("flannel", "portmap",
                                                                       "bridge")) -> Case:
    def case(tmp: Path) -> tuple[Finding, ...]:
        host = host_tree(tmp, configs, binaries)
        return cni.evaluate(cni.gather(host, CTX), CTX)
    return case


def _vxlan(recording: str, **kw: object) -> Case:
    def case(tmp: Path) -> tuple[Finding, ...]:
        return vxlan.evaluate(vxlan.gather(VxlanHost(tmp, recording, **kw), CTX), CTX)
    return case


def _no_vxlan_device(tmp: Path) -> tuple[Finding, ...]:
    from agent.parsers.link_types import LinkState

    state = vxlan.gather(VxlanHost(tmp, "flannel-two-peers-healthy.json"), CTX).state
    plain = LinkState(tuple(x for x in state.links if x.vxlan is None), state.routes, None, None)
    return tuple(vxlan.evaluate_link_state(plain, CTX.node))


def _kube_proxy(procs: list[ProcessInfo]) -> Case:
    def case(tmp: Path) -> tuple[Finding, ...]:
        return kube_proxy.evaluate(kube_proxy.gather(FakeHost(tmp, procs), CTX), CTX)
    return case


def _iptables(*saves: tuple[str, str], **kw: object) -> Case:
    def case(_tmp: Path) -> tuple[Finding, ...]:
        return iptables.evaluate(facts_for(*saves, **kw), CTX)  # type: ignore[arg-type]
    return case


def _ipvs_table(text: str) -> Case:
    return lambda _tmp: tuple(ipvs.evaluate_table(parse_ipvsadm(text), CTX))


def _ipvs_without_dummy(_tmp: Path) -> tuple[Finding, ...]:
    facts = ipvs.Facts(True, "kube-proxy runs in ipvs mode", True,
                       parse_ipvsadm(read_fixture(IPVS_TABLE)), "ipvsadm -Ln", "",
                       ("eth0", "lo", "flannel.1"))
    return ipvs.evaluate(facts, CTX)


NO_OUTPUT_HOOK = KUBE_PROXY_MINIMAL.replace(
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n', "")
VXLAN_DROPPED = KUBE_PROXY_MINIMAL.replace(
    ":OUTPUT ACCEPT [0:0]\nCOMMIT\n",
    ":OUTPUT ACCEPT [0:0]\n-A INPUT -p udp -m udp --dport 8472 -j DROP\nCOMMIT\n")
NFT_DOCKER = "kafka-playground-8781-complete-nft-docker-dns.txt"

FAILING: dict[str, Case] = {
    **{finding_id: _checks_a(finding_id) for finding_id in checks_a.FAILING},
    "sysctl.ip-forward-off": lambda _tmp: ip_forward.evaluate(ip_forward.Facts(0, "0"), CTX),
    "cni.no-config": _cni(None),
    "cni.invalid-config": _cni({"10-flannel.conflist": FLANNEL.replace(
        '"cniVersion": "0.3.1",', '"cniVersion": "0.3.1"')}),
    "cni.multiple-configs": _cni({"11-crio-ipv4-bridge.conflist": CRIO,
                                  "10-flannel.conflist": FLANNEL}),
    "cni.plugin-binary-missing": _cni({"10-flannel.conflist": FLANNEL}, ("bridge",)),
    "vxlan.device-down": _vxlan("flannel-device-down.json"),
    "vxlan.mtu-too-large": _vxlan("flannel-fdb-gap-parent-mtu-lowered.json"),
    "vxlan.fdb-missing-peer": _vxlan("flannel-fdb-gap-parent-mtu-lowered.json"),
    "vxlan.checksum-offload-suspect": _vxlan("flannel-two-peers-healthy.json",
                                             snmp=["7", "12"]),
    "vxlan.no-device": _no_vxlan_device,
    "kube-proxy.not-running": _kube_proxy([ProcessInfo(6, "kubelet", ("kubelet",))]),
    "kube-proxy.healthz-failing": _kube_proxy([ProcessInfo(7, "kube-proxy", ("kube-proxy",))]),
    "kube-proxy.replaced-by-cilium": _kube_proxy([ProcessInfo(
        5, "cilium-agent", ("cilium-agent", "--kube-proxy-replacement=strict"))]),
    "iptables.no-endpoints": _iptables(("iptables-save", fixture(
        "flannel-centos7-after-reboot-host-prohibited-all-services-no-endpoints.txt"))),
    "iptables.kube-proxy-chains-missing": _iptables(("iptables-save", NO_OUTPUT_HOOK),
                                                    mode=IPTABLES_MODE),
    "iptables.forward-drop": _iptables(("iptables-save", fixture(NFT_DOCKER).replace(
        ":FORWARD ACCEPT", ":FORWARD DROP"))),
    "iptables.overlay-port-blocked": _iptables(("iptables-save", VXLAN_DROPPED),
                                               vxlan=(("flannel.1", 8472),)),
    "iptables.mixed-backends": _iptables(("iptables-legacy-save", KUBE_PROXY_MINIMAL),
                                         ("iptables-nft-save", fixture(NFT_DOCKER))),
    "ipvs.no-real-servers": _ipvs_table(read_fixture(
        "ipvsadm/k8s-123948-ipvs-after-switch-nodeport-without-backend.txt")),
    "ipvs.real-server-weight-zero": _ipvs_table(read_fixture(IPVS_TABLE).replace(
        "  -> 10.244.151.128:53            Masq    1",
        "  -> 10.244.151.128:53            Masq    0")),
    "ipvs.dummy-interface-missing": _ipvs_without_dummy,
}


def test_registry_is_valid() -> None:
    validate_registry(ALL_CHECKS)


def test_every_declared_id_has_a_failing_case() -> None:
    declared = {f.id for check in ALL_CHECKS for f in check.SPEC.findings}
    assert declared == set(FAILING)
    assert INFO_BY_DESIGN <= declared


@pytest.mark.parametrize("finding_id", sorted(FAILING))
def test_failing_case_raises_the_id(finding_id: str, tmp_path: Path) -> None:
    got = [f for f in FAILING[finding_id](tmp_path) if f.id == finding_id]
    assert got, f"no {finding_id} finding"
    worst = max(got, key=lambda f: f.severity)
    if finding_id in INFO_BY_DESIGN:
        assert worst.severity == Severity.INFO, got
    else:
        assert worst.severity >= Severity.WARNING, got
    assert worst.evidence and worst.remediation
