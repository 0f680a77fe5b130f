"""Typed link-layer state of a node: links (with their VXLAN details), routes, neighbours and
bridge FDB entries. Two parsers produce these values: `netlink_vxlan` from pyroute2 netlink
messages (what `netdiag check` reads) and `iproute_text` from pasted `ip -d link show` /
`bridge fdb show` output (what `netdiag analyze` reads), so one pure evaluate serves both.

Devices are named, not numbered: text output has only names, and a finding quotes names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VxlanInfo:
    vni: int | None
    port: int | None  # UDP destination port (IFLA_VXLAN_PORT / `dstport`)
    local: str = ""  # the local underlay address the tunnel sends from
    parent: str = ""  # the underlay device (IFLA_VXLAN_LINK / `dev`), name
    learning: bool | None = None
    udp_csum: bool | None = None


@dataclass(frozen=True)
class Link:
    name: str
    index: int | None = None
    kind: str = ""  # `vxlan`, `veth`, `bridge`, ... ("" for a physical NIC)
    mtu: int | None = None
    admin_up: bool = True  # IFF_UP (`UP` in the flags)
    operstate: str = ""  # UP, DOWN, UNKNOWN (VXLAN devices report UNKNOWN when fine), ...
    lower_up: bool | None = None  # IFF_LOWER_UP (carrier); None when not known
    mac: str = ""
    addresses: tuple[str, ...] = ()  # IPv4 addresses with prefix, "10.244.1.0/32"
    vxlan: VxlanInfo | None = None

    @property
    def is_down(self) -> bool:
        """Administratively down, or the kernel says it cannot pass traffic."""
        return (not self.admin_up) or self.operstate in ("DOWN", "LOWERLAYERDOWN", "NOTPRESENT")

    @property
    def state_text(self) -> str:
        flags = "UP" if self.admin_up else "admin DOWN"
        return f"{flags}, operstate {self.operstate or '?'}"


@dataclass(frozen=True)
class Route:
    dst: str  # CIDR, or "default"
    gateway: str = ""
    dev: str = ""
    onlink: bool = False
    table: int = 254

    def text(self) -> str:
        via = f" via {self.gateway}" if self.gateway else ""
        onlink = " onlink" if self.onlink else ""
        return f"{self.dst}{via} dev {self.dev}{onlink}"


@dataclass(frozen=True)
class Neighbour:
    ip: str
    mac: str
    dev: str
    permanent: bool
    state: str = ""  # PERMANENT, REACHABLE, STALE, FAILED, ...

    def text(self) -> str:
        return f"{self.ip} dev {self.dev} lladdr {self.mac or '(none)'} {self.state}".rstrip()


@dataclass(frozen=True)
class FdbEntry:
    mac: str
    dev: str
    dst: str = ""  # the remote VTEP (node) address, for VXLAN entries
    self_: bool = False  # the device's own FDB (`self`), not the bridge's
    permanent: bool = False

    def text(self) -> str:
        dst = f" dst {self.dst}" if self.dst else ""
        flags = "".join((" self" if self.self_ else "", " permanent" if self.permanent else ""))
        return f"{self.mac} dev {self.dev}{dst}{flags}"


@dataclass(frozen=True)
class LinkState:
    """What the VXLAN evaluation looks at. A part that was not collected is None (a pasted
    `ip -d link` comes without routes), and the checks that need it are not run."""

    links: tuple[Link, ...]
    routes: tuple[Route, ...] | None = None
    neighbours: tuple[Neighbour, ...] | None = None
    fdb: tuple[FdbEntry, ...] | None = None

    def vxlan_links(self) -> tuple[Link, ...]:
        return tuple(link for link in self.links if link.vxlan is not None)

    def link(self, name: str) -> Link | None:
        return next((link for link in self.links if link.name == name), None)
