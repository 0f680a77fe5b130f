"""`netdiag analyze` in-process (agent.cli.main) on recorded real output written to files the way
an SRE would save a paste; plus the ipvsadm and conntrack -S parsers it relies on."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.analyze import detect_format
from agent.cli import main
from agent.parsers.conntrack_cli import ConntrackCliError, parse_conntrack_stats
from agent.parsers.ipvsadm import check_real_servers, parse_ipvsadm, parse_proc_ip_vs
from tests.conftest import read_fixture


def paste(tmp_path: Path, rel: str, prefix: str = "", crlf: bool = False) -> str:
    text = prefix + read_fixture(rel)
    if crlf:
        text = text.replace("\n", "\r\n")
    path = tmp_path / Path(rel).name
    path.write_bytes(text.encode())
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["analyze", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_iptables_paste_gives_the_node_verdicts(tmp_path: Path, capsys) -> None:
    f = paste(tmp_path, "iptables-save/flannel-centos7-after-reboot-host-prohibited-all-"
                        "services-no-endpoints.txt")
    code, out, err = run(capsys, f)
    assert code == 2 and not err
    assert "ERROR   iptables.no-endpoints" in out
    assert "Service kube-system/kube-dns:dns has no endpoints" in out
    assert "-A FORWARD -j REJECT --reject-with icmp-host-prohibited" in out
    assert "Traceback" not in out


def test_json_has_the_finding_shape_and_the_full_vip_set(tmp_path: Path, capsys) -> None:
    f = paste(tmp_path, "iptables-save/gke-2016-kubeproxy-legacy-loadbalancer-full.txt")
    code, out, _ = run(capsys, "--json", f)
    data = json.loads(out)
    assert code == 0
    assert set(data["findings"][0]) == {"id", "severity", "node", "title", "evidence",
                                        "remediation"}
    (info,) = data["files"]
    assert info["format"] == "iptables-save"
    assert len(info["facts"]["service_vips"]) == info["facts"]["service_vips_count"] == 13


def test_prompt_crlf_and_cut_output_are_noted(tmp_path: Path, capsys) -> None:
    f = paste(tmp_path, "iptables-save/kilo-128-forward-policy-drop-with-dropped-packets.txt",
              prefix="root@node1:~# iptables-save\n", crlf=True)
    code, out, _ = run(capsys, f)
    assert code == 1
    assert "line 1: 'root@node1:~# iptables-save'" in out
    assert "the output was cut: table(s) filter have no COMMIT" in out
    assert "WARNING iptables.forward-drop" in out


def test_ipvsadm_paste(tmp_path: Path, capsys) -> None:
    f = paste(tmp_path, "ipvsadm/k8s-123948-ipvs-after-switch-nodeport-without-backend.txt")
    code, out, _ = run(capsys, f)
    assert code == 2 and "ipvs.no-real-servers" in out and "NodePort 30020" in out


def test_grepped_ipvsadm_excerpt_is_a_warning_with_a_note(tmp_path: Path, capsys) -> None:
    f = paste(tmp_path, "ipvsadm/k8s-96879-dualstack-nodeport-localhost-entries-grep.txt",
              prefix="# ipvsadm -Ln | grep 31201\n")
    code, out, _ = run(capsys, f)
    assert code == 1 and "an excerpt (grep?)" in out


def test_conntrack_stats_paste_from_stdin(monkeypatch, capsys) -> None:
    text = read_fixture("conntrack-stats/telegraf-8955-busy-host-one-insert-failed.txt")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code, out, _ = run(capsys, "-")
    assert code == 1
    assert "conntrack.insert-failed" in out and "insert_failed = 1 (cpu7 = 1)" in out


def test_several_files_at_once_worst_wins(tmp_path: Path, capsys) -> None:
    a = paste(tmp_path, "iptables-save/gke-2016-kubeproxy-legacy-loadbalancer-full.txt")
    b = paste(tmp_path, "ipvsadm/kubeadm-2205-nodeport-on-every-local-address.txt")
    c = paste(tmp_path, "conntrack-stats/conntrack-stats-exporter-readme-healthy.txt")
    code, out, _ = run(capsys, a, b, c)
    assert code == 0 and "3 file(s)" in out


def test_unreadable_and_unknown_inputs_exit_64_with_a_message(tmp_path: Path, capsys) -> None:
    code, out, err = run(capsys, str(tmp_path / "missing.txt"))
    assert code == 64 and "cannot read" in err and "Traceback" not in err
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\nworld\n")
    code, out, err = run(capsys, str(junk))
    assert code == 64 and "format not recognised" in out


def test_no_files_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["analyze"])
    assert exc.value.code == 64


@pytest.mark.parametrize("rel,fmt", [
    ("iptables-save/k8s-66454-tab-indented-paste-no-service-chains.txt", "iptables-save"),
    ("iptables-save/cilium-26882-grep-cilium-raw-notrack-nat.txt", "iptables-save"),
    ("ipvsadm/manual-ipvs-stats-hairpin-backend-asymmetry.txt", "ipvsadm"),
    ("ipvsadm/k8s-96879-dualstack-nodeport-localhost-entries-grep.txt", "ipvsadm"),
    ("conntrack-stats/google-nftables-138-kernel510-no-ignore-column.txt", "conntrack-stats"),
])
def test_detects_the_format(rel: str, fmt: str) -> None:
    assert detect_format(read_fixture(rel)) == fmt


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_analyze_never_raises_on_arbitrary_text(text: str) -> None:
    from agent.analyze import analyze_texts, render_analyses

    render_analyses(analyze_texts([("x", text)]))


# --- the parsers behind it -------------------------------------------------------------------

def test_ipvsadm_list_layout() -> None:
    t = parse_ipvsadm(read_fixture("ipvsadm/kubeadm-2205-nodeport-on-every-local-address.txt"))
    assert t.version == "1.2.1 (size=4096)" and t.layout == "list" and t.has_header
    dns = t.virtual_servers[1]
    assert (dns.protocol, dns.address, dns.port, dns.scheduler) == ("tcp", "10.96.0.10", 53,
                                                                    "rr")
    assert [(r.address, r.port, r.forward, r.weight) for r in dns.real_servers] == [
        ("10.244.151.128", 53, "Masq", 1), ("10.244.151.129", 53, "Masq", 1)]
    assert dns.real_servers[0].lineno == dns.lineno + 1


def test_ipvsadm_stats_layout_and_ipv6() -> None:
    t = parse_ipvsadm(read_fixture("ipvsadm/manual-ipvs-stats-hairpin-backend-asymmetry.txt"))
    assert t.layout == "stats"
    (vs,) = t.virtual_servers
    assert vs.stats == (12, 52, 50, 3510, 3440)
    assert [r.stats[1:3] for r in vs.real_servers] == [(12, 10), (20, 20), (20, 20)]
    v6 = parse_ipvsadm(read_fixture(
        "ipvsadm/k8s-68437-ipv6-only-nodeport-as-ipv4-garbage-backend.txt"))
    check_real_servers(v6)
    assert v6.virtual_servers[2].key == "tcp/[fd00:4000::c698]:5001"
    assert any("cut" in u.reason for u in v6.unparsed)  # the elided last real server


def test_proc_net_ip_vs_hex_layout() -> None:
    t = parse_proc_ip_vs("IP Virtual Server version 1.2.1 (size=4096)\n"
                         "Prot LocalAddress:Port Scheduler Flags\n"
                         "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
                         "UDP  0A60000A:0035 rr\n"
                         "  -> 0AF40106:0035      Masq    1      0          3\n")
    (vs,) = t.virtual_servers
    assert vs.key == "udp/10.96.0.10:53"
    assert vs.real_servers[0][:6] == ("10.244.1.6", 53, "Masq", 1, 0, 3)


def test_conntrack_stats_parser_keeps_columns_by_name() -> None:
    s = parse_conntrack_stats(read_fixture(
        "conntrack-stats/google-nftables-138-kernel510-no-ignore-column.txt"))
    assert "ignore" not in s.stat.columns and s.stat.total("invalid") == 112
    with pytest.raises(ConntrackCliError):
        parse_conntrack_stats("$ conntrack -S\nbash: conntrack: command not found\n")


PASTES = sorted(str(p.relative_to(p.parents[1])) for kind in ("iptables-save", "ipvsadm",
                                                              "conntrack-stats")
                for p in (Path(__file__).parent / "fixtures" / kind).glob("*.txt"))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PASTES), st.floats(0, 1), st.sampled_from(["", "\r\n", "\t"]))
def test_any_cut_of_a_real_paste_is_analysed_without_raising(rel: str, cut: float,
                                                            style: str) -> None:
    from agent.analyze import analyze_texts, render_analyses

    text = read_fixture(rel)
    text = text[: int(len(text) * cut)]
    if style == "\r\n":
        text = text.replace("\n", "\r\n")
    elif style == "\t":
        text = "\n".join("\t" + line for line in text.split("\n"))
    (result,) = analyze_texts([("paste", text)])
    render_analyses([result])
    assert all(not n.startswith("could not analyse") for n in result.notes), result.notes
