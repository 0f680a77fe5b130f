"""kube-proxy: it programs every Service (ClusterIP, NodePort) on the node, in iptables, IPVS
or nftables mode. When it is not running, Services keep working from stale rules until the
next change, then new Services and endpoint moves are missed on this node (the "only this node
cannot reach the new Service" incident); when its healthz fails, it is running but not
syncing (a crash loop, an iptables-restore error), with the same effect, and cloud load
balancers that health-check 10256 take the node out of rotation.

Not a fault: Cilium with kube-proxy replacement (`--kube-proxy-replacement=true|strict`, on
its command line or in its config directory) does the Services itself; kube-proxy's absence
is then `info`. k3s runs kube-proxy inside its own process (no `kube-proxy` process).

The mode comes from `kube_components.classify_kube_proxy_mode` (shared with the checks that
depend on it), most authoritative first: its metrics port's `/proxyMode` (what it actually
runs), its `--config` file's `mode`, its `--proxy-mode` flag, else the built-in default
(iptables on Linux). Its endpoints are probed only while it runs (1 s timeout each),
at the bind addresses its config or flags give (default 127.0.0.1:10249 and :10256).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.checks.base import CheckContext, CheckSpec, FindingSpec
from agent.checks.kube_components import (EndpointAnswer, KubeProxyFacts,
                                          classify_kube_proxy_mode, endpoint_url,
                                          gather_kube_proxy, query_endpoint)
from agent.host import Host
from agent.report import Finding, Severity

KUBE_PROXY_HEALTHZ_PORT = 10256

SPEC = CheckSpec(
    name="kube-proxy",
    findings=(
        FindingSpec(
            id="kube-proxy.not-running",
            title="kube-proxy is not running on this node",
            why="kube-proxy programs Services on each node; without it new Services, new "
                "endpoints and endpoint moves are not programmed here, so Service traffic from "
                "this node goes to stale or no backends.",
            remediation="kubectl -n kube-system get pods -o wide | grep kube-proxy for this "
                        "node; read its logs (a crash loop: missing conntrack binary, iptables "
                        "errors, a bad config); for a binary install: systemctl status "
                        "kube-proxy.",
        ),
        FindingSpec(
            id="kube-proxy.replaced-by-cilium",
            title="kube-proxy is absent because Cilium replaces it (expected)",
            why="Cilium with kube-proxy replacement implements Services in eBPF; kube-proxy is "
                "intentionally not deployed. Not a fault.",
            remediation="Nothing to do. (If kube-proxy should run, disable Cilium's "
                        "kube-proxy-replacement first.)",
        ),
        FindingSpec(
            id="kube-proxy.healthz-failing",
            title="kube-proxy runs but its healthz fails",
            why="kube-proxy answers 200 on :10256/healthz only when its last rule sync is "
                "recent; a failure means it is not programming Services (sync errors, lost "
                "API server connection), and cloud load balancers drop the node.",
            remediation="Read kube-proxy's logs on this node (iptables-restore / ipvs errors, "
                        "API server connectivity) and restart its pod once the cause is fixed.",
        ),
    ),
)


@dataclass(frozen=True)
class Facts:
    kube_proxy: KubeProxyFacts
    healthz: EndpointAnswer | None = None  # asked only while kube-proxy runs


def gather(host: Host, ctx: CheckContext) -> Facts:
    kp = gather_kube_proxy(host)
    if not kp.running:
        return Facts(kp)
    url = endpoint_url(kp.bind_address("healthz-bind-address", "healthzBindAddress"),
                       KUBE_PROXY_HEALTHZ_PORT, "/healthz")
    return Facts(kp, query_endpoint(host, url))


def evaluate(facts: Facts, ctx: CheckContext) -> tuple[Finding, ...]:
    kp = facts.kube_proxy
    verdict = classify_kube_proxy_mode(kp)
    if not kp.running:
        if verdict.mode == "replaced-by-cilium":
            return (SPEC.finding("kube-proxy.replaced-by-cilium", Severity.INFO, ctx.node,
                                 evidence=f"no kube-proxy process; cilium-agent (pid "
                                          f"{kp.cilium.pid if kp.cilium else '?'}) "
                                          f"runs with {kp.cilium_kpr_source}"),)
        cilium_note = ""
        if kp.cilium is not None:
            cilium_note = (f"; cilium-agent runs with {kp.cilium_kpr_source}" if
                           kp.cilium_kpr else
                           "; cilium-agent runs but no kube-proxy-replacement setting was "
                           "found (flag or --config-dir)")
        return (SPEC.finding("kube-proxy.not-running", Severity.WARNING, ctx.node,
                             evidence=f"no process named kube-proxy (nor k3s){cilium_note}"),)
    assert kp.process is not None
    who = (f"{kp.embedded_in} (pid {kp.process.pid}, embeds kube-proxy)"
           if kp.embedded_in else f"kube-proxy pid {kp.process.pid}")
    findings = []
    health = facts.healthz
    if health is not None and health.status != 200:
        findings.append(SPEC.finding("kube-proxy.healthz-failing", Severity.WARNING, ctx.node,
                                     evidence=f"{who}: {health.text()}"))
    if not findings:
        findings.append(SPEC.finding(
            "kube-proxy.not-running", Severity.OK, ctx.node,
            title=f"kube-proxy runs in {verdict.mode} mode",
            evidence=f"{who}; mode from {verdict.source}"
                     + (f"; {health.text()}" if health else "")))
    return tuple(findings)


def summarize(facts: Facts) -> dict[str, object]:
    return {"kube_proxy_mode": classify_kube_proxy_mode(facts.kube_proxy).mode}
