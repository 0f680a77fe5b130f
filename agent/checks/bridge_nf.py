"""bridge-nf-call-iptables: on a bridge CNI (cni0, cbr0, docker0: pods on one Linux bridge),
a pod's reply to another pod on the same bridge is bridged, not routed, so without
`br_netfilter` and `net.bridge.bridge-nf-call-iptables = 1` it skips iptables and kube-proxy's
Service DNAT is never undone: the client sees a reply from the pod IP instead of the Service IP
and drops it. Applies when a Linux bridge exists and kube-proxy runs in iptables mode (kubeadm's
preflight requires it); with no bridge or no kube-proxy it is not applicable, never a failure.
kube-proxy's mode is the shared verdict (`kube_components.classify_kube_proxy_mode`); when it
is unknown (an unreadable --config), iptables, the default, is assumed. The file is absent
when the br_netfilter module is not loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.checks.base import CheckContext, CheckSpec, FindingSpec
from agent.checks.kube_components import KubeProxyMode, gather_kube_proxy_mode
from agent.host import Host
from agent.parsers.sysctl import parse_sysctl_value
from agent.report import Finding, Severity

BRIDGE_NF_PATH = "sys/net/bridge/bridge-nf-call-iptables"

SPEC = CheckSpec(
    name="bridge-nf",
    findings=(
        FindingSpec(
            id="sysctl.bridge-nf-call-iptables-off",
            title="bridge-nf-call-iptables is off on a bridge CNI node with kube-proxy iptables",
            why="Traffic between pods on the same bridge bypasses iptables, so Service DNAT "
                "replies are not un-NATed and same-node pod-to-Service connections fail.",
            remediation="modprobe br_netfilter; sysctl -w net.bridge.bridge-nf-call-iptables=1;"
                        " persist both (/etc/modules-load.d/k8s.conf with br_netfilter, "
                        "/etc/sysctl.d/k8s.conf with net.bridge.bridge-nf-call-iptables = 1).",
        ),
    ),
)


@dataclass(frozen=True)
class Facts:
    value: int | None  # None: the file is absent (br_netfilter not loaded) or unreadable
    raw: str  # the file's text, or why it was not read
    bridges: tuple[str, ...]  # Linux bridges: /sys/class/net/<name>/bridge exists
    kube_proxy: KubeProxyMode


def gather(host: Host, ctx: CheckContext) -> Facts:
    try:
        raw = host.read_proc(BRIDGE_NF_PATH).strip()
        value = parse_sysctl_value(raw)
    except FileNotFoundError:
        raw, value = "absent (br_netfilter module not loaded)", None
    bridges = []
    for name in host.list_sys_dir("class/net"):
        try:
            host.list_sys_dir(f"class/net/{name}/bridge")
        except OSError:
            continue
        bridges.append(name)
    return Facts(value, raw, tuple(bridges), gather_kube_proxy_mode(host))


def evaluate(facts: Facts, ctx: CheckContext) -> tuple[Finding, ...]:
    value_ev = f"/proc/{BRIDGE_NF_PATH} = {facts.raw}"
    if facts.value is not None and facts.value != 0:
        return (SPEC.finding("sysctl.bridge-nf-call-iptables-off", Severity.OK, ctx.node,
                             title="bridge-nf-call-iptables is on", evidence=value_ev),)
    if not facts.bridges:
        return (SPEC.finding("sysctl.bridge-nf-call-iptables-off", Severity.OK, ctx.node,
                             title="bridge-nf-call-iptables off, not applicable: no Linux "
                                   "bridge on this node",
                             evidence=f"{value_ev}; no /sys/class/net/*/bridge"),)
    bridges_ev = "Linux bridge(s): " + ", ".join(facts.bridges)
    kp = facts.kube_proxy
    if not kp.running:
        return (SPEC.finding("sysctl.bridge-nf-call-iptables-off", Severity.OK, ctx.node,
                             title="bridge-nf-call-iptables off, not applicable: kube-proxy "
                                   "does not run here",
                             evidence=f"{value_ev}; {bridges_ev}; no kube-proxy process"),)
    evidence = f"{value_ev}; {bridges_ev}; kube-proxy mode {kp.mode} ({kp.source})"
    if kp.mode == "unknown":
        evidence += "; assumed iptables, the Linux default"
    elif kp.mode != "iptables":
        return (SPEC.finding("sysctl.bridge-nf-call-iptables-off", Severity.INFO, ctx.node,
                             title=f"bridge-nf-call-iptables off with kube-proxy in {kp.mode} "
                                   "mode (checked for iptables mode only)",
                             evidence=evidence),)
    return (SPEC.finding("sysctl.bridge-nf-call-iptables-off", Severity.WARNING, ctx.node,
                         evidence=evidence),)


def summarize(facts: Facts) -> dict[str, object]:
    return {"bridge_nf_call_iptables": facts.value}
