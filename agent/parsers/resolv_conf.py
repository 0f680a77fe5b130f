"""resolv.conf(5): the nameservers (and search domains) a resolver would use."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class Nameserver:
    address: str
    lineno: int
    line: str

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.address.split("%")[0]).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[Nameserver, ...]
    search: tuple[str, ...]


def parse_resolv_conf(text: str) -> ResolvConf:
    """`nameserver` and `search` lines; `#`/`;` comments and unknown keywords ignored. As in
    glibc, only the first three nameservers are used, so later ones are dropped."""
    servers: list[Nameserver] = []
    search: tuple[str, ...] = ()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and len(servers) < 3:
            servers.append(Nameserver(parts[1], lineno, raw.rstrip()))
        elif parts and parts[0] in ("search", "domain"):
            search = tuple(parts[1:])
    return ResolvConf(tuple(servers), search)
