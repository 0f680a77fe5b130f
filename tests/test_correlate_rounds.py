"""Earlier probe rounds are computed lazily (`ProbeRound`, `per_round`): one pair's status
looked up before its round is computed must be what the computed round says, and a rule that
never reads an earlier round must not make anyone compute it."""

from __future__ import annotations

from agent.report import Severity
from collector.correlate import build_matrix, correlate
from collector.correlate.base import DEFAULT_CONFIG, ClusterView, per_round
from tests.correlate_builder import Simulation, build_round, nodes

NAMES = nodes(24)
#: each round probes other ring offsets (as the agents' hash ring does), some repeating
OFFSETS = [(1, 2, 5, 11), (1, 3, 7, 12), (2, 3, 5, 13)]
LEFT = set(NAMES[:12])


def _peers(i: int):
    def peers(s: str) -> list[str]:
        j = NAMES.index(s)
        return [NAMES[(j + k) % len(NAMES)] for k in OFFSETS[i % len(OFFSETS)]]
    return peers


def _lost(s: str, t: str) -> set[str]:
    """A partition between the halves, a node whose inbound UDP control is lost, and one
    pair that loses only its MTU-sized probes."""
    if (s in LEFT) != (t in LEFT):
        return {"wire"}
    if t == "node3":
        return {"udp-control"}
    if (s, t) == ("node14", "node15"):
        return {"mtu"}
    return set()


def _sim(faulty_rounds: tuple[bool, ...]) -> Simulation:
    return Simulation([build_round(NAMES, 1000.0 + 10 * i, _lost if faulty else (lambda s, t: set()),
                                   peers=_peers(i))
                       for i, faulty in enumerate(faulty_rounds)])


def _one_node_fault(s: str, t: str) -> set[str]:
    return {"wire"} if t == "node3" else set()


def test_earlier_round_counts_and_sender_failures_before_computing_it() -> None:
    # many candidates (a partition: the round is computed whole) and few (one node's
    # inbound fault: computed around it); both must read as the computed round does
    few = Simulation([build_round(NAMES, 1000.0 + 10 * i, _one_node_fault, peers=_peers(i))
                      for i in range(3)])
    # (the partition round also fails UDP control into node3: both fault kinds are in it)
    both = ({"wire", "echo", "mtu"}, {"udp-control"})
    for sim, fault_kinds in ((_sim((True, True, True)), both), (few, both[:1])):
        lazy = build_matrix(sim.latest, sim.history).rounds[1]
        computed = build_matrix(sim.latest, sim.history).rounds[1]
        assert computed.failures and computed.computed
        assert dict(lazy.probed_out) == dict(computed.probed_out)
        assert not lazy.computed  # the counts alone did not compute the round
        by_sender = {s: lazy.sender_failures(s) for s in lazy.senders}
        assert not lazy.computed
        assert {k: st for got in by_sender.values() for k, st in got.items()} \
            == dict(computed.failures) != {}
        assert all(computed.sender_failures(s) == got for s, got in by_sender.items())
        assert set(map(frozenset, fault_kinds)) <= {st.kinds
                                                    for st in computed.failures.values()}


def test_cluster_wide_udp_block_is_confirmed_without_computing_the_earlier_round() -> None:
    from collector.correlate import correlate_with_matrix

    def udp_blocked(s: str, t: str) -> set[str]:
        return {"wire", "udp-control"}

    sim = Simulation([build_round(NAMES, 1000.0 + 10 * i, udp_blocked, peers=_peers(i))
                      for i in range(3)])
    diags, m = correlate_with_matrix(sim.latest, sim.now, sim.history)
    udp = [d for d in diags if d.id == "overlay.udp-blocked"]
    assert len(udp) == 1 and set(udp[0].nodes) == set(NAMES)
    assert not m.rounds[1].computed
    # the round before was healthy: not confirmed, no cluster-wide verdict
    sim = Simulation([build_round(NAMES, 1000.0 + 10 * i,
                                  udp_blocked if i == 2 else (lambda s, t: set()),
                                  peers=_peers(i)) for i in range(3)])
    assert not [d for d in correlate(sim.latest, sim.now, sim.history)
                if d.id == "overlay.udp-blocked"]


