"""What every cross-node rule receives (`ClusterView`) and returns (`RuleResult`), and the
small helpers they share (majority vote, evidence lists, the VXLAN port of a node).

A rule is a module with a docstring (what it diagnoses, the evidence it needs) and a pure
`evaluate(view) -> RuleResult`. The orchestrator (`collector.correlate.correlate`) runs the
rules in order, root causes first; each result names the probe pairs and nodes it explains so
later rules do not report the same symptoms again.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import filterfalse
from typing import Any, Callable, Iterable, Mapping, Sequence

from agent.ports import VXLAN_PORT_LINUX
from agent.report import Diagnosis, Severity
from collector.correlate.model import (NodeDigest, PairStatus, ReachabilityMatrix, ReportLike,
                                       previous_rounds)

_DIGITS = re.compile(r"(\d+)")
#: Evidence lists are cut after this many lines (the rest is counted).
EVIDENCE_MAX_LINES = 16
#: Failing pairs described one by one per list (the rest are counted).
EVIDENCE_PAIRS_MAX = 8


@dataclass(frozen=True)
class CorrelationConfig:
    """Thresholds of every rule, in one place."""

    #: A pair failure must persist in this many consecutive rounds before a rule uses it.
    min_failed_rounds: int = 2
    #: At least this many distinct senders must fail to X before X is blamed...
    min_senders: int = 2
    #: ... and they must be more than this fraction of the senders that probed X.
    blame_fraction: float = 0.5
    #: Agents with no report for this many intervals are `agent.stale`.
    stale_intervals: float = 3.0
    #: Interval assumed for a report that does not say (interval_s = 0).
    default_interval_s: float = 30.0
    #: A partition side must hold at least this fraction of the live nodes (and >= 2 nodes).
    partition_min_side_fraction: float = 0.2
    #: The partition search runs only when this fraction of probed pairs fails (cheap guard).
    partition_min_failing_fraction: float = 0.05
    #: UDP blocked "cluster-wide" when more than this fraction of probed pairs shows it.
    cluster_wide_fraction: float = 0.5
    #: Drift: the majority value must be held by more than this fraction of nodes that have
    #: the fact, and at least `drift_min_nodes` nodes must have it.
    drift_majority: float = 0.6
    drift_min_nodes: int = 3
    #: Facts never compared for drift (per-node values, counters, handled elsewhere).
    drift_ignore_keys: tuple[str, ...] = ("service_vips_digest", "underlay_ip", "hostname",
                                          "node_name", "kernel", "boot_id", "machine_id")
    drift_ignore_suffixes: tuple[str, ...] = ("_count", "_total", "_at", "_s", "_ms", "_bytes",
                                              "_max", "_pct", "service_vips_digest")
    #: Pair failures reported one by one up to this many; the rest are summarised.
    max_pair_diagnoses: int = 20


DEFAULT_CONFIG = CorrelationConfig()


@dataclass(frozen=True)
class ClusterView:
    """Everything a rule may look at. `live` excludes stale agents."""

    now: float
    config: CorrelationConfig
    digests: Mapping[str, NodeDigest]
    live: Mapping[str, NodeDigest]
    stale: frozenset[str]
    matrix: ReachabilityMatrix
    history: Mapping[str, Sequence[ReportLike]]
    #: pairs (sender, target) already explained by an earlier root cause
    explained: frozenset[tuple[str, str]] = frozenset()
    #: nodes already blamed by an earlier root cause (for overlay rules)
    blamed: frozenset[str] = frozenset()
    #: live agents that report themselves unhealthy (their probes are not evidence)
    unhealthy: tuple[NodeDigest, ...] = ()
    #: memo of round_failures(k) for this view (a new view gets a new, empty one)
    memo: dict = field(default_factory=dict, compare=False, repr=False)
    #: sender -> its targets in the matrix's failures whose overlay path fails (`PATH_KINDS`),
    #: as `build_matrix_and_paths` found them (None: work them out from the failures)
    path_out: Mapping[str, frozenset[str]] | None = field(default=None, compare=False,
                                                         repr=False)

    def trusted(self, sender: str) -> bool:
        d = self.live.get(sender)
        return d is not None and not d.unhealthy

    def confirmed_failures(self) -> list[tuple[PairStatus, frozenset[str]]]:
        """Unexplained failures from trusted live senders with the kinds confirmed over
        `min_failed_rounds` rounds (empty kinds dropped)."""
        out = []
        n = self.config.min_failed_rounds
        failures = self.matrix.failures
        for key in filterfalse(self.explained.__contains__, failures):
            st = failures[key]
            if not self.trusted(st.sender):
                continue
            kinds = st.confirmed(n)
            if kinds:
                out.append((st, kinds))
        out.sort(key=lambda sk: (sk[0].sender, sk[0].target))
        return out

    def trusted_probers(self, target: str, k: int = 0) -> int:
        """Live, self-healthy senders that probed `target` in round k (0 = latest)."""
        rounds = self.matrix.rounds
        n = rounds[k].probed_in.get(target, 0) if k < len(rounds) else 0
        return n - sum(1 for d in self.unhealthy if target in d.targets)

    def round_failures(self, k: int) -> list[PairStatus]:
        """Round k's failing pairs (0 = latest, unconfirmed) from trusted live senders, not
        explained by an earlier diagnosis, sorted."""
        if k in self.memo:
            return self.memo[k]
        rounds = self.matrix.rounds
        if k >= len(rounds):
            return []
        explained = self.explained
        if self.unhealthy or len(self.live) != len(self.digests):
            out = [st for key, st in rounds[k].failures.items()
                   if key not in explained and self.trusted(st.sender)]
        else:
            out = [st for key, st in rounds[k].failures.items() if key not in explained]
        out.sort()
        self.memo[k] = out
        return out

    def count_failures(self, k: int, select: Callable[[Iterable[PairStatus]], list],
                       enough: int, senders: Iterable[str] | None = None) -> int:
        """len(select(self.round_failures(k))), counted up to `enough` (the count returned
        may pass it): a round not computed yet is worked out sender by sender (`senders`, or
        all of that round's) until then, so a verdict confirmed by part of an earlier round
        does not compute all of it (a partition or an all-UDP block fails every pair of it,
        tens of thousands)."""
        rounds = self.matrix.rounds
        if k >= len(rounds):
            return 0
        rnd = rounds[k]
        if rnd.computed or rnd.senders is None:
            return len(select(self.round_failures(k)))
        explained, found = self.explained, 0
        for s in rnd.senders if senders is None else senders:
            if not self.trusted(s):
                continue
            got = rnd.sender_failures(s)
            if got:
                found += len(select([st for key, st in got.items() if key not in explained]))
                if found >= enough:
                    break
        return found

    def rounds_to_confirm(self) -> int:
        """How many rounds a verdict must hold in; 0 when history is too short."""
        n = self.config.min_failed_rounds
        return n if len(self.matrix.rounds) >= n else 0

    def previous(self, name: str, limit: int) -> Sequence[NodeDigest]:
        """A live node's earlier rounds, newest first, at most `limit` (`previous_rounds`,
        read from the matrix when it kept them)."""
        m = self.matrix
        if m.previous is not None and limit <= m.previous_limit:
            return m.previous.get(name, [])[:limit]
        return previous_rounds(self.live[name], self.history.get(name), limit)

    def probed_out(self, sender: str, k: int = 0) -> int:
        rounds = self.matrix.rounds
        return rounds[k].probed_out.get(sender, 0) if k < len(rounds) else 0


class PerRound(Sequence):
    """`select(view, k)` for each round k a verdict must hold in (latest first), each computed
    when first read: a verdict that fails in the latest round never reads the earlier ones,
    which are costly to compute (see `ProbeRound`)."""

    def __init__(self, view: "ClusterView", select) -> None:
        self._view, self._select = view, select
        self._got: dict[int, Any] = {}
        self._len = view.rounds_to_confirm()

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self._len))]
        if not 0 <= k < self._len:
            raise IndexError(k)
        if k not in self._got:
            self._got[k] = self._select(self._view, k)
        return self._got[k]


def per_round(view: "ClusterView", select) -> PerRound:
    """`select(view, k)` for each round a verdict must hold in (latest first, each computed on
    first use); empty when the history is too short to confirm anything."""
    return PerRound(view, select)


def group_pairs(pairs: Iterable[PairStatus]) -> tuple[dict[str, list[PairStatus]],
                                                      dict[str, list[PairStatus]]]:
    """Failing pairs by target and by sender (each list in the pairs' order)."""
    by_target: dict[str, list[PairStatus]] = {}
    by_sender: dict[str, list[PairStatus]] = {}
    for st in pairs:
        by_target.setdefault(st.target, []).append(st)
        by_sender.setdefault(st.sender, []).append(st)
    return by_target, by_sender


def answers_lost(pairs: Iterable[PairStatus]) -> list[PairStatus]:
    """The failing pairs whose probes may have reached the receiver (its capture saw them, or
    it has not said): their answers may be what is lost, on the way back. A node-level verdict
    on the answers' direction explains them; a probe the receiver never saw it does not."""
    return [st for st in pairs if st.wire_seen != 0]


def fold(evidence: list[str], pairs: Sequence[PairStatus], note: str) -> None:
    """Append the symptoms a root cause explains (e.g. the other direction's failing pairs whose
    answers cross the blocked path) to its evidence, under a note."""
    if pairs:
        evidence.append(note)
        evidence += pair_lines(pairs)


def most_fail(config: "CorrelationConfig", failing: int, probed: int) -> bool:
    """Enough to blame a node: >= `min_senders` failing, and more than `blame_fraction` of
    those probed."""
    return failing >= config.min_senders and failing > config.blame_fraction * probed


@dataclass(frozen=True)
class RuleResult:
    diagnoses: tuple[Diagnosis, ...] = ()
    explains: frozenset[tuple[str, str]] = frozenset()
    blames: frozenset[str] = frozenset()


def diagnosis(id: str, severity: Severity, nodes: Iterable[str], title: str,
              evidence: Iterable[str] | str, remediation: str) -> Diagnosis:
    nodes = tuple(nodes)
    text = evidence if isinstance(evidence, str) else cap_lines(list(evidence))
    return Diagnosis(id=id, severity=severity, node=nodes[0] if len(nodes) == 1 else "",
                     title=title, evidence=text, remediation=remediation, nodes=nodes)


def cap_lines(lines: list[str], limit: int = EVIDENCE_MAX_LINES) -> str:
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return "\n".join(lines)


#: Evidence lists up to this long are ordered naturally (node2 before node10).
NATURAL_SORT_MAX = 500


def natural_key(name: str) -> tuple:
    """node2 before node10."""
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(name))


