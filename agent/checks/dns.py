"""DNS on the node: kubelet hands pods with `dnsPolicy: Default` (CoreDNS itself among them)
the host's resolv.conf. When its nameserver is a loopback address (systemd-resolved's
127.0.0.53, a local dnsmasq), CoreDNS forwards to itself and crash-loops ("Loop ... detected")
unless kubelet's `resolvConf` points at a file with real upstreams
(/run/systemd/resolve/resolv.conf). With NodeLocal DNSCache, pods query a link-local address
(169.254.20.10 by default) on every node; if that address is configured but nothing listens
on port 53 (the node-local-dns pod died or never started), every lookup from the node's pods
fails. Applies to every CNI.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from agent.checks.base import CheckContext, CheckSpec, FindingSpec
from agent.checks.kube_components import gather_kubelet
from agent.host import Host
from agent.parsers.proc_net import (TCP_LISTEN, Socket, parse_fib_trie_local_addresses,
                                    parse_proc_net_sockets)
from agent.parsers.resolv_conf import ResolvConf, parse_resolv_conf
from agent.report import Finding, Severity

HOST_RESOLV_CONF = "/etc/resolv.conf"
#: The addresses NodeLocal DNSCache binds by default (kubernetes docs; kubespray uses .25.10).
NODELOCAL_DNS_ADDRESSES = ("169.254.20.10", "169.254.25.10")
DNS_PORT = 53

SPEC = CheckSpec(
    name="dns",
    findings=(
        FindingSpec(
            id="dns.resolv-conf-loopback",
            title="The host resolv.conf pods inherit names a loopback nameserver",
            why="Pods with dnsPolicy Default, CoreDNS included, get the host's resolv.conf; "
                "a loopback nameserver there makes CoreDNS forward to itself (forward loop, "
                "CrashLoopBackOff) and other pods query their own loopback.",
            remediation="Point kubelet at a resolv.conf with real upstreams: resolvConf: "
                        "/run/systemd/resolve/resolv.conf in the kubelet config (or "
                        "--resolv-conf), restart kubelet and recreate the CoreDNS pods.",
        ),
        FindingSpec(
            id="dns.nodelocaldns-not-listening",
            title="NodeLocal DNSCache address is set up but nothing answers on port 53",
            why="Pods on this node send every DNS query to the node-local-dns address; with "
                "no listener (the node-local-dns pod is down) every lookup times out.",
            remediation="Check the node-local-dns DaemonSet pod on this node (kubectl -n "
                        "kube-system get pods -l k8s-app=node-local-dns -o wide, its logs); "
                        "it must run with hostNetwork and bind the address on port 53.",
        ),
    ),
)


@dataclass(frozen=True)
class ResolvFile:
    path: str
    conf: ResolvConf | None  # None: not read
    error: str = ""


@dataclass(frozen=True)
class Facts:
    host_resolv: ResolvFile
    kubelet_present: bool
    kubelet_resolv_conf: str | None  # kubelet's resolvConf / --resolv-conf; None: not set
    kubelet_resolv_source: str
    kubelet_resolv: ResolvFile | None  # that file, when it is not the host's
    cluster_dns: tuple[str, ...]
    local_addresses: frozenset[str] | None  # None: /proc/net/fib_trie not read
    udp: tuple[Socket, ...]
    tcp: tuple[Socket, ...]


def _read_resolv(host: Host, path: str) -> ResolvFile:
    try:
        return ResolvFile(path, parse_resolv_conf(host.read_host_file(path)))
    except OSError as exc:
        return ResolvFile(path, None, exc.strerror or str(exc))


def gather(host: Host, ctx: CheckContext) -> Facts:
    kubelet = gather_kubelet(host)
    resolv_conf, source = kubelet.setting("resolv-conf", "resolvConf")
    kubelet_resolv = None
    if resolv_conf and resolv_conf != HOST_RESOLV_CONF:
        kubelet_resolv = _read_resolv(host, resolv_conf)
    try:
        local: frozenset[str] | None = frozenset(
            parse_fib_trie_local_addresses(host.read_proc("net/fib_trie")))
    except OSError:
        local = None
    sockets = {}
    for proto in ("udp", "tcp"):
        try:
            sockets[proto] = tuple(parse_proc_net_sockets(host.read_proc(f"net/{proto}")))
        except OSError:
            sockets[proto] = ()
    return Facts(_read_resolv(host, HOST_RESOLV_CONF),
                 kubelet.running or kubelet.config_path is not None, resolv_conf, source,
                 kubelet_resolv, kubelet.cluster_dns, local, sockets["udp"], sockets["tcp"])


def evaluate(facts: Facts, ctx: CheckContext) -> tuple[Finding, ...]:
    return (_loopback(facts, ctx), _nodelocal(facts, ctx))


def _loopbacks(f: ResolvFile) -> list[str]:
    return [f"{f.path}:{n.lineno}: {n.line.strip()}" for n in (f.conf.nameservers if f.conf
                                                               else ()) if n.is_loopback]


def _loopback(facts: Facts, ctx: CheckContext) -> Finding:
    host = facts.host_resolv
    if host.conf is None:
        return SPEC.finding("dns.resolv-conf-loopback", Severity.INFO, ctx.node,
                            title=f"{host.path} could not be read",
                            evidence=f"{host.path}: {host.error}")
    bad = _loopbacks(host)
    servers = ", ".join(n.address for n in host.conf.nameservers) or "none"
    if not bad:
        return SPEC.finding("dns.resolv-conf-loopback", Severity.OK, ctx.node,
                            title="Host resolv.conf names no loopback nameserver",
                            evidence=f"{host.path} nameservers: {servers}")
    kubelet_ev = (f"kubelet resolvConf {facts.kubelet_resolv_conf!r} "
                  f"({facts.kubelet_resolv_source})")
    if facts.kubelet_resolv_conf == "":
        return SPEC.finding("dns.resolv-conf-loopback", Severity.OK, ctx.node,
                            title="Host resolv.conf is loopback, but kubelet gives pods none",
                            evidence="; ".join(bad + [kubelet_ev]))
    if facts.kubelet_resolv is not None:
        other = facts.kubelet_resolv
        if other.conf is None:
            return SPEC.finding("dns.resolv-conf-loopback", Severity.WARNING, ctx.node,
                                title=f"kubelet's resolv.conf {other.path} could not be read",
                                evidence="; ".join(bad + [kubelet_ev,
                                                          f"{other.path}: {other.error}"]))
        other_bad = _loopbacks(other)
        if not other_bad and other.conf.nameservers:
            upstream = ", ".join(n.address for n in other.conf.nameservers)
            return SPEC.finding("dns.resolv-conf-loopback", Severity.OK, ctx.node,
                                title="Host resolv.conf is loopback, but kubelet's resolvConf "
                                      "has real upstreams",
                                evidence="; ".join(bad + [kubelet_ev,
                                                          f"{other.path} nameservers: "
                                                          f"{upstream}"]))
        return SPEC.finding("dns.resolv-conf-loopback", Severity.WARNING, ctx.node,
                            title=f"kubelet's resolv.conf {other.path} names a loopback "
                                  "nameserver (or none)",
                            evidence="; ".join(other_bad + bad + [kubelet_ev]))
    if not facts.kubelet_present:
        return SPEC.finding("dns.resolv-conf-loopback", Severity.INFO, ctx.node,
                            title="Host resolv.conf names a loopback nameserver (kubelet not "
                                  "found here: matters only on a Kubernetes node)",
                            evidence="; ".join(bad + ["no kubelet process and no "
                                                      "/var/lib/kubelet/config.yaml"]))
    default = (f"kubelet resolvConf {facts.kubelet_resolv_conf!r} ({facts.kubelet_resolv_source})"
               if facts.kubelet_resolv_conf else
               f"kubelet resolvConf not set (default {HOST_RESOLV_CONF})")
    return SPEC.finding("dns.resolv-conf-loopback", Severity.WARNING, ctx.node,
                        evidence="; ".join(bad + [default]))


def _is_link_local(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_link_local
    except ValueError:
        return False


def _listening(sockets: tuple[Socket, ...], address: str, tcp: bool) -> list[Socket]:
    return [s for s in sockets if s.local_port == DNS_PORT
            and s.local_ip in (address, "0.0.0.0") and (not tcp or s.state == TCP_LISTEN)]


def _nodelocal(facts: Facts, ctx: CheckContext) -> Finding:
    candidates = list(NODELOCAL_DNS_ADDRESSES)
    kubelet_local = [a for a in facts.cluster_dns if _is_link_local(a)]
    candidates += [a for a in kubelet_local if a not in candidates]
    if facts.local_addresses is None:
        return SPEC.finding("dns.nodelocaldns-not-listening", Severity.INFO, ctx.node,
                            title="Local addresses not known: node-local-dns not checked",
                            evidence="/proc/net/fib_trie could not be read")
    present = [a for a in candidates if a in facts.local_addresses]
    problems = []
    for a in kubelet_local:
        if a not in facts.local_addresses:
            problems.append(f"kubelet clusterDNS {a} is link-local (node-local-dns) but no "
                            "local interface holds it (/proc/net/fib_trie)")
    ok = []
    for a in present:
        udp = _listening(facts.udp, a, tcp=False)
        tcp = _listening(facts.tcp, a, tcp=True)
        where = f"{a} is a local address (/proc/net/fib_trie)"
        if not udp:
            problems.append(f"{where} but /proc/net/udp has no socket on {a}:53 or 0.0.0.0:53"
                            + ("" if tcp else "; /proc/net/tcp has no listener either"))
        elif not tcp:
            problems.append(f"{where}; UDP {udp[0].local_ip}:53 bound but /proc/net/tcp has no"
                            f" listener on {a}:53 (large answers fail)")
        else:
            ok.append(f"{where}; UDP {udp[0].local_ip}:53 and TCP {tcp[0].local_ip}:53 "
                      "listening")
    if problems:
        return SPEC.finding("dns.nodelocaldns-not-listening", Severity.WARNING, ctx.node,
                            evidence="; ".join(problems + ok))
    if not present:
        return SPEC.finding("dns.nodelocaldns-not-listening", Severity.OK, ctx.node,
                            title="NodeLocal DNSCache not in use on this node",
                            evidence=f"none of {', '.join(candidates)} is a local address")
    return SPEC.finding("dns.nodelocaldns-not-listening", Severity.OK, ctx.node,
                        title="NodeLocal DNSCache is listening", evidence="; ".join(ok))


def summarize(facts: Facts) -> dict[str, object]:
    return {"dns_host_resolv_loopback": bool(_loopbacks(facts.host_resolv))}
