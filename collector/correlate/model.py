"""The data the cross-node rules work on: a per-report digest and the reachability matrix.

`digest_report(report)` turns one NodeReport into a `NodeDigest` once (index probes by target,
wire probes seen by sender, scalar facts flattened to dotted keys). It is pure and costs tens of
microseconds, so a collector may compute it at ingest and hand digests to `correlate` instead of
reports: the whole-cluster correlation then only walks sparse failures.

`build_matrix(...)` combines the latest digest of every node (and, for confirmation, the
previous rounds) into a `ReachabilityMatrix`: for every ordered pair (sender, target) that was
probed, either "ok" or a `PairStatus` saying which probe kinds lost everything, for how many
consecutive rounds, and what the target's capture saw. Only failing pairs are stored; an
unlisted probed pair is ok (or unknown: see `CaptureWindows`, wire probes are judged by time).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from sys import intern as sys_intern
from itertools import chain, count, filterfalse
from typing import Any, Iterable, Mapping, NamedTuple, Sequence, Union

from agent.report import NodeReport, Severity

#: Probe kinds that test the overlay data path itself (VXLAN UDP to the peer).
PATH_KINDS = frozenset({"wire", "echo"})
#: Agent-reported finding ids (prefixes, at warning or worse) that make a node's own probes
#: untrustworthy: its rounds overrun, so its probes' timeouts may be its own. Such a sender is
#: not evidence against its peers. (`agent.post-failing` is not one: posting late says nothing
#: about the probes.)
UNHEALTHY_AGENT_PREFIXES = ("agent.round-overrun",)

_EMPTY: frozenset[str] = frozenset()
PAIR_SEP = "\0"
#: A probe pair (sender, target) is one int, `id(sender) << PAIR_SHIFT | id(target)`, with ids
#: from one shared index of node names (`name_id`): digests hold their pairs as arrays of
#: machine ints, ~10x smaller than sets of "sender\0target" strings (a collector keeps
#: 5,000 nodes x 3 rounds x 2 x 16 of them), and set operations over them stay in C.
PAIR_SHIFT = 32
PAIR_MASK = (1 << PAIR_SHIFT) - 1
_NAME_IDS: dict[str, int] = {}
#: id -> node name (ids are never reused; a name is looked up only through a pair key made
#: after its id was assigned)
NAMES_BY_ID: dict[int, str] = {}
_NEXT_ID = count()


def name_id(name: str) -> int:
    """The node name's small int in the shared index (assigned on first sight; a name
    assigned twice by racing threads keeps the first id, the other is an unused entry)."""
    got = _NAME_IDS.get(name)
    if got is None:
        new = next(_NEXT_ID)
        NAMES_BY_ID[new] = name
        got = _NAME_IDS.setdefault(name, new)
    return got
SCALARS = (str, int, float, bool)


def flatten_facts(facts: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys; lists become a tuple (hashable); other values kept."""
    out: dict[str, Any] = {}
    for key, value in facts.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
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


@dataclass(frozen=True, eq=False, slots=True)
class NodeDigest:
    """One NodeReport, indexed for correlation: only what the rules read, kept small (a
    collector holds several rounds of these for every node). `report` is kept for overlay
    devices, findings and node info; a collector may strip its probes and seen counts."""

    name: str
    collected_at: float
    interval_s: float
    report: NodeReport
    #: every peer probed with any kind (sent > 0)
    targets: frozenset[str]
    #: peers probed with `wire` probes (their capture must confirm them); the same object as
    #: `targets` when every peer got wire probes
    wire_targets: frozenset[str]
    #: peer -> kinds (not wire) that were sent and got no answer at all (sparse)
    lost: Mapping[str, frozenset[str]]
    #: peers whose TCP control probe was answered at least once (the target is up); the same
    #: object as `targets` when every peer answered (a collector keeps 15,000 digests: a set
    #: of peers, not a peer -> answered kinds dict, ~230 bytes less per digest)
    tcp_answered: frozenset[str]
    #: peer -> how many of its wire probes this node's capture saw (only counts > 0)
    seen_wire: Mapping[str, int]
    #: wire probes sent per peer: one int when every peer got the same number, else a dict
    wire_sent: int | Mapping[str, int]
    #: scalar facts, nested dicts flattened to dotted keys (lists and other values dropped)
    facts: Mapping[str, Any]
    #: the node reports itself unhealthy (its probe failures are not evidence against peers)
    unhealthy: bool = False
    #: the node runs a prober (so its capture is meaningful)
    captures: bool = False
    #: pair keys (see `PAIR_SHIFT`) of (node, peer) for every wire probe sent; (peer, node)
    #: for every peer whose wire probes this node's capture saw (arrays of int64, each key
    #: once). Set operations over the whole cluster find the probes that never arrived
    #: without a Python loop per pair.
    wire_pairs: Sequence[int] = ()
    seen_pairs: Sequence[int] = ()
    #: the `service_vips_digest` fact (any nesting), or None
    service_vips: Any = None
    #: "name,vni,port,mtu|..." of every overlay device (a str: its hash is cached, so
    #: "are all nodes' devices alike?" is one cheap set)
    overlay_key: str = ""
    #: peers whose echo probe has a known outcome (lost or answered): their overlay path
    #: status is known without the receiver's capture (the same object as `targets` when
    #: every peer got an echo probe)
    echo_known: frozenset[str] = frozenset()

    def sent_wire(self, peer: str) -> int:
        ws = self.wire_sent
        return ws if isinstance(ws, int) else ws.get(peer, 0)


ReportLike = Union[NodeReport, NodeDigest]


def digest_report(report: NodeReport) -> NodeDigest:
    """Index one report. Pure; ~50 microseconds for 16 peers x 5 kinds."""
    return digest_indexed(report, index_probe_rows(
        ((p.peer, p.kind, p.sent, p.answered) for p in report.probes),
        ((s.peer, s.kind, s.count) for s in report.seen)))


