"""iptables: what kube-proxy (iptables mode), Docker and the distro firewall programmed.
Half of "my Service does not work" ends in these rules on one node:

- a Service with no endpoints: kube-proxy writes a REJECT ("has no endpoints") instead of a
  DNAT, so clients get "connection refused"/"no route to host" — the selector matches no
  ready pod, or the targetPort is not the port the pod listens on;
- kube-proxy runs in iptables mode but KUBE-SERVICES (or its jump from nat PREROUTING/OUTPUT)
  is missing: every ClusterIP times out on this node (kube-proxy cannot restore its rules:
  missing `conntrack`, an iptables version clash, a flush by a firewall reload);
- FORWARD policy DROP (Docker sets it) with nothing accepting pod traffic: cross-node pod
  traffic and NodePort traffic to remote pods die on this node;
- a DROP/REJECT in INPUT/OUTPUT (filter or raw) for UDP 8472/4789 (or the local VXLAN port):
  the overlay dies although the cloud security groups are open;
- rules in both the legacy and the nf_tables backend: kube-proxy in one, the CNI in the
  other, and neither `iptables-save` shows the whole picture (both sets of hooks still run).

Applies to every CNI; the kube-proxy parts only where kube-proxy runs in iptables mode (IPVS
is `agent/checks/ipvs.py`; Cilium's kube-proxy replacement leaves no KUBE-SERVICES: not a
fault). Reads `iptables-legacy-save` and `iptables-nft-save` where present (the legacy one
only when the kernel has legacy tables, /proc/net/ip_tables_names), else `iptables-save`;
never `iptables -S/-L` (they wait on kube-proxy's xtables lock) and never `nft list` (tens of
seconds and a GB at 400k rules). A 10k-Service save takes ~0.8-3.6 s and its child ~350 MB
(nft backend): size the DaemonSet's memory limit for it. A long-running agent re-runs an
nf_tables save only when the ruleset generation (NFT_MSG_GETGEN, `Host.nft_generation`) has
changed since the last one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.checks.base import CheckContext, CheckSpec, FindingSpec
from agent.checks.kube_components import KubeProxyMode, gather_kube_proxy_mode
from agent.host import Host, ToolMissing
from agent.parsers.iptables_save import (NO_TABLE, IptablesDump, IptablesRule,
                                         parse_iptables_save)
from agent.parsers.kube_proxy_rules import (KubeProxyRules, classify_kube_proxy_rules,
                                            digest_keys)
from agent.parsers.netlink_vxlan import parse_netlink_links
from agent.report import Finding, Severity

SAVE_TIMEOUT_S = 20.0
VXLAN_PORT_LINUX = 8472
VXLAN_PORT_IANA = 4789
OVERLAY_PORTS = (VXLAN_PORT_LINUX, VXLAN_PORT_IANA)
#: Above this many Service VIPs the full list stays out of the report (digest + count only);
#: `netdiag analyze --json` on a saved dump prints all of them.
SERVICE_VIPS_INLINE_MAX = 256
#: Evidence quotes at most this many rule lines per finding.
EVIDENCE_MAX_LINES = 12
#: One finding per Service port up to this many; the rest are named in one more finding (a
#: node where every Service lost its endpoints must not send 10k findings).
NO_ENDPOINTS_FINDINGS_MAX = 50
WALK_MAX_DEPTH = 8
LEGACY_TABLES_PROC = "net/ip_tables_names"
#: kube-proxy's masquerade mark: its KUBE-FORWARD ACCEPT for it covers Service traffic only.
KUBE_PROXY_MASQ_MARK = "0x4000/0x4000"
#: Interfaces that are never the underlay a VXLAN packet arrives on / leaves by, and bridges
#: that never carry Kubernetes pod traffic (Docker's, libvirt's).
LOCAL_INTERFACES = ("lo", "docker0", "virbr0", "cni0", "cbr0", "cali", "lxc", "veth",
                    "flannel.", "vxlan.calico", "cilium_", "kube-ipvs0", "kube-bridge", "br-",
                    "weave", "tunl0", "nodelocaldns")
NON_POD_BRIDGES = ("docker0", "virbr0", "br-")

SPEC = CheckSpec(
    name="iptables",
    timeout_s=45.0,
    findings=(
        FindingSpec(
            id="iptables.no-endpoints",
            title="Service has no endpoints on this node",
            why="kube-proxy writes a REJECT/DROP instead of a DNAT for a Service port with no "
                "ready endpoint: clients get 'connection refused' or 'no route to host'.",
            remediation="kubectl get endpointslices -n NS -l kubernetes.io/service-name=NAME: "
                        "if empty, compare the Service's selector with the pods' labels "
                        "(kubectl get pods -n NS --show-labels) and check the pods are Ready; if "
                        "endpoints exist, check the Service's targetPort matches the container's "
                        "containerPort. If other nodes have endpoints for it, kube-proxy on this "
                        "node is stale: restart kube-proxy on this node.",
        ),
        FindingSpec(
            id="iptables.kube-proxy-chains-missing",
            title="kube-proxy runs in iptables mode but its Service chains are missing",
            why="Without nat KUBE-SERVICES, or its jump from PREROUTING/OUTPUT, no ClusterIP "
                "or NodePort is translated on this node: every Service times out here.",
            remediation="Read kube-proxy's log on this node (kubectl -n kube-system logs "
                        "POD-ON-THIS-NODE): iptables-restore failures, a missing conntrack "
                        "binary, an iptables legacy/nft clash. Then restart kube-proxy on this "
                        "node; stop whatever flushes the tables (firewalld/iptables.service "
                        "reloads).",
        ),
        FindingSpec(
            id="iptables.forward-drop",
            title="FORWARD drops pod traffic: cross-node pod traffic dies on this node",
            why="Pod traffic to and from other nodes is forwarded by this node; with FORWARD "
                "policy DROP (Docker sets it) or a catch-all REJECT, and no rule accepting pod "
                "traffic before it, the kernel drops it.",
            remediation="Accept the pod CIDR in FORWARD (iptables -A FORWARD -s POD_CIDR -j "
                        "ACCEPT and -d POD_CIDR -j ACCEPT, or the CNI's own forward rules: "
                        "flannel's FLANNEL-FWD, Calico's cali-FORWARD), remove the distro's "
                        "catch-all REJECT, or start dockerd with --iptables=false; persist it.",
        ),
        FindingSpec(
            id="iptables.overlay-port-blocked",
            title="A DROP/REJECT matches the VXLAN port: the overlay is blocked on this node",
            why="VXLAN (UDP 8472 on Linux/flannel, 4789 IANA/Calico) carries all cross-node pod "
                "traffic; a host firewall rule dropping it breaks the overlay even when the "
                "cloud security groups are open.",
            remediation="Open the overlay port between nodes: iptables -I INPUT -p udp --dport "
                        "PORT -s NODE_CIDR -j ACCEPT (and OUTPUT if it is blocked there), or "
                        "firewall-cmd --add-port=PORT/udp --permanent; remove the DROP/REJECT "
                        "rule quoted in the evidence.",
        ),
        FindingSpec(
            id="iptables.mixed-backends",
            title="Rules in both the iptables legacy and nf_tables backends",
            why="Both backends' hooks run, but each tool sees only its own: kube-proxy in one, "
                "the CNI or Docker in the other, and rules written by one never see the other's "
                "(a DROP in one is invisible to `iptables-save` of the other).",
            remediation="Make every component use the same backend as the host "
                        "(update-alternatives --set iptables /usr/sbin/iptables-nft or "
                        "-legacy; kube-proxy, the CNI and Docker images pick the backend with "
                        "iptables-wrapper), then flush the unused backend and restart them.",
        ),
    ),
)


@dataclass(frozen=True)
class SaveOutput:
    command: str  # "iptables-nft-save"
    dump: IptablesDump | None
    error: str = ""  # why there is no dump ("exit 1: ...")


@dataclass(frozen=True)
class Facts:
    saves: tuple[SaveOutput, ...]
    kube_proxy: KubeProxyMode = KubeProxyMode(None)
    vxlan_ports: tuple[tuple[str, int], ...] = ()  # (device, UDP port) of local VXLAN devices
    _classified: dict[str, KubeProxyRules] = field(default_factory=dict, compare=False)

    def dumps(self) -> list[tuple[str, IptablesDump]]:
        return [(s.command, s.dump) for s in self.saves if s.dump is not None]

    def kube_proxy_rules(self, command: str, dump: IptablesDump) -> KubeProxyRules:
        got = self._classified.get(command)
        if got is None:
            got = self._classified[command] = classify_kube_proxy_rules(dump)
        return got

    def service_keys(self) -> tuple[str, ...]:
        keys: set[str] = set()
        for command, dump in self.dumps():
            keys.update(self.kube_proxy_rules(command, dump).vip_keys())
        return tuple(sorted(keys))


# --- the edge ------------------------------------------------------------------------------

def gather(host: Host, ctx: CheckContext) -> Facts:
    commands = [c for c in ("iptables-legacy-save", "iptables-nft-save") if host.which(c)]
    if "iptables-legacy-save" in commands and not _legacy_tables_loaded(host):
        commands.remove("iptables-legacy-save")  # no legacy tables: nothing to save
    if not commands:
        if not host.which("iptables-save"):
            raise ToolMissing("iptables-save")
        commands = ["iptables-save"]
    saves = tuple(_save_unless_unchanged(host, c) for c in commands)
    return Facts(saves, _kube_proxy_mode(host), _vxlan_ports(host))


#: The daemon reruns the checks every interval, and a 10k-Service save costs seconds and a
#: few hundred MB in the child. An nf_tables save is reused while the ruleset generation it was
#: taken at is unchanged (nothing in any nftables table changed since); the cost is keeping the
#: parsed dump (about its text's size) between rounds, and chain counters in the evidence that
#: may be as old as the last change. Legacy tables have no generation: always re-read.
_NFT_SAVES: dict[str, tuple[int, SaveOutput]] = {}


def _save_unless_unchanged(host: Host, command: str) -> SaveOutput:
    ask = getattr(host, "nft_generation", None)
    gen = ask() if callable(ask) and "legacy" not in command else None
    if gen is None:
        return _save(host, command)
    cached = _NFT_SAVES.get(command)
    if cached is not None and cached[0] == gen:
        return cached[1]
    out = _save(host, command)
    nft = "nft" in command or (out.dump is not None and out.dump.backend == "nf_tables")
    if out.dump is not None and nft and ask() == gen:
        _NFT_SAVES[command] = (gen, out)  # nothing changed while it ran: safe to reuse
    else:
        _NFT_SAVES.pop(command, None)
    return out


def _legacy_tables_loaded(host: Host) -> bool:
    try:
        return bool(host.read_proc(LEGACY_TABLES_PROC).strip())
    except OSError:
        return False


def _save(host: Host, command: str) -> SaveOutput:
    try:
        result = host.run([command], timeout=SAVE_TIMEOUT_S)
    except (TimeoutError, ToolMissing) as exc:
        return SaveOutput(command, None, str(exc))
    if not result.ok:
        first = (result.stderr.strip().splitlines() or ["no message"])[0]
        return SaveOutput(command, None, f"{command} exited {result.returncode}: {first}")
    return SaveOutput(command, parse_iptables_save(result.stdout))


def _kube_proxy_mode(host: Host) -> KubeProxyMode:
    try:
        return gather_kube_proxy_mode(host)
    except Exception as exc:  # noqa: BLE001 - the mode is context; the rules still get read
        return KubeProxyMode(None, "", f"kube-proxy mode unknown: {exc}")


def _vxlan_ports(host: Host) -> tuple[tuple[str, int], ...]:
    try:
        links = parse_netlink_links(m.dump() for m in host.netlink().get_links())
    except Exception:  # noqa: BLE001 - without it the default ports are checked
        return ()
    return tuple((link.name, link.vxlan.port) for link in links
                 if link.vxlan is not None and link.vxlan.port)


# --- pure decisions --------------------------------------------------------------------------

def evaluate(facts: Facts, ctx: CheckContext) -> tuple[Finding, ...]:
    dumps = facts.dumps()
    out: list[Finding] = []
    for s in facts.saves:
        if s.dump is None:
            out.append(SPEC.finding("iptables.no-endpoints", Severity.INFO, ctx.node,
                                    title=f"{s.command} could not run: {s.error}",
                                    evidence=s.error,
                                    remediation="Give the agent CAP_NET_ADMIN and the host's "
                                                "iptables binaries (hostNetwork, privileged)."))
    if not dumps:
        return tuple(out)
    label = len(dumps) > 1
    for command, dump in dumps:
        where = f"{command}: " if label else ""
        rules = facts.kube_proxy_rules(command, dump)
        out.extend(_no_endpoints(rules, dump, ctx, where))
        out.extend(_forward_drop(dump, ctx, where))
        out.extend(_overlay_port_blocked(dump, facts.vxlan_ports, ctx, where))
    out.extend(_chains_missing(facts, ctx))
    out.extend(_mixed_backends(facts, ctx))
    if not out and all(not d.tables for _c, d in dumps):
        # Say the check ran: with no table loaded nothing filters or translates here.
        out.append(SPEC.finding("iptables.forward-drop", Severity.OK, ctx.node,
                                title="No iptables rules loaded: nothing filters or "
                                      "translates traffic here",
                                evidence="; ".join(f"{c}: no tables" for c, _d in dumps)))
    return tuple(out)


def _cut_note(dump: IptablesDump) -> str:
    notes = []
    if dump.truncated:
        notes.append("the output was cut (a table has no COMMIT): rules after the cut are "
                     "not seen")
    if NO_TABLE in dump.tables:
        notes.append("some rules have no *table header (a grep'ed excerpt): chains they jump "
                      "to may be missing")
    return "; ".join(notes)


def _no_endpoints(rules: KubeProxyRules, dump: IptablesDump, ctx: CheckContext,
                  where: str) -> list[Finding]:
    if rules.mode in ("none", "ipvs") and not rules.no_endpoints:
        return []  # no kube-proxy rules here (IPVS mode: the ipvs check reads the Services)
    by_service: dict[str, list[str]] = {}
    contradicted: set[str] = set()
    jumps = {(p.service, p.port): p for p in rules.portals if p.chain}
    for ne in rules.no_endpoints:
        addr = ne.address or "NodePort"
        desc = f"{ne.service or '(no comment)'} {ne.protocol}/{addr}:{ne.port} ({ne.reason})"
        lines = [desc, *(f"  {e}" for e in ne.evidence)]
        other = jumps.get((ne.service, ne.port))
        if other is not None and ne.reason == "no endpoints":
            # kube-proxy writes either the REJECT or the Service chain, never both: its
            # rules on this node are half old, half new (calico#2024).
            contradicted.add(ne.service)
            lines.append(f"  but the same port still jumps to {other.chain}: {other.line}")
        by_service.setdefault(ne.service, []).append("\n".join(lines))
    if not by_service:
        count = len(rules.vip_keys())
        return [SPEC.finding("iptables.no-endpoints", Severity.OK, ctx.node,
                             title=f"{where}all {count} Service ports programmed here have "
                                   "endpoints",
                             evidence=f"{where}{count} Service VIP:ports in KUBE-SERVICES/"
                                      "KUBE-NODEPORTS, no 'has no endpoints' rule")]
    out = []
    ordered = sorted(by_service.items(),
                     key=lambda kv: (all("(no local endpoints)" in i for i in kv[1]), kv[0]))
    for service, items in ordered[:NO_ENDPOINTS_FINDINGS_MAX]:
        ns, _, rest = service.partition("/")
        name = rest.partition(":")[0] if rest else service.partition(":")[0]
        # "has no local endpoints" only: externalTrafficPolicy Local with no pod on this node
        # is how that policy works; a warning, unless the Service has no endpoints at all.
        only_local = all("(no local endpoints)" in i for i in items)
        severity = Severity.WARNING if only_local else Severity.ERROR
        title = (f"{where}Service {service} has no local endpoints on this node "
                 "(externalTrafficPolicy: Local)" if only_local
                 else f"{where}Service {service} has no endpoints")
        remediation = SPEC.spec("iptables.no-endpoints").remediation
        if service in contradicted:
            title += " (and a Service chain for the same port: stale kube-proxy rules)"
            remediation = ("kube-proxy's rules on this node contradict each other (a "
                           "no-endpoints REJECT and a Service chain for the same port): "
                           "restart kube-proxy on this node and read its log for sync "
                           "errors. Then, if it persists: " + remediation)
        if rest:
            remediation = remediation.replace("-n NS", f"-n {ns}").replace(
                "service-name=NAME", f"service-name={name}")
        evidence = "\n".join(items[:EVIDENCE_MAX_LINES])
        note = _cut_note(dump)
        out.append(SPEC.finding("iptables.no-endpoints", severity, ctx.node, title=title,
                                evidence=evidence + (f"\n({note})" if note else ""),
                                remediation=remediation))
    rest_items = ordered[NO_ENDPOINTS_FINDINGS_MAX:]
    if rest_items:
        any_error = any(not all("(no local endpoints)" in i for i in items)
                        for _s, items in rest_items)
        out.append(SPEC.finding(
            "iptables.no-endpoints", Severity.ERROR if any_error else Severity.WARNING,
            ctx.node, title=f"{where}{len(rest_items)} more Service ports have no "
                            f"{'' if any_error else 'local '}endpoints",
            evidence="\n".join(service for service, _items in rest_items)))
    return out


def _chains_missing(facts: Facts, ctx: CheckContext) -> list[Finding]:
    kp = facts.kube_proxy
    if kp.running is False or (kp.running and kp.mode not in ("iptables", "unknown")):
        return []  # no kube-proxy, or IPVS/nftables mode: not applicable
    full = [(c, d) for c, d in facts.dumps() if "nat" in d.tables]
    views = [(c, d, facts.kube_proxy_rules(c, d)) for c, d in facts.dumps()]
    traces = any(r.mode == "iptables" or _kube_traces(d) for _c, d, r in views)
    if (kp.running is None or kp.mode == "unknown") and not traces:
        return []  # offline or mode unknown, and nothing from kube-proxy in the rules
    if not full:
        if kp.running:
            return [SPEC.finding("iptables.kube-proxy-chains-missing", Severity.ERROR,
                                 ctx.node, evidence=f"{kp.source}; no nat table in "
                                 + ", ".join(c for c, _ in facts.dumps()))]
        return []
    problems = []
    for command, dump, rules in views:
        if "nat" not in dump.tables:
            continue
        if not rules.services_chain:
            problems.append(f"{command}: nat has no KUBE-SERVICES chain")
            continue
        missing = [f"{command}: nat {hook} has no jump to KUBE-SERVICES"
                   for hook in ("PREROUTING", "OUTPUT") if hook not in rules.hooks]
        if missing:
            problems += missing
            continue
        return [SPEC.finding("iptables.kube-proxy-chains-missing", Severity.OK, ctx.node,
                             title="kube-proxy's KUBE-SERVICES chain is hooked into nat "
                                   "PREROUTING and OUTPUT",
                             evidence="\n".join(rules.hooks.values()))]
    context = kp.source or "kube-proxy traces (KUBE-* chains) in the dump"
    note = "; ".join(n for n in (_cut_note(d) for _c, d in full) if n)
    nat_cut = any(not d.tables["nat"].committed for _c, d in full)
    severity = (Severity.ERROR if kp.running else Severity.INFO if nat_cut
                else Severity.WARNING if note else Severity.ERROR)
    if severity == Severity.INFO:
        return [SPEC.finding("iptables.kube-proxy-chains-missing", severity, ctx.node,
                             title="KUBE-SERVICES not seen, but the nat table was cut: cannot "
                                   "tell whether kube-proxy's chains are missing",
                             evidence="\n".join([context, *problems, f"({note})"]))]
    return [SPEC.finding("iptables.kube-proxy-chains-missing", severity, ctx.node,
                         evidence="\n".join([context, *problems] + ([f"({note})"] if note
                                                                    else [])))]


def _kube_traces(dump: IptablesDump) -> bool:
    nat = dump.tables.get("nat")
    return nat is not None and any(nat.has_chain(c) for c in ("KUBE-MARK-MASQ",
                                                              "KUBE-POSTROUTING"))


def _mixed_backends(facts: Facts, ctx: CheckContext) -> list[Finding]:
    by_backend: dict[str, tuple[str, IptablesDump]] = {}
    for command, dump in facts.dumps():
        backend = ("legacy" if "legacy" in command else "nf_tables" if "nft" in command
                   else dump.backend or "unknown")
        by_backend[backend] = (command, dump)
    warned = [(c, d) for c, d in facts.dumps() if d.legacy_tables_warning]
    if "legacy" in by_backend and "nf_tables" in by_backend:
        counts = {b: d.rule_count() for b, (_c, d) in by_backend.items()}
        if counts["legacy"] and counts["nf_tables"]:
            lines = [f"{c}: {counts[b]} rules in {_summary(d)}"
                     for b, (c, d) in sorted(by_backend.items())]
            both_nat = all(_has_rules(d, "nat") for _c, d in by_backend.values())
            return [SPEC.finding("iptables.mixed-backends",
                                 Severity.ERROR if both_nat else Severity.WARNING, ctx.node,
                                 evidence="\n".join(lines))]
        return [SPEC.finding("iptables.mixed-backends", Severity.OK, ctx.node,
                             title="Rules in one iptables backend only",
                             evidence=", ".join(f"{b}: {n} rules" for b, n in counts.items()))]
    if warned:
        return [SPEC.finding("iptables.mixed-backends", Severity.WARNING, ctx.node,
                             evidence="\n".join(f"{c}: {d.legacy_tables_warning}"
                                                for c, d in warned))]
    return []


def _has_rules(dump: IptablesDump, table: str) -> bool:
    t = dump.tables.get(table)
    return t is not None and any(t.has_rules(c) for c in t.chain_names())


def _summary(dump: IptablesDump) -> str:
    parts = []
    for name, t in dump.tables.items():
        with_rules = [c for c in t.chain_names() if t.has_rules(c)]
        if with_rules:
            shown = ", ".join(with_rules[:4]) + (" ..." if len(with_rules) > 4 else "")
            parts.append(f"{name or '?'} ({shown})")
    return "; ".join(parts) or "no table"


# --- walking a chain for one kind of packet -----------------------------------------------------

@dataclass(frozen=True)
class Packet:
    """The packet a walk asks about: direction is `in` (INPUT, from the underlay), `out`
    (OUTPUT, to the underlay) or `forward` (pod traffic between nodes)."""

    direction: str
    protocol: str = ""  # "" = any (pod traffic)
    dport: int | None = None


@dataclass
class Walk:
    verdict: str = "end"  # accept | drop | end
    rule: IptablesRule | None = None
    maybe_accepts: list[IptablesRule] = field(default_factory=list)
    missing_chains: list[str] = field(default_factory=list)


def classify_match(rule: IptablesRule, packet: Packet) -> str:
    """Does `rule` match `packet`: "yes", "no", or "maybe" (conditions this check cannot
    decide: addresses, marks, ipsets, source ports)."""
    result = "yes"
    for o in rule.options:
        name = o.name
        if name in ("-m", "--match", "--comment"):
            continue
        if name in ("-p", "--protocol"):
            if not packet.protocol:
                result = "maybe"
                continue
            hit = o.value.lower() in (packet.protocol, "all", "0",
                                      {"udp": "17", "tcp": "6"}.get(packet.protocol, ""))
        elif name in ("--dport", "--dports", "--destination-port", "--destination-ports"):
            if packet.dport is None:
                result = "maybe"
                continue
            hit = any(_port_in(p, packet.dport) for v in o.values for p in v.split(","))
        elif name in ("--ctstate", "--state"):
            hit = any(s in ("NEW", "UNTRACKED") for v in o.values for s in v.split(","))
        elif name in ("-i", "--in-interface", "-o", "--out-interface"):
            ours = (name in ("-i", "--in-interface")) == (packet.direction != "out")
            if packet.direction == "forward":
                if o.value.startswith(NON_POD_BRIDGES):
                    hit = False
                else:
                    result = "maybe"
                    continue
            elif not ours:
                result = "maybe"
                continue
            elif o.value.startswith(LOCAL_INTERFACES):
                hit = False
            else:
                result = "maybe"
                continue
        elif name == "--mark" and packet.direction == "forward" and \
                o.value == KUBE_PROXY_MASQ_MARK and rule.target == "ACCEPT":
            hit = False  # kube-proxy's KUBE-FORWARD: Service traffic it marked, not pod traffic
        elif name == "--dst-type" and packet.direction == "in":
            hit = any(v.upper() == "LOCAL" for v in o.values)
        elif name in ("-s", "--source", "-d", "--destination") and \
                o.value in ("0.0.0.0/0", "::/0"):
            hit = True
        else:
            result = "maybe"
            continue
        if o.negated:
            hit = not hit
        if not hit:
            return "no"
    return result


def _port_in(spec: str, port: int) -> bool:
    lo, sep, hi = spec.partition(":")
    try:
        return int(lo or 0) <= port <= int(hi or 65535) if sep else int(lo) == port
    except ValueError:
        return False


def _names_port(rule: IptablesRule, port: int | None) -> bool:
    return port is not None and any(_port_in(p, port) for p in rule.dports())


def walk_chain(dump: IptablesDump, table: str, chain: str, packet: Packet,
               walk: Walk | None = None, depth: int = 0) -> Walk:
    """Follow `packet` through `chain` in rule order, into jumped-to chains (bounded):
    the first rule that certainly accepts or drops it decides. A DROP/REJECT that may match
    counts only when it names the port (a port-specific block is intentional)."""
    walk = walk or Walk()
    chains = dump.chains_named(table, chain)
    if not chains:
        walk.missing_chains.append(chain)
        return walk
    rules = sorted((r for c in chains for r in c.rules), key=lambda r: r.lineno)
    if not rules and not any(c.declared for c in chains):
        walk.missing_chains.append(chain)
    for rule in rules:
        m = classify_match(rule, packet)
        if m == "no":
            continue
        target = rule.target
        if target == "ACCEPT":
            if m == "yes":
                walk.verdict, walk.rule = "accept", rule
                return walk
            walk.maybe_accepts.append(rule)
        elif target in ("DROP", "REJECT"):
            if m == "yes" or _names_port(rule, packet.dport):
                walk.verdict, walk.rule = "drop", rule
                return walk
        elif target == "RETURN":
            if m == "yes":
                return walk
        elif target and depth < WALK_MAX_DEPTH and dump.chains_named(table, target):
            sub = walk_chain(dump, table, target, packet, Walk(
                maybe_accepts=walk.maybe_accepts, missing_chains=walk.missing_chains),
                depth + 1)
            if sub.verdict == "accept" and m != "yes":
                walk.maybe_accepts.append(sub.rule)  # type: ignore[arg-type]
            elif sub.verdict != "end" and (m == "yes" or sub.verdict == "drop" and
                                          _names_port(sub.rule, packet.dport)):
                walk.verdict, walk.rule = sub.verdict, sub.rule
                return walk
            elif rule.goto and m == "yes":
                return walk  # -g: the end of the target chain ends this one too
    return walk


def _rule_evidence(dump: IptablesDump, rule: IptablesRule) -> str:
    return f"{rule.table or '?'}:{rule.lineno}: {rule.line}"


def _forward_drop(dump: IptablesDump, ctx: CheckContext, where: str) -> list[Finding]:
    chains = dump.chains_named("filter", "FORWARD")
    if not chains:
        return []
    policy_chain = next((c for c in chains if c.policy), None)
    walk = walk_chain(dump, "filter", "FORWARD", Packet("forward"))
    note = _cut_note(dump)
    if walk.verdict == "accept" or walk.maybe_accepts:
        accepted = walk.rule or walk.maybe_accepts[0]
        return [SPEC.finding("iptables.forward-drop", Severity.OK, ctx.node,
                             title=f"{where}FORWARD accepts pod traffic",
                             evidence=_rule_evidence(dump, accepted))]
    if walk.verdict == "drop" and walk.rule is not None:
        evidence = [f"{where}pod traffic reaches this rule before anything accepts it:",
                    _rule_evidence(dump, walk.rule)]
    elif policy_chain is not None and policy_chain.policy == "DROP":
        dropped = (f" ({policy_chain.packets} packets already dropped by the policy)"
                   if policy_chain.packets else "")
        evidence = [f"{where}filter:{policy_chain.lineno}: {policy_chain.declaration()}"
                    f"{dropped}", "no rule in FORWARD (or the chains it jumps to) accepts pod "
                    "traffic; at most Docker's/libvirt's bridges, established connections and "
                    "kube-proxy-marked Service traffic are accepted"]
    else:
        return [SPEC.finding("iptables.forward-drop", Severity.OK, ctx.node,
                             title=f"{where}FORWARD policy is "
                                   f"{policy_chain.policy if policy_chain else '?'}",
                             evidence=f"filter FORWARD policy "
                                      f"{policy_chain.policy if policy_chain else 'unknown'}")]
    severity = Severity.ERROR
    if note or walk.missing_chains:
        severity = Severity.WARNING
        if walk.missing_chains:
            evidence.append("chains jumped to but not in the dump: "
                            + ", ".join(sorted(set(walk.missing_chains))[:8]))
        if note:
            evidence.append(f"({note})")
    return [SPEC.finding("iptables.forward-drop", severity, ctx.node,
                         evidence="\n".join(e for e in evidence if e))]


def _overlay_port_blocked(dump: IptablesDump, vxlan_ports: tuple[tuple[str, int], ...],
                          ctx: CheckContext, where: str) -> list[Finding]:
    local = {port: dev for dev, port in vxlan_ports}
    ports = sorted(set(OVERLAY_PORTS) | set(local))
    hooks = [("filter", "INPUT", "in"), ("filter", "OUTPUT", "out"),
             ("raw", "PREROUTING", "in"), ("raw", "OUTPUT", "out")]
    out: list[Finding] = []
    checked = []
    for port in ports:
        for table, chain, direction in hooks:
            if not dump.chains_named(table, chain):
                continue
            checked.append(f"{table} {chain}")
            walk = walk_chain(dump, table, chain, Packet(direction, "udp", port))
            if walk.verdict == "drop" and walk.rule is not None:
                blocker = _rule_evidence(dump, walk.rule)
                explicit = _names_port(walk.rule, port)
            else:
                # Nothing decided: the chain's policy does, unless a rule may have accepted.
                policy = next((c for c in dump.chains_named(table, chain) if c.policy), None)
                if walk.verdict != "end" or walk.maybe_accepts or policy is None \
                        or policy.policy != "DROP":
                    continue
                blocker = f"{table}:{policy.lineno}: {policy.declaration()} (the policy: no " \
                          f"rule accepts UDP {port} before it)"
                explicit = False
            used_here = port in local
            severity = Severity.ERROR if used_here or (not local and port == VXLAN_PORT_LINUX
                                                        and explicit) else Severity.WARNING
            if walk.maybe_accepts and not explicit:
                severity = Severity.WARNING
            whose = (f"the port of the local VXLAN device {local[port]}" if used_here else
                     "a default VXLAN port" + ("" if local else
                                               " (no local VXLAN device known: applies if this"
                                               " node's overlay uses it)"))
            lines = [f"{where}UDP {port} ({whose}) {'in' if direction == 'in' else 'out'}bound "
                     f"is dropped by:", blocker]
            if walk.maybe_accepts:
                lines.append("unless one of these earlier rules accepts it:")
                lines += [_rule_evidence(dump, r) for r in walk.maybe_accepts[:4]]
            note = _cut_note(dump)
            if note:
                lines.append(f"({note})")
            out.append(SPEC.finding(
                "iptables.overlay-port-blocked", severity, ctx.node,
                title=f"{where}{table} {chain} drops UDP {port} (VXLAN): the overlay is "
                      "blocked on this node",
                evidence="\n".join(lines),
                remediation=SPEC.spec("iptables.overlay-port-blocked").remediation.replace(
                    "PORT", str(port))))
    if out or not checked:
        return _dedupe(out)
    return [SPEC.finding("iptables.overlay-port-blocked", Severity.OK, ctx.node,
                         title=f"{where}no DROP/REJECT for UDP "
                               f"{', '.join(map(str, ports))} in INPUT/OUTPUT",
                         evidence="walked " + ", ".join(sorted(set(checked))))]


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in findings:
        if (f.title, f.evidence) not in seen:
            seen.add((f.title, f.evidence))
            out.append(f)
    return out


def summarize(facts: Facts) -> dict[str, object]:
    modes = {facts.kube_proxy_rules(c, d).mode for c, d in facts.dumps()} - {"none"}
    summary: dict[str, object] = {
        "kube_proxy_rules": "/".join(sorted(modes)) or "none",
        "iptables_backends": [f"{c}:{d.backend or '?'}" for c, d in facts.dumps()],
    }
    if facts.kube_proxy.mode == "ipvs":
        return summary  # the ipvs check reports the Service VIPs from the IPVS table
    keys = facts.service_keys()
    summary["service_vips_digest"] = digest_keys(keys)
    summary["service_vips_count"] = len(keys)
    if len(keys) <= SERVICE_VIPS_INLINE_MAX:
        summary["service_vips"] = list(keys)
    return summary
