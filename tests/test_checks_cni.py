"""The CNI check: gather on small host trees built from real configs, evaluate per finding."""

from __future__ import annotations

import hashlib
from pathlib import Path

from agent.checks import cni
from agent.checks.base import CheckContext, run_check
from agent.host import Host
from agent.report import Severity
from tests.conftest import read_fixture

CTX = CheckContext(node="n1")
FLANNEL = read_fixture("cni-config/flannel-conflist-hairpin-portmap-crio.txt")
CRIO = read_fixture("cni-config/crio-11-ipv4-bridge-hairpin-conflist.txt")
CILIUM = read_fixture("cni-config/cilium-05-cilium-cni-conf.txt")
LOOPBACK = '{"cniVersion": "0.3.1", "name": "loopback", "type": "loopback"}\n'


def host_tree(tmp_path: Path, configs: dict[str, str] | None,
              binaries: tuple[str, ...] | None = ("flannel", "portmap", "bridge"),
              kubelet: bool = True) -> Host:
    if kubelet:
        (tmp_path / "var/lib/kubelet").mkdir(parents=True)
    if configs is not None:
        d = tmp_path / "etc/cni/net.d"
        d.mkdir(parents=True)
        for name, text in configs.items():
            (d / name).write_text(text)
    if binaries is not None:
        b = tmp_path / "opt/cni/bin"
        b.mkdir(parents=True)
        for name in binaries:
            (b / name).write_text("#!/bin/sh\n")
    return Host(root=tmp_path, proc=tmp_path / "proc", sys=tmp_path / "sys")


def run(host: Host):
    facts = cni.gather(host, CTX)
    return facts, cni.evaluate(facts, CTX)


def ids(findings, severity=None):
    return [f.id for f in findings if severity is None or f.severity == severity]


def test_healthy_flannel_node_is_ok_and_summarized(tmp_path: Path) -> None:
    facts, findings = run(host_tree(tmp_path, {"10-flannel.conflist": FLANNEL,
                                               "200-loopback.conf": LOOPBACK}))
    assert [(f.id, f.severity) for f in findings] == [("cni.no-config", Severity.OK)]
    assert "10-flannel.conflist" in findings[0].evidence
    assert cni.summarize(facts) == {
        "cni_config": "10-flannel.conflist",
        "cni_config_digest": hashlib.sha256(FLANNEL.encode()).hexdigest()[:16]}


def test_missing_conf_dir_is_no_config(tmp_path: Path) -> None:
    _, findings = run(host_tree(tmp_path, None))
    assert [(f.id, f.severity) for f in findings] == [("cni.no-config", Severity.ERROR)]
    assert "/etc/cni/net.d does not exist" in findings[0].evidence


def test_no_config_on_a_host_without_kubelet_is_info_not_a_fault(tmp_path: Path) -> None:
    _, findings = run(host_tree(tmp_path, None, kubelet=False))
    assert [(f.id, f.severity) for f in findings] == [("cni.no-config", Severity.INFO)]
    assert "/var/lib/kubelet does not exist" in findings[0].evidence


def test_empty_conf_dir_is_no_config(tmp_path: Path) -> None:
    _, findings = run(host_tree(tmp_path, {"README": "not a config"}))
    assert ids(findings, Severity.ERROR) == ["cni.no-config"]
    assert "holds no" in findings[0].evidence


def test_invalid_json_in_chosen_config_is_an_error_quoting_the_parser(tmp_path: Path) -> None:
    broken = FLANNEL.replace('"cniVersion": "0.3.1",', '"cniVersion": "0.3.1"')
    _, findings = run(host_tree(tmp_path, {"10-flannel.conflist": broken}))
    bad = [f for f in findings if f.id == "cni.invalid-config"]
    assert bad and bad[0].severity == Severity.ERROR
    assert bad[0].evidence.startswith("10-flannel.conflist: invalid JSON at line 4 column 3")


def test_several_configs_name_the_lexicographically_first(tmp_path: Path) -> None:
    _, findings = run(host_tree(tmp_path, {"11-crio-ipv4-bridge.conflist": CRIO,
                                           "10-flannel.conflist": FLANNEL,
                                           "200-loopback.conf": LOOPBACK}))
    multi = [f for f in findings if f.id == "cni.multiple-configs"]
    assert len(multi) == 1 and multi[0].severity == Severity.WARNING
    assert "uses 10-flannel.conflist" in multi[0].title
    assert "11-crio-ipv4-bridge.conflist (network crio: bridge)" in multi[0].evidence
    assert "200-loopback" not in multi[0].evidence


def test_missing_plugin_binary_names_each_type(tmp_path: Path) -> None:
    _, findings = run(host_tree(tmp_path, {"10-flannel.conflist": FLANNEL},
                                binaries=("bridge",)))
    miss = [f for f in findings if f.id == "cni.plugin-binary-missing"]
    assert len(miss) == 1 and miss[0].severity == Severity.ERROR
    assert "flannel, portmap missing" in miss[0].title


def test_missing_bin_dir_says_so(tmp_path: Path) -> None:
    _, findings = run(host_tree(tmp_path, {"05-cilium.conf": CILIUM}, binaries=None))
    miss = [f for f in findings if f.id == "cni.plugin-binary-missing"]
    assert "cilium-cni" in miss[0].title and "/opt/cni/bin does not exist" in miss[0].evidence


def test_runner_reports_no_traceback_on_unreadable_tree(tmp_path: Path) -> None:
    host = host_tree(tmp_path, {"10-flannel.conflist": FLANNEL})
    (tmp_path / "etc/cni/net.d/10-flannel.conflist").unlink()
    (tmp_path / "etc/cni/net.d/10-flannel.conflist").mkdir()  # a directory, not a file
    outcome = run_check(cni, host, CTX)
    assert outcome.findings and outcome.findings[0].severity == Severity.INFO
    assert "skipped" in outcome.findings[0].title


def test_analyze_text_path_flags_invalid_and_accepts_valid() -> None:
    [bad] = cni.evaluate_config_text('{"name": "x", "plugins": [{}]}', "10-x.conflist", "n1")
    assert (bad.id, bad.severity) == ("cni.invalid-config", Severity.ERROR)
    assert 'plugins[0]: missing "type"' in bad.evidence
    [ok] = cni.evaluate_config_text(CRIO, "11-crio.conflist", "n1")
    assert ok.severity == Severity.OK and "(network crio: bridge)" in ok.evidence