class ProbeIndex(NamedTuple):
    """A report's probes and seen counts summed up per peer, in builtins only (a collector's
    decode worker computes it and sends it over a pipe with marshal; `digest_indexed` turns it
    into the digest's shared, interned form)."""

    #: every peer probed with any kind (sent > 0), first-probed first
    targets: list[str]
    #: peer -> wire probes sent
    wire_sent: dict[str, int]
    #: peer -> kinds (not wire) sent that got no answer at all / answered at least once
    lost: dict[str, list[str]]
    answered: dict[str, list[str]]
    #: peer -> wire probes of it this node's capture saw (counts > 0 only)
    seen_wire: dict[str, int]
    #: any seen count at all (the node runs a capture)
    any_seen: bool


def index_probe_rows(probes: Iterable[tuple[str, str, int, int | None]],
                     seen: Iterable[tuple[str, str, int]]) -> ProbeIndex:
    """Sum up probe rows (peer, kind, sent, answered) and seen rows (peer, kind, count)."""
    targets: dict[str, None] = {}
    wire_sent: dict[str, int] = {}
    lost: dict[str, list[str]] = {}
    answered: dict[str, list[str]] = {}
    for peer, kind, sent, was_answered in probes:
        if sent <= 0:
            continue
        targets[peer] = None
        if kind == "wire":
            wire_sent[peer] = wire_sent.get(peer, 0) + sent
        else:
            bucket = answered if was_answered else lost
            got = bucket.get(peer)
            if got is None:
                bucket[peer] = [kind]
            elif kind not in got:
                got.append(kind)
    seen_wire: dict[str, int] = {}
    any_seen = False
    for peer, kind, seen_count in seen:
        any_seen = True
        if seen_count > 0 and kind == "wire":
            seen_wire[peer] = seen_wire.get(peer, 0) + seen_count
    return ProbeIndex(list(targets), wire_sent, lost, answered, seen_wire, any_seen)


def digest_indexed(report: NodeReport, index: ProbeIndex) -> NodeDigest:
    """The digest of a report whose probes and seen counts were summed up by
    `index_probe_rows` (here or in another process)."""
    intern = sys_intern
    targets = [intern(p) for p in index.targets]
    wire_sent = {intern(p): n for p, n in index.wire_sent.items()}
    lost = {intern(p): _kinds(ks) for p, ks in index.lost.items()}
    answered = {intern(p): _kinds(ks) for p, ks in index.answered.items()}
    seen_wire = {intern(p): n for p, n in index.seen_wire.items()}
    flat = flatten_facts(report.facts)
    # only scalars are compared across nodes (lists such as the iptables backends present or
    # the Service VIPs are per-node detail; their digests are the comparable form)
    facts = {intern(k): v for k, v in flat.items() if v is None or isinstance(v, SCALARS)}
    unhealthy = any(f.severity >= Severity.WARNING and f.id.startswith(UNHEALTHY_AGENT_PREFIXES)
                    for f in report.findings)
    name = intern(report.node.name)
    vips = None
    for k, v in facts.items():
        if k == "service_vips_digest" or k.endswith(".service_vips_digest"):
            vips = v
            break
    target_set = frozenset(targets)
    wire_set = target_set if len(wire_sent) == len(target_set) else frozenset(wire_sent)
    echo = {p for p, ks in lost.items() if "echo" in ks}
    echo.update(p for p, ks in answered.items() if "echo" in ks)
    tcp = [p for p, ks in answered.items() if "tcp-control" in ks]
    echo_set = target_set if len(echo) == len(target_set) else frozenset(echo)
    counts = set(wire_sent.values())
    sid = name_id(name)
    base = sid << PAIR_SHIFT
    return NodeDigest(
        name=name, collected_at=report.collected_at, interval_s=report.interval_s,
        report=report, targets=target_set, wire_targets=wire_set,
        lost=lost, tcp_answered=target_set if len(tcp) == len(target_set) else frozenset(tcp),
        seen_wire=seen_wire,
        wire_sent=counts.pop() if len(counts) == 1 else wire_sent,
        facts=facts, unhealthy=unhealthy,
        captures=bool(wire_sent) or index.any_seen,
        wire_pairs=array("q", [base | name_id(t) for t in wire_sent]),
        seen_pairs=array("q", [name_id(p) << PAIR_SHIFT | sid for p in seen_wire]),
        service_vips=vips, echo_known=echo_set,
        overlay_key=intern("|".join(f"{d.name},{d.vni},{d.port},{d.mtu}"
                                    for d in report.overlay)))


#: the few distinct sets of lost kinds, shared between digests
_KINDS: dict[frozenset[str], frozenset[str]] = {}


def _kinds(kinds: Iterable[str]) -> frozenset[str]:
    key = frozenset(kinds)
    return _KINDS.setdefault(key, key)


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


def previous_rounds(latest: NodeDigest, history: Sequence[ReportLike] | None,
                    limit: int | None = None) -> list[NodeDigest]:
    """The node's earlier rounds, newest first, excluding the latest (matched by time), at
    most `limit`. History kept oldest first (the usual append order) is read from its end."""
    if not history:
        return []
    older = _older_in_order(history, latest)
    if older is not None:  # the usual shape, taken as it is
        return older if limit is None else older[:limit]
    at = latest.collected_at
    out: list[NodeDigest] = []
    ordered = True
    last = None
    for item in reversed(history):
        d = item if isinstance(item, NodeDigest) else digest_report(item)
        if last is not None and d.collected_at > last:
            ordered = False
            break
        last = d.collected_at
        if d.collected_at < at:
            out.append(d)
            if limit is not None and len(out) >= limit:
                break
    if not ordered:
        out = sorted((d for d in map(as_digest, history) if d.collected_at < at),
                     key=lambda d: d.collected_at, reverse=True)[:limit]
    return out


