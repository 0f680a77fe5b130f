"""Parse the IPVS table: `ipvsadm -Ln`, `ipvsadm -Ln --stats` / `--rate`, and the kernel's own
`/proc/net/ip_vs` (the same layout with hex addresses, read without any tool).

    IP Virtual Server version 1.2.1 (size=4096)
    Prot LocalAddress:Port Scheduler Flags
      -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
    TCP  10.96.0.10:53 rr
      -> 10.244.169.6:53              Masq    1      0          0
    UDP  [fd00::a]:53 rr persistent 10800
    FWM  1234 rr

`--stats` replaces the columns with `Conns InPkts OutPkts InBytes OutBytes` (values may carry a
K/M/G suffix), `--rate` with `CPS InPPS OutPPS InBPS OutBPS`; the header says which.

Never raises: lines it cannot read go to `unparsed` (a leading shell prompt, a grep'ed line
cut short); real-server lines before any virtual server too. 14k virtual servers x 10 real
servers (~154k lines) parse in well under 0.3 s: one `split()` per line, NamedTuples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from agent.parsers import UnparsedLine

STAT_SUFFIXES = {"K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4}
PROTOCOLS = frozenset(("TCP", "UDP", "SCTP", "FWM"))
LAYOUT_LIST, LAYOUT_STATS, LAYOUT_RATE = "list", "stats", "rate"


class RealServer(NamedTuple):
    address: str  # IPv6 without brackets
    port: int
    forward: str  # Masq | Route | Tunnel | FullNat ("" in --stats/--rate layouts)
    weight: int | None  # None in the --stats/--rate layouts
    active: int | None
    inactive: int | None
    stats: tuple[int, ...]  # the five --stats/--rate columns, () in the list layout
    lineno: int
    line: str


class VirtualServer:
    """One virtual server and its real servers. The real-server lines are kept as text and
    read on first use (`real_servers`); `real_server_count` only counts them."""

    __slots__ = ("protocol", "address", "port", "scheduler", "flags", "stats", "lineno",
                 "line", "_block", "_stats_layout", "_hex", "_rs", "_unparsed")

    def __init__(self, protocol: str, address: str, port: int, scheduler: str,
                 flags: tuple[str, ...], stats: tuple[int, ...], lineno: int, line: str,
                 block: str = "", stats_layout: bool = False, hex_form: bool = False,
                 real_servers: tuple[RealServer, ...] | None = None,
                 unparsed: list[UnparsedLine] | None = None) -> None:
        self.protocol = protocol  # tcp | udp | sctp | fwm
        self.address = address  # "" for an fwmark service; IPv6 without brackets
        self.port = port  # the fwmark for FWM
        self.scheduler = scheduler
        self.flags = flags  # ("persistent", "10800"), ...
        self.stats = stats
        self.lineno = lineno
        self.line = line
        self._block = block
        self._stats_layout = stats_layout
        self._hex = hex_form
        self._rs = real_servers
        self._unparsed = unparsed if unparsed is not None else []

    def __repr__(self) -> str:
        return f"VirtualServer({self.key} {self.scheduler} rs={self.real_server_count})"

    @property
    def key(self) -> str:
        if self.protocol == "fwm":
            return f"fwm/{self.port}"
        addr = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol}/{addr}:{self.port}"

    @property
    def real_server_count(self) -> int:
        if self._rs is not None:
            return len(self._rs)
        return self._block.count("\n")

    @property
    def real_servers(self) -> tuple[RealServer, ...]:
        if self._rs is None:
            self._rs = _parse_real_servers(self._block, self.lineno + 1, self._stats_layout,
                                           self._hex, self._unparsed)
        return self._rs

    def weight_zero(self) -> tuple[RealServer, ...]:
        """Real servers with weight 0 (parsed only when the raw lines show one)."""
        if self._stats_layout or (self._rs is None and not _WEIGHT_ZERO.search(self._block)):
            return ()
        return tuple(r for r in self.real_servers if r.weight == 0)




@dataclass
class IpvsTable:
    virtual_servers: list[VirtualServer] = field(default_factory=list)
    layout: str = LAYOUT_LIST
    version: str = ""  # "1.2.1 (size=4096)" from the banner
    has_header: bool = False  # the column header was seen (False for a grep'ed excerpt)
    #: Some real-server line shows weight 0 (one scan of the whole text; `weight_zero()` of
    #: each virtual server says which).
    weight_zero_seen: bool = False
    unparsed: list[UnparsedLine] = field(default_factory=list)


def _split_endpoint(text: str, hex_form: bool) -> tuple[str, int] | None:
    """`10.96.0.1:443`, `[fd00::1]:53` or /proc's `0A600001:01BB` -> (address, port)."""
    if text.startswith("["):
        addr, sep, port = text[1:].partition("]:")
        if not sep:
            return None
    else:
        addr, sep, port = text.rpartition(":")
        if not sep or not addr:
            return None
        if hex_form:
            if len(addr) != 8:
                return None
            try:
                raw = int(addr, 16)
            except ValueError:
                return None
            addr = ".".join(str((raw >> s) & 0xFF) for s in (24, 16, 8, 0))
    try:
        return addr, int(port, 16) if hex_form else int(port)
    except ValueError:
        return None


def _stat(value: str) -> int:
    mult = STAT_SUFFIXES.get(value[-1:], 0)
    if mult:
        return int(value[:-1]) * mult
    return int(value)


