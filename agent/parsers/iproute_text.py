"""Parsers for pasted iproute2 text, for `netdiag analyze`: `ip -d link show` (also the
`ip -d address show` form, whose `inet` lines become addresses) and `bridge fdb show`.

They produce the same typed values as the netlink parser (`agent.parsers.link_types`), so the
VXLAN check's pure evaluate gives the same findings on a node and on a paste. They tolerate a
leading shell prompt line (`$ ip -d link show flannel.1`), old and new iproute2 layouts, and
interface names with `@peer` suffixes. Text with no recognisable line raises
`IprouteTextError` saying what was expected.
"""

from __future__ import annotations

import re

from agent.parsers.link_types import FdbEntry, Link, VxlanInfo

LINK_HEADER_RE = re.compile(r"^(\d+):\s+(\S+?):\s+<([^>]*)>(.*)$")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
#: `ip -d link` detail lines start with the link kind; these are the kinds worth naming.
KNOWN_KINDS = frozenset({"vxlan", "veth", "bridge", "bridge_slave", "dummy", "vlan", "geneve",
                         "ipip", "wireguard", "tun", "macvlan", "ipvlan", "bond", "vrf"})
#: Prompt words that introduce a command line (`root@node:~# bridge fdb show dev flannel.1`).
FDB_DEV_WORDS = ("dev", "brport")


class IprouteTextError(ValueError):
    """The text is not the iproute2 output the parser expects; the message says which."""


def parse_ip_link_details(text: str) -> list[Link]:
    """`ip -d link show` / `ip -d address show` output -> Links (with VxlanInfo for vxlan)."""
    blocks: list[tuple[re.Match[str], list[str]]] = []
    for raw in text.splitlines():
        m = LINK_HEADER_RE.match(raw.strip())
        if m and not raw[:1].isspace():
            blocks.append((m, []))
        elif blocks and raw[:1].isspace():
            blocks[-1][1].append(raw.strip())
    if not blocks and text.strip():
        raise IprouteTextError("no link line like `3: flannel.1: <BROADCAST,...> mtu 1450 ...` "
                               "found: expected `ip -d link show` output")
    return [_link(m, body) for m, body in blocks]


def _link(header: re.Match[str], body: list[str]) -> Link:
    index, name, flag_text, rest = header.groups()
    flags = set(flag_text.split(","))
    words = rest.split()
    mac = ""
    kind = ""
    vxlan = None
    addresses: list[str] = []
    for line in body:
        toks = line.split()
        if not toks:
            continue
        if toks[0].startswith("link/") and len(toks) > 1:
            mac = toks[1] if MAC_RE.match(toks[1]) else ""
        elif toks[0] == "inet" and len(toks) > 1:
            addresses.append(toks[1] if "/" in toks[1] else f"{toks[1]}/32")
        elif toks[0] in KNOWN_KINDS and not kind:
            kind = toks[0]
            if kind == "vxlan":
                vxlan = _vxlan(toks[1:])
    return Link(name=name.split("@", 1)[0], index=int(index), kind=kind,
                mtu=_int(_after(words, "mtu")), admin_up="UP" in flags,
                operstate=_after(words, "state") or "", lower_up="LOWER_UP" in flags,
                mac=mac, addresses=tuple(addresses), vxlan=vxlan)


def _vxlan(toks: list[str]) -> VxlanInfo:
    learning = None
    if "nolearning" in toks:
        learning = False
    elif "learning" in toks:
        learning = True
    csum = None
    if "noudpcsum" in toks:
        csum = False
    elif "udpcsum" in toks:
        csum = True
    return VxlanInfo(vni=_int(_after(toks, "id")), port=_int(_after(toks, "dstport")),
                     local=_after(toks, "local") or "", parent=_after(toks, "dev") or "",
                     learning=learning, udp_csum=csum)


def parse_bridge_fdb(text: str, default_dev: str = "") -> list[FdbEntry]:
    """`bridge fdb show` output -> FdbEntries. With `show dev X` / `show brport X` the output
    omits `dev X`; the device then comes from a pasted command line naming it, else from
    `default_dev`."""
    dev_from_prompt = ""
    entries = []
    seen_line = False
    for raw in text.splitlines():
        toks = raw.split()
        if not toks:
            continue
        if not MAC_RE.match(toks[0]):
            if "fdb" in toks:
                for word in FDB_DEV_WORDS:
                    dev_from_prompt = _after(toks, word) or dev_from_prompt
            continue
        seen_line = True
        entries.append(FdbEntry(
            mac=toks[0].lower(),
            dev=_after(toks, "dev") or dev_from_prompt or default_dev,
            dst=_after(toks, "dst") or "",
            self_="self" in toks[1:],
            permanent="permanent" in toks[1:] or "static" in toks[1:]))
    if not seen_line and text.strip() and not dev_from_prompt:
        raise IprouteTextError("no FDB line like `aa:bb:cc:dd:ee:ff dst 10.0.0.2 self "
                               "permanent` found: expected `bridge fdb show` output")
    return entries


def _after(toks: list[str], key: str) -> str | None:
    for i, t in enumerate(toks[:-1]):
        if t == key:
            return toks[i + 1]
    return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
