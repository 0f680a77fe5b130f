"""The iptables and ipvs checks: a failing case per finding id on real dumps (or a minimal
kube-proxy-shaped one where no public dump shows the case), healthy cases, and gather through
a stub host (which commands exist, what they print)."""

from __future__ import annotations

from agent.checks import iptables, ipvs
from agent.checks.base import CheckContext, run_check
from agent.host import CommandResult, ToolMissing
from agent.parsers.iptables_save import parse_iptables_save
from agent.parsers.ipvsadm import parse_ipvsadm
from agent.report import Severity
from tests.conftest import read_fixture

CTX = CheckContext(node="node-1")


def facts_for(*texts: tuple[str, str], mode: iptables.KubeProxyMode | None = None,
              vxlan: tuple[tuple[str, int], ...] = ()) -> iptables.Facts:
    saves = tuple(iptables.SaveOutput(cmd, parse_iptables_save(t)) for cmd, t in texts)
    return iptables.Facts(saves, mode or iptables.KubeProxyMode(None), vxlan)


def fixture(name: str) -> str:
    return read_fixture(f"iptables-save/{name}")


def by_id(findings, finding_id: str):
    return [f for f in findings if f.id == finding_id]


def worst(findings, finding_id: str) -> Severity:
    return max((f.severity for f in by_id(findings, finding_id)), default=Severity.OK)


