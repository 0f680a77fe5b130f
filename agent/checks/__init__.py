"""The explicit registry of node checks. Order is the order they run and are listed in.
No directory scanning: a check exists when it is listed here (validated at start-up and in a
test)."""

from __future__ import annotations

from agent.checks import (bridge_nf, cni, conntrack, dns, hairpin, ip_forward, iptables,
                          ipvs, kube_proxy, rp_filter, vxlan)

ALL_CHECKS = (
    ip_forward,
    rp_filter,
    bridge_nf,
    hairpin,
    conntrack,
    dns,
    cni,
    vxlan,
    kube_proxy,
    iptables,
    ipvs,
)
