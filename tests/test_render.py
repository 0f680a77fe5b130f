"""The human report is golden-tested: `pytest --update-goldens` rewrites tests/golden/ on
purpose and the diff is reviewed like code."""

from pathlib import Path

from agent.render import exit_code_for, render_node_report, sort_findings
from agent.report import Finding, NodeInfo, NodeReport, Severity

GOLDEN = Path(__file__).parent / "golden"


def _report() -> NodeReport:
    findings = (
        Finding("sysctl.ip-forward-off", Severity.OK, "node1", "IPv4 forwarding is on",
                "/proc/sys/net/ipv4/ip_forward = 1"),
        Finding("bridge.hairpin-off", Severity.WARNING, "node1",
                "hairpin off on 1 port of cni0", "/sys/class/net/cni0/brif/veth1/hairpin_mode = 0",
                "Set hairpinMode in the CNI config."),
        Finding("sysctl.rp-filter-strict", Severity.ERROR, "node1", "strict rp_filter on flannel.1",
                "/proc/sys/net/ipv4/conf/flannel.1/rp_filter = 1\nall = 0",
                "sysctl -w net.ipv4.conf.flannel/1.rp_filter=2"),
        Finding("vxlan.no-device", Severity.INFO, "node1", "no VXLAN device"),
    )
    return NodeReport(NodeInfo("node1", "192.168.77.11", "6.1.0", "0.1.0"), 0.0,
                      findings=findings)


def assert_golden(name: str, text: str, update: bool) -> None:
    path = GOLDEN / name
    if update:
        path.write_text(text)
    assert path.exists(), f"no golden {name}; create it with --update-goldens and review it"
    assert text == path.read_text(), f"{name} differs; rerun with --update-goldens if intended"


def test_node_report_text_matches_golden(update_goldens: bool) -> None:
    assert_golden("node-report.txt", render_node_report(_report()), update_goldens)


def test_colour_only_when_asked() -> None:
    plain = render_node_report(_report(), color=False)
    assert "\033[" not in plain
    assert "\033[31m" in render_node_report(_report(), color=True)


def test_worst_first_and_exit_codes() -> None:
    findings = _report().findings
    assert [f.severity for f in sort_findings(findings)][0] is Severity.ERROR
    assert exit_code_for(findings) == 2
    assert exit_code_for(findings[:2]) == 1
    assert exit_code_for(findings[:1]) == 0
    assert exit_code_for(()) == 0
