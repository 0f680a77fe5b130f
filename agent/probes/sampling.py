"""Which peers a round probes, and how the round is paced. Pure.

A node probes at most K peers per round. Each node orders its peers by rendezvous hashing
(highest hash of (this node, peer) first): every node gets its own order, so N nodes do not all
probe the same K peers at the same moment, and adding or removing one peer moves no other peer.
Round r takes the K peers starting at position r*K of that order, wrapping around, so
consecutive rounds walk the whole order: every peer is probed within ceil(N/K) rounds.
"""

from __future__ import annotations

import hashlib
from typing import Sequence, TypeVar

DEFAULT_PEERS_PER_ROUND = 16
DEFAULT_PACKETS_PER_S = 200.0

T = TypeVar("T")


def rendezvous_weight(node_name: str, peer_name: str) -> int:
    digest = hashlib.blake2b(f"{node_name}\0{peer_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_order(node_name: str, peers: Sequence[T], key=lambda p: p.name) -> list[T]:  # type: ignore[no-untyped-def]
    """Peers in this node's order (stable: ties broken by name)."""
    return sorted(peers, key=lambda p: (-rendezvous_weight(node_name, key(p)), key(p)))


def select_peers(node_name: str, peers: Sequence[T], round_no: int,
                 per_round: int = DEFAULT_PEERS_PER_ROUND, key=lambda p: p.name) -> list[T]:  # type: ignore[no-untyped-def]
    """The peers round `round_no` probes: at most `per_round`, every peer within
    ceil(len(peers) / per_round) consecutive rounds."""
    if per_round < 1:
        raise ValueError("per_round must be >= 1")
    order = rendezvous_order(node_name, peers, key)
    n = len(order)
    if n <= per_round:
        return order
    start = (round_no * per_round) % n
    return [order[(start + i) % n] for i in range(per_round)]


def rounds_to_cover(n_peers: int, per_round: int = DEFAULT_PEERS_PER_ROUND) -> int:
    return max(1, -(-n_peers // per_round))


def send_interval_s(packets_per_s: float) -> float:
    """The gap between two probe packets at the node's packet budget."""
    if packets_per_s <= 0:
        raise ValueError("packets_per_s must be > 0")
    return 1.0 / packets_per_s
