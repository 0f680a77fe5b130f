"""The failing overlay paths per sender that `build_matrix_and_paths` finds while it works out
the failures (what the partition rule starts from) must be the ones the matrix's failures say,
pair by pair, and the partition rule must conclude the same from either."""

from __future__ import annotations

from collector.correlate import partition
from collector.correlate.base import DEFAULT_CONFIG, ClusterView
from collector.correlate.model import PATH_KINDS, build_matrix_and_paths
from tests.correlate_builder import Simulation, build_round, nodes

NAMES = nodes(20)
LEFT = set(NAMES[:10])


def _lost(s: str, t: str) -> set[str]:
    """A partition between the halves plus failures of every shape inside them: a sender
    losing only echo answers (path), only MTU-sized probes, only UDP control, or both echo
    and TCP control."""
    if (s in LEFT) != (t in LEFT):
        return {"wire"}
    if t == "node3":
        return {"udp-control"}
    if s == "node14":
        return {"mtu"}
    if (s, t) in (("node5", "node6"), ("node16", "node17")):
        return {"echo"}
    if s == "node8":
        return {"echo", "tcp-control"}
    return set()


def _sim(rounds: int, lost=_lost, **kw) -> Simulation:
    return Simulation([build_round(NAMES, 1000.0 + 10 * i, lost, **kw) for i in range(rounds)])


def _paths_from_failures(failures) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for (s, t), st in failures.items():
        if st.kinds & PATH_KINDS:
            out.setdefault(s, set()).add(t)
    return out


def _view(sim: Simulation, with_paths: bool) -> ClusterView:
    m, paths = build_matrix_and_paths(sim.latest, sim.history)
    return ClusterView(now=sim.now, config=DEFAULT_CONFIG, digests=m.digests, live=m.digests,
                       stale=frozenset(), matrix=m, history=sim.history,
                       path_out=paths if with_paths else None)


def test_failing_paths_equal_the_failures_pair_by_pair() -> None:
    for sim in (_sim(1), _sim(3), _sim(2, wire_only=("node12",)),
                _sim(2, peers=lambda s: [NAMES[(NAMES.index(s) + k) % 20] for k in (1, 4, 9)])):
        m, paths = build_matrix_and_paths(sim.latest, sim.history)
        expected = _paths_from_failures(m.failures)
        assert expected  # the partition's pairs at least
        assert {s: set(ts) for s, ts in paths.items()} == expected
        # pairs that failed only control or MTU probes are no failing path; echo is
        mtu_only = {(s, t) for (s, t), st in m.failures.items() if st.kinds == {"mtu"}}
        assert mtu_only and all(t not in paths.get(s, ()) for s, t in mtu_only)
        assert all(t in LEFT for t in paths["node14"])
        assert all("node3" not in paths.get(s, ()) for s in LEFT)
        echo = [key for key in (("node5", "node6"), ("node8", "node9")) if key in m.failures]
        assert all(t in paths[s] for s, t in echo)


def test_healthy_cluster_has_no_failing_paths() -> None:
    _, paths = build_matrix_and_paths(_sim(2, lost=lambda s, t: set()).latest)
    assert paths == {}


def test_partition_concludes_the_same_from_either() -> None:
    sim = _sim(3)
    kept, worked_out = partition.evaluate(_view(sim, True)), partition.evaluate(_view(sim, False))
    assert kept.diagnoses and kept.diagnoses[0].id == "overlay.partition"
    assert kept == worked_out
    # every failing path pair across the halves is explained, nothing inside them
    assert kept.explains == {(s, t) for s, ts in _paths_from_failures(
        _view(sim, False).matrix.failures).items() for t in ts if (s in LEFT) != (t in LEFT)}
