"""overlay.node-inbound-blocked / -outbound-blocked / -isolated on hand-built reports."""

from agent.report import Severity
from collector.correlate import correlate
from tests.correlate_builder import nodes, simulate


def _ids(diags):
    return [(d.id, d.nodes) for d in diags]


def one_way_block(node: str, direction: str):  # type: ignore[no-untyped-def]
    """lost(sender, target) for a fabric dropping UDP 8472 into ("in") or out of ("out")
    `node`: the probes that cross the blocked direction are lost (wire probes one way; echo
    and MTU probes, whose answers cross it, the other way)."""
    def lost(s: str, t: str) -> set[str]:
        # whose end of the pair is `node` decides which probes cross the blocked direction
        wire_end, answer_end = (t, s) if direction == "in" else (s, t)
        if wire_end == node:
            return {"wire"}
        if answer_end == node:
            return {"echo", "mtu"}
        return set()
    return lost


def test_fabric_drop_to_one_node_blames_it_and_says_fabric() -> None:
    sim = simulate(nodes(5), lost=lambda s, t: {"wire"} if t == "node2" else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.node-inbound-blocked", ("node2",))]
    d = diags[0]
    assert d.severity is Severity.ERROR
    assert "fabric" in d.title and "4 of 4 peers" in d.title
    assert "never saw" in d.evidence
    assert "udp 8472" in d.remediation.lower()


def test_host_drop_says_host_firewall_rp_filter() -> None:
    sim = simulate(nodes(5), lost=lambda s, t: {"echo", "mtu", "udp-control"}
                   if t == "node3" else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.node-inbound-blocked", ("node3",))]
    assert "host" in diags[0].title
    assert "saw them arrive" in diags[0].evidence
    assert "iptables -S INPUT" in diags[0].remediation and "rp_filter" in diags[0].remediation


def test_single_round_of_failure_is_not_enough() -> None:
    sim = simulate(nodes(5), rounds=1, healthy_first=2,
                   lost=lambda s, t: {"wire"} if t == "node2" else set())
    assert [d for d in correlate(sim.latest, sim.now, sim.history)
            if d.severity >= Severity.WARNING] == []


def test_outbound_blocked() -> None:
    sim = simulate(nodes(5), lost=lambda s, t: {"wire"} if s == "node4" else set())
    assert _ids(correlate(sim.latest, sim.now, sim.history)) == [
        ("overlay.node-outbound-blocked", ("node4",))]


def test_isolated_node_is_one_diagnosis() -> None:
    sim = simulate(nodes(5), lost=lambda s, t: {"wire"} if "node5" in (s, t) else set())
    assert _ids(correlate(sim.latest, sim.now, sim.history)) == [
        ("overlay.node-isolated", ("node5",))]


def test_healthy_cluster_has_no_diagnosis() -> None:
    sim = simulate(nodes(6))
    assert correlate(sim.latest, sim.now, sim.history) == ()


def test_unhealthy_sender_is_not_evidence() -> None:
    from agent.report import Finding
    bad = (Finding("agent.round-overrun", Severity.WARNING, "node1", "rounds overrun"),)
    # only node1 (which reports itself unhealthy) and node2 fail to node3
    sim = simulate(nodes(4), lost=lambda s, t: {"wire"} if t == "node3" and s in ("node1", "node2")
                   else set(), findings={"node1": bad})
    ids = [d.id for d in correlate(sim.latest, sim.now, sim.history)]
    assert "overlay.node-inbound-blocked" not in ids


def test_inbound_block_also_loses_the_nodes_own_echo_replies_but_is_not_isolated() -> None:
    # fabric drops UDP 8472 into node2: peers' probes never arrive, and node2's own echoes
    # arrive at the peers but their replies (VXLAN into node2) are dropped too
    lost = one_way_block("node2", "in")
    sim = simulate(nodes(4), lost=lost)
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.node-inbound-blocked", ("node2",))]
    assert "answers back into node2" in diags[0].evidence


def test_inbound_not_yet_confirmed_gives_no_outbound_or_pair_verdict() -> None:
    from tests.correlate_builder import Simulation, build_round
    names = nodes(4)

    def replies_lost(s: str, t: str) -> set[str]:
        return {"echo", "mtu"} if s == "node2" else set()

    def both(s: str, t: str) -> set[str]:
        return {"wire"} if t == "node2" else replies_lost(s, t)

    # node2's own rounds see its echo replies lost twice; the peers' probes to node2 have
    # failed in one round only so far (rounds are not aligned)
    sim = Simulation([build_round(names, 1000.0, replies_lost), build_round(names, 1010.0, both)])
    assert [d for d in correlate(sim.latest, sim.now, sim.history)
            if d.severity >= Severity.WARNING] == []


def test_outbound_block_also_loses_answers_to_peers_but_is_not_isolated() -> None:
    # fabric drops UDP 8472 out of node2: its probes never arrive, and the peers' probes
    # reach node2 (its capture sees them) but node2's answers die on the way out
    lost = one_way_block("node2", "out")
    sim = simulate(nodes(4), lost=lost)
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.node-outbound-blocked", ("node2",))]
    assert "answers die on the same way out" in diags[0].evidence


def test_the_nodes_own_finding_is_quoted_as_the_local_cause() -> None:
    from agent.report import Finding
    down = (Finding("vxlan.device-down", Severity.ERROR, "node2",
                    "VXLAN device flannel.1 is down"),)
    sim = simulate(nodes(4), findings={"node2": down},
                   lost=lambda s, t: {"echo", "mtu"} if "node2" in (s, t) else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert [d.id for d in diags] == ["overlay.node-inbound-blocked"]
    assert diags[0].title.endswith("node2's own check: vxlan.device-down")
    assert "VXLAN device flannel.1 is down" in diags[0].evidence


def test_inbound_block_of_everything_folds_the_nodes_own_control_probes() -> None:
    def lost(s: str, t: str) -> set[str]:
        if t == "node2":
            return {"wire", "udp-control", "tcp-control"}
        if s == "node2":
            return {"udp-control", "tcp-control"}  # answers into node2 are dropped
        return set()

    sim = simulate(nodes(4), lost=lost)
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.node-inbound-blocked", ("node2",))]
    assert "3 control/MTU probe pairs involving node2 fail as well" in diags[0].evidence


def test_without_capture_data_the_title_says_node_or_fabric() -> None:
    names = nodes(4)
    # node2 runs no prober (no wire probes, no capture): the echo losses cannot be placed
    sim = simulate(names, peers=lambda s: [] if s == "node2" else [t for t in names if t != s],
                   lost=lambda s, t: {"wire"} if t == "node2" else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.node-inbound-blocked", ("node2",))]
    assert "node2 or the fabric in front of it" in diags[0].title
    assert "cannot tell which" in diags[0].evidence


def test_mixed_capture_evidence_names_both_places() -> None:
    def lost(s: str, t: str) -> set[str]:
        if t != "node4":
            return set()
        return {"wire"} if s in ("node1", "node2") else {"echo", "mtu"}

    sim = simulate(nodes(5), lost=lost)
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.node-inbound-blocked", ("node4",))]
    assert "the fabric and/or node4's host" in diags[0].title


def test_a_receiver_that_has_not_reported_since_the_probes_is_not_blamed() -> None:
    # peers rotate: nobody probed node6 in the round node6 last reported on; since then they
    # have, but node6 has not reported yet (it is late, not stale): its capture cannot have
    # told us anything about those probes
    from tests.correlate_builder import Simulation, build_round
    names = nodes(6)
    others = [n for n in names if n != "node6"]

    def not_node6(s: str) -> list[str]:
        return [t for t in others if t != s]

    def all_peers(s: str) -> list[str]:
        return [t for t in names if t != s]

    rounds = [build_round(names, 1000.0, peers=not_node6, interval=30.0),
              build_round(names, 1010.0, peers=all_peers, silent=["node6"], interval=30.0),
              build_round(names, 1020.0, peers=all_peers, silent=["node6"], interval=30.0)]
    sim = Simulation(rounds)
    assert [d for d in correlate(sim.latest, sim.now, sim.history)
            if d.severity >= Severity.WARNING] == []


def test_unsynchronised_rounds_judge_wire_probes_by_time() -> None:
    # every node reports at its own phase; node3's inbound is dropped in the fabric: the
    # verdict still comes, from the windows that closed after each sender's probes
    from tests.correlate_builder import Simulation, build_round
    names = nodes(5)
    phase = {n: i * 2.0 for i, n in enumerate(names)}
    rounds = []
    for r in range(3):
        for n in names:
            rep = build_round(names, 1000.0 + 10 * r + phase[n],
                              lambda s, t: {"wire"} if t == "node3" else set(),
                              wire_only=names, interval=10.0)[n]
            rounds.append({n: rep})
    sim = Simulation(rounds)
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.node-inbound-blocked", ("node3",))]


def test_outbound_block_is_not_isolated_while_receivers_have_not_reported() -> None:
    # egress of node2 dropped in the fabric; in the latest round node2's own report predates
    # the peers' probes, so their wire probes to node2 are not judged yet: still outbound
    from tests.correlate_builder import Simulation, build_round
    names = nodes(4)

    lost = one_way_block("node2", "out")
    rounds = []
    for r in range(3):
        rounds.append({n: rep for n, rep in build_round(names, 1000.0 + 10 * r, lost).items()
                       if n == "node2"})
        rounds.append({n: rep for n, rep in build_round(names, 1005.0 + 10 * r, lost).items()
                       if n != "node2"})
    sim = Simulation(rounds)
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.node-outbound-blocked", ("node2",))]