class PairStatus(NamedTuple):
    """A probed pair where at least one kind lost every probe in one round. (A NamedTuple:
    tens of thousands are made when a partition fails half the pairs; sorts by pair.)"""

    sender: str
    target: str
    #: kinds that lost everything in that round (wire: the target's capture saw none)
    kinds: frozenset[str]
    #: consecutive rounds of the sender in which the pair was probed and kept failing
    #: (rounds where the sender did not probe the target are skipped: peers rotate)
    rounds: int
    #: kinds that failed in every one of those rounds
    confirmed_kinds: frozenset[str]
    #: how many of the sender's wire probes the target's capture saw (None: no wire probe or
    #: the target has no capture data)
    wire_seen: int | None
    wire_sent: int | None
    #: the TCP control probe of the same pair was answered (the target is up)
    tcp_ok: bool = False

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


#: (sender, target) of a PairStatus, the key it has in a round's failures (C-level: a partition
#: fails tens of thousands of pairs per round)
PAIR_OF = itemgetter(0, 1)


class ProbeRound:
    """The failures of one round (0 = latest, 1 = the one before, ...).

    Round 0 covers every probed pair. Earlier rounds are computed only for "candidate" nodes
    (those in a failing pair of round 0): their `probed_in` / `probed_out` count only those
    nodes, which is all a rule confirming a round-0 verdict needs. An earlier round is
    computed when a rule first reads it (`compute` returns failures, probed_in, probed_out):
    most correlations never need it (a pair's round count is computed for that pair alone,
    see `build_matrix`), and around a partition's thousands of nodes it is costly."""

    __slots__ = ("index", "_failures", "_probed_in", "_probed_out", "_compute", "senders",
                 "_windows", "_in_scope", "_count_out")

    def __init__(self, index: int, failures: Mapping[tuple[str, str], PairStatus] | None = None,
                 probed_in: Mapping[str, int] | None = None,
                 probed_out: Mapping[str, int] | None = None, compute=None,
                 senders: Mapping[str, NodeDigest] | None = None,
                 windows: "CaptureWindows | None" = None, in_scope=None,
                 count_out=None) -> None:
        self.index = index
        self._failures, self._probed_in, self._probed_out = failures, probed_in, probed_out
        self._compute = compute
        #: node -> its digest of this round (the senders; None: not kept)
        self.senders = senders
        #: for a round not computed yet: the capture windows and `in_scope(sender, target)`,
        #: whether the pair is one the computed round would cover
        self._windows, self._in_scope = windows, in_scope
        #: for a round not computed yet: makes `probed_out` alone (what computing the round
        #: would give), for a rule that needs the counts before, or instead of, the failures
        self._count_out = count_out

    @property
    def computed(self) -> bool:
        return self._compute is None

    def sender_failures(self, sender: str) -> dict[tuple[str, str], PairStatus]:
        """The round's failing pairs from `sender` (those the round covers): from the computed
        round, or, before it is computed, worked out for this sender alone (the same
        `_sender_statuses`), so a rule that needs part of an earlier round does not compute it
        around thousands of nodes."""
        if self._compute is None or self.senders is None or self._in_scope is None:
            return {k: st for k, st in self.failures.items() if k[0] == sender}
        d = self.senders.get(sender)
        out: dict[tuple[str, str], PairStatus] = {}
        if d is not None:
            in_scope = self._in_scope
            _sender_statuses(d, [t for t in d.targets if in_scope(sender, t)], self._windows,
                             out)
        return out

    def _load(self) -> None:
        if self._compute is not None:
            self._failures, self._probed_in, self._probed_out = self._compute()
            self._compute = None

    @property
    def failures(self) -> Mapping[tuple[str, str], PairStatus]:
        self._load()
        return self._failures

    @property
    def probed_in(self) -> Mapping[str, int]:
        self._load()
        return self._probed_in

    @property
    def probed_out(self) -> Mapping[str, int]:
        if self._compute is not None and self._count_out is not None:
            if self._probed_out is None:
                self._probed_out = self._count_out()
            return self._probed_out
        self._load()
        return self._probed_out

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


@dataclass(frozen=True)
class ReachabilityMatrix:
    """Per ordered pair: not probed, ok, or a PairStatus. Built once per correlation."""

    nodes: tuple[str, ...]
    #: the latest round's failing pairs, `rounds` counted back through history
    failures: Mapping[tuple[str, str], PairStatus]
    #: target -> number of senders that probed it in their latest round (counted only for
    #: nodes in a failing pair: the others are not asked about)
    probed_in: Mapping[str, int]
    #: sender -> number of targets it probed
    probed_out: Mapping[str, int]
    pairs_probed: int
    digests: Mapping[str, NodeDigest]
    #: rounds[0] is the latest (same failures as `failures`), then earlier rounds
    rounds: tuple[ProbeRound, ...] = ()

    #: the receivers' report windows the wire probes were judged by
    windows: "CaptureWindows | None" = None
    #: live node -> its earlier rounds, newest first (`previous_rounds` with
    #: `previous_limit`), for rules that compare with earlier rounds
    previous: Mapping[str, Sequence[NodeDigest]] | None = None
    previous_limit: int = 0

    def status(self, sender: str, target: str) -> str | PairStatus | None:
        """None: not probed; "ok"; "unknown" (only wire probes, and the target has not
        reported since them); or the PairStatus of a failing pair."""
        st = self.failures.get((sender, target))
        if st is not None:
            return st
        d = self.digests.get(sender)
        if d is not None and target in d.targets:
            if self.windows is not None and not path_known(d, target, self.windows):
                return "unknown"
            return "ok"
        return None

    def failing_in(self) -> dict[str, list[PairStatus]]:
        return self.rounds[0].failing_in() if self.rounds else {}

    def failing_out(self) -> dict[str, list[PairStatus]]:
        return self.rounds[0].failing_out() if self.rounds else {}


