"""parse_iptables_save on real dumps (tests/fixtures/iptables-save/, provenance in each header),
the kube-proxy view on top of it, and property tests: never raises, unreadable lines are
reported, save -> parse -> render -> parse is stable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.parsers.iptables_save import (NO_TABLE, parse_iptables_save, parse_rule_line,
                                         render_iptables_save, render_rule)
from agent.parsers.kube_proxy_rules import classify_kube_proxy_rules, service_endpoints
from tests.conftest import FIXTURES, read_fixture

ALL_DUMPS = sorted(p.name for p in (FIXTURES / "iptables-save").glob("*.txt"))


def dump_of(name: str):
    return parse_iptables_save(read_fixture(f"iptables-save/{name}"))


def test_reads_tables_chains_policies_and_counters_of_a_complete_dump() -> None:
    d = dump_of("flannel-centos7-after-reboot-host-prohibited-all-services-no-endpoints.txt")
    assert list(d.tables) == ["mangle", "nat", "filter"]
    assert d.backend == "legacy" and d.generator == "iptables-save v1.4.21"
    assert not d.truncated and not d.unparsed
    assert all(t.committed for t in d.tables.values())
    out = d.chain("filter", "OUTPUT")
    assert out is not None and out.policy == "ACCEPT" and out.packets == 488143
    assert out.bytes == 376292718
    assert d.chain("filter", "KUBE-SERVICES").policy is None  # user chain: "-"
    assert d.chain("nat", "KUBE-SVC-NPX46M4PTMTKRN6Y").rule_count == 2
    assert d.rule_count() == 86


def test_rule_matches_comment_negation_target_and_target_options() -> None:
    d = dump_of("flannel-centos7-after-reboot-host-prohibited-all-services-no-endpoints.txt")
    svc = d.chain("nat", "KUBE-SVC-NPX46M4PTMTKRN6Y").rules
    masq = svc[0]
    src = masq.option("-s")
    assert src is not None and src.negated and src.value == "10.1.0.0/16"
    assert masq.comment == "default/kubernetes:https cluster IP"
    assert masq.protocol == "tcp" and masq.dports() == ("443",) and masq.target == "KUBE-MARK-MASQ"
    assert masq.lineno > 0 and masq.line.startswith("-A KUBE-SVC-NPX46M4PTMTKRN6Y ! -s")
    dnat = d.chain("nat", "KUBE-SEP-54IUPJM2TTG4TKF2").rules[1]
    assert dnat.target == "DNAT" and dnat.target_option("--to-destination") == "192.168.1.5:6443"
    reject = d.chain("filter", "INPUT").rules[-1]
    assert reject.target == "REJECT" and reject.is_unconditional()
    assert reject.target_option("--reject-with") == "icmp-host-prohibited"


def test_old_style_negation_and_escaped_quotes() -> None:
    r = parse_rule_line('-A X -s ! 10.0.0.0/8 -m comment --comment "a \\"b\\" c" -j ACCEPT')
    assert r.option("-s").negated and r.option("-s").value == "10.0.0.0/8"
    assert r.comment == 'a "b" c'
    r2 = parse_rule_line(render_rule(r))
    assert r2.options == r.options and r2.target == r.target


def test_goto_is_told_from_jump() -> None:
    r = parse_rule_line("-A cali-FORWARD -i cali+ -g cali-from-wl-dispatch")
    assert r.goto and r.target == "cali-from-wl-dispatch"


def test_prompt_line_is_reported_and_the_rest_read() -> None:
    d = dump_of("flannel-centos7-after-flush-healthy-kube-ext-nodeports.txt")
    assert [(u.lineno, u.text) for u in d.unparsed] == [
        (1, "[zj@centos-7-01 create_k8s]$ sudo iptables-save")]
    assert "filter" in d.tables and d.rule_count() == 97


def test_tab_indented_paste_is_read() -> None:
    d = dump_of("k8s-66454-tab-indented-paste-no-service-chains.txt")
    assert list(d.tables) == ["mangle", "nat"] and not d.unparsed
    assert d.chain("nat", "PREROUTING").rules[0].target == "KUBE-SERVICES"
    assert d.truncated  # the paste stops inside nat


def test_crlf_line_ends_are_read() -> None:
    text = read_fixture("iptables-save/kafka-playground-8781-complete-nft-docker-dns.txt")
    d = parse_iptables_save(text.replace("\n", "\r\n"))
    assert d.backend == "nf_tables" and not d.unparsed and not d.truncated
    assert d.rule_count() == parse_iptables_save(text).rule_count() == 7


def test_wrapped_line_is_reported_not_guessed() -> None:
    d = dump_of("k8s-61944-flannel-and-weave-wrapped-line.txt")
    d.check_rules()
    assert len(d.unparsed) == 1 and "KUBE-POSTROUTI" in d.unparsed[0].text
    assert "stray value 'NG'" in d.unparsed[0].reason


def test_grepped_excerpt_lands_in_the_headerless_table() -> None:
    d = dump_of("cilium-26882-grep-cilium-raw-notrack-nat.txt")
    assert list(d.tables) == [NO_TABLE]
    notrack = d.chain(NO_TABLE, "CILIUM_PRE_raw").rules[0]
    assert notrack.target == "CT" and notrack.target_options[0].name == "--notrack"


@pytest.mark.parametrize("name,backend", [
    ("k8s-72370-xtables-nft-duplicated-kube-firewall.txt", "nf_tables"),
    ("kafka-playground-8781-complete-nft-docker-dns.txt", "nf_tables"),
    ("k8s-112477-nf-tables-1.8.8-header-grep.txt", "nf_tables"),
    ("gke-2016-kubeproxy-legacy-loadbalancer-full.txt", "legacy"),
])
def test_backend_from_the_header(name: str, backend: str) -> None:
    assert dump_of(name).backend == backend


def test_legacy_tables_warning_of_the_nft_backend_is_kept() -> None:
    d = parse_iptables_save("# Warning: iptables-legacy tables present, use iptables-legacy-save"
                            " to see them\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")
    assert d.legacy_tables_warning.startswith("# Warning: iptables-legacy tables present")


@pytest.mark.parametrize("name", ALL_DUMPS)
def test_every_real_dump_round_trips(name: str) -> None:
    d = dump_of(name)
    again = parse_iptables_save(render_iptables_save(d))
    assert [render_rule(r) for r in again.all_rules()] == [render_rule(r) for r in d.all_rules()]
    assert {t: [c.declaration() for c in x.chains.values() if c.declared]
            for t, x in again.tables.items()} == \
        {t: [c.declaration() for c in x.chains.values() if c.declared]
         for t, x in d.tables.items()}


# --- kube-proxy semantics ---------------------------------------------------------------------

def test_no_endpoints_rules_name_each_service_port() -> None:
    k = classify_kube_proxy_rules(dump_of(
        "flannel-centos7-after-reboot-host-prohibited-all-services-no-endpoints.txt"))
    got = {(n.service, n.protocol, n.address or "nodeport", n.port) for n in k.no_endpoints}
    assert ("kube-system/kube-dns:dns", "udp", "10.2.0.10", "53") in got
    assert ("jenkins/jenkins:http", "tcp", "nodeport", "32117") in got
    assert len(got) == 11
    assert all(n.evidence[0].startswith("filter:") for n in k.no_endpoints)


def test_etp_local_drop_is_no_local_endpoints() -> None:
    k = classify_kube_proxy_rules(dump_of(
        "k8s-125810-etp-local-no-local-endpoints-drop-kube-ext.txt"))
    (ne,) = k.no_endpoints
    assert ne.reason == "no local endpoints" and ne.port == "30100"
    assert ne.service == "envoy-gateway-system/envoy-default-eg-e41e7b31:http-80"


def test_service_graph_and_vip_digest_of_a_healthy_dump() -> None:
    d = dump_of("gke-2016-kubeproxy-legacy-loadbalancer-full.txt")
    k = classify_kube_proxy_rules(d)
    assert k.mode == "iptables" and set(k.hooks) == {"PREROUTING", "OUTPUT"}
    assert not k.no_endpoints
    assert "tcp/10.83.240.1:443" in k.vip_keys()
    assert any(p.kind == "load-balancer" for p in k.portals)
    assert any(p.kind == "node-port" for p in k.portals)
    api = next(p for p in k.portals if p.key == "tcp/10.83.240.1:443")
    assert len(service_endpoints(d, api)) == 1
    assert len(k.vip_digest()) == 16


def test_same_services_same_digest_whatever_the_endpoints() -> None:
    before = classify_kube_proxy_rules(dump_of(
        "flannel-centos7-after-reboot-host-prohibited-all-services-no-endpoints.txt"))
    after = classify_kube_proxy_rules(dump_of(
        "flannel-centos7-after-flush-healthy-kube-ext-nodeports.txt"))
    assert before.vip_keys() == after.vip_keys()
    assert before.vip_digest() == after.vip_digest()


def test_service_chain_without_endpoint_jumps_is_no_endpoints() -> None:
    text = ("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n"
            ":KUBE-SVC-AAAA - [0:0]\n"
            "-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n"
            '-A KUBE-SERVICES -d 10.96.0.9/32 -p tcp -m comment --comment "ns/web:http cluster '
            'IP" -m tcp --dport 80 -j KUBE-SVC-AAAA\n'
            '-A KUBE-SVC-AAAA ! -s 10.244.0.0/16 -d 10.96.0.9/32 -p tcp -m comment --comment '
            '"ns/web:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ\nCOMMIT\n')
    k = classify_kube_proxy_rules(parse_iptables_save(text))
    (ne,) = k.no_endpoints
    assert ne.service == "ns/web:http" and ne.reason == "service chain has no endpoints"


def test_grepped_nodeport_excerpt_with_reject_and_svc_jump() -> None:
    k = classify_kube_proxy_rules(dump_of(
        "calico-2024-nodeport-rejected-no-endpoints-while-svc-chain-exists.txt"))
    assert [(n.service, n.port) for n in k.no_endpoints] == [("bad-srv:management-port",
                                                              "31218")]
    assert k.vip_keys() == ("tcp/nodeport:31218", "tcp/nodeport:31275")


# --- properties -------------------------------------------------------------------------------

LINE = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["*filter", "*nat", "COMMIT", ":INPUT ACCEPT [0:0]", ":FOO - [1:2]",
                     "-A INPUT -j ACCEPT", "-A", "-A  X", ":", "*", "# Generated by x v1",
                     '-A X -m comment --comment "unterminated', "-A X ! ! -s 1", "-A X -j",
                     '-A KUBE-SERVICES -d 10.0.0.1/32 -p tcp -m comment --comment "a/b:c '
                     'cluster IP" -m tcp --dport 80 -j KUBE-SVC-X',
                     "-A KUBE-SEP-X -p tcp -j DNAT --to-destination 1.2.3.4:80"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, max_size=30))
def test_never_raises_and_reports_what_it_cannot_read(lines: list[str]) -> None:
    text = "\n".join(lines)
    d = parse_iptables_save(text)
    d.check_rules()
    classify_kube_proxy_rules(d)
    render_iptables_save(d)
    for u in d.unparsed:
        assert u.lineno >= 1 and u.reason


TOKEN = st.one_of(st.sampled_from(["-s", "-d", "-p", "--dport", "-m", "tcp", "comment",
                                   "--comment", "!", "10.0.0.0/8", "80", "a b", 'q"uote',
                                   "back\\slash", "-j", "ACCEPT", "DNAT", "--to-destination",
                                   "1.2.3.4:80", "-g", "X", ""]),
                  st.text(alphabet="abcXYZ-_!\"\\ 019:/", max_size=8))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(TOKEN, max_size=10), max_size=8))
def test_parse_render_parse_is_stable(rules: list[list[str]]) -> None:
    body = []
    for toks in rules:
        quoted = [f'"{t}"' if (" " in t or not t) and '"' not in t and "\\" not in t else t
                  for t in toks]
        body.append(" ".join(["-A", "CHAIN", *quoted]))
    text = "*filter\n:CHAIN - [0:0]\n" + "\n".join(body) + "\nCOMMIT\n"
    first = parse_iptables_save(text)
    first.check_rules()
    rendered = render_iptables_save(first)
    second = parse_iptables_save(rendered)
    second.check_rules()
    assert not second.unparsed
    assert [(r.chain, r.options, r.target, r.goto, r.target_options)
            for r in second.all_rules()] == \
        [(r.chain, r.options, r.target, r.goto, r.target_options) for r in first.all_rules()]
    assert render_iptables_save(second) == rendered
