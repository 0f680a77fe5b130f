"""What kube-proxy (iptables mode) programmed, read from a parsed `iptables-save` dump.

The Service graph kube-proxy writes (1.27+ naming; older dumps read the same way):

    nat PREROUTING/OUTPUT -> KUBE-SERVICES
    KUBE-SERVICES  -d VIP -p tcp --dport 443 -j KUBE-SVC-X   ("ns/name:port cluster IP")
                                              -j KUBE-EXT-X / KUBE-FW-X / KUBE-XLB-X
    KUBE-NODEPORTS -p tcp --dport 30100      -j KUBE-SVC-X / KUBE-EXT-X
    KUBE-SVC-X -> KUBE-SEP-Y (one per endpoint) -> DNAT --to-destination POD:PORT
    filter KUBE-SERVICES / KUBE-EXTERNAL-SERVICES: "ns/name:port has no endpoints" REJECT
    (or "has no local endpoints" DROP for externalTrafficPolicy: Local).

Fast on big dumps: the portal rules are read with a few `str.find` calls per line (kube-proxy's
layout is fixed); a line that does not fit (a negation, an escaped quote) is fully tokenized.
SEP chains (two thirds of a 10k-Service dump) are only read when the endpoint list is asked
for (`service_endpoints`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from agent.parsers.iptables_save import (NO_TABLE, IptablesDump, RuleSyntaxError,
                                         parse_rule_line)

SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-XLB-")
ENDPOINT_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-")
NO_ENDPOINT_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS")
PORTAL_SUFFIXES = (("cluster IP", "cluster-ip"), ("external IP", "external-ip"),
                   ("loadbalancer IP", "load-balancer"))
NO_ENDPOINTS_MARKERS = (" has no local endpoints", " has no endpoints")
IPVS_CHAINS = ("KUBE-LOAD-BALANCER", "KUBE-NODE-PORT", "KUBE-IPVS-FILTER")
SERVICE_HOOKS = ("PREROUTING", "OUTPUT")
DIGEST_CHARS = 16


class ServicePortal(NamedTuple):
    """One Service VIP:port (or NodePort) kube-proxy programmed, with the rule saying so.
    (A NamedTuple, not a frozen dataclass: 10k of them are built per dump.)"""

    service: str  # "namespace/name:port" from the comment ("" when it has none)
    kind: str  # cluster-ip | external-ip | load-balancer | node-port | no-endpoints
    protocol: str
    address: str  # "" for a NodePort
    port: str
    chain: str  # the chain it jumps to (KUBE-SVC-..., KUBE-EXT-...), "" for REJECT/DROP rules
    line: str

    @property
    def key(self) -> str:
        """`tcp/10.96.0.1:443`, `udp/[fd00::a]:53`, `tcp/nodeport:30100`: the same on every
        node that runs the same kube-proxy state."""
        return portal_key(self.protocol, self.address, self.port)


def portal_key(protocol: str, address: str, port: str) -> str:
    proto = protocol or "tcp"
    if not address:
        return f"{proto}/nodeport:{port}"
    if ":" in address:
        return f"{proto}/[{address}]:{port}"
    return f"{proto}/{address}:{port}"


@dataclass(frozen=True, slots=True)
class NoEndpoints:
    """A Service port kube-proxy knows has no (local) endpoints on this node."""

    service: str
    reason: str  # "no endpoints" | "no local endpoints" | "service chain has no endpoints"
    protocol: str
    address: str
    port: str
    evidence: tuple[str, ...]  # the exact rule line(s), with "table:lineno: " prefixes


@dataclass(frozen=True)
class KubeProxyRules:
    #: "iptables" (Service chains present), "ipvs" (kube-proxy's IPVS helper chains),
    #: "none" (no KUBE-SERVICES chain at all).
    mode: str
    services_chain: bool  # nat KUBE-SERVICES declared (or has rules)
    hooks: dict[str, str]  # "PREROUTING"/"OUTPUT" -> the jump rule line, when present
    portals: tuple[ServicePortal, ...]
    no_endpoints: tuple[NoEndpoints, ...]
    has_table_headers: bool  # False for a grep'ed paste: absence proves nothing

    def vip_keys(self) -> tuple[str, ...]:
        return tuple(sorted({portal_key(p[2], p[3], p[4]) for p in self.portals}))

    def vip_digest(self) -> str:
        return digest_keys(self.vip_keys())


def digest_keys(keys: Iterable[str]) -> str:
    """sha256 of the sorted keys, one per line; its first 16 hex characters."""
    h = hashlib.sha256()
    for k in sorted(keys):
        h.update(k.encode())
        h.update(b"\n")
    return h.hexdigest()[:DIGEST_CHARS]


def _word_after(line: str, key: str) -> str:
    i = line.find(key)
    if i < 0:
        return ""
    i += len(key)
    j = line.find(" ", i)
    return line[i:j] if j >= 0 else line[i:]


def _fields(line: str) -> tuple[str, str, str, str, str] | None:
    """(dest, protocol, dport, comment, target) of a kube-proxy rule line by plain string
    search; None when the line needs the full tokenizer (negations, escapes, odd quoting).
    Inlined `find`s: this runs once per Service on a 10k-Service dump."""
    if " ! " in line or "\\" in line:
        return None
    i = line.find('--comment "')
    if i >= 0:
        j = line.find('"', i + 11)
        if j < 0:
            return None
        comment = line[i + 11:j]
        rest = line[:i] + line[j + 1:] + " "
    else:
        rest = line + " "
        i = rest.find(" --comment ")
        comment = rest[i + 11:rest.find(" ", i + 11)] if i >= 0 else ""
    find = rest.find
    i = find(" -j ")
    if i < 0:
        i = find(" -g ")
    target = rest[i + 4:find(" ", i + 4)] if i >= 0 else ""
    i = find(" -d ")
    dest = rest[i + 4:find(" ", i + 4)] if i >= 0 else ""
    i = find(" -p ")
    proto = rest[i + 4:find(" ", i + 4)] if i >= 0 else ""
    i = find(" --dport ")
    dport = rest[i + 9:find(" ", i + 9)] if i >= 0 else ""
    return dest, proto, dport, comment, target


#: kube-proxy's portal rule, as every version since 1.2 writes it; anything else (group 6)
#: goes through `_fields`/the tokenizer.
_PORTAL_LINE = re.compile(
    r'-A [^ \n]+ -d ([^ \n/]+)(?:/(?:32|128))? -p ([a-z]+) -m comment --comment '
    r'"([^"\\\n]*)" -m [a-z]+ --dport (\d+) -j (KUBE-(?:SVC|SVL|EXT|FW|XLB)-[^ \n]+)\n'
    r'|([^\n]*)\n')


def _full_fields(line: str) -> tuple[str, str, str, str, str] | None:
    try:
        rule = parse_rule_line(line)
    except RuleSyntaxError:
        return None
    d = rule.option("-d", "--destination")
    dports = rule.dports()
    return (d.value if d and not d.negated else "", rule.protocol, dports[0] if dports else "",
            rule.comment, rule.target)


def _strip_prefix_len(address: str) -> str:
    addr, _, plen = address.partition("/")
    return addr if plen in ("", "32", "128") else address


def _service_name(comment: str) -> tuple[str, str]:
    """("ns/name:port", kind) from a portal comment."""
    for suffix, kind in PORTAL_SUFFIXES:
        if comment.endswith(" " + suffix):
            return comment[:-len(suffix) - 1], kind
    return comment, ""


def _rules_with_lines(dump: IptablesDump, table: str, chain: str):  # type: ignore[no-untyped-def]
    """(tablename, offset, line) of every rule of `chain` in `table` (and the header-less
    table of a grep'ed paste)."""
    text = dump.text
    for tname in (table, NO_TABLE):
        t = dump.tables.get(tname)
        if t is None:
            continue
        for s, e in t.rule_spans(chain):
            pos = s
            for line in text[s:e - 1].split("\n"):
                yield tname, pos, line
                pos += len(line) + 1


def _evidence(dump: IptablesDump, table: str, offset: int, line: str) -> str:
    return f"{table or '?'}:{dump.lineno_at(offset)}: {line}"


def _has_endpoint_jump(dump: IptablesDump, chain: str, depth: int = 0) -> bool | None:
    """Does `chain` (a KUBE-SVC/SVL, or a KUBE-EXT/FW/XLB that leads to one) jump to a
    KUBE-SEP chain? None when the chain is not in the dump (an excerpt)."""
    nat = dump.tables.get("nat")
    tables = [t for t in (nat, dump.tables.get(NO_TABLE)) if t is not None]
    text = dump.text
    for t in tables:
        for s, e in t.rule_spans(chain):
            if text.find(" KUBE-SEP-", s, e) >= 0:
                return True
    if not any(t.has_chain(chain) for t in tables):
        return None
    if chain.startswith(ENDPOINT_CHAIN_PREFIXES) or depth > 2:
        return False
    found: bool | None = None
    for _t, _pos, line in _rules_with_lines(dump, "nat", chain):
        target = _word_after(line, " -j ") or _word_after(line, " -g ")
        if target.startswith(SERVICE_CHAIN_PREFIXES) and target != chain:
            sub = _has_endpoint_jump(dump, target, depth + 1)
            if sub:
                return True
            if sub is False:
                found = False
    return found


def classify_kube_proxy_rules(dump: IptablesDump) -> KubeProxyRules:
    nat = dump.tables.get("nat")
    bare = dump.tables.get(NO_TABLE)
    services_chain = any(t is not None and (t.has_rules("KUBE-SERVICES")
                                            or t.has_chain("KUBE-SERVICES"))
                         for t in (nat, bare))
    hooks: dict[str, str] = {}
    for hook in SERVICE_HOOKS:
        for tname, pos, line in _rules_with_lines(dump, "nat", hook):
            if _word_after(line, " -j ") == "KUBE-SERVICES":
                hooks[hook] = _evidence(dump, tname, pos, line)
                break
    portals: list[ServicePortal] = []
    no_endpoints: list[NoEndpoints] = []
    empty_chains: dict[str, bool | None] = {}
    nat_spans = nat._spans if nat is not None else {}
    text = dump.text
    find = text.find
    for chain, node_ports in (("KUBE-SERVICES", False), ("KUBE-NODEPORTS", True)):
        for tname in ("nat", NO_TABLE):
            t = dump.tables.get(tname)
            if t is None:
                continue
            for s, e in t.rule_spans(chain):
                for m in _PORTAL_LINE.finditer(text, s, e):
                    if m.lastindex == 6:  # not kube-proxy's usual layout: tokenize it
                        line = m.group(6)
                        f = _fields(line) or _full_fields(line)
                        if f is None:
                            continue
                        dest, proto, dport, comment, target = f
                        if not dport or not target.startswith(SERVICE_CHAIN_PREFIXES):
                            continue
                        if "/" in dest:
                            dest = _strip_prefix_len(dest)
                        proto = proto.lower()
                    else:
                        dest, proto, comment, dport, target = m.group(1, 2, 3, 4, 5)
                        line = ""
                    if node_ports:
                        kind, dest, service = "node-port", "", comment
                    elif not dest:
                        continue
                    elif comment.endswith(" cluster IP"):
                        kind, service = "cluster-ip", comment[:-11]
                    else:
                        service, kind = _service_name(comment)
                    portals.append(ServicePortal(service, kind or "cluster-ip", proto, dest,
                                                 dport, target, line or m.group().rstrip()))
                    # Fast path: the KUBE-SVC chain's rules jump to a KUBE-SEP chain.
                    has_endpoints = False
                    for s2, e2 in nat_spans.get(target, ()):
                        if find(" KUBE-SEP-", s2, e2) >= 0:
                            has_endpoints = True
                            break
                    if has_endpoints:
                        continue
                    if target not in empty_chains:
                        empty_chains[target] = _has_endpoint_jump(dump, target)
                    if empty_chains[target] is False:
                        no_endpoints.append(NoEndpoints(
                            service, "service chain has no endpoints", proto, dest, dport,
                            (_evidence(dump, tname, m.start(), m.group().rstrip()),)))
    # The REJECT/DROP rules kube-proxy writes for Services without (local) endpoints.
    seen: set[tuple[str, int]] = set()
    for table in ("filter", "nat"):
        for chain in NO_ENDPOINT_CHAINS:
            if table == "nat" and chain != "KUBE-SERVICES":
                continue
            for tname, pos, line in _rules_with_lines(dump, table, chain):
                if " has no " not in line or (tname, pos) in seen:
                    continue
                seen.add((tname, pos))
                f = _fields(line) or _full_fields(line)
                if f is None:
                    continue
                dest, proto, dport, comment, target = f
                if target not in ("REJECT", "DROP"):
                    continue
                for marker in NO_ENDPOINTS_MARKERS:
                    if comment.endswith(marker):
                        break
                else:
                    continue
                service = comment[:-len(marker)]
                local = chain != "KUBE-SERVICES" or "--dst-type LOCAL" in line
                addr = "" if local and not dest else _strip_prefix_len(dest)
                ev = _evidence(dump, tname, pos, line)
                no_endpoints.append(NoEndpoints(service, marker.strip().replace("has ", ""),
                                                proto.lower(), addr, dport, (ev,)))
                if dport:
                    portals.append(ServicePortal(service, "no-endpoints", proto.lower(), addr,
                                                 dport, "", line))
    if any(t is not None and t.has_rules(c) for t in (nat, bare) for c in IPVS_CHAINS):
        mode = "ipvs"
    elif services_chain or portals:
        mode = "iptables"
    else:
        mode = "none"
    has_headers = any(name != NO_TABLE for name in dump.tables)
    return KubeProxyRules(mode, services_chain, hooks, tuple(portals), tuple(no_endpoints),
                          has_headers)


def service_endpoints(dump: IptablesDump, portal: ServicePortal) -> tuple[str, ...]:
    """The DNAT destinations behind a portal (SVC -> SEP -> DNAT), for the full view."""
    out: list[str] = []
    seen: set[str] = set()
    todo = [portal.chain] if portal.chain else []
    while todo and len(seen) < 64:
        chain = todo.pop()
        if chain in seen:
            continue
        seen.add(chain)
        for _t, _pos, line in _rules_with_lines(dump, "nat", chain):
            target = _word_after(line, " -j ")
            if target == "DNAT":
                out.append(_word_after(line, "--to-destination "))
            elif target.startswith(("KUBE-SEP-", *SERVICE_CHAIN_PREFIXES)):
                todo.append(target)
    return tuple(out)
