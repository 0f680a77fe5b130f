"""explain_timeline: "node2's INPUT rules changed at 10:02; VXLAN from all peers failed from
10:03"."""

from collector.correlate import correlate, explain_timeline
from collector.correlate.timeline import format_time
from tests.correlate_builder import Simulation, build_round, nodes

T0 = 10 * 3600.0  # 10:00:00 UTC on day 0


def test_fact_change_then_failure_onset() -> None:
    names = nodes(4)
    rounds = []
    for i in range(6):
        at = T0 + 60 * i
        facts = {"node2": {"iptables_input_digest": "sha256:bb"}} if i >= 2 else {}
        lost = (lambda s, t: {"echo", "mtu"} if t == "node2" else set()) if i >= 3 else None
        rounds.append(build_round(names, at, lost or (lambda s, t: set()), interval=60.0,
                                  facts=facts))
    sim = Simulation(rounds)
    diag = [d for d in correlate(sim.latest, sim.now, sim.history)
            if d.id == "overlay.node-inbound-blocked"][0]
    lines = explain_timeline(sim.history, diag)
    assert lines[0] == "10:02:00 node2's iptables_input_digest changed None -> 'sha256:bb'"
    assert lines[1] == ("10:03:00 overlay probes to node2 failing from node1, node3, node4 "
                        "(since 10:03:00)")
    assert lines[-1] == "node2's iptables_input_digest changed 60 s before the failures began"


def test_plain_fact_snapshots_are_enough_for_changes() -> None:
    from agent.report import Diagnosis, Severity
    hist = {"node3": [{"at": T0, "facts": {"rp_filter": {"all": 0}}},
                      {"at": T0 + 30, "facts": {"rp_filter": {"all": 1}, "x_count": 5}}]}
    d = Diagnosis("drift.rp_filter.all", Severity.WARNING, "node3", "t", nodes=("node3",))
    assert explain_timeline(hist, d) == ("10:00:30 node3's rp_filter.all changed 0 -> 1",)


def test_format_time() -> None:
    assert format_time(86400 * 3 + 3600 * 23 + 61.9) == "23:01:01"


def test_correlating_and_rendering_leave_no_reference_cycles() -> None:
    """A collector correlates every few seconds with a young-generation GC threshold of
    20,000: anything a correlation leaves in a reference cycle (it once held every node's
    history) waits for the GC's oldest generation, which at 5,000 nodes was tens of MB."""
    import gc

    from collector.correlate import correlate_with_matrix, digest_report
    from collector.render import build_report_state, render_report_json, render_report_text

    names = nodes(6)
    rounds = []
    for i in range(4):
        facts = {"node2": {"iptables_input_digest": "sha256:bb"}} if i >= 1 else {}
        lost = (lambda s, t: {"wire"} if t == "node2" else set()) if i >= 2 else None
        rounds.append(build_round(names, T0 + 60 * i, lost or (lambda s, t: set()),
                                  interval=60.0, facts=facts))
    sim = Simulation(rounds)
    latest = {n: digest_report(r) for n, r in sim.latest.items()}
    history = {n: [latest[n] if r is sim.latest[n] else digest_report(r) for r in rs]
               for n, rs in sim.history.items()}
    gc.collect()
    gc.disable()
    try:
        diagnoses, _ = correlate_with_matrix(latest, sim.now, history)
        state = build_report_state(latest, sim.now, history)
        render_report_text(state)
        render_report_json(state)
        assert any(d.id == "overlay.node-inbound-blocked" for d in diagnoses)
        del diagnoses, state
        assert gc.collect() == 0
    finally:
        gc.enable()
