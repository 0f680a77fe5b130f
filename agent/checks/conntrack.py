"""Connection tracking: kube-proxy (iptables and IPVS modes) NATs Services through conntrack.
It shells out to the `conntrack` binary to flush stale UDP entries; without it on the node's
PATH, UDP Services (DNS above all) keep sending to deleted pods after an endpoint change. The
`nf_conntrack` module must be loaded (`/proc/sys/net/netfilter/nf_conntrack_max`); a table
near `nf_conntrack_max` drops new connections ("table full, dropping packet"); and the per-CPU
counters in `/proc/net/stat/nf_conntrack` (read directly, no binary needed) count insert
races (`insert_failed`: the famous DNS 5 s timeouts) and drops since boot. Applies to every
node; the binary matters most where kube-proxy runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.checks.base import CheckContext, CheckSpec, FindingSpec
from agent.checks.kube_components import (KubeProxyMode, cilium_agent_running,
                                          gather_kube_proxy_mode)
from agent.host import HOST_BIN_DIRS, Host
from agent.parsers.conntrack_proc import ConntrackStat, ConntrackStatError, parse_conntrack_stat
from agent.parsers.sysctl import parse_sysctl_value
from agent.report import Finding, Severity

MAX_PATHS = ("sys/net/netfilter/nf_conntrack_max", "sys/net/nf_conntrack_max")
COUNT_PATH = "sys/net/netfilter/nf_conntrack_count"
STAT_PATH = "net/stat/nf_conntrack"
NEAR_FULL_RATIO = 0.80
FULL_RATIO = 0.95
#: kube-proxy modes that call the conntrack binary.
CONNTRACK_PROXY_MODES = ("iptables", "ipvs")
DROP_COLUMNS = ("drop", "early_drop")

SPEC = CheckSpec(
    name="conntrack",
    findings=(
        FindingSpec(
            id="conntrack.binary-missing",
            title="The conntrack binary is not on the node's PATH",
            why="kube-proxy runs `conntrack -D` to clear stale UDP entries when endpoints "
                "change; without it UDP Services (DNS) keep hitting deleted pods.",
            remediation="Install the conntrack tools on the node (apt-get install conntrack / "
                        "yum install conntrack-tools) and restart kube-proxy.",
        ),
        FindingSpec(
            id="conntrack.module-missing",
            title="The nf_conntrack module is not loaded",
            why="Without nf_conntrack there is no NAT: kube-proxy's Service rules and pod "
                "masquerading cannot work.",
            remediation="modprobe nf_conntrack and persist it in /etc/modules-load.d/; check "
                        "why kube-proxy (which loads it) is not running.",
        ),
        FindingSpec(
            id="conntrack.table-near-full",
            title="The conntrack table is nearly full",
            why="When nf_conntrack_count reaches nf_conntrack_max the kernel drops new "
                "connections ('nf_conntrack: table full, dropping packet').",
            remediation="Raise net.netfilter.nf_conntrack_max (kube-proxy --conntrack-max-per-"
                        "core / conntrack.maxPerCore) and find what opens so many flows "
                        "(`conntrack -L | sort | uniq -c`).",
        ),
        FindingSpec(
            id="conntrack.insert-failed",
            title="conntrack insert_failed is non-zero: NAT races drop packets",
            why="insert_failed counts packets dropped when two flows raced for the same NAT "
                "tuple (the classic 5 s DNS timeout with parallel A/AAAA lookups over UDP).",
            remediation="Use NodeLocal DNSCache or `options single-request-reopen` in pods, and "
                        "kube-proxy/iptables with --random-fully masquerading; watch whether "
                        "the counter keeps rising (it counts since boot).",
        ),
        FindingSpec(
            id="conntrack.drops",
            title="conntrack dropped packets (drop / early_drop non-zero)",
            why="drop counts packets conntrack refused (table full, helper failure); "
                "early_drop counts entries evicted to make room: the table overflowed.",
            remediation="Raise net.netfilter.nf_conntrack_max and hashsize, shorten idle "
                        "timeouts, and watch whether the counters keep rising (since boot).",
        ),
    ),
)


@dataclass(frozen=True)
class Facts:
    binary: str | None  # host-side path of `conntrack`, None when not found
    kube_proxy: KubeProxyMode
    max_path: str  # the /proc path read for nf_conntrack_max, "" when absent
    max: int | None
    count: int | None
    stat: ConntrackStat | None
    stat_error: str  # why /proc/net/stat/nf_conntrack was not read, "" when it was
    cilium_running: bool = False  # Cilium's agent runs (it may replace kube-proxy)


def gather(host: Host, ctx: CheckContext) -> Facts:
    max_path, max_value = "", None
    for rel in MAX_PATHS:
        try:
            max_value = parse_sysctl_value(host.read_proc(rel))
            max_path = f"/proc/{rel}"
            break
        except FileNotFoundError:
            continue
    try:
        count = parse_sysctl_value(host.read_proc(COUNT_PATH))
    except FileNotFoundError:
        count = None
    stat, stat_error = None, ""
    try:
        stat = parse_conntrack_stat(host.read_proc(STAT_PATH))
    except FileNotFoundError:
        stat_error = f"/proc/{STAT_PATH} absent"
    except ConntrackStatError as exc:
        stat_error = f"/proc/{STAT_PATH}: {exc}"
    return Facts(host.find_host_binary("conntrack"), gather_kube_proxy_mode(host), max_path,
                 max_value, count, stat, stat_error, cilium_agent_running(host))


def evaluate(facts: Facts, ctx: CheckContext) -> tuple[Finding, ...]:
    findings = [_binary(facts, ctx)]
    if not facts.max_path and facts.stat is None:
        severity = Severity.WARNING if facts.kube_proxy.running else Severity.INFO
        findings.append(SPEC.finding(
            "conntrack.module-missing", severity, ctx.node,
            evidence=f"/proc/{MAX_PATHS[0]} absent; {facts.stat_error or 'no stat table'}"
                     + ("" if facts.kube_proxy.running else "; kube-proxy does not run here")))
        return tuple(findings)
    findings.append(SPEC.finding("conntrack.module-missing", Severity.OK, ctx.node,
                                 title="nf_conntrack is loaded",
                                 evidence=f"{facts.max_path or '/proc/' + STAT_PATH} present"))
    findings.append(_table(facts, ctx))
    if facts.stat is not None:
        findings.extend(evaluate_counters(facts.stat, ctx))
    return tuple(findings)


def _binary(facts: Facts, ctx: CheckContext) -> Finding:
    kp = facts.kube_proxy
    kp_ev = f"kube-proxy mode {kp.mode} ({kp.source})" if kp.running else \
        "kube-proxy does not run here"
    if facts.binary:
        return SPEC.finding("conntrack.binary-missing", Severity.OK, ctx.node,
                            title="conntrack binary present", evidence=f"found {facts.binary}")
    where = f"no executable conntrack in the host's {':'.join(HOST_BIN_DIRS)}"
    if not kp.running and facts.cilium_running:
        return SPEC.finding("conntrack.binary-missing", Severity.INFO, ctx.node,
                            title="conntrack binary absent; not needed while Cilium replaces "
                                  "kube-proxy",
                            evidence=f"{where}; {kp_ev}; cilium-agent runs")
    severity = Severity.ERROR if kp.running and kp.mode in CONNTRACK_PROXY_MODES \
        else Severity.WARNING
    return SPEC.finding("conntrack.binary-missing", severity, ctx.node,
                        evidence=f"{where}; {kp_ev}")


def _table(facts: Facts, ctx: CheckContext) -> Finding:
    if facts.max is None or facts.count is None or facts.max <= 0:
        return SPEC.finding("conntrack.table-near-full", Severity.INFO, ctx.node,
                            title="conntrack table fill not known",
                            evidence=f"nf_conntrack_max = {facts.max}, "
                                     f"/proc/{COUNT_PATH} = {facts.count}")
    ratio = facts.count / facts.max
    evidence = (f"/proc/{COUNT_PATH} = {facts.count}, {facts.max_path} = {facts.max} "
                f"({ratio:.0%})")
    if ratio >= FULL_RATIO:
        return SPEC.finding("conntrack.table-near-full", Severity.ERROR, ctx.node,
                            title=f"The conntrack table is {ratio:.0%} full: new connections "
                                  "are about to be dropped", evidence=evidence)
    if ratio >= NEAR_FULL_RATIO:
        return SPEC.finding("conntrack.table-near-full", Severity.WARNING, ctx.node,
                            title=f"The conntrack table is {ratio:.0%} full", evidence=evidence)
    return SPEC.finding("conntrack.table-near-full", Severity.OK, ctx.node,
                        title=f"conntrack table {ratio:.0%} full", evidence=evidence)


def _counter_evidence(stat: ConntrackStat, columns: tuple[str, ...]) -> str:
    parts = []
    for c in columns:
        total = stat.total(c)
        if total is None:
            parts.append(f"{c}: no such column on this kernel")
            continue
        per_cpu = ", ".join(f"cpu{cpu} = {v}" for cpu, v in stat.nonzero_cpus(c).items())
        parts.append(f"{c} = {total}" + (f" ({per_cpu})" if per_cpu else ""))
    return f"/proc/{STAT_PATH} since boot: " + "; ".join(parts)


def evaluate_counters(stat: ConntrackStat, ctx: CheckContext) -> list[Finding]:
    """insert_failed and drop/early_drop since boot (also what `netdiag analyze` runs on a
    pasted `conntrack -S`)."""
    found = []
    failed = stat.total("insert_failed") or 0
    ev = _counter_evidence(stat, ("insert_failed",))
    found.append(SPEC.finding("conntrack.insert-failed",
                              Severity.WARNING if failed else Severity.OK, ctx.node,
                              title="" if failed else "conntrack insert_failed is 0",
                              evidence=ev))
    drops = sum(stat.total(c) or 0 for c in DROP_COLUMNS)
    ev = _counter_evidence(stat, DROP_COLUMNS)
    found.append(SPEC.finding("conntrack.drops", Severity.WARNING if drops else Severity.OK,
                              ctx.node, title="" if drops else "conntrack drop/early_drop are 0",
                              evidence=ev))
    return found


def summarize(facts: Facts) -> dict[str, object]:
    return {"conntrack_binary": facts.binary is not None}
