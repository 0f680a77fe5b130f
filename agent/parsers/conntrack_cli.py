"""`conntrack -S`: one line per CPU of `name=value` counters (decimal), e.g.

    cpu=0   	found=0 invalid=3856 ignore=42570125 insert=0 insert_failed=0 drop=0 ...

The column set differs across conntrack-tools and kernel versions (newer ones drop `ignore`,
`insert`), so counters are kept by name. Returns the same `ConntrackStat` the
/proc/net/stat/nf_conntrack parser returns, so the conntrack check judges both alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.parsers.conntrack_proc import ConntrackStat


class ConntrackCliError(ValueError):
    """The text has no `cpu=N key=value ...` line."""


@dataclass(frozen=True)
class ConntrackCliStats:
    stat: ConntrackStat
    unparsed: tuple[tuple[int, str], ...] = field(default_factory=tuple)  # (lineno, text)


def parse_conntrack_stats(text: str) -> ConntrackCliStats:
    """`conntrack -S` -> per-CPU counters. Lines that are not `cpu=N ...` (a prompt, a cut
    last line) are returned in `unparsed`; raises ConntrackCliError when no line parses."""
    rows: list[dict[str, int]] = []
    columns: list[str] = []
    unparsed: list[tuple[int, str]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        toks = raw.split()
        if not toks:
            continue
        if not toks[0].startswith("cpu="):
            unparsed.append((lineno, raw))
            continue
        row: dict[str, int] = {}
        ok = True
        for tok in toks[1:]:
            key, sep, value = tok.partition("=")
            if not sep or not key or not value.isdigit():
                ok = False
                break
            row[key] = int(value)
            if key not in columns:
                columns.append(key)
        if not ok or not row or not toks[0][4:].isdigit():
            unparsed.append((lineno, raw))
            continue
        rows.append(row)
    if not rows:
        raise ConntrackCliError("no `cpu=N found=... invalid=...` line: not `conntrack -S` "
                                "output")
    return ConntrackCliStats(ConntrackStat(tuple(columns), tuple(rows)), tuple(unparsed))