#: How many rounds back failures are looked up (for confirmation and per-pair round counts).
MAX_ROUNDS_BACK = 5


#: kinds -> kinds + "wire" (a handful of distinct sets, shared instead of re-allocated)
_WITH_WIRE: dict[frozenset[str], frozenset[str]] = {}
#: A sender's wire probes go out just after its report's `collected_at` (checks first, then
#: the probe round); a receiver counts them in the report that closes the window they arrived
#: in: its first report collected at or after them, or the next one when they came late. A
#: receiver round that began up to `WINDOW_GUARD_FRACTION` of the sender's interval earlier
#: may hold them too. Rounds are not synchronised and peers rotate, so judging by time (not
#: by round number) is what keeps a receiver that has not reported since from looking like a
#: black hole.
WINDOW_GUARD_FRACTION = 0.1
DEFAULT_INTERVAL_S = 30.0


class CaptureWindows:
    """Every live node's reports in time order: which of them judge a sender's wire probes."""

    def __init__(self, reports_of: Mapping[str, Sequence[NodeDigest]],
                 latest: Mapping[str, NodeDigest] | None = None) -> None:
        """`reports_of`: node -> its reports oldest first; `latest`: node -> its latest report
        (the last of `reports_of`; given, `reports_of` is read only for the nodes asked about,
        see `EarlierRounds`)."""
        self.reports_of = reports_of
        if latest is None:
            latest = {n: rs[-1] for n, rs in reports_of.items() if rs}
        self.latest = latest
        self.latest_at = {n: d.collected_at for n, d in latest.items()}
        #: target -> ((collected_at, seen_wire, captures), ...) oldest first, built on demand
        #: (the per-pair lookups of a partition read plain tuples, not dataclass attributes)
        self._rows: dict[str, tuple] = {}
        self._seen_at: dict[str, float] | None = None
        self._times: dict[str, tuple[float, ...]] | None = None

    def seen_at(self) -> dict[str, float]:
        """pair key (sender, target) -> when the newest report of the target whose capture saw the
        sender's wire probes was collected (every node's reports; built once, on demand)."""
        got = self._seen_at
        if got is None:
            got = self._seen_at = {}
            for rs in self.reports_of.values():
                for r in rs:  # oldest first: the newest time wins
                    if r.seen_pairs:
                        got.update(dict.fromkeys(r.seen_pairs, r.collected_at))
        return got

    def times_of(self) -> dict[str, tuple[float, ...]]:
        """node -> when each of its reports was collected, oldest first."""
        got = self._times
        if got is None:
            got = self._times = {n: tuple(r.collected_at for r in rs)
                                 for n, rs in self.reports_of.items()}
        return got

    def rows(self, target: str) -> tuple:
        got = self._rows.get(target)
        if got is None:
            got = self._rows[target] = tuple(
                (r.collected_at, r.seen_wire, r.captures) for r in self.reports_of.get(target, ()))
        return got

    def judged(self, sender: NodeDigest, target: str) -> bool:
        """Has the target reported since the sender's probes went out?"""
        at = self.latest_at.get(target)
        return at is not None and at >= sender.collected_at


def _sender_statuses(sender: NodeDigest, targets: Iterable[str], windows: CaptureWindows,
                     failures: dict[tuple[str, str], PairStatus]
                     ) -> tuple[list[str], list[str]]:
    """The PairStatus of one sender to each of `targets` that fails, added to `failures`;
    returns the `targets` that do not fail, and the failing ones whose overlay path works
    (no `PATH_KINDS`).

    Wire probes: how many of them the target's capture saw, over the target's windows that
    can hold them (from `WINDOW_GUARD_FRACTION` of the sender's interval before its report
    up to the target's second report after it); none seen (and the target captures) adds
    "wire"; unknown (None) when the target has not reported since. The sender's fields are
    read once, not per pair: a partition fails tens of thousands of pairs per round."""
    name = sender.name
    lost, tcp_answered, wire_targets = sender.lost, sender.tcp_answered, sender.wire_targets
    ws = sender.wire_sent
    at = sender.collected_at
    start = at - WINDOW_GUARD_FRACTION * (sender.interval_s if sender.interval_s > 0
                                          else DEFAULT_INTERVAL_S)
    latest_at, rows_of = windows.latest_at, windows._rows
    new_tuple = tuple.__new__
    # the exceptions only (most targets asked about fail, and fail their path: a partition's
    # tens of thousands of pairs take no extra step)
    skipped: list[str] = []
    not_path: list[str] = []
    for t in targets:
        kinds = lost.get(t, _EMPTY)
        wire_seen = wire_sent = None
        wired = False
        if t in wire_targets:
            wire_sent = ws if type(ws) is int else ws.get(t, 0)
            t_at = latest_at.get(t)
            if t_at is not None and t_at >= at:  # judged: the target reported since
                rows = rows_of.get(t)
                if rows is None:
                    rows = windows.rows(t)
                total, captures, after = 0, False, 0
                for r_at, seen, caps in rows:  # oldest first
                    if r_at < start:
                        continue
                    captures = captures or caps
                    total += seen.get(name, 0)
                    if r_at >= at:
                        after += 1
                        if after == 2:
                            break
                if captures:
                    wire_seen = total
                    if not total:
                        with_wire = _WITH_WIRE.get(kinds)
                        if with_wire is None:
                            with_wire = _WITH_WIRE[kinds] = frozenset(kinds | {"wire"})
                        kinds = with_wire
                        wired = True
        if not kinds:
            skipped.append(t)
            continue
        # tuple.__new__ directly: a NamedTuple's own __new__ is one more Python call per pair
        failures[(name, t)] = new_tuple(PairStatus, (name, t, kinds, 1, kinds, wire_seen,
                                                     wire_sent, t in tcp_answered))
        if not wired and PATH_KINDS.isdisjoint(kinds):
            not_path.append(t)
    return skipped, not_path


