"""Netlink reads for the probes (the edge): VXLAN devices, their FDB and neighbour entries, the
underlay interface. Only used when the VXLAN check's facts are not available."""

from __future__ import annotations

import socket
from typing import Any

from agent.probes.peers import FdbEntry, NeighbourEntry
from agent.report import OverlayDevice

IFF_UP = 0x1


def discover_overlay(ipr: Any) -> tuple[OverlayDevice, ...]:
    """Every VXLAN device in this network namespace, as the report describes them."""
    links = ipr.get_links()
    names = {l["index"]: l.get_attr("IFLA_IFNAME") for l in links}
    addrs: dict[int, list[str]] = {}
    for a in ipr.get_addr(family=socket.AF_INET):
        addrs.setdefault(a["index"], []).append(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
    out = []
    for link in links:
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            continue
        data = info.get_attr("IFLA_INFO_DATA")
        get = (lambda k: data.get_attr(k)) if data is not None else (lambda k: None)
        metadata = bool(get("IFLA_VXLAN_COLLECT_METADATA"))
        out.append(OverlayDevice(
            name=link.get_attr("IFLA_IFNAME"),
            vni=None if metadata else get("IFLA_VXLAN_ID"),
            port=get("IFLA_VXLAN_PORT"),
            local=get("IFLA_VXLAN_LOCAL") or "",
            parent=names.get(get("IFLA_VXLAN_LINK") or -1, "") or "",
            mtu=link.get_attr("IFLA_MTU"),
            mac=link.get_attr("IFLA_ADDRESS") or "",
            addresses=tuple(addrs.get(link["index"], ())),
            up=bool(link["flags"] & IFF_UP),
        ))
    return tuple(out)


def ifindex(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def read_fdb(ipr: Any, dev: str) -> tuple[FdbEntry, ...]:
    index = ifindex(ipr, dev)
    if index is None:
        return ()
    out = []
    for n in ipr.get_neighbours(family=socket.AF_BRIDGE):
        if n["ifindex"] == index and n.get_attr("NDA_DST"):
            out.append(FdbEntry(mac=n.get_attr("NDA_LLADDR") or "", dst=n.get_attr("NDA_DST")))
    return tuple(out)


def read_neighbours(ipr: Any, dev: str) -> tuple[NeighbourEntry, ...]:
    index = ifindex(ipr, dev)
    if index is None:
        return ()
    out = []
    for n in ipr.get_neighbours(family=socket.AF_INET, ifindex=index):
        if n.get_attr("NDA_LLADDR"):
            out.append(NeighbourEntry(ip=n.get_attr("NDA_DST"), mac=n.get_attr("NDA_LLADDR")))
    return tuple(out)


def underlay_for(ipr: Any, overlay: OverlayDevice | None, underlay_ip: str,
                 peer_ip: str) -> tuple[str, str]:
    """(underlay IP, underlay interface): the VXLAN device's local address and the interface
    holding it; else its parent; else the route towards the first peer."""
    ip = underlay_ip or (overlay.local if overlay else "")
    dev = ""
    if ip:
        for a in ipr.get_addr(family=socket.AF_INET):
            if a.get_attr("IFA_ADDRESS") == ip:
                dev = _name(ipr, a["index"])
                break
    if not dev and overlay and overlay.parent:
        dev = overlay.parent
    if (not dev or not ip) and peer_ip:
        try:
            route = ipr.route("get", dst=peer_ip)[0]
        except Exception:  # noqa: BLE001 - no route: the probes will say so when sending
            return ip, dev
        dev = dev or _name(ipr, route.get_attr("RTA_OIF"))
        ip = ip or (route.get_attr("RTA_PREFSRC") or "")
    return ip, dev


def _name(ipr: Any, index: int | None) -> str:
    if index is None:
        return ""
    links = ipr.get_links(index)
    return links[0].get_attr("IFLA_IFNAME") if links else ""
