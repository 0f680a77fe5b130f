"""Recorded hairpin state of bridge ports, as people paste it (for offline triage):

- `for d in /sys/.../<br>/brif/*/hairpin_mode; do echo "$d = $(cat $d)"; done` -> `path = 0`
- `for intf in /sys/.../<br>/brif/*; do echo "$intf"; cat "$intf/hairpin_mode"; done` -> a path
  line, then the value on the next line
- `cat /sys/.../<br>/brif/*/hairpin_mode` -> bare values (the port is then unknown; the bridge
  is taken from the pasted command line when there is one)
- `ip -d link` / `ip -d addr`: a `master <br>` header and a `bridge_slave ... hairpin on|off`
  detail line
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BRIF_PATH = re.compile(r"/sys/(?:devices/virtual|class)/net/([^/\s]+)/brif/([^/\s*]+)"
                        r"(?:/hairpin_mode)?")
_IP_HEADER = re.compile(r"^\d+:\s+([^:@\s]+)(?:@[^:\s]+)?:\s+<.*?>.*?\bmaster\s+(\S+)")
_HAIRPIN_WORD = re.compile(r"\bbridge_slave\b.*?\bhairpin\s+(on|off)\b")
_COMMAND_BRIDGE = re.compile(r"/sys/(?:devices/virtual|class)/net/([^/\s]+)/brif/\*")


@dataclass(frozen=True)
class HairpinPort:
    bridge: str
    port: str | None  # None when the paste printed values only
    hairpin: bool
    line: str  # the line that carried the value, quoted as evidence


def parse_hairpin_listing(text: str) -> list[HairpinPort]:
    ports: list[HairpinPort] = []
    pending: tuple[str, str] | None = None  # a path line waiting for its value line
    ip_port: tuple[str, str] | None = None  # the current `ip -d` interface and its master
    command_bridge = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line == "...":
            continue
        m = _COMMAND_BRIDGE.search(line)
        if m and ("for " in line or "cat " in line):
            command_bridge = m.group(1)
            pending = None
            continue
        header = _IP_HEADER.match(line)
        if header:
            ip_port = (header.group(2), header.group(1))
            continue
        word = _HAIRPIN_WORD.search(line)
        if word and ip_port:
            ports.append(HairpinPort(ip_port[0], ip_port[1], word.group(1) == "on", line))
            continue
        path = _BRIF_PATH.search(line)
        if path:
            _, sep, value = line.partition("=")
            if sep and value.strip() in ("0", "1"):
                ports.append(HairpinPort(path.group(1), path.group(2), value.strip() == "1",
                                         line))
                pending = None
            else:
                pending = (path.group(1), path.group(2))
            continue
        if line in ("0", "1"):
            if pending:
                ports.append(HairpinPort(pending[0], pending[1], line == "1",
                                         f"{raw.strip()} ({pending[0]}/{pending[1]})"))
                pending = None
            elif command_bridge:
                ports.append(HairpinPort(command_bridge, None, line == "1", line))
    return ports
