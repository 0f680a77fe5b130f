"""The data the cross-node rules work on: a per-report digest and the reachability matrix.

`digest_report(report)` turns one NodeReport into a `NodeDigest` once (index probes by target,
seen counts by sender, facts flattened to dotted keys). It is pure and costs tens of
microseconds, so a collector may compute it at ingest and hand digests to `correlate` instead of
reports: the whole-cluster correlation then only walks sparse failures.

`build_matrix(...)` combines the latest digest of every node (and, for confirmation, the
previous rounds) into a `ReachabilityMatrix`: for every ordered pair (sender, target) that was
probed, either "ok" or a `PairStatus` saying which probe kinds lost everything, for how many
consecutive rounds, and what the target's capture saw. Only failing pairs are stored; an
unlisted probed pair is ok.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Iterable, Mapping, Sequence, Union

from agent.report import NodeReport, Severity

#: Probe kinds that test the overlay data path itself (VXLAN UDP to the peer).
PATH_KINDS = frozenset({"wire", "echo"})
#: Agent-reported finding id prefixes that make a node's own probes untrustworthy
#: (e.g. its rounds overrun): such a sender is not evidence against its peers.
UNHEALTHY_AGENT_PREFIXES = ("agent.",)

_EMPTY: frozenset[str] = frozenset()


def flatten_facts(facts: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys; lists become a tuple (hashable); other values kept."""
    out: dict[str, Any] = {}
    for key, value in facts.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_facts(value, name + "."))
        elif isinstance(value, list):
            try:
                out[name] = tuple(value)
                hash(out[name])
            except TypeError:
                out[name] = repr(value)
        else:
            out[name] = value
    return out


@dataclass(frozen=True, eq=False)
class NodeDigest:
    """One NodeReport, indexed for correlation. `report` is kept for facts, overlay, findings."""

    name: str
    collected_at: float
    interval_s: float
    report: NodeReport
    #: every peer probed with any kind (sent > 0)
    targets: frozenset[str]
    #: peers probed with `wire` probes (their capture must confirm them)
    wire_targets: frozenset[str]
    #: peer -> kinds (not wire) that were sent and got no answer at all
    lost: Mapping[str, frozenset[str]]
    #: peer -> kinds (not wire) that were sent and answered at least once
    answered: Mapping[str, frozenset[str]]
    #: peers whose wire probes this node's capture saw (count > 0)
    seen_wire: frozenset[str]
    #: (peer, kind) -> count seen by this node's capture
    seen: Mapping[tuple[str, str], int]
    #: (peer, kind) -> (sent, answered, error) for evidence
    probe_index: Mapping[tuple[str, str], tuple[int, int | None, str]]
    facts: Mapping[str, Any]
    #: the hashable facts as sorted (key, value) pairs: nodes with equal facts share one
    #: value, so drift is computed per distinct fact set, not per node
    fact_items: tuple[tuple[str, Any], ...] = ()
    #: the node reports itself unhealthy (its probe failures are not evidence against peers)
    unhealthy: bool = False
    #: the node runs a prober (so its capture is meaningful)
    captures: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


ReportLike = Union[NodeReport, NodeDigest]


