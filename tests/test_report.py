import json

import pytest

from agent.report import (SCHEMA_NODE_REPORT, Finding, NodeInfo, NodeReport, ProbeResult,
                          RttStats, SchemaError, SeenCount, Severity)


def _report() -> NodeReport:
    return NodeReport(
        node=NodeInfo("node1", "192.168.77.11", "6.1", "0.1.0"), collected_at=1700000000.0,
        interval_s=30, facts={"ip_forward": 1},
        findings=(Finding("sysctl.ip-forward-off", Severity.ERROR, "node1", "off", "x=0", "fix"),),
        probes=(ProbeResult("node2", "192.168.77.12", "echo", 3, 2, RttStats(0.1, 0.2, 0.3)),
                ProbeResult("node2", "192.168.77.12", "wire", 3, None)),
        seen=(SeenCount("node2", "192.168.77.12", "wire", 3),))


def test_node_report_round_trips_through_json() -> None:
    report = _report()
    again = NodeReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report
    assert again.worst is Severity.ERROR


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.update(schema="v0"), "schema"),
    (lambda d: d["node"].pop("name"), "node.name"),
    (lambda d: d["probes"][0].update(sent="3"), "probes[0].sent"),
    (lambda d: d["probes"][1].update(kind="ping"), "probes[1].kind"),
    (lambda d: d["findings"][0].update(severity="fatal"), "findings[0].severity"),
    (lambda d: d.update(collected_at=float("nan")), "collected_at"),
    (lambda d: d.update(facts=[1]), "facts"),
    (lambda d: d["seen"][0].update(count=-1), "seen[0].count"),
])
def test_validation_names_the_offending_field(mutate, field) -> None:
    d = _report().to_dict()
    mutate(d)
    with pytest.raises(SchemaError) as err:
        NodeReport.from_dict(d)
    assert err.value.field == field


def test_rejects_a_non_object_body() -> None:
    with pytest.raises(SchemaError, match="expected an object"):
        NodeReport.from_dict(["not", "a", "report"])


def test_evidence_is_capped() -> None:
    f = Finding("x.y", "info", "n", "t", evidence="a" * 100_000)
    assert len(f.evidence) <= 4000 and "chars, cut" in f.evidence


def test_severity_orders_worst_last() -> None:
    assert max(Severity.parse(s) for s in ("ok", "error", "warning")) is Severity.ERROR
    assert SCHEMA_NODE_REPORT == "netdiag.node-report/v1"