KUBE_PROXY_MINIMAL = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
"""


def test_no_endpoints_names_each_service_with_the_rule_and_a_fix_for_it() -> None:
    found = iptables.evaluate(facts_for(("iptables-save", fixture(
        "flannel-centos7-after-reboot-host-prohibited-all-services-no-endpoints.txt"))), CTX)
    dns = [f for f in by_id(found, "iptables.no-endpoints")
           if f.title.endswith("kube-system/kube-dns:dns has no endpoints")]
    assert len(dns) == 1 and dns[0].severity == Severity.ERROR
    assert '-A KUBE-SERVICES -d 10.2.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:' \
           'dns has no endpoints"' in dns[0].evidence
    assert "-n kube-system" in dns[0].remediation
    assert "service-name=kube-dns" in dns[0].remediation
    assert "targetPort" in dns[0].remediation and "restart kube-proxy" in dns[0].remediation
    assert len(by_id(found, "iptables.no-endpoints")) == 8  # services, not ports


def test_no_local_endpoints_is_a_warning() -> None:
    found = iptables.evaluate(facts_for(("iptables-save", fixture(
        "k8s-125810-etp-local-no-local-endpoints-drop-kube-ext.txt"))), CTX)
    (f,) = by_id(found, "iptables.no-endpoints")
    assert f.severity == Severity.WARNING and "externalTrafficPolicy" in f.title


def test_healthy_dump_is_ok_everywhere() -> None:
    found = iptables.evaluate(facts_for(("iptables-save", fixture(
        "gke-2016-kubeproxy-legacy-loadbalancer-full.txt"))), CTX)
    assert found and all(f.severity == Severity.OK for f in found)
    summary = iptables.summarize(facts_for(("iptables-save", fixture(
        "gke-2016-kubeproxy-legacy-loadbalancer-full.txt"))))
    assert summary["service_vips_count"] == 13  # 8 ClusterIPs, 2 LB IPs, 3 NodePorts
    assert len(summary["service_vips_digest"]) == 16
    assert "tcp/10.83.240.1:443" in summary["service_vips"]
    assert summary["kube_proxy_rules"] == "iptables"


def test_forward_policy_drop_with_only_docker_accepts_is_an_error() -> None:
    text = fixture("kafka-playground-8781-complete-nft-docker-dns.txt").replace(
        ":FORWARD ACCEPT", ":FORWARD DROP")
    (f,) = by_id(iptables.evaluate(facts_for(("iptables-save", text)), CTX),
                 "iptables.forward-drop")
    assert f.severity == Severity.ERROR and ":FORWARD DROP" in f.evidence


def test_forward_drop_in_a_cut_dump_is_a_warning_with_the_counters() -> None:
    (f,) = by_id(iptables.evaluate(facts_for(("iptables-save", fixture(
        "kilo-128-forward-policy-drop-with-dropped-packets.txt"))), CTX), "iptables.forward-drop")
    assert f.severity == Severity.WARNING
    assert "1752 packets already dropped" in f.evidence and "cut" in f.evidence


def test_catch_all_reject_before_the_cni_accept_is_forward_drop() -> None:
    (f,) = by_id(iptables.evaluate(facts_for(("iptables-save", fixture(
        "flannel-centos7-after-reboot-host-prohibited-all-services-no-endpoints.txt"))), CTX),
        "iptables.forward-drop")
    assert f.severity == Severity.ERROR
    assert "-A FORWARD -j REJECT --reject-with icmp-host-prohibited" in f.evidence


def test_flannel_forward_accept_is_ok() -> None:
    (f,) = by_id(iptables.evaluate(facts_for(("iptables-save", fixture(
        "flannel-centos7-after-flush-healthy-kube-ext-nodeports.txt"))), CTX),
        "iptables.forward-drop")
    assert f.severity == Severity.OK and "FLANNEL-FWD" in f.evidence


def test_drop_of_the_local_vxlan_port_is_an_error() -> None:
    text = KUBE_PROXY_MINIMAL.replace(":OUTPUT ACCEPT [0:0]\nCOMMIT\n",
                                      ":OUTPUT ACCEPT [0:0]\n-A INPUT -p udp -m udp --dport 8472 "
                                      "-j DROP\nCOMMIT\n")
    found = iptables.evaluate(facts_for(("iptables-save", text), vxlan=(("flannel.1", 8472),)),
                              CTX)
    (f,) = [f for f in by_id(found, "iptables.overlay-port-blocked") if f.severity]
    assert f.severity == Severity.ERROR and "flannel.1" in f.evidence
    assert "-A INPUT -p udp -m udp --dport 8472 -j DROP" in f.evidence
    assert "--dport 8472" in f.remediation


def test_port_range_and_multiport_drops_are_seen() -> None:
    text = ("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A OUTPUT -p udp -m multiport --dports 53,4789 -j REJECT\n"
            "-A INPUT -p udp -m udp --dport 8000:9000 -j DROP\nCOMMIT\n")
    found = [f for f in by_id(iptables.evaluate(facts_for(("iptables-save", text)), CTX),
                              "iptables.overlay-port-blocked") if f.severity]
    assert {(("OUTPUT" in f.title), ("4789" in f.title)) for f in found} == {(True, True),
                                                                           (False, False)}


def test_catch_all_reject_in_input_blocks_vxlan_as_warning_without_a_device() -> None:
    found = by_id(iptables.evaluate(facts_for(("iptables-save", fixture(
        "flannel-centos7-after-reboot-host-prohibited-all-services-no-endpoints.txt"))), CTX),
        "iptables.overlay-port-blocked")
    assert found and all(f.severity == Severity.WARNING for f in found)
    assert "-A INPUT -j REJECT --reject-with icmp-host-prohibited" in found[0].evidence


def test_accept_before_the_drop_unblocks() -> None:
    text = ("*filter\n:INPUT DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -p udp -m udp --dport 8472 -j ACCEPT\n"
            "-A INPUT -p udp -m udp --dport 4789 -j ACCEPT\nCOMMIT\n")
    found = by_id(iptables.evaluate(facts_for(("iptables-save", text)), CTX),
                  "iptables.overlay-port-blocked")
    assert [f.severity for f in found] == [Severity.OK]


def test_chains_missing_when_kube_proxy_runs_in_iptables_mode() -> None:
    text = KUBE_PROXY_MINIMAL.replace(
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n', "")
    mode = iptables.KubeProxyMode(True, "iptables", "kube-proxy --proxy-mode=iptables")
    (f,) = by_id(iptables.evaluate(facts_for(("iptables-save", text), mode=mode), CTX),
                 "iptables.kube-proxy-chains-missing")
    assert f.severity == Severity.ERROR and "nat OUTPUT has no jump to KUBE-SERVICES" in f.evidence
    empty = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    (f,) = by_id(iptables.evaluate(facts_for(("iptables-save", empty), mode=mode), CTX),
                 "iptables.kube-proxy-chains-missing")
    assert f.severity == Severity.ERROR and "no KUBE-SERVICES chain" in f.evidence


def test_chains_missing_not_applicable_without_kube_proxy_or_in_ipvs_mode() -> None:
    empty = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    for mode in (iptables.KubeProxyMode(False), iptables.KubeProxyMode(True, "ipvs", "flag"),
                 iptables.KubeProxyMode(None)):
        found = iptables.evaluate(facts_for(("iptables-save", empty), mode=mode), CTX)
        assert not by_id(found, "iptables.kube-proxy-chains-missing")


def test_chains_missing_in_a_cut_nat_table_is_only_info() -> None:
    (f,) = by_id(iptables.evaluate(facts_for(("iptables-save", fixture(
        "kube-router-1069-xtables-save-legacy-nft-mix.txt"))), CTX),
        "iptables.kube-proxy-chains-missing")
    assert f.severity == Severity.INFO


def test_rules_in_both_backends_are_mixed_backends() -> None:
    legacy = KUBE_PROXY_MINIMAL
    nft = fixture("kafka-playground-8781-complete-nft-docker-dns.txt")
    found = iptables.evaluate(facts_for(("iptables-legacy-save", legacy),
                                        ("iptables-nft-save", nft)), CTX)
    (f,) = by_id(found, "iptables.mixed-backends")
    assert f.severity == Severity.ERROR  # both have nat rules
    assert "iptables-legacy-save" in f.evidence and "iptables-nft-save" in f.evidence
    only_one = iptables.evaluate(facts_for(("iptables-legacy-save", "*filter\n:INPUT ACCEPT "
                                                                    "[0:0]\nCOMMIT\n"),
                                           ("iptables-nft-save", nft)), CTX)
    assert [f.severity for f in by_id(only_one, "iptables.mixed-backends")] == [Severity.OK]


def test_nft_warning_about_legacy_tables_is_mixed_backends() -> None:
    text = ("# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n"
            + fixture("kafka-playground-8781-complete-nft-docker-dns.txt"))
    (f,) = by_id(iptables.evaluate(facts_for(("iptables-save", text)), CTX),
                 "iptables.mixed-backends")
    assert f.severity == Severity.WARNING


# --- gather through a stub host -----------------------------------------------------------------

class StubHost:
    """Just what the iptables/ipvs gathers call; no live node."""

    def __init__(self, outputs: dict[str, CommandResult], proc: dict[str, str],
                 interfaces: list[str] | None = None) -> None:
        self.outputs, self.proc = outputs, proc
        self.interfaces = interfaces or ["eth0", "lo"]
        self.ran: list[tuple[str, ...]] = []

    def which(self, tool: str) -> str | None:
        return f"/usr/sbin/{tool}" if tool in self.outputs else None

    def run(self, argv, timeout=10.0, stdin=None):  # type: ignore[no-untyped-def]
        self.ran.append(tuple(argv))
        if argv[0] not in self.outputs:
            raise ToolMissing(argv[0])
        return self.outputs[argv[0]]

    def read_proc(self, rel: str, limit: int = 0) -> str:
        if rel not in self.proc:
            raise FileNotFoundError(2, "No such file or directory", f"/proc/{rel}")
        return self.proc[rel]

    def proc_exists(self, rel: str) -> bool:
        return rel in self.proc

    def list_sys_dir(self, rel: str) -> list[str]:
        return list(self.interfaces)

    def processes(self):  # type: ignore[no-untyped-def]
        return ()

    def netlink(self):  # type: ignore[no-untyped-def]
        raise OSError("no netlink in unit tests")

    def read_host_file(self, path: str, limit: int = 0) -> str:
        raise FileNotFoundError(path)


def ok(cmd: str, out: str) -> CommandResult:
    return CommandResult((cmd,), 0, out, "")


def test_gather_skips_legacy_without_legacy_tables_and_reads_nft() -> None:
    host = StubHost({"iptables-legacy-save": ok("iptables-legacy-save", ""),
                     "iptables-nft-save": ok("iptables-nft-save", KUBE_PROXY_MINIMAL)}, {})
    facts = iptables.gather(host, CTX)  # type: ignore[arg-type]
    assert host.ran == [("iptables-nft-save",)]
    assert [s.command for s in facts.saves] == ["iptables-nft-save"]
    assert facts.kube_proxy.running is False


def test_gather_reads_both_backends_when_legacy_tables_exist() -> None:
    host = StubHost({"iptables-legacy-save": ok("iptables-legacy-save", KUBE_PROXY_MINIMAL),
                     "iptables-nft-save": ok("iptables-nft-save", "")},
                    {"net/ip_tables_names": "nat\nfilter\n"})
    facts = iptables.gather(host, CTX)  # type: ignore[arg-type]
    assert [s.command for s in facts.saves] == ["iptables-legacy-save", "iptables-nft-save"]


def test_missing_iptables_is_a_skipped_info_finding() -> None:
    out = run_check(iptables, StubHost({}, {}), CTX)  # type: ignore[arg-type]
    (f,) = out.findings
    assert f.severity == Severity.INFO and "iptables-save not installed" in f.title


def test_failing_save_is_said() -> None:
    host = StubHost({"iptables-save": CommandResult(("iptables-save",), 1, "",
                                                    "iptables-save: Permission denied")}, {})
    out = run_check(iptables, host, CTX)  # type: ignore[arg-type]
    assert any(f.severity == Severity.INFO and "Permission denied" in f.title
               for f in out.findings)


# --- IPVS -------------------------------------------------------------------------------------

def test_ipvs_not_applicable_on_an_iptables_node() -> None:
    out = run_check(ipvs, StubHost({}, {}), CTX)  # type: ignore[arg-type]
    (f,) = out.findings
    assert f.severity == Severity.OK and "not applicable" in f.title
    assert out.facts == {}


def test_ipvs_virtual_server_without_real_servers() -> None:
    table = parse_ipvsadm(read_fixture(
        "ipvsadm/k8s-123948-ipvs-after-switch-nodeport-without-backend.txt"))
    found = ipvs.evaluate_table(table, CTX)
    (f,) = [f for f in found if f.id == "ipvs.no-real-servers"]
    assert f.severity == Severity.ERROR and "NodePort 30020" in f.title
    assert "TCP  10.10.50.6:30020 rr" in f.evidence


def test_ipvs_weight_zero_real_servers() -> None:
    text = read_fixture("ipvsadm/kubeadm-2205-nodeport-on-every-local-address.txt").replace(
        "  -> 10.244.151.128:53            Masq    1",
        "  -> 10.244.151.128:53            Masq    0")
    found = ipvs.evaluate_table(parse_ipvsadm(text), CTX)
    (f,) = [f for f in found if f.id == "ipvs.real-server-weight-zero"]
    assert f.severity == Severity.WARNING and "10.244.151.128:53" in f.evidence


def test_ipvs_dummy_interface_missing_in_ipvs_mode() -> None:
    facts = ipvs.Facts(True, "kube-proxy runs in ipvs mode", True,
                       parse_ipvsadm(read_fixture(
                           "ipvsadm/kubeadm-2205-nodeport-on-every-local-address.txt")),
                       "ipvsadm -Ln", "", ("eth0", "lo", "flannel.1"))
    found = ipvs.evaluate(facts, CTX)
    (f,) = [f for f in found if f.id == "ipvs.dummy-interface-missing"]
    assert f.severity == Severity.ERROR and "kube-ipvs0" in f.evidence
    summary = ipvs.summarize(facts)
    assert summary["kube_proxy_rules"] == "ipvs"
    assert summary["service_vips_count"] == 4  # 3 ClusterIPs + the NodePort once


def test_ipvs_gather_reads_proc_net_ip_vs() -> None:
    proc = ("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler "
            "Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
            "TCP  0A600001:01BB rr\n")
    out = run_check(ipvs, StubHost({}, {"net/ip_vs": proc},  # type: ignore[arg-type]
                                   ["eth0", "kube-ipvs0"]), CTX)
    (f,) = [f for f in out.findings if f.id == "ipvs.no-real-servers"]
    assert f.severity == Severity.ERROR and "10.96.0.1:443" in f.title


def test_thousands_of_services_without_endpoints_stay_a_bounded_list() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
    from gen_kube_proxy_dump import generate_iptables_save

    text = "\n".join(generate_iptables_save(300, 2, no_endpoints_every=2)) + "\n"
    found = by_id(iptables.evaluate(facts_for(("iptables-save", text)), CTX),
                  "iptables.no-endpoints")
    assert len(found) == iptables.NO_ENDPOINTS_FINDINGS_MAX + 1
    assert found[-1].title == "100 more Service ports have no endpoints"
    assert all(f.severity == Severity.ERROR for f in found)


def test_chains_in_one_backend_are_enough() -> None:
    mode = iptables.KubeProxyMode(True, "iptables", "kube-proxy --proxy-mode=iptables")
    empty_nat = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -j X\n" \
                ":X - [0:0]\nCOMMIT\n"
    found = iptables.evaluate(facts_for(("iptables-nft-save", empty_nat),
                                        ("iptables-legacy-save", KUBE_PROXY_MINIMAL),
                                        mode=mode), CTX)
    (f,) = by_id(found, "iptables.kube-proxy-chains-missing")
    assert f.severity == Severity.OK


class GenerationHost(StubHost):
    def __init__(self, *args, gens: list[int | None], **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kw)
        self.gens = gens

    def nft_generation(self) -> int | None:
        return self.gens.pop(0) if len(self.gens) > 1 else self.gens[0]


def test_unchanged_nft_generation_reuses_the_last_save() -> None:
    iptables._NFT_SAVES.clear()
    try:
        out = ok("iptables-nft-save", "# Generated by iptables-nft-save v1.8.9 (nf_tables) on x\n"
                 + KUBE_PROXY_MINIMAL)
        host = GenerationHost({"iptables-nft-save": out}, {}, gens=[7, 7, 7, 8, 8])
        first = iptables.gather(host, CTX)  # type: ignore[arg-type]
        second = iptables.gather(host, CTX)  # type: ignore[arg-type]
        assert host.ran == [("iptables-nft-save",)]
        assert second.saves[0] is first.saves[0]
        iptables.gather(host, CTX)  # type: ignore[arg-type]  # generation 8: read again
        assert host.ran == [("iptables-nft-save",)] * 2
    finally:
        iptables._NFT_SAVES.clear()


def test_a_change_during_the_save_is_not_cached() -> None:
    iptables._NFT_SAVES.clear()
    try:
        out = ok("iptables-nft-save", KUBE_PROXY_MINIMAL)
        host = GenerationHost({"iptables-nft-save": out}, {}, gens=[3, 4, 4, 4])
        iptables.gather(host, CTX)  # type: ignore[arg-type]
        assert not iptables._NFT_SAVES
    finally:
        iptables._NFT_SAVES.clear()


def test_goto_does_not_come_back() -> None:
    text = ("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:ALLOWED - [0:0]\n"
            "-A INPUT -p udp -g ALLOWED\n-A INPUT -j DROP\n-A ALLOWED -j LOG\nCOMMIT\n")
    found = by_id(iptables.evaluate(facts_for(("iptables-save", text)), CTX),
                  "iptables.overlay-port-blocked")
    assert [f.severity for f in found] == [Severity.OK]
    jumped = text.replace("-g ALLOWED", "-j ALLOWED")
    found = by_id(iptables.evaluate(facts_for(("iptables-save", jumped)), CTX),
                  "iptables.overlay-port-blocked")
    assert found and all(f.severity == Severity.WARNING for f in found)


def test_input_policy_drop_without_an_accept_blocks_the_device_port() -> None:
    text = ("*filter\n:INPUT DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n"
            "-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n")
    found = [f for f in by_id(iptables.evaluate(facts_for(("iptables-save", text),
                                                          vxlan=(("flannel.1", 8472),)), CTX),
                              "iptables.overlay-port-blocked") if f.severity]
    by_port = {f.title.split("UDP ")[1].split()[0]: f for f in found}
    assert by_port["8472"].severity == Severity.ERROR
    assert ":INPUT DROP [0:0] (the policy" in by_port["8472"].evidence
    assert by_port["4789"].severity == Severity.WARNING


def test_reject_and_service_chain_for_the_same_port_is_stale_kube_proxy() -> None:
    (f,) = by_id(iptables.evaluate(facts_for(("iptables-save", fixture(
        "calico-2024-nodeport-rejected-no-endpoints-while-svc-chain-exists.txt"))), CTX),
        "iptables.no-endpoints")
    assert f.severity == Severity.ERROR and "stale kube-proxy rules" in f.title
    assert "still jumps to KUBE-SVC-GQKCP75KCV7PRX6J" in f.evidence
    assert f.remediation.startswith("kube-proxy's rules on this node contradict each other")


def test_a_legacy_save_is_never_reused() -> None:
    iptables._NFT_SAVES.clear()
    try:
        host = GenerationHost({"iptables-save": ok("iptables-save", "")}, {}, gens=[5])
        iptables.gather(host, CTX)  # type: ignore[arg-type]
        iptables.gather(host, CTX)  # type: ignore[arg-type]
        assert host.ran == [("iptables-save",)] * 2  # empty output: backend unknown
    finally:
        iptables._NFT_SAVES.clear()


def test_chains_missing_with_kube_proxy_mode_unknown_needs_its_traces() -> None:
    """An unreadable kube-proxy config (mode "unknown") is checked like an offline paste: a
    dump with KUBE-* chains but no OUTPUT hook is flagged, an empty nat table is not."""
    unknown = iptables.KubeProxyMode(True, "unknown", "--config /x unreadable")
    text = KUBE_PROXY_MINIMAL.replace(
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n', "")
    (f,) = by_id(iptables.evaluate(facts_for(("iptables-save", text), mode=unknown), CTX),
                 "iptables.kube-proxy-chains-missing")
    assert f.severity == Severity.ERROR and "nat OUTPUT has no jump to KUBE-SERVICES" in f.evidence
    empty = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    found = iptables.evaluate(facts_for(("iptables-save", empty), mode=unknown), CTX)
    assert not by_id(found, "iptables.kube-proxy-chains-missing")


def test_no_tables_at_all_is_one_ok_line_saying_so() -> None:
    """An empty ruleset (a fresh VM) still shows in the report that the check ran."""
    (f,) = iptables.evaluate(facts_for(("iptables-nft-save", "")), CTX)
    assert (f.id, f.severity) == ("iptables.forward-drop", Severity.OK)
    assert f.evidence == "iptables-nft-save: no tables"
