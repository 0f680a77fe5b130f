"""pyroute2 netlink messages -> typed link state (`agent.parsers.link_types`).

Input is the plain form of each message, `msg.dump()` in pyroute2 (0.7 .. 0.9): a dict with
the fixed header fields (`index`, `flags`, `state`, `ifindex`, `dst_len`, ...) and `attrs`, a
list of `[NAME, value]` pairs, nested the same way for IFLA_LINKINFO / IFLA_INFO_DATA. The edge
(`agent/checks/vxlan.py`) dumps live messages; tests feed the same dicts recorded as JSON, so
this module never sees a socket.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from agent.parsers.link_types import FdbEntry, Link, Neighbour, Route, VxlanInfo

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
NUD_PERMANENT = 0x80
NUD_NAMES = ((0x01, "INCOMPLETE"), (0x02, "REACHABLE"), (0x04, "STALE"), (0x08, "DELAY"),
             (0x10, "PROBE"), (0x20, "FAILED"), (0x40, "NOARP"), (0x80, "PERMANENT"))
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
RT_TABLE_MAIN = 254
RTN_UNICAST = 1

Msg = Mapping[str, Any]


def attr(msg: Msg, name: str, default: Any = None) -> Any:
    """The first value of attribute `name` in a dumped message (None-safe)."""
    for pair in msg.get("attrs") or ():
        if len(pair) >= 2 and pair[0] == name:
            return pair[1]
    return default


def nested(msg: Msg, *path: str) -> Msg:
    """Walk nested attribute containers: nested(link, "IFLA_LINKINFO", "IFLA_INFO_DATA")."""
    cur: Any = msg
    for name in path:
        cur = attr(cur, name) if isinstance(cur, Mapping) else None
        if not isinstance(cur, Mapping):
            return {}
    return cur


def nud_state_name(state: int) -> str:
    names = [name for bit, name in NUD_NAMES if state & bit]
    return "|".join(names) if names else "NONE"


def parse_netlink_addresses(msgs: Iterable[Msg]) -> dict[int, tuple[str, ...]]:
    """RTM_NEWADDR messages -> {ifindex: ("10.244.1.0/32", ...)} (order kept)."""
    out: dict[int, list[str]] = {}
    for m in msgs:
        ip = attr(m, "IFA_LOCAL") or attr(m, "IFA_ADDRESS")
        index = m.get("index")
        if ip and isinstance(index, int):
            out.setdefault(index, []).append(f"{ip}/{m.get('prefixlen', 32)}")
    return {k: tuple(v) for k, v in out.items()}


def parse_netlink_links(msgs: Iterable[Msg],
                        addresses: Mapping[int, tuple[str, ...]] | None = None) -> list[Link]:
    """RTM_NEWLINK messages -> Links; a VXLAN link's parent index becomes the parent's name."""
    msgs = list(msgs)
    names = {m.get("index"): attr(m, "IFLA_IFNAME", "") for m in msgs}
    addresses = addresses or {}
    links = []
    for m in msgs:
        index = m.get("index")
        flags = int(m.get("flags") or 0)
        info = nested(m, "IFLA_LINKINFO")
        kind = attr(info, "IFLA_INFO_KIND", "") or ""
        vxlan = None
        if kind == "vxlan":
            data = nested(info, "IFLA_INFO_DATA")
            parent_index = attr(data, "IFLA_VXLAN_LINK")
            learning = attr(data, "IFLA_VXLAN_LEARNING")
            csum = attr(data, "IFLA_VXLAN_UDP_CSUM")
            vxlan = VxlanInfo(
                vni=_int(attr(data, "IFLA_VXLAN_ID")),
                port=_int(attr(data, "IFLA_VXLAN_PORT")),
                local=attr(data, "IFLA_VXLAN_LOCAL") or attr(data, "IFLA_VXLAN_LOCAL6") or "",
                parent=names.get(parent_index, "") if parent_index else "",
                learning=None if learning is None else bool(learning),
                udp_csum=None if csum is None else bool(csum),
            )
        links.append(Link(
            name=attr(m, "IFLA_IFNAME", "") or "",
            index=index if isinstance(index, int) else None,
            kind=kind,
            mtu=_int(attr(m, "IFLA_MTU")),
            admin_up=bool(flags & IFF_UP),
            operstate=str(attr(m, "IFLA_OPERSTATE", "") or ""),
            lower_up=bool(flags & IFF_LOWER_UP),
            mac=str(attr(m, "IFLA_ADDRESS", "") or ""),
            addresses=addresses.get(index, ()) if isinstance(index, int) else (),
            vxlan=vxlan,
        ))
    return links


def parse_netlink_routes(msgs: Iterable[Msg], names: Mapping[int, str]) -> list[Route]:
    """RTM_NEWROUTE messages (unicast, any table) -> Routes with device names."""
    routes = []
    for m in msgs:
        if m.get("type", RTN_UNICAST) != RTN_UNICAST:
            continue  # local, broadcast, blackhole: not forwarding paths
        dst = attr(m, "RTA_DST")
        dst_text = f"{dst}/{m.get('dst_len', 0)}" if dst else "default"
        oif = attr(m, "RTA_OIF")
        table = attr(m, "RTA_TABLE") or m.get("table") or RT_TABLE_MAIN
        routes.append(Route(dst=dst_text, gateway=attr(m, "RTA_GATEWAY") or "",
                            dev=names.get(oif, "") if oif is not None else "",
                            onlink=bool(int(m.get("flags") or 0) & RTNH_F_ONLINK),
                            table=int(table)))
    return routes


def parse_netlink_neighbours(msgs: Iterable[Msg], names: Mapping[int, str]) -> list[Neighbour]:
    """RTM_NEWNEIGH messages of the IPv4/IPv6 neighbour table -> Neighbours."""
    out = []
    for m in msgs:
        state = int(m.get("state") or 0)
        out.append(Neighbour(ip=attr(m, "NDA_DST") or "", mac=attr(m, "NDA_LLADDR") or "",
                             dev=names.get(m.get("ifindex"), ""),
                             permanent=bool(state & NUD_PERMANENT),
                             state=nud_state_name(state)))
    return out


def parse_netlink_fdb(msgs: Iterable[Msg], names: Mapping[int, str]) -> list[FdbEntry]:
    """RTM_NEWNEIGH messages of family AF_BRIDGE (the FDB) -> FdbEntries; NDA_DST is the
    remote VTEP a VXLAN device sends that MAC's frames to."""
    out = []
    for m in msgs:
        state = int(m.get("state") or 0)
        out.append(FdbEntry(mac=attr(m, "NDA_LLADDR") or "", dev=names.get(m.get("ifindex"), ""),
                            dst=attr(m, "NDA_DST") or "",
                            self_=bool(int(m.get("flags") or 0) & NTF_SELF),
                            permanent=bool(state & NUD_PERMANENT)))
    return out


def link_names(links: Iterable[Link]) -> dict[int, str]:
    return {link.index: link.name for link in links if link.index is not None}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
