"""/proc/net/stat/nf_conntrack: a hex table, one row per possible CPU, whose header names
the columns. The column set differs across kernels (5.x dropped `searched`, `delete_list`;
6.x renamed some to `clashres`, `chainlength`), so columns are read by name, never by
position."""

from __future__ import annotations

from dataclasses import dataclass, field


class ConntrackStatError(ValueError):
    """The text is not a /proc/net/stat/nf_conntrack table."""


@dataclass(frozen=True)
class ConntrackStat:
    columns: tuple[str, ...]
    per_cpu: tuple[dict[str, int], ...] = field(default_factory=tuple)

    def total(self, column: str) -> int | None:
        """The sum over CPUs, or None when this kernel has no such column."""
        if column not in self.columns:
            return None
        return sum(row.get(column, 0) for row in self.per_cpu)

    def nonzero_cpus(self, column: str) -> dict[int, int]:
        return {cpu: row[column] for cpu, row in enumerate(self.per_cpu)
                if row.get(column, 0)}


def parse_conntrack_stat(text: str) -> ConntrackStat:
    """Rows of hex counters keyed by the header's names. Raises ConntrackStatError when the
    header is missing or no row parses."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].split() or lines[0].split()[0] != "entries":
        raise ConntrackStatError("no 'entries ...' header: not /proc/net/stat/nf_conntrack")
    columns = tuple(lines[0].split())
    rows = []
    for line in lines[1:]:
        cells = line.split()
        if len(cells) != len(columns):
            continue
        try:
            rows.append({name: int(cell, 16) for name, cell in zip(columns, cells)})
        except ValueError:
            continue
    if not rows:
        raise ConntrackStatError("no per-CPU row matches the header")
    return ConntrackStat(columns, tuple(rows))