def known_targets(sender: NodeDigest, targets: frozenset[str] | set[str],
                  windows: CaptureWindows) -> frozenset[str] | set[str] | list[str]:
    """The `targets` (a subset of the sender's) whose overlay path status is known this round
    (see `path_known`): all of them, without a look at each, when each got an echo probe."""
    echo = sender.echo_known
    if echo is targets or targets <= echo:
        return targets
    return [t for t in targets if path_known(sender, t, windows)]


def path_known(sender: NodeDigest, target: str, windows: CaptureWindows) -> bool:
    """Whether this round can tell if the overlay path sender -> target works: the sender's
    echo got an answer or not, or the target has reported on its wire probes."""
    if target in sender.echo_known:
        return True
    return target in sender.wire_targets and windows.judged(sender, target)


def _older_in_order(history: Sequence[ReportLike] | None,
                    latest: NodeDigest) -> list[NodeDigest] | None:
    """The usual shape of a node's history (a collector's rounds, oldest first, `latest`
    last, times strictly increasing): its earlier digests newest first; None for any other
    shape (`previous_rounds` sorts that out)."""
    if not history or history[-1] is not latest:
        return None
    older = history[-2::-1]
    at = latest.collected_at
    for x in older:
        if type(x) is not NodeDigest or not x.collected_at < at:
            return None
        at = x.collected_at
    return older  # type: ignore[return-value]


