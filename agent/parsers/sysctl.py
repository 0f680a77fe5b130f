"""Parsers for sysctl values: the text of a /proc/sys file and sysctl.conf-style files."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SysctlSetting:
    """One `key = value` line of a sysctl.conf / sysctl.d file."""

    key: str  # dotted form: net.ipv4.conf.all.rp_filter
    value: str
    source: str  # the file it came from
    lineno: int
    line: str  # the raw line, quoted as evidence


def parse_sysctl_value(text: str) -> int | None:
    """A /proc/sys integer value (`"1\\n"` -> 1); None when the text is not an integer."""
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_sysctl_conf(text: str, source: str) -> list[SysctlSetting]:
    """`sysctl.conf(5)` lines: `key = value`, `#`/`;` comments, a leading `-` (ignore errors),
    slash-separated keys (`net/ipv4/ip_forward`) normalised to dots. Lines that are not
    settings are skipped."""
    settings = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().lstrip("-").strip()
        if "/" in key and "." not in key.split("/")[0]:
            key = key.replace("/", ".")
        settings.append(SysctlSetting(key, value.strip(), source, lineno, raw.rstrip("\r")))
    return settings
