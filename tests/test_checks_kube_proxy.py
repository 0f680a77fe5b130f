"""The kube-proxy check: processes and endpoints faked at the Host edge, config files in a
small tree (the kube-proxy-config fixtures are real published configs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.checks import kube_proxy
from agent.checks.base import CheckContext
from agent.host import Host, HttpResponse, ProcessInfo
from agent.report import Severity
from tests.conftest import read_fixture

CTX = CheckContext(node="n1")
KUBEADM_ARGV = ("/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
                "--hostname-override=n1")


class FakeHost(Host):
    def __init__(self, tmp_path: Path, procs: list[ProcessInfo],
                 answers: dict[str, int | str | Exception] | None = None) -> None:
        super().__init__(root=tmp_path / "host", proc=tmp_path / "proc", sys=tmp_path / "sys")
        self.tmp = tmp_path
        self.procs = tuple(procs)
        self.answers = answers or {}
        self.urls: list[str] = []

    def processes(self):
        return self.procs

    def http_get(self, url: str, timeout: float = 1.0, limit: int = 65536) -> HttpResponse:
        self.urls.append(url)
        answer = self.answers.get(url, ConnectionRefusedError(111, "Connection refused"))
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            return HttpResponse(url, answer, "")
        return HttpResponse(url, 200, answer)

    def put(self, path: str, text: str) -> None:
        target = self.tmp / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def run(host: Host):
    facts = kube_proxy.gather(host, CTX)
    return facts, kube_proxy.evaluate(facts, CTX), kube_proxy.summarize(facts)


HEALTHZ = "http://127.0.0.1:10256/healthz"
PROXYMODE = "http://127.0.0.1:10249/proxyMode"


def test_kubeadm_kube_proxy_mode_from_config_in_its_own_root(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, [ProcessInfo(42, "kube-proxy", KUBEADM_ARGV)], {HEALTHZ: 200})
    host.put("proc/42/root/var/lib/kube-proxy/config.conf",
             read_fixture("kube-proxy-config/k8s-112185-kubeadm-style-ipvs-lc-full.txt"))
    facts, fs, summary = run(host)
    assert summary == {"kube_proxy_mode": "ipvs"}
    assert [(f.id, f.severity) for f in fs] == [("kube-proxy.not-running", Severity.OK)]
    assert "kube-proxy runs in ipvs mode" == fs[0].title
    assert "mode from /proc/42/root/var/lib/kube-proxy/config.conf: mode: ipvs" in fs[0].evidence
    assert "-> 200" in fs[0].evidence


def test_proxy_mode_endpoint_wins_over_flags(tmp_path: Path) -> None:
    argv = ("kube-proxy", "--proxy-mode=iptables")
    host = FakeHost(tmp_path, [ProcessInfo(7, "kube-proxy", argv)],
                    {HEALTHZ: 200, PROXYMODE: "nftables"})
    _, fs, summary = run(host)
    assert summary == {"kube_proxy_mode": "nftables"} and "GET " + PROXYMODE in fs[0].evidence


def test_binary_install_uses_node_ip_bind_addresses_from_host_config(tmp_path: Path) -> None:
    argv = ("/opt/kubernetes/bin/kube-proxy",
            "--config=/opt/kubernetes/cfg/kube-proxy.config.yaml")
    host = FakeHost(tmp_path, [ProcessInfo(9, "kube-proxy", argv)],
                    {"http://172.16.18.204:10256/healthz": 503})
    host.put("host/opt/kubernetes/cfg/kube-proxy.config.yaml",
             read_fixture("kube-proxy-config/opsnull-386-binary-install-ipvs-minimal.txt"))
    _, fs, summary = run(host)
    assert host.urls == ["http://172.16.18.204:10249/proxyMode",
                         "http://172.16.18.204:10256/healthz"]
    assert summary == {"kube_proxy_mode": "ipvs"}
    [f] = fs
    assert (f.id, f.severity) == ("kube-proxy.healthz-failing", Severity.WARNING)
    assert f.evidence == "kube-proxy pid 9: GET http://172.16.18.204:10256/healthz -> 503"


def test_healthz_refused_while_running_warns(tmp_path: Path) -> None:
    _, fs, summary = run(FakeHost(tmp_path, [ProcessInfo(7, "kube-proxy", ("kube-proxy",))]))
    [f] = fs
    assert f.id == "kube-proxy.healthz-failing" and "connection refused" in f.evidence
    assert summary == {"kube_proxy_mode": "iptables"}  # the Linux default


def test_unreadable_config_makes_mode_unknown(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, [ProcessInfo(42, "kube-proxy", KUBEADM_ARGV)], {HEALTHZ: 200})
    facts, fs, summary = run(host)
    assert summary == {"kube_proxy_mode": "unknown"}
    assert "unreadable" in fs[0].evidence


@pytest.mark.parametrize("argv", [
    ("cilium-agent", "--kube-proxy-replacement=true"),
    ("/usr/bin/cilium-agent", "--kube-proxy-replacement", "strict"),
])
def test_absent_with_cilium_replacement_is_info_never_an_error(tmp_path: Path, argv) -> None:
    _, fs, summary = run(FakeHost(tmp_path, [ProcessInfo(5, "cilium-agent", argv)]))
    assert [(f.id, f.severity) for f in fs] == [("kube-proxy.replaced-by-cilium", Severity.INFO)]
    assert summary == {"kube_proxy_mode": "replaced-by-cilium"}


def test_cilium_replacement_from_its_config_dir(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, [ProcessInfo(5, "cilium-agent",
                                           ("cilium-agent", "--config-dir=/tmp/cilium/config-map"))])
    host.put("proc/5/root/tmp/cilium/config-map/kube-proxy-replacement", "true")
    _, fs, _ = run(host)
    assert fs[0].id == "kube-proxy.replaced-by-cilium"
    assert "/tmp/cilium/config-map/kube-proxy-replacement = true" in fs[0].evidence


def test_absent_without_replacement_warns(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, [ProcessInfo(5, "cilium-agent",
                                           ("cilium-agent", "--kube-proxy-replacement=false")),
                               ProcessInfo(6, "kubelet", ("kubelet",))])
    _, fs, summary = run(host)
    assert [(f.id, f.severity) for f in fs] == [("kube-proxy.not-running", Severity.WARNING)]
    assert "--kube-proxy-replacement=false" in fs[0].evidence
    assert summary == {"kube_proxy_mode": "absent"} and host.urls == []


def test_k3s_embeds_kube_proxy(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, [ProcessInfo(3, "k3s-server", ("/usr/local/bin/k3s", "server"))],
                    {HEALTHZ: 200, PROXYMODE: "iptables"})
    _, fs, summary = run(host)
    assert fs[0].severity == Severity.OK and "k3s (pid 3, embeds kube-proxy)" in fs[0].evidence
    assert summary == {"kube_proxy_mode": "iptables"}


@pytest.mark.parametrize("bind, url", [
    ("", "http://127.0.0.1:10256/healthz"),
    ("0.0.0.0:10256", "http://127.0.0.1:10256/healthz"),
    ("10.0.0.5:1234", "http://10.0.0.5:1234/healthz"),
    ("[::]:10256", "http://127.0.0.1:10256/healthz"),
    ("[fd00::5]:10256", "http://[fd00::5]:10256/healthz"),
])
def test_endpoint_url_from_bind_address(bind: str, url: str) -> None:
    assert kube_proxy.endpoint_url(bind, 10256, "/healthz") == url


def test_k3s_with_kube_proxy_disabled_does_not_count(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, [ProcessInfo(3, "k3s-server", ("/usr/local/bin/k3s", "server"))])
    host.put("host/etc/rancher/k3s/config.yaml", "write-kubeconfig-mode: \"0644\"\n"
             "disable-kube-proxy: true\nflannel-backend: none\n")
    _, fs, summary = run(host)
    assert fs[0].id == "kube-proxy.not-running" and summary == {"kube_proxy_mode": "absent"}
    host = FakeHost(tmp_path, [ProcessInfo(3, "k3s", ("k3s", "agent",
                                                      "--disable-kube-proxy"))])
    assert run(host)[2] == {"kube_proxy_mode": "absent"}


def test_every_check_that_needs_the_mode_shares_one_verdict(tmp_path: Path) -> None:
    """/proxyMode beats the flag for every check, not only this one (one source of truth)."""
    from agent.checks import bridge_nf, conntrack, iptables, ipvs, kube_components

    for check in (bridge_nf, conntrack, iptables, ipvs):
        assert check.gather_kube_proxy_mode is kube_components.gather_kube_proxy_mode
    argv = ("kube-proxy", "--proxy-mode=ipvs")
    host = FakeHost(tmp_path, [ProcessInfo(7, "kube-proxy", argv)], {PROXYMODE: "nftables\n"})
    assert kube_components.gather_kube_proxy_mode(host) == kube_components.KubeProxyMode(
        True, "nftables", "GET " + PROXYMODE)
    assert run(host)[2] == {"kube_proxy_mode": "nftables"}


@pytest.mark.parametrize("config, argv, mode, source", [
    ({"mode": ""}, ("kube-proxy", "--proxy-mode=ipvs"), "iptables",
     "/c.yaml: mode: (empty: the default)"),
    ({"mode": "kernelspace"}, ("kube-proxy",), "unknown", "/c.yaml: mode: kernelspace"),
    ({}, ("kube-proxy", "--proxy-mode", "IPVS"), "ipvs", "kube-proxy --proxy-mode=IPVS"),
])
def test_classify_mode_config_before_flag_before_default(config, argv, mode, source) -> None:
    from agent.checks.kube_components import KubeProxyFacts, classify_kube_proxy_mode

    facts = KubeProxyFacts(ProcessInfo(7, "kube-proxy", argv), config_path="/c.yaml",
                           config_source="/c.yaml", config=config)
    got = classify_kube_proxy_mode(facts)
    assert (got.running, got.mode, got.source) == (True, mode, source)


def test_proxy_mode_is_asked_once_per_host_however_many_checks_need_it(tmp_path: Path) -> None:
    from agent.checks import kube_components

    host = FakeHost(tmp_path, [ProcessInfo(7, "kube-proxy", ("kube-proxy",))],
                    {HEALTHZ: 200, PROXYMODE: "ipvs"})
    for _ in range(4):
        assert kube_components.gather_kube_proxy_mode(host).mode == "ipvs"
    run(host)
    assert host.urls == [PROXYMODE, HEALTHZ]
