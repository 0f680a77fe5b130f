"""Parser for `/proc/net/snmp` (and `/proc/net/netstat`, same layout): pairs of lines
`Proto: Name1 Name2 ...` / `Proto: v1 v2 ...` -> {"Udp": {"InCsumErrors": 0, ...}, ...}.

Lines that are not part of a header/value pair (a pasted `...`, a shell prompt) are skipped;
a value that is not an integer is left out rather than guessed.
"""

from __future__ import annotations


def parse_proc_net_snmp(text: str) -> dict[str, dict[str, int]]:
    tables: dict[str, dict[str, int]] = {}
    pending: tuple[str, list[str]] | None = None
    for raw in text.splitlines():
        proto, sep, rest = raw.partition(":")
        proto = proto.strip()
        if not sep or not proto or " " in proto:
            pending = None
            continue
        fields = rest.split()
        if pending is not None and pending[0] == proto and fields and \
                all(_is_int(f) for f in fields):
            names = pending[1]
            tables.setdefault(proto, {}).update(
                {n: int(v) for n, v in zip(names, fields)})
            pending = None
        elif fields and not any(_is_int(f) for f in fields):
            pending = (proto, fields)
        else:
            pending = None
    return tables


def udp_in_csum_errors(tables: dict[str, dict[str, int]]) -> int | None:
    """`UdpInCsumErrors` as nstat names it; None when the kernel has no such column."""
    return tables.get("Udp", {}).get("InCsumErrors")


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()
