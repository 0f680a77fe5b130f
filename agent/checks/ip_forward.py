"""IP forwarding: with `net.ipv4.ip_forward = 0` the node drops every packet it should route,
so pods on it cannot reach other nodes, Services or the outside world (every CNI, every
kube-proxy mode). Kubelet and most CNIs set it at start; a sysctl.conf reload or a hardening
profile can turn it off behind their back.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.checks.base import CheckContext, CheckSpec, FindingSpec, Skipped
from agent.host import Host
from agent.parsers.sysctl import parse_sysctl_value
from agent.report import Finding, Severity

IP_FORWARD_PATH = "sys/net/ipv4/ip_forward"

SPEC = CheckSpec(
    name="ip-forward",
    findings=(
        FindingSpec(
            id="sysctl.ip-forward-off",
            title="IPv4 forwarding is off: this node routes no pod traffic",
            why="Pod traffic leaving the node (and Service DNAT to other nodes) is forwarded "
                "by the kernel; with ip_forward=0 it is dropped silently.",
            remediation="sysctl -w net.ipv4.ip_forward=1, persist it in /etc/sysctl.d/, and "
                        "find what turned it off (a hardening profile, a sysctl.conf reload).",
        ),
    ),
)


@dataclass(frozen=True)
class Facts:
    ip_forward: int | None  # None: the file held something other than an integer
    raw: str


def gather(host: Host, ctx: CheckContext) -> Facts:
    try:
        raw = host.read_proc(IP_FORWARD_PATH)
    except FileNotFoundError as exc:
        raise Skipped("/proc/sys/net/ipv4/ip_forward not present (no IPv4 stack?)") from exc
    return Facts(parse_sysctl_value(raw), raw.strip())


def evaluate(facts: Facts, ctx: CheckContext) -> tuple[Finding, ...]:
    evidence = f"/proc/{IP_FORWARD_PATH} = {facts.raw!s}"
    if facts.ip_forward is None:
        return (SPEC.finding("sysctl.ip-forward-off", Severity.INFO, ctx.node,
                             title=f"ip_forward holds an unexpected value {facts.raw!r}",
                             evidence=evidence),)
    if facts.ip_forward == 0:
        return (SPEC.finding("sysctl.ip-forward-off", Severity.ERROR, ctx.node,
                             evidence=evidence),)
    return (SPEC.finding("sysctl.ip-forward-off", Severity.OK, ctx.node,
                         title="IPv4 forwarding is on", evidence=evidence),)


def summarize(facts: Facts) -> dict[str, object]:
    return {"ip_forward": facts.ip_forward}
