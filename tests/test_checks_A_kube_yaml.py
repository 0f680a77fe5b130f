"""parse_top_level_scalars / parse_top_level_list on real kubelet and kube-proxy configs."""

from __future__ import annotations

from agent.parsers.kube_yaml import parse_top_level_list, parse_top_level_scalars
from tests.conftest import read_fixture


def test_reads_kubeadm_kubelet_config_scalars_and_block_list() -> None:
    text = read_fixture("kubelet-config/minikube-kubeadm-generated-no-resolvconf-no-hairpin.txt")
    got = parse_top_level_scalars(text)
    assert got["kind"] == "KubeletConfiguration"
    assert got["cgroupDriver"] == "cgroupfs"
    assert got["healthzPort"] == "10248"
    assert got["clusterDomain"] == "cluster.local"
    assert "hairpinMode" not in got and "resolvConf" not in got
    # nested blocks and their children are not top-level scalars
    assert "authentication" not in got and "enabled" not in got and "logging" not in got
    assert parse_top_level_list(text, "clusterDNS") == ["10.96.0.10"]


def test_reads_flow_list_and_ignores_pasted_prompt() -> None:
    text = read_fixture("kubelet-config/binary-install-flow-list-clusterdns-no-resolvconf.txt")
    got = parse_top_level_scalars(text)
    assert got["address"] == "172.20.0.113"
    assert got["readOnlyPort"] == "10255"
    assert "clusterDNS" not in got  # a list, not a scalar
    assert parse_top_level_list(text, "clusterDNS") == ["10.254.0.2"]
    assert not any("root@" in k or "cat" in k for k in got)


def test_kube_proxy_mode_unquoted_and_quoted() -> None:
    full = parse_top_level_scalars(
        read_fixture("kube-proxy-config/k8s-112185-kubeadm-style-ipvs-lc-full.txt"))
    assert full["mode"] == "ipvs"
    assert full["kind"] == "KubeProxyConfiguration"
    assert full["metricsBindAddress"] == "127.0.0.1:10249"
    assert full["healthzBindAddress"] == ""  # "" is an explicit empty scalar
    assert "scheduler" not in full and "nodePortAddresses" not in full
    minimal = parse_top_level_scalars(
        read_fixture("kube-proxy-config/opsnull-386-binary-install-ipvs-minimal.txt"))
    assert minimal["mode"] == "ipvs"
    assert minimal["healthzBindAddress"] == "172.16.18.204:10256"


def test_comments_quotes_and_documents() -> None:
    text = ("# leading comment\n"
            "apiVersion: v1\nkind: ConfigMap\n"
            "---\n"
            "kind: KubeletConfiguration  # the one we want\n"
            "hairpinMode: 'hairpin-veth' # set by hand\n"
            "resolvConf: \"/run/systemd/resolve/resolv.conf\"\n"
            "note: a#b\n")
    got = parse_top_level_scalars(text)
    assert got == {"kind": "KubeletConfiguration", "hairpinMode": "hairpin-veth",
                   "resolvConf": "/run/systemd/resolve/resolv.conf", "note": "a#b"}


def test_json_config_accepted() -> None:
    text = ('{"kind": "KubeletConfiguration", "hairpinMode": "promiscuous-bridge", '
            '"clusterDNS": ["169.254.20.10"], "port": 10250, "failSwapOn": false, '
            '"authentication": {"anonymous": {"enabled": false}}}')
    got = parse_top_level_scalars(text)
    assert got == {"kind": "KubeletConfiguration", "hairpinMode": "promiscuous-bridge",
                   "port": "10250", "failSwapOn": "false"}
    assert parse_top_level_list(text, "clusterDNS") == ["169.254.20.10"]


def test_never_raises_on_garbage() -> None:
    for garbage in ("", "\x00\xff", "{not json", "[1, 2]", ":::\n- - -\n  x: y",
                    "mode: [unclosed", "{\"a\": [1,"):
        assert isinstance(parse_top_level_scalars(garbage), dict)
        assert isinstance(parse_top_level_list(garbage, "mode"), list)
    assert parse_top_level_scalars("{not json\nmode: iptables\n") == {"mode": "iptables"}
    assert parse_top_level_list("mode: [unclosed", "mode") == ["unclosed"]