#: A real-server line whose Weight column is 0: per virtual server (`weight_zero`), and as a
#: whole-text pre-test, one pattern per forwarding method so each starts with a literal that
#: sre scans for in C (a generic pattern costs ~0.1 s on 154k lines).
_WEIGHT_ZERO = re.compile(r"->[ \t]+[^ \t\n]+[ \t]+[^ \t\n]+[ \t]+0(?:[ \t]|$)", re.M)
FORWARD_METHODS = ("Masq", "Route", "Tunnel", "Local", "FullNat")
_WEIGHT_ZERO_BY_METHOD = tuple(re.compile(method + r"[ \t]+0[ \t\n]")
                               for method in FORWARD_METHODS)
#: A virtual server line with the run of real-server lines under it (one match, in C), or any
#: other line.
_STATEMENT = re.compile(r"(TCP|UDP|SCTP|FWM)[ \t]+([^ \t\n]+)[ \t]*([^\n]*)\n"
                        r"((?:[ \t]+->[ \t]+(?!RemoteAddress:Port)[^\n]*\n)*)"
                        r"|[ \t]*([^\n]*)\n")


def parse_ipvsadm(text: str) -> IpvsTable:
    """`ipvsadm -Ln [--stats|--rate]` text -> IpvsTable. Pure; never raises."""
    return _parse(text, hex_form=False)


def _parse(text: str, hex_form: bool) -> IpvsTable:
    table = IpvsTable()
    unparsed = table.unparsed
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    stats_layout = False
    lineno = 0
    vss = table.virtual_servers
    for m in _STATEMENT.finditer(text):
        lineno += 1
        proto = m.group(1)
        if proto is not None:
            block = m.group(4)
            raw = m.group()[:m.end(3) - m.start()]
            rest = m.group(3).split()
            ep: tuple[str, int] | None
            if proto == "FWM":
                try:
                    ep = ("", int(m.group(2), 16) if hex_form else int(m.group(2)))
                except ValueError:
                    ep = None
            else:
                ep = _split_endpoint(m.group(2), hex_form)
            stats: tuple[int, ...] = ()
            try:
                if ep is None:
                    raise ValueError("unreadable virtual server address")
                if stats_layout:
                    stats = tuple(_stat(v) for v in rest)
                    if len(stats) != 5:
                        raise ValueError("virtual server line with missing columns (cut?)")
            except ValueError as exc:
                unparsed.append(UnparsedLine(lineno, raw, str(exc) if ep is None or stats
                                             or "column" in str(exc)
                                             else "virtual server line with non-numeric "
                                                  "columns (cut?)"))
                lineno += block.count("\n")
                continue
            vss.append(VirtualServer(proto.lower(), ep[0], ep[1],
                                     "" if stats_layout else (rest[0] if rest else ""),
                                     () if stats_layout else tuple(rest[1:]), stats, lineno,
                                     raw, block, stats_layout, hex_form, None, unparsed))
            lineno += block.count("\n")
            continue
        line = m.group(5)
        if not line:
            continue
        if line.startswith("IP Virtual Server version"):
            table.version = line[len("IP Virtual Server version"):].strip()
        elif line.startswith("Prot "):
            table.has_header = True
            if " Conns " in line or " CPS " in line:
                stats_layout = True
                table.layout = LAYOUT_STATS if " Conns " in line else LAYOUT_RATE
        elif line.startswith("->"):
            if "RemoteAddress:Port" not in line:
                unparsed.append(UnparsedLine(lineno, line, "real server before any virtual "
                                                           "server"))
        else:
            unparsed.append(UnparsedLine(lineno, line, "not ipvsadm output (prompt or "
                                                       "surrounding text?)"))
    table.weight_zero_seen = not stats_layout and _weight_zero_pretest(text)
    return table


def _weight_zero_pretest(text: str) -> bool:
    """Does any real-server line show weight 0? ipvsadm and /proc print `%-7s %-6d` (forward
    method, weight): a plain substring search finds `Masq    0 `; a paste whose spacing was
    collapsed falls back to the regexes."""
    if any(f"{m:<7} 0 " in text for m in FORWARD_METHODS):
        return True
    if any(f"{m:<7} " in text for m in FORWARD_METHODS):
        return False  # the fixed layout, and no weight 0 in it
    return any(rx.search(text) for rx in _WEIGHT_ZERO_BY_METHOD)


def _parse_real_servers(block: str, first_lineno: int, stats_layout: bool, hex_form: bool,
                        unparsed: list[UnparsedLine]) -> tuple[RealServer, ...]:
    out = []
    for lineno, raw in enumerate(block.split("\n")[:-1], first_lineno):
        toks = raw.split()
        ep = _split_endpoint(toks[1], hex_form) if len(toks) > 1 else None
        try:
            if ep is None:
                raise ValueError
            if stats_layout:
                if len(toks) != 7:
                    raise ValueError
                out.append(RealServer(ep[0], ep[1], "", None, None, None,
                                      tuple(_stat(v) for v in toks[2:7]), lineno, raw))
            else:
                if len(toks) != 6:
                    raise ValueError
                out.append(RealServer(ep[0], ep[1], toks[2], int(toks[3]), int(toks[4]),
                                      int(toks[5]), (), lineno, raw))
        except ValueError:
            unparsed.append(UnparsedLine(lineno, raw, "real server line with missing or "
                                                      "non-numeric columns (cut?)"))
    return tuple(out)


def check_real_servers(table: IpvsTable) -> None:
    """Read every real-server line now, so `unparsed` lists the unreadable ones too."""
    for vs in table.virtual_servers:
        vs.real_servers  # noqa: B018 - parses and caches


def parse_proc_ip_vs(text: str) -> IpvsTable:
    """/proc/net/ip_vs: the `ipvsadm -Ln` layout with hex IPv4 addresses and hex ports."""
    return _parse(text, hex_form=True)
