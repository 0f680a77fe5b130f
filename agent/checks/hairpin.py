"""Hairpin: a pod that connects to its own Service may be load-balanced back to itself. The
packet then has to leave the pod's bridge port and come back in through the same port, which a
Linux bridge only does when that port has `hairpin_mode` 1 (or the bridge is promiscuous, as
kubelet's old `promiscuous-bridge` mode made cbr0). With hairpin off the pod cannot reach
itself through its Service: a classic intermittent failure (only when the Service picks the
caller). Applies to bridge CNIs (the bridge plugin, flannel's cni0, kubenet's cbr0); routed
CNIs (Calico, Cilium) have no pod bridge and are not applicable. The bridge plugin's
`hairpinMode` (off by default) sets it per port when the pod is created; kubelet's
`--hairpin-mode`/`hairpinMode` says what kubelet expects.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.checks.base import CheckContext, CheckSpec, FindingSpec
from agent.checks.kube_components import gather_kubelet
from agent.host import Host
from agent.parsers.cni import CniConfigError, choose_cni_config, parse_cni_config
from agent.report import Finding, Severity

#: Bridges that are pod bridges by name alone (flannel/bridge plugin default, kubenet).
POD_BRIDGE_NAMES = ("cni0", "cbr0")
IFF_PROMISC = 0x100
CNI_CONF_DIR = "/etc/cni/net.d"
#: kubelet's default --hairpin-mode.
KUBELET_DEFAULT_HAIRPIN = "promiscuous-bridge"
EVIDENCE_MAX_PORTS = 20

SPEC = CheckSpec(
    name="hairpin",
    findings=(
        FindingSpec(
            id="bridge.hairpin-off",
            title="Hairpin is off on pod bridge ports: pods cannot reach themselves via "
                  "their Service",
            why="A pod load-balanced to itself through its Service needs its bridge port to "
                "send the packet back out the port it came in on (hairpin_mode 1) or a "
                "promiscuous bridge; otherwise the connection times out.",
            remediation="Enable hairpinMode in the CNI config (bridge plugin, or flannel's "
                        "delegate: \"hairpinMode\": true) and recreate the affected pods; "
                        "right away: echo 1 > /sys/class/net/<bridge>/brif/<port>/hairpin_mode.",
        ),
    ),
)


@dataclass(frozen=True)
class Bridge:
    name: str
    flags: int | None  # /sys/class/net/<name>/flags; None when unreadable
    ports: tuple[tuple[str, int | None], ...]  # (port, hairpin_mode); None: unreadable

    @property
    def promisc(self) -> bool:
        return self.flags is not None and bool(self.flags & IFF_PROMISC)


@dataclass(frozen=True)
class CniHairpin:
    path: str  # the config file the runtime uses
    bridges: tuple[str, ...]
    hairpin_mode: bool | None  # None: not set (the bridge plugin's default is off)
    error: str = ""


@dataclass(frozen=True)
class Facts:
    bridges: tuple[Bridge, ...]
    cni: CniHairpin | None  # None: no CNI config found
    kubelet_running: bool
    kubelet_hairpin: str | None
    kubelet_hairpin_source: str

    def pod_bridges(self) -> tuple[Bridge, ...]:
        names = set(POD_BRIDGE_NAMES) | set(self.cni.bridges if self.cni else ())
        return tuple(b for b in self.bridges if b.name in names)


def gather(host: Host, ctx: CheckContext) -> Facts:
    bridges = []
    for name in host.list_sys_dir("class/net"):
        try:
            ports = host.list_sys_dir(f"class/net/{name}/brif")
        except OSError:
            continue  # not a bridge
        bridges.append(Bridge(name, _read_int(host, f"class/net/{name}/flags", 16),
                              tuple((p, _read_int(host, f"class/net/{name}/brif/{p}/hairpin_mode"))
                                    for p in ports)))
    kubelet = gather_kubelet(host)
    mode, source = kubelet.setting("hairpin-mode", "hairpinMode")
    return Facts(tuple(bridges), _gather_cni(host), kubelet.running or bool(kubelet.config_path),
                 mode, source)


def _read_int(host: Host, rel: str, base: int = 10) -> int | None:
    try:
        return int(host.read_sys(rel).strip(), base)
    except (OSError, ValueError):
        return None


def _gather_cni(host: Host) -> CniHairpin | None:
    try:
        chosen = choose_cni_config(host.list_host_dir(CNI_CONF_DIR))
    except OSError:
        return None
    if chosen is None:
        return None
    path = f"{CNI_CONF_DIR}/{chosen}"
    try:
        config = parse_cni_config(host.read_host_file(path), path)
    except (OSError, CniConfigError) as exc:
        return CniHairpin(path, (), None, str(exc))
    modes = [p.hairpin_mode for p in config.plugins if p.bridge]
    mode = True if True in modes else (False if False in modes else None)
    return CniHairpin(path, config.bridge_names(), mode)


def evaluate(facts: Facts, ctx: CheckContext) -> tuple[Finding, ...]:
    pod_bridges = facts.pod_bridges()
    if not pod_bridges:
        present = ", ".join(b.name for b in facts.bridges) or "none"
        return (SPEC.finding("bridge.hairpin-off", Severity.OK, ctx.node,
                             title="No pod bridge on this node: hairpin not applicable",
                             evidence=f"Linux bridges: {present}; pod bridges are "
                                      f"{', '.join(POD_BRIDGE_NAMES)} or the CNI config's"),)
    off: list[str] = []
    notes: list[str] = []
    for b in pod_bridges:
        flags = f"/sys/class/net/{b.name}/flags = {b.flags:#x}" if b.flags is not None \
            else f"/sys/class/net/{b.name}/flags unreadable"
        if b.promisc:
            notes.append(f"{flags} (PROMISC: hairpin traffic is reflected by the bridge)")
            continue
        bad = [p for p, mode in b.ports if mode == 0]
        off.extend(f"/sys/class/net/{b.name}/brif/{p}/hairpin_mode = 0" for p in bad)
        notes.append(f"{flags} (not PROMISC); {b.name}: {len(b.ports)} port(s), "
                     f"{len(bad)} with hairpin off")
    notes.extend(_context(facts))
    if not off:
        return (SPEC.finding("bridge.hairpin-off", Severity.OK, ctx.node,
                             title="Hairpin is on for every pod bridge port",
                             evidence="; ".join(notes)),)
    shown = off[:EVIDENCE_MAX_PORTS]
    if len(off) > EVIDENCE_MAX_PORTS:
        shown.append(f"... and {len(off) - EVIDENCE_MAX_PORTS} more ports")
    return (SPEC.finding("bridge.hairpin-off", Severity.WARNING, ctx.node,
                         title=f"Hairpin is off on {len(off)} pod bridge port"
                               f"{'s' if len(off) != 1 else ''}: those pods cannot reach "
                               "themselves via their Service",
                         evidence="; ".join(shown + notes),
                         remediation=_remediation(facts)),)


def _context(facts: Facts) -> list[str]:
    lines = []
    if facts.kubelet_hairpin is not None:
        lines.append(f"kubelet hairpin mode {facts.kubelet_hairpin} "
                     f"({facts.kubelet_hairpin_source})")
    elif facts.kubelet_running:
        lines.append(f"kubelet hairpin mode not set (default {KUBELET_DEFAULT_HAIRPIN})")
    if facts.cni is None:
        lines.append(f"no CNI config in {CNI_CONF_DIR}")
    elif facts.cni.error:
        lines.append(f"CNI config {facts.cni.path} unreadable: {facts.cni.error}")
    else:
        state = {True: "true", False: "false", None: "not set (the bridge plugin's default: off)"}
        lines.append(f"CNI config {facts.cni.path}: hairpinMode {state[facts.cni.hairpin_mode]}"
                     f" for bridge(s) {', '.join(facts.cni.bridges) or 'none'}")
    return lines


def _remediation(facts: Facts) -> str:
    parts = []
    if facts.kubelet_hairpin == "none":
        parts.append("kubelet runs with hairpin mode none: set --hairpin-mode/hairpinMode to "
                     "hairpin-veth (or remove it).")
    if facts.cni is not None and not facts.cni.error:
        if facts.cni.hairpin_mode:
            parts.append(f"{facts.cni.path} already enables hairpinMode, so these ports "
                         "predate that setting or the plugin failed to set it: recreate the "
                         "pods behind them.")
        else:
            parts.append(f"Set \"hairpinMode\": true in {facts.cni.path} (for flannel inside "
                         "\"delegate\") and recreate the pods behind these ports.")
    parts.append("Right away: echo 1 > /sys/class/net/<bridge>/brif/<port>/hairpin_mode.")
    return " ".join(parts)


def summarize(facts: Facts) -> dict[str, object]:
    pod = facts.pod_bridges()
    return {"hairpin": {
        "pod_bridge": pod[0].name if pod else None,
        "ports": sum(len(b.ports) for b in pod),
        "hairpin_off_ports": sum(1 for b in pod if not b.promisc
                                 for _, m in b.ports if m == 0),
        "promisc": any(b.promisc for b in pod),
    }}