def digest_report(report: NodeReport) -> NodeDigest:
    """Index one report. Pure; ~tens of microseconds for 16 peers x 5 kinds."""
    targets: set[str] = set()
    wire: set[str] = set()
    lost: dict[str, set[str]] = {}
    answered: dict[str, set[str]] = {}
    index: dict[tuple[str, str], tuple[int, int | None, str]] = {}
    for p in report.probes:
        if p.sent <= 0:
            continue
        targets.add(p.peer)
        index[(p.peer, p.kind)] = (p.sent, p.answered, p.error)
        if p.kind == "wire":
            wire.add(p.peer)
        elif not p.answered:
            lost.setdefault(p.peer, set()).add(p.kind)
        else:
            answered.setdefault(p.peer, set()).add(p.kind)
    seen: dict[tuple[str, str], int] = {}
    seen_wire: set[str] = set()
    for s in report.seen:
        seen[(s.peer, s.kind)] = seen.get((s.peer, s.kind), 0) + s.count
        if s.kind == "wire" and s.count > 0:
            seen_wire.add(s.peer)
    flat = flatten_facts(report.facts)
    items = []
    for k, v in flat.items():
        try:
            hash(v)
        except TypeError:
            continue
        items.append((k, v))
    items.sort(key=lambda kv: kv[0])
    unhealthy = any(f.severity >= Severity.WARNING and f.id.startswith(UNHEALTHY_AGENT_PREFIXES)
                    for f in report.findings)
    return NodeDigest(
        name=report.node.name, collected_at=report.collected_at, interval_s=report.interval_s,
        report=report, targets=frozenset(targets), wire_targets=frozenset(wire),
        lost={k: frozenset(v) for k, v in lost.items()},
        answered={k: frozenset(v) for k, v in answered.items()},
        seen_wire=frozenset(seen_wire), seen=seen, probe_index=index,
        facts=flat, fact_items=tuple(items), unhealthy=unhealthy,
        captures=bool(wire) or bool(report.seen))


def as_digest(item: ReportLike) -> NodeDigest:
    return item if isinstance(item, NodeDigest) else digest_report(item)


def as_digests(reports: Mapping[str, ReportLike] | Sequence[ReportLike] | None
               ) -> dict[str, NodeDigest]:
    """Latest digest per node name (a sequence keeps the newest per node)."""
    out: dict[str, NodeDigest] = {}
    if not reports:
        return out
    items: Iterable[ReportLike] = reports.values() if isinstance(reports, Mapping) else reports
    for item in items:
        d = as_digest(item)
        old = out.get(d.name)
        if old is None or d.collected_at >= old.collected_at:
            out[d.name] = d
    return out


def previous_rounds(latest: NodeDigest, history: Sequence[ReportLike] | None
                    ) -> list[NodeDigest]:
    """The node's earlier rounds, newest first, excluding the latest (matched by time)."""
    if not history:
        return []
    out = [as_digest(h) for h in history]
    out = [d for d in out if d.collected_at < latest.collected_at]
    out.sort(key=lambda d: d.collected_at, reverse=True)
    return out


@dataclass(frozen=True)
class PairStatus:
    """A probed pair where at least one kind lost every probe in the latest round."""

    sender: str
    target: str
    #: kinds that lost everything in the latest round (wire: the target's capture saw none)
    kinds: frozenset[str]
    #: consecutive rounds (latest included) in which the pair's failing kinds kept failing
    rounds: int
    #: kinds that failed in every one of those rounds (what the rules may rely on)
    confirmed_kinds: frozenset[str]
    #: how many of the sender's wire probes the target's capture saw (None: no wire probe or
    #: the target has no capture data)
    wire_seen: int | None
    wire_sent: int | None

    @property
    def path_failed(self) -> bool:
        return bool(self.kinds & PATH_KINDS)

    def confirmed(self, min_rounds: int) -> frozenset[str]:
        return self.confirmed_kinds if self.rounds >= min_rounds else _EMPTY

    def describe(self) -> str:
        """One evidence line: `node1 -> node2: no answer to echo, mtu; node2 saw 0/3 wire
        (2 rounds)`."""
        parts = []
        lost = sorted(k for k in self.kinds if k != "wire")
        if lost:
            parts.append("no answer to " + ", ".join(lost))
        if self.wire_sent is not None and self.wire_seen is not None:
            parts.append(f"{self.target} saw {self.wire_seen}/{self.wire_sent} wire")
        n = self.rounds
        return (f"{self.sender} -> {self.target}: {'; '.join(parts)} "
                f"({n} round{'s' if n != 1 else ''})")