class EarlierRounds(Mapping):
    """Live node -> its earlier rounds, newest first (`previous_rounds`, at most `limit`; a
    node without any is absent), worked out for a node when first read: a healthy cluster's
    correlation reads none of them, a fault's only those of the nodes around it (5,000 nodes'
    histories add up). `reports_of` maps a node to all its reports oldest first, the latest
    last (what `CaptureWindows` reads), the same way."""

    def __init__(self, live: Mapping[str, NodeDigest],
                 history: Mapping[str, Sequence[ReportLike]] | None, limit: int) -> None:
        self._live, self._history, self._limit = live, history or {}, limit
        self._prev: dict[str, list[NodeDigest]] = {}
        self._reports: dict[str, Sequence[NodeDigest]] = {}

    @property
    def reports_of(self) -> Mapping[str, Sequence[NodeDigest]]:
        # made per access, not kept: an attribute referring back to this object was a
        # reference cycle that kept every correlation's history until the GC's oldest
        # generation ran (+13 MB PSS in the ingest bench at 5,000 nodes)
        return _ReportsOf(self)

    def _load(self, n: str) -> list[NodeDigest]:
        d = self._live[n]
        h = self._history.get(n)
        older = _older_in_order(h, d)
        if older is not None:
            p = older[:self._limit]
            self._prev[n] = p
            self._reports[n] = h if len(older) <= self._limit else p[::-1] + [d]
            return p
        p = previous_rounds(d, h, self._limit) if h else []
        self._prev[n] = p
        self._reports[n] = p[::-1] + [d]
        return p

    def get(self, n: str, default=None):
        p = self._prev.get(n)
        if p is None:
            if n not in self._live:
                return default
            p = self._load(n)
        return p if p else default

    def __getitem__(self, n: str) -> list[NodeDigest]:
        p = self.get(n)
        if p is None:
            raise KeyError(n)
        return p

    def __contains__(self, n: object) -> bool:
        return isinstance(n, str) and self.get(n) is not None

    def __iter__(self):
        return (n for n in self._live if self.get(n) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # every node's (a rule that reads them all: one pass, not a key iteration plus lookups)
    def values(self) -> list[list[NodeDigest]]:  # type: ignore[override]
        self._load_all()
        prev = self._prev
        return [p for p in map(prev.__getitem__, self._live) if p]

    def items(self) -> list[tuple[str, list[NodeDigest]]]:  # type: ignore[override]
        self._load_all()
        prev = self._prev
        return [(n, p) for n, p in zip(self._live, map(prev.__getitem__, self._live)) if p]

    def _load_all(self) -> None:
        """Every node's, in one loop: `_load`'s usual case inline (a history no longer than
        `limit` + 1, the latest last, times strictly increasing: taken as it is), the rest
        through `_load`."""
        prev, reports, history, limit = self._prev, self._reports, self._history, self._limit
        if len(prev) == len(self._live):
            return
        for n, d in self._live.items():
            if n in prev:
                continue
            h = history.get(n)
            if h and len(h) <= limit + 1:
                older = _older_in_order(h, d)
                if older is not None:
                    prev[n] = older
                    reports[n] = h
                    continue
            self._load(n)

    def near(self, nodes: frozenset[str], also: Mapping[str, Any]) -> list[str]:
        """The live nodes, in order, that are in `nodes` or `also`, or that probed one of
        `nodes` in some report of their history (a superset of those whose earlier rounds
        did: those rounds are among the history's reports), or whose history holds reports
        not digested yet."""
        out = []
        history = self._history
        for n in self._live:
            if n not in nodes and n not in also:
                for x in history.get(n, ()):
                    if type(x) is not NodeDigest or not x.targets.isdisjoint(nodes):
                        break
                else:
                    continue
            out.append(n)
        return out

    def reports(self, n: str) -> Sequence[NodeDigest]:
        got = self._reports.get(n)
        if got is None:
            if n not in self._live:
                return ()
            self._load(n)
            got = self._reports[n]
        return got

    def depth(self) -> int:
        """The most earlier rounds a node has. A node's history bounds its count (all but the
        latest, at most `limit`): the bound is checked on the nodes that could reach it, in
        order, until one does (usually the first), instead of working out every node's."""
        live, history = self._live, self._history
        bound = 0
        for n, d in live.items():
            h = history.get(n)
            if h:
                b = len(h) - (h[-1] is d)
                if b > bound:
                    bound = b
        bound = min(bound, self._limit)
        best = 0
        for n, d in live.items():
            h = history.get(n)
            if h and len(h) - (h[-1] is d) >= bound > best:
                best = max(best, len(self.get(n) or ()))
                if best == bound:
                    break
        if best < bound:  # no node reached the bound: every node's count
            best = max((len(p) for p in self.values()), default=0)
        return best

    def round(self, k: int) -> Mapping[str, NodeDigest]:
        """Node -> its digest k + 1 rounds back (nodes that have one)."""
        return _RoundOf(self, k)


class _ReportsOf(Mapping):
    def __init__(self, rounds: EarlierRounds) -> None:
        self._rounds = rounds

    def get(self, n, default=None):
        got = self._rounds.reports(n)
        return got if got else default

    def __getitem__(self, n):
        got = self._rounds.reports(n)
        if not got:
            raise KeyError(n)
        return got

    def __iter__(self):
        return iter(self._rounds._live)

    def __len__(self) -> int:
        return len(self._rounds._live)


class _RoundOf(Mapping):
    def __init__(self, rounds: EarlierRounds, k: int) -> None:
        self._rounds, self._k = rounds, k

    def get(self, n, default=None):
        p = self._rounds.get(n)
        return p[self._k] if p is not None and len(p) > self._k else default

    def __getitem__(self, n):
        got = self.get(n)
        if got is None:
            raise KeyError(n)
        return got

    def __iter__(self):
        return (n for n, p in self._rounds.items() if len(p) > self._k)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _by_node_id(names: Iterable[str], values: Iterable[float], missing: float) -> list[float]:
    """The `values` of the nodes `names` as a list indexed by node id (`name_id`), `missing`
    where a node has none."""
    ids = list(map(_NAME_IDS.get, names))
    if None in ids:  # a digest built by hand, not by digest_report
        ids = [name_id(n) for n in names]
    out = [missing] * len(NAMES_BY_ID)
    for i, value in zip(ids, values):
        out[i] = value
    return out


def _round_failures(senders: Iterable[NodeDigest], windows: CaptureWindows,
                    only: frozenset[str] | None,
                    pairs: Mapping[str, frozenset[str]] | None = None,
                    failing_of: dict[str, frozenset[str]] | None = None,
                    path_of: dict[str, frozenset[str]] | None = None,
                    ) -> tuple[dict, Counter | None, dict | None]:
    """Failures of one round (the senders' digests of that round). `only`: restrict to pairs
    touching these nodes, plus the sender -> targets in `pairs`, and count the probes whose
    path status is known for them (None: the latest round, every pair, uncounted: the caller
    counts them; the senders are then the capture windows' latest reports). `failing_of`
    and `path_of` (the latest round): filled with sender -> its failing targets, and those
    whose overlay path fails, grouped as they are found instead of regrouped from the
    failures afterwards."""
    senders = list(senders)
    if only is not None and _around_few(only, windows):
        return _round_failures_around(senders, windows, only, pairs or {})
    failures: dict[tuple[str, str], PairStatus] = {}
    latest_at = windows.latest_at
    if only is None:
        # the latest round: the wire probes the receivers' latest reports did not see, in one
        # pass over every probe of the round with C-level iteration (a healthy cluster's are
        # nearly all seen or not reported on yet), kept when the receiver has reported since
        # the sender (lists indexed by node id: no hashing, no Python call per probe)
        seen = set().union(*(d.seen_pairs for d in windows.latest.values()))
        reported_at = _by_node_id(list(latest_at), list(latest_at.values()), float("-inf"))
        sent_at = _by_node_id([d.name for d in senders], [d.collected_at for d in senders],
                              float("inf"))
        # judged first (two list lookups per probe), then the set lookups for those only
        judged = [k for k in chain.from_iterable(d.wire_pairs for d in senders)
                  if reported_at[k & PAIR_MASK] >= sent_at[k >> PAIR_SHIFT]]
        judged_unseen: dict[int, list[str]] = {}
        names = NAMES_BY_ID
        for key in filterfalse(seen.__contains__, judged):
            judged_unseen.setdefault(key >> PAIR_SHIFT, []).append(names[key & PAIR_MASK])
        unseen_of = {names[i]: extra for i, extra in judged_unseen.items()}
        if failing_of is None:
            failing_of = {}
        if path_of is None:
            path_of = {}
        for d in senders:
            if d.lost or d.name in unseen_of:
                extra = unseen_of.get(d.name)
                if extra is not None:
                    mine = set(d.lost)
                    mine.update(extra)
                else:
                    mine = d.lost
                skipped, not_path = _sender_statuses(d, mine, windows, failures)
                got = frozenset(mine).difference(skipped) if skipped else frozenset(mine)
                if got:
                    failing_of[d.name] = got
                    if not not_path:  # (usually every failing pair of a sender fails its path)
                        path_of[d.name] = got
                    elif len(not_path) < len(got):
                        path_of[d.name] = got.difference(not_path)
    else:
        # an earlier round: its probes were mostly seen in the receivers' earlier reports; a
        # probe seen by a report inside its window (see `_sender_statuses`) is no
        # failure, the rest are looked at in full
        seen_at = windows.seen_at()
        times_of = windows.times_of()
        names = NAMES_BY_ID
        for d in senders:
            mine = set(d.lost)
            after = d.collected_at
            start = after - WINDOW_GUARD_FRACTION * (d.interval_s if d.interval_s > 0
                                                     else DEFAULT_INTERVAL_S)
            for key in d.wire_pairs:
                t = names[key & PAIR_MASK]
                at = latest_at.get(t)
                if at is None or at < after:
                    continue  # not reported on yet
                got = seen_at.get(key)
                if got is not None and start <= got:
                    if got < after:
                        continue
                    times = times_of[t]  # the report at `got` is the 1st or 2nd after
                    if bisect_left(times, got) - bisect_left(times, after) <= 1:
                        continue
                mine.add(t)
            if mine:
                _sender_statuses(d, mine, windows, failures)
    if only is None:
        return failures, None, None
    # an earlier round around many candidates (a partition): computed whole, then cut down
    extra = pairs or {}
    failures = {k: st for k, st in failures.items()
                if k[0] in only or k[1] in only or k[1] in extra.get(k[0], ())}
    probed_in: Counter = Counter()
    probed_out: dict[str, int] = {}
    for d in senders:
        known = known_targets(d, d.targets, windows)
        probed_in.update(known)
        probed_out[d.name] = len(known)
    return failures, probed_in, probed_out


def _round_failures_around(senders: list[NodeDigest], windows: CaptureWindows,
                           only: frozenset[str], pairs: Mapping[str, frozenset[str]]
                           ) -> tuple[dict, Counter, dict]:
    """An earlier round around a few candidate nodes: walk only the pairs touching them."""
    failures: dict[tuple[str, str], PairStatus] = {}
    probed_out: dict[str, int] = {}
    counted: list[str] = []
    for s in senders:
        name = s.name
        targets = s.targets
        if name in only:
            relevant = targets
            probed_out[name] = len(known_targets(s, targets, windows))
            hit = targets & only
        else:
            extra = pairs.get(name)
            if not extra and targets.isdisjoint(only):
                continue  # most senders: nothing to look at (no new set built)
            hit = relevant = targets & only
            if extra:
                relevant = relevant | (targets & extra)
            if not relevant:
                continue
        if hit:
            counted.extend(hit if hit <= s.echo_known else known_targets(s, hit, windows))
        _sender_statuses(s, relevant, windows, failures)
    return failures, Counter(counted), probed_out


def _pair_rounds(prev: Mapping[str, Sequence[NodeDigest]], k: int, windows: CaptureWindows,
                 pairs: Mapping[str, frozenset[str]],
                 again_of: dict[str, list[frozenset[str]]]) -> dict:
    """Round k + 1 (`prev[sender][k]`) for the given failing pairs only (their round
    counts). `again_of`: each sender's targets among them it probed in that round are
    appended to its list (what the round counts walk)."""
    failures: dict[tuple[str, str], PairStatus] = {}
    for s_name, ts in pairs.items():
        p = prev.get(s_name)
        if p is None or len(p) <= k:
            continue
        sp = p[k]
        if not ts.isdisjoint(sp.targets):  # peers rotate: most were not probed that round
            again = ts & sp.targets
            _sender_statuses(sp, again, windows, failures)
            got = again_of.get(s_name)
            if got is None:
                again_of[s_name] = [again]
            else:
                got.append(again)
    return failures


def _round_around(prev: EarlierRounds, k: int, windows: CaptureWindows,
                  candidates: frozenset[str], pairs: Mapping[str, frozenset[str]]
                  ) -> tuple[dict, Counter, dict]:
    """Round k + 1 (`prev[node][k]`) around the candidates (`_round_failures`)."""
    if _around_few(candidates, windows):
        # only senders of a pair touching a candidate matter: a node none of whose reports
        # probed one (and with no failing pair to follow) is passed over without working
        # out its earlier rounds
        names = prev.near(candidates, pairs)
    else:
        names = prev
    return _round_failures([p[k] for p in map(prev.get, names) if p and len(p) > k],
                           windows, candidates, pairs)


def _probed_out_around(prev: EarlierRounds, k: int, windows: CaptureWindows,
                       candidates: frozenset[str]) -> dict[str, int]:
    """The `probed_out` of `_round_around` without its failures: every sender of round k + 1
    when the candidates are many, else the candidates."""
    if _around_few(candidates, windows):
        names: Iterable[str] = [n for n in prev._live if n in candidates]
    else:
        names = prev
    out: dict[str, int] = {}
    for p in map(prev.get, names):
        if p and len(p) > k:
            d = p[k]
            out[d.name] = len(known_targets(d, d.targets, windows))
    return out


def _around_few(only: frozenset[str], windows: CaptureWindows) -> bool:
    """Few enough candidates to walk only the pairs around them (`_round_failures_around`)."""
    return len(only) * 5 < len(windows.latest_at)


def build_matrix(reports: Mapping[str, ReportLike] | Sequence[ReportLike],
                 history: Mapping[str, Sequence[ReportLike]] | None = None,
                 exclude: Iterable[str] = (), max_rounds_back: int = MAX_ROUNDS_BACK,
                 min_senders: int = 2, full_rounds_back: int = 1) -> ReachabilityMatrix:
    """The reachability matrix (`build_matrix_and_paths`)."""
    return build_matrix_and_paths(reports, history, exclude, max_rounds_back, min_senders,
                                  full_rounds_back)[0]


def build_matrix_and_paths(reports: Mapping[str, ReportLike] | Sequence[ReportLike],
                           history: Mapping[str, Sequence[ReportLike]] | None = None,
                           exclude: Iterable[str] = (), max_rounds_back: int = MAX_ROUNDS_BACK,
                           min_senders: int = 2, full_rounds_back: int = 1
                           ) -> tuple[ReachabilityMatrix, dict[str, frozenset[str]]]:
    """The reachability matrix of the latest round; earlier rounds from `history` (per node,
    its recent reports, any order; the latest may be included) for the nodes involved in a
    failure, so rules can ask "did this hold in the previous round too?". Earlier rounds are
    computed only around nodes with >= `min_senders` failing pairs in the latest round (the
    only nodes a node-level rule can blame), `full_rounds_back` rounds deep (what the rules
    confirm against: min_failed_rounds - 1), and only when a rule first reads them
    (`ProbeRound`; `ProbeRound.sender_failures` answers for one sender before that); every
    failing pair's round count comes from that pair alone in each earlier round. Each node's
    history is read only when needed (`EarlierRounds`): a healthy cluster's correlation
    looks at the latest reports only.

    Wire probes are judged by time, not by round number: a sender's probes count as lost only
    when the receiver has reported since (see `CaptureWindows`); until then the pair's path
    status is unknown unless its echo probe tells.

    Nodes in `exclude` (stale agents) are neither senders nor capture witnesses: their data is
    old. Probes *to* them still appear (the stale rule explains them).

    Also returned: sender -> its targets in the latest round whose overlay path fails
    (`PATH_KINDS`), found while the failures are worked out (what the partition rule starts
    from: a partition fails tens of thousands of pairs). Not kept in the matrix, which a
    collector caches."""
    digests = as_digests(reports)
    excluded = set(exclude)
    live = {n: d for n, d in digests.items() if n not in excluded}
    prev = EarlierRounds(live, history, max_rounds_back)
    windows = CaptureWindows(prev.reports_of, live)
    # sender -> its failing targets, in the order of the failures
    pairs: dict[str, frozenset[str]] = {}
    path_out: dict[str, frozenset[str]] = {}
    latest, _, _ = _round_failures(live.values(), windows, None, failing_of=pairs,
                                   path_of=path_out)
    n_in = Counter(chain.from_iterable(pairs.values()))
    touched = frozenset(pairs).union(n_in)
    candidates = frozenset(n for n in touched
                           if n_in[n] >= min_senders or len(pairs.get(n, ())) >= min_senders)
    # how many senders probed each node of a failing pair (the only targets rules ask about):
    # for the candidates a node rule may blame, only probes whose outcome is known count
    probed_out = {n: len(d.targets) for n, d in live.items()}
    probed_in: Counter = Counter()
    if touched:
        # a sender whose every target got an echo probe (`echo_known` is `targets`, the common
        # case) knows all its paths: its touched targets are counted with C-level set and
        # Counter operations, the others one by one
        by_echo = [d.targets for d in live.values() if d.echo_known is d.targets]
        if len(touched) * 2 > len(live):  # most nodes (a partition): count every target once
            every = Counter(chain.from_iterable(by_echo))
            probed_in.update({t: n for t, n in every.items() if t in touched})
        elif len(touched) * 16 < len(live):  # a few nodes: most senders touch none of them
            probed_in.update(chain.from_iterable(map(
                touched.intersection, filterfalse(touched.isdisjoint, by_echo))))
        else:
            probed_in.update(chain.from_iterable(map(touched.intersection, by_echo)))
        if len(by_echo) < len(live):
            counted: list[str] = []
            for d in live.values():
                if d.echo_known is d.targets:
                    continue
                hit = d.targets & touched
                if hit:
                    if hit <= d.echo_known:
                        counted.extend(hit)
                    else:
                        counted.extend(t for t in hit
                                       if t not in candidates or path_known(d, t, windows))
            probed_in.update(counted)
        for n in candidates:
            d = live.get(n)
            if d is not None and d.echo_known is not d.targets:  # else: every path known
                probed_out[n] = len(known_targets(d, d.targets, windows))
    earlier: list[ProbeRound] = []
    # each failing pair's status in the earlier rounds, that pair alone (its round count)
    pair_rounds: list[dict] = []
    #: sender -> its failing targets it probed again, one set per earlier round that has any
    probed_again: dict[str, list[frozenset[str]]] = {}
    depth = prev.depth() if latest else 0
    if depth:
        def in_scope(sender: str, target: str) -> bool:
            return (sender in candidates or target in candidates
                    or target in pairs.get(sender, ()))

        for k in range(depth):
            pair_rounds.append(_pair_rounds(prev, k, windows, pairs, probed_again))
            if k < full_rounds_back:
                # what node-level rules confirm against: every pair around the candidates,
                # computed when a rule asks
                earlier.append(ProbeRound(
                    k + 1, compute=partial(_round_around, prev, k, windows, candidates, pairs),
                    senders=prev.round(k),
                    windows=windows, in_scope=in_scope,
                    count_out=partial(_probed_out_around, prev, k, windows, candidates)))
            else:
                # deeper rounds only count how long each failing pair has failed
                earlier.append(ProbeRound(k + 1, pair_rounds[k], {}, {}))
    # each failing pair's round count: the earlier rounds in which its sender probed it (peers
    # rotate: rounds without the pair are skipped) must fail with some of the same kinds. A
    # pair its sender probed in none of its kept earlier rounds has failed one round: it
    # stays as it is (most pairs, when peers rotate), without a step per pair
    failures = dict(latest)
    for s_name, again in probed_again.items():
        sp_list = prev[s_name]
        for t in set().union(*again) if len(again) > 1 else again[0]:
            key = (s_name, t)
            st = latest[key]
            confirmed, n = st.kinds, 1
            for k, statuses in enumerate(pair_rounds):
                if k < len(sp_list) and t not in sp_list[k].targets:
                    continue  # not probed that round (rotating peers): skip, do not break
                old = statuses.get(key)
                both = confirmed & old.kinds if old is not None else _EMPTY
                if not both:
                    break
                confirmed, n = both, n + 1
            if n > 1:
                failures[key] = PairStatus(st.sender, st.target, st.kinds, n, confirmed,
                                           st.wire_seen, st.wire_sent, st.tcp_ok)
    rounds = [ProbeRound(0, failures, probed_in, probed_out, senders=live)] + earlier
    return ReachabilityMatrix(
        nodes=tuple(sorted(digests)), failures=failures, probed_in=probed_in,
        probed_out=probed_out, pairs_probed=sum(len(d.targets) for d in live.values()),
        digests=digests, rounds=tuple(rounds), windows=windows,
        previous=prev if history else None, previous_limit=max_rounds_back), path_out
