"""Every finding id of the node checks A (rp_filter, bridge_nf, hairpin, conntrack, dns) has a
failing case, and the registry holds them."""

from __future__ import annotations

import pytest

from agent.checks import ALL_CHECKS, bridge_nf, conntrack, dns, hairpin, rp_filter
from agent.checks.base import validate_registry
from agent.checks.kube_components import KubeProxyMode
from agent.parsers.conntrack_proc import parse_conntrack_stat
from agent.parsers.proc_net import Route
from agent.parsers.resolv_conf import parse_resolv_conf
from agent.parsers.sysctl import parse_sysctl_conf
from agent.report import Severity
from tests.checks_A_support import CTX
from tests.conftest import read_fixture

CHECKS_A = (rp_filter, bridge_nf, hairpin, conntrack, dns)
IPTABLES = KubeProxyMode(True, "iptables", "kube-proxy --proxy-mode=iptables")


def _conntrack(**kw):
    base = dict(binary="/usr/sbin/conntrack", kube_proxy=IPTABLES,
                max_path="/proc/sys/net/netfilter/nf_conntrack_max", max=100, count=1,
                stat=parse_conntrack_stat(read_fixture(
                    "proc-nf-conntrack/prometheus-procfs-testdata-quiet-4cpu.txt")),
                stat_error="")
    base.update(kw)
    return conntrack.Facts(**base)


def _dns(**kw):
    base = dict(host_resolv=dns.ResolvFile("/etc/resolv.conf",
                                           parse_resolv_conf("nameserver 10.0.0.2\n")),
                kubelet_present=True, kubelet_resolv_conf=None, kubelet_resolv_source="",
                kubelet_resolv=None, cluster_dns=(), local_addresses=frozenset(), udp=(), tcp=())
    base.update(kw)
    return dns.Facts(**base)


FAILING = {
    "sysctl.rp-filter-strict": lambda: (rp_filter, rp_filter.Facts(
        (("all", 1), ("default", 0), ("cni0", 0)), (rp_filter.Interface("cni0", "bridge", ()),),
        (Route("cni0", "10.244.0.0", 24, "0.0.0.0", 1, 0),), False, (), ())),
    "sysctl.rp-filter-persisted": lambda: (rp_filter, rp_filter.Facts(
        (("all", 0), ("default", 0)), (), (), False,
        tuple(parse_sysctl_conf("net.ipv4.conf.all.rp_filter = 1\n", "/etc/sysctl.conf")), ())),
    "sysctl.bridge-nf-call-iptables-off": lambda: (bridge_nf, bridge_nf.Facts(
        0, "0", ("cni0",), IPTABLES)),
    "bridge.hairpin-off": lambda: (hairpin, hairpin.Facts(
        (hairpin.Bridge("cni0", 0x1003, (("veth1", 0),)),), None, False, None, "")),
    "conntrack.binary-missing": lambda: (conntrack, _conntrack(binary=None)),
    "conntrack.module-missing": lambda: (conntrack, _conntrack(max_path="", max=None, count=None,
                                                                stat=None, stat_error="absent")),
    "conntrack.table-near-full": lambda: (conntrack, _conntrack(count=90)),
    "conntrack.insert-failed": lambda: (conntrack, _conntrack(stat=parse_conntrack_stat(
        "entries insert_failed drop early_drop\n00000001 00000002 00000000 00000000\n"))),
    "conntrack.drops": lambda: (conntrack, _conntrack(stat=parse_conntrack_stat(read_fixture(
        "proc-nf-conntrack/netdata-161-old-kernel-drops-on-two-cpus.txt")))),
    "dns.resolv-conf-loopback": lambda: (dns, _dns(host_resolv=dns.ResolvFile(
        "/etc/resolv.conf", parse_resolv_conf("nameserver 127.0.0.53\n")))),
    "dns.nodelocaldns-not-listening": lambda: (dns, _dns(
        local_addresses=frozenset({"169.254.20.10"}))),
}


def test_registry_is_valid_and_holds_checks_a():
    validate_registry(ALL_CHECKS)
    for check in CHECKS_A:
        assert check in ALL_CHECKS


def test_every_id_has_a_failing_case():
    ids = {f.id for c in CHECKS_A for f in c.SPEC.findings}
    assert ids == set(FAILING)


@pytest.mark.parametrize("finding_id", sorted(FAILING))
def test_failing_case_raises_the_id(finding_id):
    check, facts = FAILING[finding_id]()
    got = [f for f in check.evaluate(facts, CTX) if f.id == finding_id]
    assert got and got[0].severity >= Severity.WARNING, got
    assert got[0].evidence and got[0].remediation