@dataclass(frozen=True)
class ReachabilityMatrix:
    """Per ordered pair: not probed, ok, or a PairStatus. Built once per correlation."""

    nodes: tuple[str, ...]
    failures: Mapping[tuple[str, str], PairStatus]
    #: target -> number of senders that probed it in their latest round
    probed_in: Mapping[str, int]
    #: sender -> number of targets it probed
    probed_out: Mapping[str, int]
    pairs_probed: int
    digests: Mapping[str, NodeDigest]

    def status(self, sender: str, target: str) -> str | PairStatus | None:
        """None: not probed; "ok"; or the PairStatus of a failing pair."""
        st = self.failures.get((sender, target))
        if st is not None:
            return st
        d = self.digests.get(sender)
        if d is not None and target in d.targets:
            return "ok"
        return None

    def failing_in(self) -> dict[str, list[PairStatus]]:
        out: dict[str, list[PairStatus]] = {}
        for st in self.failures.values():
            out.setdefault(st.target, []).append(st)
        return out

    def failing_out(self) -> dict[str, list[PairStatus]]:
        out: dict[str, list[PairStatus]] = {}
        for st in self.failures.values():
            out.setdefault(st.sender, []).append(st)
        return out


def _pair_kinds(sender: NodeDigest, target_name: str, target: NodeDigest | None
                ) -> tuple[frozenset[str], int | None, int | None]:
    kinds = sender.lost.get(target_name, _EMPTY)
    wire_seen = wire_sent = None
    if target_name in sender.wire_targets:
        wire_sent = sender.probe_index[(target_name, "wire")][0]
        if target is not None and target.captures:
            wire_seen = target.seen.get((sender.name, "wire"), 0)
            if wire_seen == 0:
                kinds = kinds | {"wire"}
    return kinds, wire_seen, wire_sent


def build_matrix(reports: Mapping[str, ReportLike] | Sequence[ReportLike],
                 history: Mapping[str, Sequence[ReportLike]] | None = None,
                 exclude: Iterable[str] = ()) -> ReachabilityMatrix:
    """The reachability matrix of the latest round, failures confirmed against `history`
    (per node, its recent reports, any order; the latest may be included).

    Nodes in `exclude` (stale agents) are neither senders nor capture witnesses: their data is
    old. Probes *to* them still appear (the stale rule explains them)."""
    digests = as_digests(reports)
    excluded = set(exclude)
    live = {n: d for n, d in digests.items() if n not in excluded}
    probed_in = Counter(chain.from_iterable(d.targets for d in live.values()))
    failures: dict[tuple[str, str], PairStatus] = {}
    prev_cache: dict[str, list[NodeDigest]] = {}

    def prev(name: str) -> list[NodeDigest]:
        if name not in prev_cache:
            d = digests.get(name)
            prev_cache[name] = previous_rounds(d, (history or {}).get(name)) if d else []
        return prev_cache[name]

    for s in live.values():
        name = s.name
        suspects: set[str] = set(s.lost)
        if s.wire_targets:
            for t in s.wire_targets:
                td = live.get(t)
                if td is not None and td.captures and name not in td.seen_wire:
                    suspects.add(t)
        for t in suspects:
            td = live.get(t)
            kinds, wire_seen, wire_sent = _pair_kinds(s, t, td)
            if not kinds:
                continue
            confirmed = kinds
            rounds = 1
            s_prev, t_prev = prev(name), prev(t)
            for i, sp in enumerate(s_prev):
                if t not in sp.targets:
                    break
                tp = t_prev[i] if i < len(t_prev) else None
                k, _, _ = _pair_kinds(sp, t, tp)
                both = confirmed & k
                if not both:
                    break
                confirmed = both
                rounds += 1
            failures[(name, t)] = PairStatus(name, t, kinds, rounds,
                                             confirmed if rounds > 1 else kinds,
                                             wire_seen, wire_sent)
    return ReachabilityMatrix(
        nodes=tuple(sorted(digests)), failures=failures, probed_in=probed_in,
        probed_out={n: len(d.targets) for n, d in live.items()},
        pairs_probed=sum(len(d.targets) for d in live.values()), digests=digests)