def pair_lines(pairs: Sequence[PairStatus], limit: int = EVIDENCE_PAIRS_MAX) -> list[str]:
    """Evidence lines for failing pairs: the first `limit` described, the rest counted."""
    if len(pairs) <= NATURAL_SORT_MAX:
        pairs = sorted(pairs, key=lambda st: (natural_key(st.sender), natural_key(st.target)))
    lines = [st.describe() for st in pairs[:limit]]
    if len(pairs) > limit:
        lines.append(f"... and {len(pairs) - limit} more failing pairs")
    return lines


def name_list(names: Iterable[str], limit: int = 5) -> str:
    names = sorted(names, key=natural_key)
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def clear_majority(counts: Counter, fraction: float, min_count: int = 2) -> Any:
    """The value held by more than `fraction` of the votes (and >= min_count), else None.
    Returns a 1-tuple `(value,)` so a majority value of None is distinguishable."""
    total = sum(counts.values())
    if not total:
        return None
    (value, top), *rest = counts.most_common(2)
    if top < min_count or top <= fraction * total or (rest and rest[0][1] == top):
        return None
    return (value,)


def vxlan_port(digest: NodeDigest | None) -> int:
    if digest is not None:
        for dev in digest.report.overlay:
            if dev.port:
                return dev.port
    return VXLAN_PORT_LINUX


def vxlan_dev(digest: NodeDigest | None) -> str:
    if digest is not None and digest.report.overlay:
        return digest.report.overlay[0].name
    return "<vxlan device>"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass
class _Acc:
    diagnoses: list[Diagnosis] = field(default_factory=list)
    explains: set[tuple[str, str]] = field(default_factory=set)
    blames: set[str] = field(default_factory=set)

    def result(self) -> RuleResult:
        return RuleResult(tuple(self.diagnoses), frozenset(self.explains), frozenset(self.blames))
