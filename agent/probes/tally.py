"""Turning one round's counts into the wire values (ProbeResult, SeenCount). Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from agent.report import PROBE_KINDS, ProbeResult, RttStats, SeenCount

RTT_DECIMALS = 3
#: The error phrase for replies the capture saw at the NIC that never reached the stack.
NIC_DROP_PHRASE = "reached this node's NIC but not its stack"
ERROR_MAX_CHARS = 300


@dataclass
class ProbeTally:
    """Mutable counts for one (peer, kind) during a round."""

    peer: str
    peer_ip: str
    kind: str
    sent: int = 0
    answered: int | None = 0
    rtts_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: echo/mtu: replies seen at this node's NIC (underlay capture), in its stack (the ICMP
    #: listener), and seen at the NIC but never in the stack (this node dropped them).
    replies_at_nic: int = 0
    replies_in_stack: int = 0
    replies_dropped_here: int = 0


def rtt_stats(rtts_ms: Iterable[float]) -> RttStats | None:
    values = [r for r in rtts_ms if r >= 0]
    if not values:
        return None
    return RttStats(round(min(values), RTT_DECIMALS),
                    round(sum(values) / len(values), RTT_DECIMALS),
                    round(max(values), RTT_DECIMALS))


def result_from_tally(t: ProbeTally) -> ProbeResult:
    errors = list(dict.fromkeys(t.errors))  # distinct, in order
    if t.kind in ("echo", "mtu") and t.replies_dropped_here:
        errors.append(f"{t.replies_dropped_here} replies {NIC_DROP_PHRASE}: "
                      "this node drops them (host firewall on the VXLAN port, rp_filter)")
    error = "; ".join(errors)
    if len(error) > ERROR_MAX_CHARS:
        error = error[: ERROR_MAX_CHARS - 3] + "..."
    answered = None if t.kind == "wire" else min(t.answered or 0, t.sent)
    return ProbeResult(peer=t.peer, peer_ip=t.peer_ip, kind=t.kind, sent=t.sent,
                       answered=answered, rtt_ms=rtt_stats(t.rtts_ms), error=error)


def results_from_tallies(tallies: Iterable[ProbeTally]) -> tuple[ProbeResult, ...]:
    return tuple(result_from_tally(t) for t in tallies)


def seen_counts(counts: Mapping[tuple[str, str, str], int]) -> tuple[SeenCount, ...]:
    """(peer, peer_ip, kind) -> count becomes SeenCount values, sorted by peer then kind."""
    order = {k: i for i, k in enumerate(PROBE_KINDS)}
    items = sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 99)))
    return tuple(SeenCount(peer=p, peer_ip=ip, kind=k, count=c) for (p, ip, k), c in items if c)
