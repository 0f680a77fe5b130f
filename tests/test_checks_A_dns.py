"""DNS check: loopback resolv.conf vs kubelet's resolvConf, node-local-dns listeners; and the
resolv.conf and /proc/net parsers on recorded namespace files."""

from __future__ import annotations

import shutil

from agent.checks import dns
from agent.parsers.proc_net import (parse_fib_trie_local_addresses, parse_proc_net_route,
                                    parse_proc_net_sockets)
from agent.parsers.resolv_conf import parse_resolv_conf
from agent.report import Severity
from tests.checks_A_support import CTX, FIXTURES, RecordedHost, proc
from tests.conftest import read_fixture

BAD = "node-trees/flannel-strict-rp-hairpin-off"
GOOD = "node-trees/flannel-healthy"
#: systemd-resolved's stub listener (the address its stub-resolv.conf names): test input.
RESOLVED_STUB = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"
KUBELET = proc(3, "/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml")


def _by_id(findings):
    return {f.id: f for f in findings}


def test_parsers_on_recorded_namespace_files():
    tree = FIXTURES / GOOD / "proc/net"
    assert "169.254.20.10" in parse_fib_trie_local_addresses((tree / "fib_trie").read_text())
    assert "192.168.77.11" in parse_fib_trie_local_addresses((tree / "fib_trie").read_text())
    udp = parse_proc_net_sockets((tree / "udp").read_text())
    assert ("169.254.20.10", 53) in {(s.local_ip, s.local_port) for s in udp}
    assert ("0.0.0.0", 8472) in {(s.local_ip, s.local_port) for s in udp}  # the VXLAN socket
    routes = parse_proc_net_route((tree / "route").read_text())
    default = [r for r in routes if r.is_default]
    assert default and default[0].iface == "eth0" and default[0].gateway == "192.168.77.1"
    assert ("flannel.1", "10.244.1.0", 24) in {(r.iface, r.destination, r.prefix_len)
                                                for r in routes}
    conf = parse_resolv_conf("# c\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.10\n"
                             "nameserver 10.0.0.11\nsearch a b\n")
    assert [n.address for n in conf.nameservers] == ["127.0.0.53", "::1", "10.0.0.10"]
    assert [n.is_loopback for n in conf.nameservers] == [True, True, False]
    assert conf.search == ("a", "b")


def _tree(tmp_path, base=GOOD, resolv=None, kubelet_config=None, extra_files=None):
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / base, tree, symlinks=True)
    if resolv is not None:
        (tree / "root/etc/resolv.conf").write_text(resolv)
    if kubelet_config is not None:
        d = tree / "root/var/lib/kubelet"
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(kubelet_config)
    for path, text in (extra_files or {}).items():
        p = tree / "root" / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tree


def test_real_resolv_conf_is_ok():
    got = _by_id(dns.evaluate(dns.gather(RecordedHost(GOOD, (KUBELET,)), CTX), CTX))
    assert got["dns.resolv-conf-loopback"].severity is Severity.OK
    assert got["dns.nodelocaldns-not-listening"].severity is Severity.OK
    assert "169.254.20.10" in got["dns.nodelocaldns-not-listening"].evidence


def test_loopback_resolv_conf_warns_with_kubelet_default(tmp_path):
    kubelet = read_fixture("kubelet-config/minikube-kubeadm-generated-no-resolvconf-no-hairpin.txt")
    tree = _tree(tmp_path, resolv=RESOLVED_STUB, kubelet_config=kubelet)
    facts = dns.gather(RecordedHost(tree, (KUBELET,)), CTX)
    assert facts.cluster_dns == ("10.96.0.10",)
    f = _by_id(dns.evaluate(facts, CTX))["dns.resolv-conf-loopback"]
    assert f.severity is Severity.WARNING
    assert "/etc/resolv.conf:1: nameserver 127.0.0.53" in f.evidence
    assert "kubelet resolvConf not set (default /etc/resolv.conf)" in f.evidence
    assert dns.summarize(facts) == {"dns_host_resolv_loopback": True}


def test_loopback_resolv_conf_ok_when_kubelet_points_at_real_upstreams(tmp_path):
    upstream = (FIXTURES / GOOD / "root/etc/resolv.conf").read_text()
    kubelet = read_fixture("kubelet-config/minikube-kubeadm-generated-no-resolvconf-no-hairpin.txt")
    kubelet += "resolvConf: /run/systemd/resolve/resolv.conf\n"
    tree = _tree(tmp_path, resolv=RESOLVED_STUB, kubelet_config=kubelet,
                 extra_files={"/run/systemd/resolve/resolv.conf": upstream})
    f = _by_id(dns.evaluate(dns.gather(RecordedHost(tree, (KUBELET,)), CTX), CTX))[
        "dns.resolv-conf-loopback"]
    assert f.severity is Severity.OK
    assert "/run/systemd/resolve/resolv.conf nameservers: 10.255.255.53" in f.evidence
    # the flag wins over the config and may point at another loopback file
    flag = proc(3, "kubelet", "--resolv-conf=/etc/resolv.stub")
    tree2 = _tree(tmp_path / "2", resolv=RESOLVED_STUB, kubelet_config=kubelet,
                  extra_files={"/etc/resolv.stub": RESOLVED_STUB})
    f = _by_id(dns.evaluate(dns.gather(RecordedHost(tree2, (flag,)), CTX), CTX))[
        "dns.resolv-conf-loopback"]
    assert f.severity is Severity.WARNING and "/etc/resolv.stub:1" in f.evidence


def test_loopback_without_kubelet_is_info(tmp_path):
    tree = _tree(tmp_path, resolv=RESOLVED_STUB)
    f = _by_id(dns.evaluate(dns.gather(RecordedHost(tree), CTX), CTX))["dns.resolv-conf-loopback"]
    assert f.severity is Severity.INFO


def test_nodelocaldns_address_without_listener_warns():
    f = _by_id(dns.evaluate(dns.gather(RecordedHost(BAD, (KUBELET,)), CTX), CTX))[
        "dns.nodelocaldns-not-listening"]
    assert f.severity is Severity.WARNING
    assert "169.254.20.10 is a local address (/proc/net/fib_trie) but /proc/net/udp has no " \
           "socket on 169.254.20.10:53" in f.evidence


def test_kubelet_cluster_dns_link_local_but_address_missing_warns(tmp_path):
    tree = _tree(tmp_path, kubelet_config='{"kind": "KubeletConfiguration", '
                                          '"clusterDNS": ["169.254.25.10"]}')
    f = _by_id(dns.evaluate(dns.gather(RecordedHost(tree, (KUBELET,)), CTX), CTX))[
        "dns.nodelocaldns-not-listening"]
    assert f.severity is Severity.WARNING
    assert "kubelet clusterDNS 169.254.25.10 is link-local" in f.evidence
