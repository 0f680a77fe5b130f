"""Pure parsers: command output or file text in, typed facts out. No I/O here (a test reads
the imports to keep it so)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UnparsedLine:
    """A line a parser skipped, and why (parsers keep going past lines they cannot read and
    list them, so `netdiag analyze` can say what it did not understand)."""

    lineno: int
    text: str
    reason: str
