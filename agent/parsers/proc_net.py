"""Per-network-namespace tables under /proc/net: `route` (IPv4 main routing table),
`udp`/`tcp` (sockets) and `fib_trie` (the local addresses). Addresses in `route`, `udp` and
`tcp` are hex in host byte order (little-endian on every platform Kubernetes runs on)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

RTF_UP = 0x0001
RTF_GATEWAY = 0x0002
TCP_LISTEN = 0x0A


@dataclass(frozen=True)
class Route:
    """One row of /proc/net/route."""

    iface: str
    destination: str  # dotted quad
    prefix_len: int
    gateway: str
    flags: int
    metric: int

    @property
    def is_default(self) -> bool:
        return self.prefix_len == 0


@dataclass(frozen=True)
class Socket:
    """One row of /proc/net/udp or /proc/net/tcp."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: int


def _le_hex_ipv4(text: str) -> str:
    value = int(text, 16)
    return str(ipaddress.IPv4Address(value.to_bytes(4, "little")))


def parse_proc_net_route(text: str) -> list[Route]:
    """Rows of /proc/net/route (header skipped; malformed rows skipped)."""
    routes = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue
        try:
            mask = int(cols[7], 16)
            routes.append(Route(iface=cols[0], destination=_le_hex_ipv4(cols[1]),
                                prefix_len=bin(mask).count("1"),
                                gateway=_le_hex_ipv4(cols[2]), flags=int(cols[3], 16),
                                metric=int(cols[6])))
        except ValueError:
            continue
    return routes


def parse_proc_net_sockets(text: str) -> list[Socket]:
    """Rows of /proc/net/udp or /proc/net/tcp (IPv4 only; the *6 files use 32-hex-digit
    addresses and are skipped by this parser)."""
    sockets = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 4 or ":" not in cols[1] or ":" not in cols[2]:
            continue
        local, _, lport = cols[1].partition(":")
        remote, _, rport = cols[2].partition(":")
        if len(local) != 8 or len(remote) != 8:
            continue
        try:
            sockets.append(Socket(_le_hex_ipv4(local), int(lport, 16), _le_hex_ipv4(remote),
                                  int(rport, 16), int(cols[3], 16)))
        except ValueError:
            continue
    return sockets


def parse_fib_trie_local_addresses(text: str) -> set[str]:
    """The IPv4 addresses this namespace owns: the leaves of /proc/net/fib_trie followed by a
    `/32 host LOCAL` line."""
    found: set[str] = set()
    last_leaf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            last_leaf = stripped[4:].strip()
        elif stripped.startswith("/32 host LOCAL") and last_leaf:
            found.add(last_leaf)
    return found


def lookup_route(routes: list[Route] | tuple[Route, ...], address: str) -> Route | None:
    """The main-table route the kernel would pick for `address`: longest prefix, then lowest
    metric (policy routing and other tables are not in /proc/net/route)."""
    try:
        target = int(ipaddress.IPv4Address(address))
    except ValueError:
        return None
    best: Route | None = None
    for r in routes:
        if not r.flags & RTF_UP:
            continue
        mask = (0xFFFFFFFF << (32 - r.prefix_len)) & 0xFFFFFFFF if r.prefix_len else 0
        if target & mask != int(ipaddress.IPv4Address(r.destination)) & mask:
            continue
        if best is None or (r.prefix_len, -r.metric) > (best.prefix_len, -best.metric):
            best = r
    return best
