"""Faults real clusters have, as real kernel state in the lab.

Fabric faults are nftables `bridge` rules in the fabric namespace, on `fabric0`, matching the
node's fabric port: they drop frames before the node sees them, like a cloud security group or
a switch ACL. (tc classifiers do not work on this kernel; nft bridge rules do.) Node faults act
inside the node namespace. Every fault is one table / one setting, so `clear` undoes exactly
what `inject` did, and deleting the namespace removes it for good.

`lab.inject(name, "node2")`; for `partition` the target is a group of nodes
(`lab.inject("partition", ["node1", "node2"])`: those nodes vs the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from tests.lab.netns import LabError, sh

if TYPE_CHECKING:
    from tests.lab.cluster import Lab, LabNode

#: Frames longer than this (L3 bytes) are dropped by `fabric-mtu-blackhole-in`: a VXLAN frame of
#: a full-size 1450-byte overlay packet is 1500 bytes on the wire, a small ping ~130.
MTU_BLACKHOLE_BYTES = 1400
#: The VXLAN port / VNI offset a mismatched node uses (8472 -> 8473, VNI 1 -> 2).
MISMATCH_OFFSET = 1
NFT_CHAIN = "type filter hook forward priority 0; policy accept;"


@dataclass(frozen=True)
class FaultSpec:
    name: str
    description: str
    scope: str                                   # "fabric" or "node"
    inject: Callable[["Lab", list[str]], None]
    clear: Callable[["Lab", list[str]], None]
    group: bool = False                          # target is a group of nodes (partition)


# ----- fabric faults: one nft bridge table per (fault, target) ------------------------------
def _table(fault: str, nodes: list[str]) -> str:
    return "nd_" + fault.replace("-", "_") + "_" + "_".join(nodes)


def _nft_fabric(lab: "Lab", script: str) -> None:
    lab.fabric.exec(["nft", "-f", "-"], input=script)


def _fabric_rule(fault: str, rule: Callable[["LabNode"], str]):
    def inject(lab: "Lab", nodes: list[str]) -> None:
        n = lab.node(nodes[0])
        _nft_fabric(lab, f"table bridge {_table(fault, nodes)} {{\n"
                         f"  chain forward {{ {NFT_CHAIN}\n    {rule(n)}\n  }}\n}}\n")

    def clear(lab: "Lab", nodes: list[str]) -> None:
        _nft_fabric(lab, f"delete table bridge {_table(fault, nodes)}\n")

    return inject, clear


def _partition_inject(lab: "Lab", nodes: list[str]) -> None:
    group_a = [lab.node(x).fabric_port for x in nodes]
    group_b = [n.fabric_port for n in lab.nodes if n.name not in nodes]
    if not group_a or not group_b:
        raise LabError("partition needs nodes on both sides")
    a = "{ " + ", ".join(f'"{p}"' for p in group_a) + " }"
    b = "{ " + ", ".join(f'"{p}"' for p in group_b) + " }"
    _nft_fabric(lab, f"table bridge {_table('partition', nodes)} {{\n"
                     f"  chain forward {{ {NFT_CHAIN}\n"
                     f"    iifname {a} oifname {b} drop\n"
                     f"    iifname {b} oifname {a} drop\n  }}\n}}\n")


def _partition_clear(lab: "Lab", nodes: list[str]) -> None:
    _nft_fabric(lab, f"delete table bridge {_table('partition', nodes)}\n")


# ----- node faults ---------------------------------------------------------------------------
def _sysctl(lab: "Lab", node: str, values: dict[str, str]) -> None:
    from tests.lab.cluster import sysctl_argv
    lab.exec(node, sysctl_argv(values))


def _rp_keys(n: "LabNode") -> list[str]:
    return ["net/ipv4/conf/all/rp_filter", f"net/ipv4/conf/{n.underlay_dev}/rp_filter",
            f"net/ipv4/conf/{n.vxlan_dev}/rp_filter"]


def _rp_strict(lab: "Lab", nodes: list[str]) -> None:
    _sysctl(lab, nodes[0], {k: "1" for k in _rp_keys(lab.node(nodes[0]))})


def _rp_restore(lab: "Lab", nodes: list[str]) -> None:
    keys = _rp_keys(lab.node(nodes[0]))
    _sysctl(lab, nodes[0], {keys[0]: "0", keys[1]: "2", keys[2]: "2"})


def _hairpin(state: str):
    def apply(lab: "Lab", nodes: list[str]) -> None:
        n = lab.node(nodes[0])
        sh(["ip", "-n", n.ns_name, "-batch", "-"],
           input="".join(f"link set veth{k} type bridge_slave hairpin {state}\n"
                         for k in range(1, len(n.pods) + 1)))
    return apply


def _ip_forward(value: str):
    def apply(lab: "Lab", nodes: list[str]) -> None:
        _sysctl(lab, nodes[0], {"net/ipv4/ip_forward": value})
    return apply


def _iptables(*args: str):
    def apply(lab: "Lab", nodes: list[str]) -> None:
        lab.exec(nodes[0], ["iptables", "-w", "5", *args])
    return apply


def _fw_8472(action: str):
    def apply(lab: "Lab", nodes: list[str]) -> None:
        port = str(lab.node(nodes[0]).vxlan_port)
        lab.exec(nodes[0], ["iptables", "-w", "5", action, "INPUT", "-p", "udp",
                            "--dport", port, "-j", "DROP"])
    return apply


def _vxlan_down(lab: "Lab", nodes: list[str]) -> None:
    n = lab.node(nodes[0])
    sh(["ip", "-n", n.ns_name, "link", "set", n.vxlan_dev, "down"])


def _vxlan_up(lab: "Lab", nodes: list[str]) -> None:
    lab.restore_overlay_routes(nodes[0])


def _port_mismatch(lab: "Lab", nodes: list[str]) -> None:
    n = lab.node(nodes[0])
    lab.rebuild_overlay(n.name, port=n.vxlan_port + MISMATCH_OFFSET)


def _vni_mismatch(lab: "Lab", nodes: list[str]) -> None:
    n = lab.node(nodes[0])
    if n.flavour.external:
        raise LabError(f"{n.name} is a collect-metadata ({n.flavour.name}) device: it has no "
                       "VNI of its own to mismatch")
    lab.rebuild_overlay(n.name, vni=n.vni + MISMATCH_OFFSET)


def _rebuild_healthy(lab: "Lab", nodes: list[str]) -> None:
    lab.rebuild_overlay(nodes[0])


def _port_of(n: "LabNode") -> int:
    return n.vxlan_port


_SPECS: list[FaultSpec] = []


def _fabric(name: str, description: str, rule: Callable[["LabNode"], str]) -> None:
    inject, clear = _fabric_rule(name, rule)
    _SPECS.append(FaultSpec(name, description, "fabric", inject, clear))


_fabric("fabric-drop-udp-8472-in",
        "fabric (security group) drops VXLAN UDP (the node's port, 8472 for flannel) INTO the "
        "node: peers' overlay traffic to it vanishes; TCP and other UDP pass",
        lambda n: f'oifname "{n.fabric_port}" udp dport {_port_of(n)} drop')
_fabric("fabric-drop-udp-in",
        "fabric drops ALL UDP into the node (the classic security group without a UDP rule): "
        "overlay and UDP control probes fail, TCP passes",
        lambda n: f'oifname "{n.fabric_port}" meta l4proto udp drop')
_fabric("fabric-drop-udp-8472-out",
        "fabric drops VXLAN UDP leaving the node: its overlay traffic to every peer vanishes",
        lambda n: f'iifname "{n.fabric_port}" udp dport {_port_of(n)} drop')
_fabric("fabric-mtu-blackhole-in",
        f"fabric drops frames longer than {MTU_BLACKHOLE_BYTES} bytes into the node (an "
        "underlay with a smaller MTU that sends no ICMP): small packets pass, full-size "
        "overlay packets vanish",
        lambda n: f'oifname "{n.fabric_port}" meta length > {MTU_BLACKHOLE_BYTES} drop')
_SPECS += [
    FaultSpec("partition",
              "fabric drops every frame between the listed nodes and the rest (two groups "
              "cannot reach each other; each group still works inside)",
              "fabric", _partition_inject, _partition_clear, group=True),
    FaultSpec("host-firewall-drop-8472",
              "iptables INPUT drops UDP to the node's VXLAN port inside the node (host "
              "firewall): packets reach the node (a capture sees them) but are never decapsulated",
              "node", _fw_8472("-I"), _fw_8472("-D")),
    FaultSpec("rp-filter-strict",
              "rp_filter=1 on all, eth0 and the VXLAN device: a pod on another node reaching "
              "this node's underlay IP arrives on eth0 but is routed back over the VXLAN "
              "device (no masquerade), so strict reverse-path filtering drops it; "
              "pod-to-pod traffic (symmetric) still flows",
              "node", _rp_strict, _rp_restore),
    FaultSpec("hairpin-off",
              "hairpin_mode=0 on the node's pod veths in cni0: a pod reaching itself through a "
              "Service VIP (Lab.add_service: DNAT back to the same pod, bridged back out the "
              "port it came in on by br_netfilter) gets no answer; other traffic flows",
              "node", _hairpin("off"), _hairpin("on")),
    FaultSpec("ip-forward-off",
              "net.ipv4.ip_forward=0 in the node: it no longer routes between cni0 and the "
              "overlay, so its pods reach nothing off-node (and nothing reaches them)",
              "node", _ip_forward("0"), _ip_forward("1")),
    FaultSpec("forward-drop",
              "iptables FORWARD policy DROP in the node (Docker's default): pod traffic through "
              "the node is dropped, the node's own traffic passes",
              "node", _iptables("-P", "FORWARD", "DROP"), _iptables("-P", "FORWARD", "ACCEPT")),
    FaultSpec("vxlan-down",
              "the node's VXLAN device is set down (its routes go with it); clear brings it up "
              "and restores routes, neighbours and FDB",
              "node", _vxlan_down, _vxlan_up),
    FaultSpec("vxlan-port-mismatch",
              f"the node's VXLAN device is re-created on port +{MISMATCH_OFFSET} (8473): peers' "
              "8472 traffic is not heard and it sends to a port nobody listens on",
              "node", _port_mismatch, _rebuild_healthy),
    FaultSpec("vni-mismatch",
              f"the node's VXLAN device is re-created with VNI +{MISMATCH_OFFSET}: frames "
              "arrive on the right port but are dropped for the wrong VNI, both ways",
              "node", _vni_mismatch, _rebuild_healthy),
]

FAULT_SPECS: dict[str, FaultSpec] = {s.name: s for s in _SPECS}
#: name -> one-line description (what the CLI and README list).
FAULTS: dict[str, str] = {s.name: s.description for s in _SPECS}


def _targets(lab: "Lab", spec: FaultSpec, target: str | Iterable[str]) -> list[str]:
    nodes = [target] if isinstance(target, str) else list(target)
    for x in nodes:
        lab.node(x)   # raises a clear error for an unknown node
    if not nodes:
        raise LabError(f"{spec.name}: no target node")
    if not spec.group and len(nodes) != 1:
        raise LabError(f"{spec.name} applies to one node, got {nodes}")
    return sorted(nodes) if spec.group else nodes


def _spec(name: str) -> FaultSpec:
    try:
        return FAULT_SPECS[name]
    except KeyError:
        raise LabError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}") from None


def inject(lab: "Lab", name: str, target: str | Iterable[str]) -> None:
    spec = _spec(name)
    nodes = _targets(lab, spec, target)
    key = (name, ",".join(nodes))
    if key in lab.active_faults:
        raise LabError(f"{name} is already injected on {key[1]}")
    spec.inject(lab, nodes)
    lab.active_faults[key] = spec


def clear(lab: "Lab", name: str, target: str | Iterable[str]) -> None:
    spec = _spec(name)
    nodes = _targets(lab, spec, target)
    spec.clear(lab, nodes)
    lab.active_faults.pop((name, ",".join(nodes)), None)