def test_failures_of_a_sender_outside_the_earlier_round_are_none() -> None:
    sim = _sim((True, True))
    m = build_matrix(sim.latest, sim.history)
    rnd = m.rounds[1]
    assert rnd.sender_failures("no-such-node") == {}
    assert rnd.sender_failures("node1") and ("node1", "node1") not in rnd.sender_failures("node1")


def test_per_round_computes_only_the_rounds_read() -> None:
    sim = _sim((True, True))
    m = build_matrix(sim.latest, sim.history)
    view = ClusterView(now=sim.now, config=DEFAULT_CONFIG, digests=m.digests, live=m.digests,
                       stale=frozenset(), matrix=m, history=sim.history)
    asked: list[int] = []

    def select(v: ClusterView, k: int) -> int:
        asked.append(k)
        return k * 10

    rounds = per_round(view, select)
    assert len(rounds) == DEFAULT_CONFIG.min_failed_rounds == 2 and asked == []
    assert rounds[0] == 0 and rounds[0] == 0 and asked == [0]
    assert list(rounds) == [0, 10] and asked == [0, 1]


def test_partition_only_in_the_latest_round_is_not_confirmed() -> None:
    # the round before was healthy: the earlier round has no failing pair across the halves
    sim = _sim((False, True))
    ids = {d.id for d in correlate(sim.latest, sim.now, sim.history)
           if d.severity >= Severity.WARNING}
    assert "overlay.partition" not in ids


def test_partition_over_rotating_samples_is_confirmed() -> None:
    sim = _sim((True, True, True))
    diags = correlate(sim.latest, sim.now, sim.history)
    partition = [d for d in diags if d.id == "overlay.partition"]
    assert len(partition) == 1 and set(partition[0].nodes) == set(NAMES)


def test_earlier_rounds_read_lazily_equal_previous_rounds() -> None:
    from collector.correlate import digest_report
    from collector.correlate.model import EarlierRounds, previous_rounds

    sim = _sim((True, True, True, True))
    digests = {n: [digest_report(r) for r in rs] for n, rs in sim.history.items()}
    live = {n: ds[-1] for n, ds in digests.items()}
    history = dict(digests)
    names = sorted(live)
    history[names[0]] = digests[names[0]][::-1]            # newest first
    history[names[1]] = digests[names[1]][:-1]             # the latest not included
    history[names[2]] = [digests[names[2]][1]] + digests[names[2]]  # a round twice
    history[names[3]] = [live[names[3]]]                   # no earlier round
    del history[names[4]]                                  # no history at all
    for limit in (1, 2, 5):
        rounds = EarlierRounds(live, history, limit)
        expected = {n: p for n in live if (p := previous_rounds(live[n], history.get(n), limit))}
        assert dict(rounds.items()) == expected
        assert rounds.depth() == max(len(p) for p in expected.values())
        for n, d in live.items():
            assert list(rounds.reports_of[n]) == expected.get(n, [])[::-1] + [d]
        assert dict(rounds.round(1)) == {n: p[1] for n, p in expected.items() if len(p) > 1}
    # read node by node in another order: the same lists
    rounds = EarlierRounds(live, history, 5)
    assert {n: rounds.get(n) for n in reversed(names) if rounds.get(n)} == expected


def test_nodes_near_a_few_cover_every_earlier_round_that_probed_them() -> None:
    from collector.correlate import digest_report
    from collector.correlate.model import EarlierRounds

    sim = _sim((True, True, True))
    history = {n: [digest_report(r) for r in rs] for n, rs in sim.history.items()}
    live = {n: h[-1] for n, h in history.items()}
    rounds = EarlierRounds(live, history, 5)
    few = frozenset({"node3", "node20"})
    near = rounds.near(few, {"node7": frozenset({"node8"})})
    assert set(near) < set(live) and {"node3", "node20", "node7"} <= set(near)
    assert near == [n for n in live if n in near]  # in the live order
    for n, p in rounds.items():
        if any(not d.targets.isdisjoint(few) for d in p):
            assert n in near
