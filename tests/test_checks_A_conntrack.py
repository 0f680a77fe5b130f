"""conntrack check and the /proc/net/stat/nf_conntrack parser, on real tables."""

from __future__ import annotations

import shutil

import pytest

from agent.checks import conntrack
from agent.checks.kube_components import KubeProxyMode
from agent.parsers.conntrack_proc import ConntrackStatError, parse_conntrack_stat
from agent.report import Severity
from tests.checks_A_support import CTX, FIXTURES, RecordedHost, proc
from tests.conftest import read_fixture

TREE = "node-trees/flannel-healthy"
OLD_KERNEL_DROPS = "proc-nf-conntrack/netdata-161-old-kernel-drops-on-two-cpus.txt"
QUIET = "proc-nf-conntrack/prometheus-procfs-testdata-quiet-4cpu.txt"


def _by_id(findings):
    return {f.id: f for f in findings}


def test_parser_reads_columns_by_name_across_kernels():
    old = parse_conntrack_stat(read_fixture(OLD_KERNEL_DROPS))
    assert len(old.per_cpu) == 3 and "searched" in old.columns
    assert old.total("drop") == 0x53a + 0x8
    assert old.nonzero_cpus("drop") == {0: 0x53a, 2: 0x8}
    assert old.total("insert_failed") == 0 and old.total("early_drop") == 0
    quiet = parse_conntrack_stat(read_fixture(QUIET))
    assert [r["ignore"] for r in quiet.per_cpu] == [22666, 22180, 22740, 22152]  # procfs' own
    assert quiet.total("invalid") == 3 + 2 + 1 + 47
    # kernel 6.18 (recorded in a lab namespace): clashres/chainlength instead of searched
    modern = parse_conntrack_stat((FIXTURES / TREE / "proc/net/stat/nf_conntrack").read_text())
    assert "clashres" in modern.columns and modern.total("searched") is None
    assert modern.total("insert_failed") == 0


@pytest.mark.parametrize("garbage", ["", "hello\n", "entries foo\nzz zz\n"])
def test_parser_rejects_garbage_with_a_message(garbage):
    with pytest.raises(ConntrackStatError):
        parse_conntrack_stat(garbage)


def _tree(tmp_path, stat_fixture=None, count=None, binary=False, drop_max=False):
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / TREE, tree, symlinks=True)
    if stat_fixture:
        (tree / "proc/net/stat/nf_conntrack").write_text(read_fixture(stat_fixture))
    if count is not None:
        (tree / "proc/sys/net/netfilter/nf_conntrack_count").write_text(f"{count}\n")
    if binary:
        b = tree / "root/usr/sbin/conntrack"
        b.parent.mkdir(parents=True)
        b.write_text("#!/bin/sh\n")
        b.chmod(0o755)
    if drop_max:
        shutil.rmtree(tree / "proc/sys/net/netfilter")
        (tree / "proc/net/stat/nf_conntrack").unlink()
    return tree


def test_binary_missing_is_an_error_when_kube_proxy_runs_iptables(tmp_path):
    kp = proc(5, "kube-proxy", "--proxy-mode=iptables")
    facts = conntrack.gather(RecordedHost(_tree(tmp_path), processes=(kp,)), CTX)
    f = _by_id(conntrack.evaluate(facts, CTX))["conntrack.binary-missing"]
    assert f.severity is Severity.ERROR and "kube-proxy mode iptables" in f.evidence
    assert conntrack.summarize(facts) == {"conntrack_binary": False}
    alone = conntrack.gather(RecordedHost(_tree(tmp_path / "b")), CTX)
    assert _by_id(conntrack.evaluate(alone, CTX))["conntrack.binary-missing"].severity \
        is Severity.WARNING
    cilium = conntrack.gather(RecordedHost(_tree(tmp_path / "c"),
                                           processes=(proc(8, "cilium-agent"),)), CTX)
    f = _by_id(conntrack.evaluate(cilium, CTX))["conntrack.binary-missing"]
    assert f.severity is Severity.INFO and "cilium-agent runs" in f.evidence


def test_healthy_tree_with_binary_is_all_ok(tmp_path):
    facts = conntrack.gather(RecordedHost(_tree(tmp_path, binary=True)), CTX)
    assert facts.binary == "/usr/sbin/conntrack"
    assert {f.severity for f in conntrack.evaluate(facts, CTX)} == {Severity.OK}


def test_drops_and_insert_failed_name_the_counters_per_cpu(tmp_path):
    facts = conntrack.gather(RecordedHost(_tree(tmp_path, OLD_KERNEL_DROPS, binary=True)), CTX)
    got = _by_id(conntrack.evaluate(facts, CTX))
    assert got["conntrack.drops"].severity is Severity.WARNING
    assert "drop = 1346 (cpu0 = 1338, cpu2 = 8)" in got["conntrack.drops"].evidence
    assert got["conntrack.insert-failed"].severity is Severity.OK
    stat = parse_conntrack_stat(read_fixture(OLD_KERNEL_DROPS).replace(
        "003fe1df 00000000", "003fe1df 00000011", 1))
    failed = conntrack.Facts("/usr/sbin/conntrack", KubeProxyMode(False), "/proc/x", 100, 1,
                             stat, "")
    f = _by_id(conntrack.evaluate(failed, CTX))["conntrack.insert-failed"]
    assert f.severity is Severity.WARNING and "insert_failed = 17 (cpu0 = 17)" in f.evidence


@pytest.mark.parametrize("count,severity", [(209716, Severity.WARNING), (209714, Severity.OK),
                                            (249037, Severity.ERROR), (1000, Severity.OK)])
def test_table_fill_thresholds(tmp_path, count, severity):
    tree = _tree(tmp_path, count=count, binary=True)
    (tree / "proc/sys/net/netfilter/nf_conntrack_max").write_text("262144\n")
    f = _by_id(conntrack.evaluate(conntrack.gather(RecordedHost(tree), CTX), CTX))[
        "conntrack.table-near-full"]
    assert f.severity is severity
    assert f"/proc/sys/net/netfilter/nf_conntrack_count = {count}" in f.evidence


def test_module_missing(tmp_path):
    tree = _tree(tmp_path, binary=True, drop_max=True)
    kp = proc(5, "kube-proxy")
    got = _by_id(conntrack.evaluate(conntrack.gather(RecordedHost(tree, (kp,)), CTX), CTX))
    assert got["conntrack.module-missing"].severity is Severity.WARNING
    assert "nf_conntrack_max absent" in got["conntrack.module-missing"].evidence
    assert set(got) == {"conntrack.binary-missing", "conntrack.module-missing"}
