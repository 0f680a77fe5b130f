"""The collector's /report, text (golden) and JSON (shape), on hand-built clusters."""

import json

from agent.report import Diagnosis, Finding, Severity
from collector.render import build_report_state, render_report_json, render_report_text
from tests.correlate_builder import Simulation, build_round, nodes
from tests.test_render import assert_golden

T0 = 10 * 3600.0


def _small_cluster() -> Simulation:
    names = nodes(6)
    strict = (Finding("sysctl.rp-filter-strict", Severity.ERROR, "node4",
                      "strict rp_filter on flannel.1",
                      "/proc/sys/net/ipv4/conf/flannel.1/rp_filter = 1",
                      "sysctl -w net.ipv4.conf.flannel/1.rp_filter=2"),
              Finding("sysctl.ip-forward-off", Severity.OK, "node4", "IPv4 forwarding is on"))
    rounds = []
    for i in range(5):
        lost = (lambda s, t: {"wire"} if t == "node2" else set()) if i >= 3 else \
            (lambda s, t: set())
        facts = {"node2": {"iptables_input_digest": "sha256:new"}} if i >= 2 else {}
        facts = {**facts, "node4": {"rp_filter": {"all": 1}},
                 "node5": {"kube_proxy_mode": "ipvs"}}
        rounds.append(build_round(names, T0 + 30 * i, lost, interval=30.0, facts=facts,
                                  findings={"node4": strict}))
    return Simulation(rounds)


def _large_cluster(n: int = 60) -> Simulation:
    names = nodes(n)

    def peers(s: str) -> list[str]:
        i = names.index(s)
        return [names[(i + k) % n] for k in (1, 2, 3, 5, 8, 13, 21, 34)]

    rounds = [build_round(names, T0 + 30 * i,
                          lambda s, t: {"wire"} if t == "node7" else set(), interval=30.0,
                          peers=peers) for i in range(3)]
    return Simulation(rounds)


def test_cluster_report_text_matches_golden(update_goldens: bool) -> None:
    sim = _small_cluster()
    text = render_report_text(build_report_state(sim.latest, sim.now, sim.history))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert_golden("cluster-report.txt", text, update_goldens)


def test_large_cluster_text_is_summarised(update_goldens: bool) -> None:
    sim = _large_cluster()
    text = render_report_text(build_report_state(sim.latest, sim.now, sim.history))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "only nodes with failing pairs" in text
    assert "60 nodes; 59 without findings" in text
    assert_golden("cluster-report-large.txt", text, update_goldens)


def test_healthy_report_says_none() -> None:
    sim = Simulation([build_round(nodes(3), T0 + 30 * i, interval=30.0) for i in range(2)])
    text = render_report_text(build_report_state(sim.latest, sim.now, sim.history))
    assert "none: no cross-node problem found" in text


def test_report_json_shape() -> None:
    sim = _small_cluster()
    data = render_report_json(build_report_state(sim.latest, sim.now, sim.history))
    json.dumps(data)  # serialisable
    assert set(data) >= {"generated_at", "nodes", "diagnoses", "findings", "matrix"}
    node2 = [n for n in data["nodes"] if n["name"] == "node2"][0]
    assert node2["blamed_by"] == ["overlay.node-inbound-blocked"]
    assert node2["last_report_age_s"] == 1.0 and node2["underlay_ip"] == "192.168.77.11"
    diags = [Diagnosis.from_dict(d) for d in data["diagnoses"]]
    assert [(d.id, d.nodes) for d in diags][0] == ("overlay.node-inbound-blocked", ("node2",))
    assert data["diagnoses"][0]["timeline"]
    assert [f["id"] for f in data["findings"]] == ["sysctl.rp-filter-strict"]
    m = data["matrix"]
    assert m["pairs_failing"] == 5 and m["rows"]["node1"]["node2"] == "fail"
    assert m["rows"]["node1"]["node3"] == "ok"
    assert {f["to"] for f in m["failing"]} == {"node2"}


def test_large_json_has_no_rows() -> None:
    sim = _large_cluster()
    m = render_report_json(build_report_state(sim.latest, sim.now, sim.history))["matrix"]
    assert "rows" not in m and m["pairs_failing"] == 8


def test_empty_report_renders() -> None:
    state = build_report_state({}, T0)
    assert "no reports yet" in render_report_text(state)
    data = render_report_json(state)
    assert data["nodes"] == [] and data["diagnoses"] == [] and data["matrix"]["failing"] == []


def test_probes_the_target_has_not_reported_on_are_unknown_not_ok() -> None:
    names = nodes(3)
    rounds = [build_round(names, T0, wire_only=names, interval=30.0),
              build_round(names, T0 + 10, wire_only=names, silent=["node3"], interval=30.0)]
    sim = Simulation(rounds)
    state = build_report_state(sim.latest, sim.now, sim.history)
    rows = render_report_json(state)["matrix"]["rows"]
    assert rows["node1"]["node3"] == "unknown" and rows["node1"]["node2"] == "ok"
    assert " 1 node1          -  .  ?" in render_report_text(state)
