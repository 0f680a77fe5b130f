"""What changed when: the story behind one diagnosis, from each node's recent reports.

    lines = explain_timeline(history, diagnosis)
    # ("10:02:00 node2's iptables_input_digest changed 'sha256:aa' -> 'sha256:bb'",
    #  "10:03:10 overlay probes to node2 failing from node1, node3, node4 (since 10:03:10)",
    #  "node2's iptables_input_digest changed 70 s before the failures began")

`history`: Mapping[node name, Sequence[item]] where an item is a NodeReport, a NodeDigest, a
NodeReport dict (`to_dict()` form), or a plain snapshot `{"at": ts, "facts": {...}}` (when
only per-report fact digests are stored, the fact changes are still explained; the probe
onset needs reports). Times are UTC HH:MM:SS (formatted here without a clock module).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from agent.report import Diagnosis, NodeReport
from collector.correlate.base import DEFAULT_CONFIG
from collector.correlate.model import NodeDigest, digest_report, flatten_facts

MAX_FACT_CHANGES_PER_NODE = 5
MAX_NODES = 10


@dataclass(frozen=True)
class _Snap:
    at: float
    facts: Mapping[str, Any]
    digest: NodeDigest | None


def format_time(ts: float) -> str:
    """UTC HH:MM:SS of an epoch timestamp."""
    s = int(ts) % 86400
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _snap(item: Any) -> _Snap | None:
    if isinstance(item, NodeDigest):
        return _Snap(item.collected_at, item.facts, item)
    if isinstance(item, NodeReport):
        d = digest_report(item)
        return _Snap(d.collected_at, d.facts, d)
    if isinstance(item, Mapping):
        if "schema" in item:
            try:
                d = digest_report(NodeReport.from_dict(item))
            except ValueError:
                return None
            return _Snap(d.collected_at, d.facts, d)
        at = item.get("at", item.get("collected_at"))
        if isinstance(at, (int, float)):
            return _Snap(float(at), flatten_facts(item.get("facts") or {}), None)
    return None


def _noisy(key: str) -> bool:
    cfg = DEFAULT_CONFIG
    return "digest" not in key and key.endswith(cfg.drift_ignore_suffixes)


def _fact_changes(node: str, snaps: list[_Snap]) -> list[tuple[float, str]]:
    out = []
    for a, b in zip(snaps, snaps[1:]):
        for key in sorted(set(a.facts) | set(b.facts)):
            old, new = a.facts.get(key), b.facts.get(key)
            if old != new and not _noisy(key):
                out.append((b.at, f"{node}'s {key} changed {old!r} -> {new!r}"))
    return out[-MAX_FACT_CHANGES_PER_NODE:]


def _pair_failed(sender: NodeDigest, target: str, target_snaps: list[_Snap],
                 target_times: list[float]) -> bool:
    if target in sender.lost and sender.lost[target] & {"echo", "udp-control", "tcp-control"}:
        return True
    if target in sender.wire_targets and target_snaps:
        i = min(bisect_left(target_times, sender.collected_at), len(target_snaps) - 1)
        td = target_snaps[i].digest
        if td is not None and td.captures and sender.name not in td.seen_wire:
            return True
    return False


def _onset(sender_snaps: list[_Snap], target: str, target_snaps: list[_Snap]
           ) -> float | None:
    """Start of the trailing run of failing rounds from one sender to `target`."""
    times = [s.at for s in target_snaps]
    start = None
    for snap in reversed(sender_snaps):
        d = snap.digest
        if d is None or target not in d.targets:
            break
        if not _pair_failed(d, target, target_snaps, times):
            break
        start = snap.at
    return start


class _SnapsByNode(dict):
    """node -> its snapshots in time order, built on first use (only the blamed nodes and
    their peers are ever looked at, not the whole cluster). A module-level class: one made
    per call was a reference cycle (class <-> its methods) holding the whole history until
    the GC's oldest generation ran."""

    def __init__(self, history: Mapping[str, Sequence[Any]]) -> None:
        super().__init__()
        self.history = history

    def __missing__(self, node: str) -> list[_Snap]:
        got = [s for s in (_snap(i) for i in self.history.get(node, ())) if s is not None]
        got.sort(key=lambda s: s.at)
        self[node] = got
        return got


def explain_timeline(history: Mapping[str, Sequence[Any]], diagnosis: Diagnosis
                     ) -> tuple[str, ...]:
    snaps = _SnapsByNode(history)
    blamed = list(diagnosis.nodes[:MAX_NODES])
    events: list[tuple[float, str]] = []
    changes: dict[str, list[tuple[float, str]]] = {}
    for node in blamed:
        changes[node] = _fact_changes(node, snaps[node])
        events += changes[node]
    onsets: list[float] = []
    if diagnosis.id.startswith("overlay."):
        blamed_set = set(blamed)
        probers: dict[str, set[str]] = {x: set() for x in blamed}
        for n, items in history.items():  # who probed a blamed node in any recent round
            for item in items:
                targets = getattr(item, "targets", None)
                if targets is None:
                    snap = _snap(item)
                    targets = snap.digest.targets if snap and snap.digest else ()
                hit = blamed_set.intersection(targets)
                for x in hit:
                    if x != n:
                        probers[x].add(n)
        aggregate: dict[str, list[float]] = {"to": [], "from": []}
        for x in blamed:
            x_targets = set().union(*(s.digest.targets for s in snaps[x] if s.digest))
            for direction in ("to", "from"):
                starts: dict[str, float] = {}
                if direction == "to":
                    peers = sorted(probers[x])
                else:
                    peers = [p for p in x_targets if p in history]
                for p in peers:
                    if direction == "to":
                        t = _onset(snaps[p], x, snaps[x])
                    else:
                        t = _onset(snaps[x], p, snaps[p])
                    if t is not None:
                        starts[p] = t
                if not starts:
                    continue
                first, last = min(starts.values()), max(starts.values())
                onsets.append(first)
                if len(blamed) > 2:
                    aggregate[direction] += list(starts.values())
                    continue
                who = sorted(starts)
                names = ", ".join(who[:5]) + (f" and {len(who) - 5} more" if len(who) > 5 else "")
                span = (f"since {format_time(first)}" if first == last else
                        f"first from {format_time(first)}, all by {format_time(last)}")
                verb = (f"overlay probes to {x} failing from" if direction == "to" else
                        f"overlay probes from {x} failing to")
                events.append((first, f"{verb} {names} ({span})"))
        for direction, starts_all in aggregate.items():
            if starts_all:
                first, last = min(starts_all), max(starts_all)
                scope = f"{len(blamed)} of the {len(diagnosis.nodes)} nodes"
                events.append((first, f"overlay probes {direction} {scope} failing: "
                                      f"{len(starts_all)} pairs, first from "
                                      f"{format_time(first)}, all by {format_time(last)}"))
    events.sort(key=lambda e: e[0])
    lines = [f"{format_time(at)} {text}" for at, text in events]
    if onsets:
        begin = min(onsets)
        before = [(at, text) for node in blamed for at, text in changes[node] if at <= begin]
        if before:
            at, text = max(before, key=lambda e: e[0])
            subject = text.split(" changed ")[0]
            lines.append(f"{subject} changed {begin - at:.0f} s before the failures began")
    return tuple(lines)
