"""IPVS: what kube-proxy in ipvs mode programmed. Each Service port is a virtual server whose
real servers are the endpoints; a virtual server with none is a Service without endpoints
(connections are refused or hang); a real server with weight 0 gets no new connections
(kube-proxy does that briefly for terminating pods: lasting, it is stale state); without the
`kube-ipvs0` dummy interface holding the ClusterIPs, the node does not accept traffic for them.

Applies only where kube-proxy runs in ipvs mode or the kernel has IPVS loaded
(/proc/net/ip_vs exists). On an iptables-mode node without IPVS this is "not applicable",
never "broken". The table is read from /proc/net/ip_vs (no tool, no exec); `ipvsadm -Ln` is
the fallback when /proc cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.checks.base import CheckContext, CheckSpec, FindingSpec
from agent.checks.kube_components import gather_kube_proxy_mode
from agent.host import Host, ToolMissing
from agent.parsers.ipvsadm import IpvsTable, parse_ipvsadm, parse_proc_ip_vs
from agent.parsers.kube_proxy_rules import digest_keys
from agent.report import Finding, Severity

IPVS_PROC = "net/ip_vs"
IPVS_DUMMY_INTERFACE = "kube-ipvs0"
IPVSADM_TIMEOUT_S = 10.0
#: kube-proxy's default NodePort range: a virtual server on a port in it whose address is not
#: on kube-ipvs0 is a NodePort (programmed on every local address: node-specific).
NODE_PORT_RANGE = (30000, 32767)
EVIDENCE_MAX_LINES = 12
#: One finding per virtual server (NodePorts grouped) up to this many, then one for the rest.
NO_REAL_SERVERS_FINDINGS_MAX = 50

SPEC = CheckSpec(
    name="ipvs",
    findings=(
        FindingSpec(
            id="ipvs.no-real-servers",
            title="IPVS virtual server has no real servers: the Service has no endpoints",
            why="kube-proxy (ipvs mode) keeps a virtual server for every Service port; with no "
                "real server, connections to it are refused or hang.",
            remediation="Find the Service by its ClusterIP/NodePort (kubectl get svc -A | grep "
                        "IP), then kubectl get endpointslices -n NS -l "
                        "kubernetes.io/service-name=NAME: if empty, compare the selector with "
                        "the pods' labels and readiness; if endpoints exist, check targetPort vs "
                        "containerPort, else restart kube-proxy on this node (stale state).",
        ),
        FindingSpec(
            id="ipvs.real-server-weight-zero",
            title="IPVS real server with weight 0: it gets no new connections",
            why="kube-proxy sets weight 0 on endpoints of terminating pods while their "
                "connections drain; a weight-0 server that stays is stale state, and a Service "
                "whose servers are all weight 0 refuses new connections.",
            remediation="If the pod is terminating, wait for it to go; if it persists, check "
                        "the EndpointSlice conditions (ready/serving/terminating) and restart "
                        "kube-proxy on this node.",
        ),
        FindingSpec(
            id="ipvs.dummy-interface-missing",
            title="kube-proxy runs in ipvs mode but the kube-ipvs0 interface is missing",
            why="kube-proxy binds every ClusterIP to the kube-ipvs0 dummy interface so the "
                "kernel accepts packets for them; without it, Service traffic on this node is "
                "dropped.",
            remediation="Restart kube-proxy on this node (it recreates kube-ipvs0) and read its "
                        "log; check nothing (NetworkManager, a cleanup script) deletes dummy "
                        "interfaces.",
        ),
    ),
)


@dataclass(frozen=True)
class Facts:
    applicable: bool
    reason: str  # why it applies or not ("kube-proxy mode ipvs", "IPVS not loaded")
    ipvs_mode: bool = False  # kube-proxy runs in ipvs mode (None-like False when unknown)
    table: IpvsTable | None = None
    source: str = ""  # "/proc/net/ip_vs" or "ipvsadm -Ln"
    error: str = ""
    interfaces: tuple[str, ...] | None = None  # None when not known (offline analysis)
    vip_addresses: frozenset[str] | None = None  # addresses on kube-ipvs0, None if unknown

    def vip_keys(self) -> tuple[str, ...]:
        if self.table is None:
            return ()
        keys = set()
        for vs in self.table.virtual_servers:
            if _is_node_port(vs.address, vs.port, self.vip_addresses):
                keys.add(f"{vs.protocol}/nodeport:{vs.port}")
            else:
                keys.add(vs.key)
        return tuple(sorted(keys))


def _is_node_port(address: str, port: int, vips: frozenset[str] | None) -> bool:
    if vips is not None and address in vips:
        return False
    return NODE_PORT_RANGE[0] <= port <= NODE_PORT_RANGE[1]


def gather(host: Host, ctx: CheckContext) -> Facts:
    mode = ""
    try:
        kp = gather_kube_proxy_mode(host)
        mode = kp.mode if kp.running else ""
    except Exception:  # noqa: BLE001 - the IPVS table still tells
        pass
    loaded = host.proc_exists(IPVS_PROC)
    if mode != "ipvs" and not loaded:
        why = f"kube-proxy mode {mode}" if mode else "kube-proxy not running"
        return Facts(False, f"{why} and IPVS not loaded in the kernel ({'/proc/' + IPVS_PROC} "
                            "absent)")
    reason = "kube-proxy runs in ipvs mode" if mode == "ipvs" else "IPVS is loaded"
    try:
        interfaces = tuple(host.list_sys_dir("class/net"))
    except OSError:
        interfaces = None
    table, source, error = None, "", ""
    try:
        table, source = parse_proc_ip_vs(host.read_proc(IPVS_PROC)), f"/proc/{IPVS_PROC}"
    except OSError as exc:
        error = f"/proc/{IPVS_PROC}: {exc.strerror or exc}"
        try:
            result = host.run(["ipvsadm", "-Ln"], timeout=IPVSADM_TIMEOUT_S)
            if result.ok:
                table, source, error = parse_ipvsadm(result.stdout), "ipvsadm -Ln", ""
            else:
                error += f"; ipvsadm -Ln exited {result.returncode}: {result.stderr.strip()}"
        except (ToolMissing, TimeoutError) as exc2:
            error += f"; {exc2}"
    return Facts(True, reason, mode == "ipvs", table, source, error, interfaces,
                 _kube_ipvs0_addresses(host) if interfaces and IPVS_DUMMY_INTERFACE in
                 interfaces else None)


def _kube_ipvs0_addresses(host: Host) -> frozenset[str] | None:
    try:
        ipr = host.netlink()
        index = ipr.link_lookup(ifname=IPVS_DUMMY_INTERFACE)
        if not index:
            return None
        return frozenset(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index[0]))
    except Exception:  # noqa: BLE001 - without it NodePorts are told by port range
        return None


def evaluate(facts: Facts, ctx: CheckContext) -> tuple[Finding, ...]:
    if not facts.applicable:
        return (SPEC.finding("ipvs.no-real-servers", Severity.OK, ctx.node,
                             title="IPVS not in use on this node: not applicable",
                             evidence=facts.reason),)
    out: list[Finding] = []
    if facts.ipvs_mode and facts.interfaces is not None:
        if IPVS_DUMMY_INTERFACE not in facts.interfaces:
            out.append(SPEC.finding("ipvs.dummy-interface-missing", Severity.ERROR, ctx.node,
                                    evidence=f"{facts.reason}; /sys/class/net has "
                                             f"{', '.join(facts.interfaces[:20])}, no "
                                             f"{IPVS_DUMMY_INTERFACE}"))
        else:
            out.append(SPEC.finding("ipvs.dummy-interface-missing", Severity.OK, ctx.node,
                                    title=f"{IPVS_DUMMY_INTERFACE} present",
                                    evidence=f"/sys/class/net/{IPVS_DUMMY_INTERFACE}"))
    if facts.table is None:
        out.append(SPEC.finding("ipvs.no-real-servers", Severity.INFO, ctx.node,
                                title=f"IPVS table could not be read: {facts.error}",
                                evidence=facts.error,
                                remediation="Run the agent privileged with hostNetwork (it "
                                            "reads /proc/net/ip_vs) or install ipvsadm."))
        return tuple(out)
    out.extend(evaluate_table(facts.table, ctx, facts.source, facts.vip_addresses))
    return tuple(out)


def evaluate_table(table: IpvsTable, ctx: CheckContext, source: str = "ipvsadm -Ln",
                   vip_addresses: frozenset[str] | None = None) -> list[Finding]:
    """The table's own verdicts (also what `netdiag analyze` runs on a pasted table)."""
    out: list[Finding] = []
    empty = [vs for vs in table.virtual_servers if vs.real_server_count == 0]
    # A NodePort is programmed on every local address: one finding per port, every line as
    # evidence, instead of one per address.
    groups: dict[str, list] = {}
    for vs in empty:
        if _is_node_port(vs.address, vs.port, vip_addresses):
            groups.setdefault(f"{vs.protocol.upper()} NodePort {vs.port}", []).append(vs)
        else:
            groups.setdefault(f"{vs.protocol.upper()} {vs.key.split('/', 1)[1]}", []).append(vs)
    excerpt = "" if table.has_header else (" (an excerpt without the header: a grep can hide "
                                           "the real-server lines)")
    ordered = sorted(groups.items())
    if len(ordered) > NO_REAL_SERVERS_FINDINGS_MAX:
        rest = ordered[NO_REAL_SERVERS_FINDINGS_MAX:]
        ordered = ordered[:NO_REAL_SERVERS_FINDINGS_MAX]
        out.append(SPEC.finding("ipvs.no-real-servers",
                                Severity.ERROR if table.has_header else Severity.WARNING,
                                ctx.node, title=f"{len(rest)} more IPVS virtual servers have no "
                                                "real servers",
                                evidence="\n".join(label for label, _v in rest)))
    for label, vss in ordered:
        lines = [f"{source}:{vs.lineno}: {vs.line.strip()}" for vs in vss[:EVIDENCE_MAX_LINES]]
        lines.append("(no '->' real-server line follows)" + excerpt)
        out.append(SPEC.finding("ipvs.no-real-servers",
                                Severity.ERROR if table.has_header else Severity.WARNING,
                                ctx.node, title=f"IPVS virtual server {label} has no real "
                                                "servers", evidence="\n".join(lines)))
    if not groups:
        out.append(SPEC.finding("ipvs.no-real-servers", Severity.OK, ctx.node,
                                title=f"every IPVS virtual server has real servers "
                                      f"({len(table.virtual_servers)} virtual servers)",
                                evidence=f"{source}: {len(table.virtual_servers)} virtual "
                                         "servers"))
    zero_found = False
    for vs in table.virtual_servers if table.weight_zero_seen else ():
        zero = vs.weight_zero()
        if not zero:
            continue
        zero_found = True
        all_zero = len(zero) == vs.real_server_count
        lines = [f"{source}:{vs.lineno}: {vs.line.strip()}"]
        lines += [f"{source}:{r.lineno}: {r.line.strip()}" for r in zero[:EVIDENCE_MAX_LINES]]
        out.append(SPEC.finding(
            "ipvs.real-server-weight-zero", Severity.ERROR if all_zero else Severity.WARNING,
            ctx.node,
            title=(f"IPVS virtual server {vs.key}: every real server has weight 0 (no new "
                   "connections)" if all_zero else
                   f"IPVS virtual server {vs.key}: {len(zero)} real server(s) with weight 0"),
            evidence="\n".join(lines)))
    if not zero_found and table.layout == "list":
        out.append(SPEC.finding("ipvs.real-server-weight-zero", Severity.OK, ctx.node,
                                title="no IPVS real server has weight 0",
                                evidence=f"{source}: weights read"))
    return out


def summarize(facts: Facts) -> dict[str, object]:
    if not facts.applicable or facts.table is None or not facts.ipvs_mode:
        return {}  # the iptables check reports the Service VIPs on non-IPVS nodes
    keys = facts.vip_keys()
    return {"service_vips_digest": digest_keys(keys), "service_vips_count": len(keys),
            "kube_proxy_rules": "ipvs"}
