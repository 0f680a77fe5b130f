"""The cross-node rules on hand-built reports, including the ambiguous cases."""

from agent.report import Severity
from collector.correlate import correlate
from tests.correlate_builder import Simulation, build_round, nodes, simulate, vxlan


def _ids(diags, at_least=Severity.INFO):
    return [(d.id, d.nodes) for d in diags if d.severity >= at_least]


def test_seed_004_all_udp_blocked_between_two_cilium_nodes() -> None:
    sim = simulate(["node1", "node2"], wire_only=["node1", "node2"],
                   lost=lambda s, t: {"wire", "udp-control"})
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.udp-blocked", ("node1", "node2"))]
    assert "TCP works" in diags[0].title
    assert "8472" in diags[0].remediation


def test_udp_blocked_to_one_node() -> None:
    sim = simulate(nodes(5), lost=lambda s, t: {"wire", "udp-control"} if t == "node5" else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.udp-blocked", ("node5",))]


def test_everything_to_a_node_fails_is_inbound_not_udp() -> None:
    sim = simulate(nodes(5), lost=lambda s, t: {"wire", "udp-control", "tcp-control"}
                   if t == "node5" else set())
    assert _ids(correlate(sim.latest, sim.now, sim.history)) == [
        ("overlay.node-inbound-blocked", ("node5",))]


def test_partition_names_every_node_of_both_sides() -> None:
    a, b = {"node1", "node2", "node3"}, {"node4", "node5", "node6"}
    sim = simulate(nodes(6), lost=lambda s, t: {"wire"} if (s in a) != (t in a) else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.partition", tuple(sorted(a | b)))]
    assert "2 groups" in diags[0].title


def test_two_of_twenty_failing_is_not_a_partition() -> None:
    names = nodes(20)
    cut = {"node19", "node20"}
    sim = simulate(names, lost=lambda s, t: {"wire"} if (s in cut) != (t in cut) else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert "overlay.partition" not in [d.id for d in diags]
    assert _ids(diags) == [("overlay.node-isolated", ("node19",)),
                           ("overlay.node-isolated", ("node20",))]


def test_one_sender_failing_to_one_receiver_does_not_blame_the_receiver() -> None:
    sim = simulate(nodes(5), lost=lambda s, t: {"wire"} if (s, t) == ("node1", "node2") else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.pair-failure", ("node1", "node2"))]
    assert "insufficient evidence" in diags[0].title
    assert diags[0].severity is Severity.WARNING


def test_two_node_cluster_one_direction_is_insufficient_evidence() -> None:
    sim = simulate(["node1", "node2"], lost=lambda s, t: {"wire"} if s == "node1" else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.pair-failure", ("node1", "node2"))]
    assert "no other peer probed node2" in diags[0].evidence


def test_minority_of_senders_does_not_blame_the_receiver() -> None:
    # 2 of 6 probers fail to node7: not a majority -> pair failures
    sim = simulate(nodes(7), lost=lambda s, t: {"wire"} if t == "node7" and s in ("node1", "node2")
                   else set())
    ids = [d.id for d in correlate(sim.latest, sim.now, sim.history)]
    assert ids == ["overlay.pair-failure", "overlay.pair-failure"]


def test_mtu_blackhole_towards_one_node() -> None:
    sim = simulate(nodes(5), lost=lambda s, t: {"mtu"} if t == "node3" else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.mtu-blackhole", ("node3",))]
    assert "ping -M do" in diags[0].remediation


def test_vni_mismatch_folds_the_probe_failures() -> None:
    bad = "node3"
    sim = simulate(nodes(5), overlay={bad: vxlan(bad, vni=2)},
                   lost=lambda s, t: {"echo", "mtu"} if bad in (s, t) else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.config-mismatch", ("node3",))]
    assert "VNI" in diags[0].title and "4 of 5 nodes use 1" in diags[0].title


def test_config_mismatch_without_majority_says_so() -> None:
    sim = simulate(["node1", "node2"], overlay={"node2": vxlan("node2", port=4789)})
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.config-mismatch", ("node1", "node2"))]
    assert "cannot tell" in diags[0].title


def test_drift_on_rp_filter() -> None:
    sim = simulate(nodes(5), facts={"node2": {"rp_filter": {"all": 1}}})
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("drift.rp_filter", ("node2",))]
    assert diags[0].severity is Severity.WARNING
    assert "4 of 5 nodes have 0" in diags[0].title


def test_no_drift_without_clear_majority() -> None:
    sim = simulate(nodes(4), facts={"node1": {"kube_proxy_mode": "ipvs"},
                                    "node2": {"kube_proxy_mode": "ipvs"}})
    assert correlate(sim.latest, sim.now, sim.history) == ()


def test_counters_and_per_node_facts_are_not_drift() -> None:
    sim = simulate(nodes(4), facts={"node1": {"conntrack_count": 99},
                                    "node2": {"only_here": 1}})
    assert correlate(sim.latest, sim.now, sim.history) == ()


def test_kube_proxy_rules_diverged_needs_two_reports() -> None:
    sim = simulate(nodes(4), facts={"node3": {"service_vips_digest": "sha256:old"}})
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("kube-proxy.rules-diverged", ("node3",))]
    assert diags[0].severity is Severity.WARNING
    assert "Restart kube-proxy" in diags[0].remediation
    one = simulate(nodes(4), rounds=1, facts={"node3": {"service_vips_digest": "sha256:old"}})
    assert [d.severity for d in correlate(one.latest, one.now, one.history)] == [Severity.INFO]


def test_stale_node_is_not_also_inbound_blocked() -> None:
    names = nodes(5)
    rounds = [build_round(names, 1000.0)]
    for i in range(1, 5):
        rounds.append(build_round(names, 1000.0 + 10 * i, silent=["node4"],
                                  lost=lambda s, t: {"wire", "udp-control", "tcp-control"}
                                  if t == "node4" else set()))
    sim = Simulation(rounds)
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("agent.stale", ("node4",))]
    assert diags[0].severity is Severity.ERROR and "cannot reach it" in diags[0].title


def test_stale_uses_received_time_when_given() -> None:
    sim = simulate(nodes(3))
    assert _ids(correlate(sim.latest, sim.now, sim.history,
                          received_at={"node1": sim.now - 100})) == [("agent.stale", ("node1",))]


def test_cilium_style_wire_only_node_fabric_drop() -> None:
    sim = simulate(nodes(5), wire_only=nodes(5),
                   lost=lambda s, t: {"wire"} if t == "node2" else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.node-inbound-blocked", ("node2",))]
    assert "never saw" in diags[0].evidence


def test_mixed_cilium_and_flannel_healthy() -> None:
    sim = simulate(nodes(6), wire_only=["node1", "node2"])
    assert correlate(sim.latest, sim.now, sim.history) == ()


def test_without_history_nothing_is_confirmed() -> None:
    sim = simulate(nodes(5), lost=lambda s, t: {"wire"} if t == "node2" else set())
    assert _ids(correlate(sim.latest, sim.now), Severity.WARNING) == []


def test_sampled_peers_large_cluster_inbound() -> None:
    names = nodes(40)

    def peers(s: str) -> list[str]:
        i = names.index(s)
        return [names[(i + k) % 40] for k in (1, 2, 3, 5, 8, 13, 21, 34)]

    sim = simulate(names, peers=peers, lost=lambda s, t: {"wire"} if t == "node7" else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.node-inbound-blocked", ("node7",))]


def test_sequence_input_and_reports_equal_digests() -> None:
    from collector.correlate import digest_report
    sim = simulate(nodes(5), lost=lambda s, t: {"wire"} if t == "node2" else set())
    a = correlate(list(sim.latest.values()), sim.now, sim.history)
    b = correlate({n: digest_report(r) for n, r in sim.latest.items()}, sim.now,
                  {n: [digest_report(r) for r in rs] for n, rs in sim.history.items()})
    assert a == b and a


def test_rotating_peer_samples_still_confirm_a_node_verdict() -> None:
    names = nodes(30)
    offsets = [(1, 2, 3, 5, 8, 13), (4, 6, 7, 9, 11, 17)]  # disjoint samples per round

    def round_(i: int):
        def peers(s: str) -> list[str]:
            j = names.index(s)
            return [names[(j + k) % 30] for k in offsets[i % 2]]
        return build_round(names, 1000.0 + 10 * i, lambda s, t: {"wire"} if t == "node9" else set(),
                           peers=peers)

    sim = Simulation([round_(0), round_(1)])
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.node-inbound-blocked", ("node9",))]
    # no pair was probed twice: each pair has one round, so no pair-failure could confirm
    assert "(1 round)" in diags[0].evidence


def test_pair_rounds_skip_rounds_where_the_pair_was_not_probed() -> None:
    names = nodes(4)
    sample = [["node2", "node3"], ["node3", "node4"], ["node2", "node4"]]

    def round_(i: int):
        return build_round(names, 1000.0 + 10 * i,
                           lambda s, t: {"wire"} if (s, t) == ("node1", "node2") else set(),
                           peers=lambda s: sample[i] if s == "node1" else
                           [t for t in names if t != s])

    sim = Simulation([round_(0), round_(1), round_(2)])
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.pair-failure", ("node1", "node2"))]
    assert "(2 rounds)" in diags[0].evidence


def test_list_facts_are_not_drift() -> None:
    backends = {n: {"iptables_backends": ["iptables-save:nft"]} for n in nodes(4)}
    backends["node2"] = {"iptables_backends": ["iptables-save:nft", "iptables-legacy-save:legacy"]}
    sim = simulate(nodes(4), facts=backends)
    assert correlate(sim.latest, sim.now, sim.history) == ()


def test_mtu_blackhole_into_a_node_folds_its_own_return_path() -> None:
    # frames > 1400 into node3 are dropped: peers' MTU probes to node3 die, and node3's own
    # MTU probes get no (full-size) answer back
    sim = simulate(nodes(4), lost=lambda s, t: {"mtu"} if "node3" in (s, t) else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.mtu-blackhole", ("node3",))]
    assert "own MTU-sized probes fail too" in diags[0].evidence


def test_vxlan_settings_in_facts_are_not_also_drift() -> None:
    sim = simulate(nodes(4), overlay={"node2": vxlan("node2", vni=2)},
                   facts={n: {"vxlan": {"flannel.1": {"vni": 2 if n == "node2" else 1}}}
                          for n in nodes(4)})
    assert [d.id for d in correlate(sim.latest, sim.now, sim.history)] == [
        "overlay.config-mismatch"]


def test_empty_and_tiny_clusters() -> None:
    assert correlate({}, 0.0) == ()
    one = simulate(["node1"])
    assert correlate(one.latest, one.now, one.history) == ()


def test_reports_without_probes_give_no_overlay_verdict() -> None:
    sim = simulate(nodes(3), peers=lambda s: [])
    assert correlate(sim.latest, sim.now, sim.history) == ()


def test_history_in_any_order() -> None:
    sim = simulate(nodes(5), rounds=3, lost=lambda s, t: {"wire"} if t == "node2" else set())
    shuffled = {n: list(reversed(rs)) for n, rs in sim.history.items()}
    assert correlate(sim.latest, sim.now, shuffled) == correlate(sim.latest, sim.now, sim.history)
    assert "(3 rounds)" in correlate(sim.latest, sim.now, shuffled)[0].evidence


def test_stale_agent_that_peers_still_reach_says_it_cannot_post() -> None:
    names = nodes(4)
    rounds = [build_round(names, 1000.0)]
    rounds += [build_round(names, 1000.0 + 10 * i, silent=["node4"]) for i in range(1, 5)]
    sim = Simulation(rounds)
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("agent.stale", ("node4",))]
    assert diags[0].severity is Severity.WARNING and "cannot post" in diags[0].title


def test_drift_already_flagged_by_the_nodes_own_check_is_info() -> None:
    from agent.report import Finding
    off = (Finding("sysctl.ip-forward-off", Severity.ERROR, "node2", "IPv4 forwarding is off"),)
    sim = simulate(nodes(4), facts={"node2": {"ip_forward": 0}}, findings={"node2": off})
    diags = correlate(sim.latest, sim.now, sim.history)
    assert [(d.id, d.severity) for d in diags] == [("drift.ip_forward", Severity.INFO)]
    assert "its own check: sysctl.ip-forward-off" in diags[0].evidence


def test_drift_of_several_nested_keys_is_one_diagnosis_per_fact() -> None:
    sim = simulate(nodes(4), facts={"node2": {"rp_filter": {"all": 1, "eth0": 1}}})
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("drift.rp_filter", ("node2",))]
    assert "node2: rp_filter.all = 1" in diags[0].evidence
    assert "node2: rp_filter.eth0 = 1" in diags[0].evidence


def test_udp_blocked_into_a_cilium_node_folds_its_own_control_replies() -> None:
    names = nodes(4)

    def lost(s: str, t: str) -> set[str]:
        if t == "node2":
            return {"wire", "udp-control"}
        if s == "node2":
            return {"udp-control"}  # the answers are UDP into node2
        return set()

    sim = simulate(names, wire_only=names, lost=lost)
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.udp-blocked", ("node2",))]
    assert "own UDP control probes get no answer either" in diags[0].evidence


def test_control_probe_only_pair_failure_is_info() -> None:
    sim = simulate(nodes(4), lost=lambda s, t: {"udp-control"} if (s, t) == ("node1", "node3")
                   else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert [(d.id, d.severity) for d in diags] == [("overlay.pair-failure", Severity.INFO)]


def test_a_node_one_sync_behind_a_new_service_is_not_stale() -> None:
    names = nodes(4)
    old = {n: {"service_vips_digest": "sha256:v1"} for n in names}
    new = {n: {"service_vips_digest": "sha256:v2"} for n in names}
    new["node3"] = {"service_vips_digest": "sha256:v1"}  # its kube-proxy syncs a bit later
    sim = Simulation([build_round(names, 1000.0, facts=old), build_round(names, 1010.0, facts=new)])
    assert [d.severity for d in correlate(sim.latest, sim.now, sim.history)] == [Severity.INFO]


def test_drift_needs_two_reports_against_each_rounds_majority() -> None:
    names = nodes(4)
    before = build_round(names, 1000.0)
    after = build_round(names, 1010.0, facts={"node3": {"cni_config_digest": "sha256:new"}})
    sim = Simulation([before, after])
    diags = correlate(sim.latest, sim.now, sim.history)
    assert [(d.id, d.severity) for d in diags] == [("drift.cni_config_digest", Severity.INFO)]
    assert "(one report so far)" in diags[0].title


def test_partition_of_wire_only_nodes_with_unsynchronised_rounds() -> None:
    names = nodes(6)
    a = {"node1", "node2", "node3"}
    lost = (lambda s, t: {"wire"} if (s in a) != (t in a) else set())
    rounds = []
    for r in range(3):
        for i, n in enumerate(names):  # every node at its own phase
            rounds.append({n: build_round(names, 1000.0 + 10 * r + i, lost, wire_only=names,
                                          interval=10.0)[n]})
    sim = Simulation(rounds)
    assert _ids(correlate(sim.latest, sim.now, sim.history)) == [
        ("overlay.partition", tuple(names))]


def test_probes_to_a_node_without_any_report_blame_no_one() -> None:
    names = nodes(5)
    sim = simulate(names, silent=["node5"], lost=lambda s, t: {"wire"} if t == "node5" else set())
    diags = correlate(sim.latest, sim.now, sim.history)
    assert [(d.id, d.severity, d.nodes) for d in diags] == [
        ("agent.stale", Severity.INFO, ("node5",))]


def _udp_in_blocked_at_node2(s: str, t: str) -> set[str]:
    """The lab's `fabric-drop-udp-in:node2`: nothing UDP gets into node2. Peers' VXLAN and UDP
    control probes die before node2; node2's own probes arrive (the peers' captures see them)
    but every answer is UDP back into node2 (VXLAN echo, MTU-sized echo, UDP control)."""
    if t == "node2":
        return {"wire", "udp-control"}
    if s == "node2":
        return {"echo", "mtu", "udp-control"}
    return set()


def test_udp_blocked_into_a_node_folds_its_own_lost_answers_not_pair_failures() -> None:
    sim = simulate(nodes(4), lost=_udp_in_blocked_at_node2)
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.udp-blocked", ("node2",))]
    assert "overlay.pair-failure" not in [d.id for d in diags]
    ev = diags[0].evidence
    assert "node2's own overlay (VXLAN echo) and UDP control probes get no answer either" in ev
    assert "the answers are UDP into node2" in ev
    for peer in ("node1", "node3", "node4"):
        assert f"node2 -> {peer}: no answer to echo, mtu, udp-control; {peer} saw 3/3 wire" in ev
        assert f"{peer} -> node2: no answer to" in ev


def test_udp_blocked_into_a_node_keeps_its_own_probes_that_never_arrived_apart() -> None:
    # node2 -> node3 dies on the way out (node3's capture never sees it): UDP into node2
    # does not explain that one
    def lost(s: str, t: str) -> set[str]:
        if (s, t) == ("node2", "node3"):
            return {"wire"}
        return _udp_in_blocked_at_node2(s, t)

    sim = simulate(nodes(4), lost=lost)
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags, Severity.WARNING) == [("overlay.udp-blocked", ("node2",)),
                                             ("overlay.pair-failure", ("node2", "node3"))]
    assert "node2 -> node1: no answer to echo" in diags[0].evidence
    assert "node2 -> node3" not in diags[0].evidence


def test_udp_blocked_out_of_a_node_folds_the_peers_lost_answers() -> None:
    # the mirror image: nothing UDP leaves node2, so peers' probes reach it but its answers die
    def lost(s: str, t: str) -> set[str]:
        if s == "node2":
            return {"wire", "udp-control"}
        if t == "node2":
            return {"echo", "mtu", "udp-control"}
        return set()

    sim = simulate(nodes(4), lost=lost)
    diags = correlate(sim.latest, sim.now, sim.history)
    assert _ids(diags) == [("overlay.udp-blocked", ("node2",))]
    assert "UDP from node2 is dropped" in diags[0].title
    assert "node2's answers are UDP out of node2" in diags[0].evidence
    assert "node1 -> node2: no answer to echo, mtu, udp-control" in diags[0].evidence
