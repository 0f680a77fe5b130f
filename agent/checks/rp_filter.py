"""Reverse-path filtering: with `rp_filter = 1` (strict) the kernel drops a packet when the
route back to its source leaves through another interface than the one it came in on. On the
overlay and CNI interfaces (flannel.1, vxlan.calico, cilium_*, lxc*, cali*, cni0, the VXLAN
parent) that breaks pod traffic silently: Cilium's lxc* devices have no route of their own, so
every packet entering them fails the test; Cilium therefore needs `all` at 0. The effective
value of an interface is max(all, iface); 2 (loose) is harmless. A `rp_filter = 1` persisted in
sysctl.conf or sysctl.d comes back at the next reboot or `sysctl --system`, even after a fix.
Applies to every CNI; the verdict is an error when Cilium runs or when the main routing table
has no route out of the strict interface (the drop is then certain).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.checks.base import CheckContext, CheckSpec, FindingSpec
from agent.checks.kube_components import cilium_agent_running
from agent.host import Host
from agent.parsers.proc_net import Route, lookup_route, parse_proc_net_route
from agent.parsers.sysctl import SysctlSetting, parse_sysctl_conf, parse_sysctl_value
from agent.report import Finding, Severity

RP_FILTER_STRICT = 1
RP_FILTER_LOOSE = 2
#: Interfaces that carry pod or overlay traffic, by name (prefix match).
OVERLAY_NAME_PREFIXES = ("flannel", "vxlan.calico", "cilium_", "lxc", "cali", "cni0", "cbr0")
#: One interface per pod: counted in the summary, not listed (names differ on every node).
PER_POD_PREFIXES = ("lxc", "cali")
#: Where systemd-sysctl / `sysctl --system` read persisted settings, in precedence order: a
#: file name in an earlier directory masks the same name in a later one.
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d",
               "/lib/sysctl.d")
SYSCTL_CONF = "/etc/sysctl.conf"
EVIDENCE_MAX_LINES = 20

SPEC = CheckSpec(
    name="rp-filter",
    findings=(
        FindingSpec(
            id="sysctl.rp-filter-strict",
            title="Strict rp_filter on overlay/CNI interfaces: pod traffic may be dropped",
            why="With rp_filter=1 the kernel drops packets whose reverse route leaves through "
                "another interface; overlay and pod interfaces routinely see such packets "
                "(Cilium's lxc* devices always do).",
            remediation="Set the interface (and `all`, which wins by max) to 0 or 2: "
                        "sysctl -w net.ipv4.conf.all.rp_filter=0 (or 2) and "
                        "net.ipv4.conf.<iface>.rp_filter=0; persist it in /etc/sysctl.d/ and "
                        "remove the setting that made it strict.",
        ),
        FindingSpec(
            id="sysctl.rp-filter-persisted",
            title="rp_filter = 1 is persisted in sysctl configuration",
            why="A strict rp_filter in sysctl.conf or sysctl.d is re-applied at every boot "
                "and `sysctl --system`, undoing a live fix and breaking overlay traffic again.",
            remediation="Change the line to 0 (Cilium) or 2 (loose) or delete it, then run "
                        "`sysctl --system`; check config management does not put it back.",
        ),
    ),
)


@dataclass(frozen=True)
class Interface:
    name: str
    devtype: str  # DEVTYPE from /sys/class/net/<name>/uevent: vxlan, bridge, ...; "" if none
    lowers: tuple[str, ...]  # /sys/class/net/<name>/lower_*: a VXLAN device's parent


@dataclass(frozen=True)
class Facts:
    values: tuple[tuple[str, int | None], ...]  # ("all", 0), ("default", 1), ("eth0", 2) ...
    interfaces: tuple[Interface, ...]
    routes: tuple[Route, ...] | None  # None: /proc/net/route could not be read
    cilium_running: bool
    persisted: tuple[SysctlSetting, ...]  # the last word on each rp_filter key, in file order
    files_read: tuple[str, ...]
    #: (VXLAN device, remote underlay IP) from its FDB (netlink); None when not read
    vxlan_peers: tuple[tuple[str, str], ...] | None = None
    vxlan_peers_error: str = ""

    def value(self, name: str) -> int | None:
        return dict(self.values).get(name)


def gather(host: Host, ctx: CheckContext) -> Facts:
    names = [n for n in host.list_sys_dir("class/net")]
    interfaces = tuple(_read_interface(host, n) for n in names)
    values = []
    for name in ("all", "default", *names):
        try:
            values.append((name, parse_sysctl_value(
                host.read_proc(f"sys/net/ipv4/conf/{name}/rp_filter"))))
        except OSError:
            continue
    try:
        routes: tuple[Route, ...] | None = tuple(parse_proc_net_route(host.read_proc("net/route")))
    except OSError:
        routes = None
    cilium = cilium_agent_running(host) or any(n.startswith("cilium_") for n in names)
    persisted, files = _read_persisted(host)
    peers, peers_error = _read_vxlan_peers(host, interfaces)
    return Facts(tuple(values), interfaces, routes, cilium, persisted, files, peers, peers_error)


def _read_vxlan_peers(host: Host, interfaces: tuple[Interface, ...],
                      ) -> tuple[tuple[tuple[str, str], ...] | None, str]:
    """The remote underlay addresses in each VXLAN device's FDB (bridge fdb ... dst IP)."""
    vxlans = [i.name for i in interfaces if i.devtype == "vxlan"]
    if not vxlans:
        return (), ""
    by_index = {}
    for name in vxlans:
        try:
            by_index[int(host.read_sys(f"class/net/{name}/ifindex").strip())] = name
        except (OSError, ValueError):
            continue
    try:
        import socket

        entries = host.netlink().get_neighbours(family=socket.AF_BRIDGE)
    except Exception as exc:  # noqa: BLE001 - netlink unavailable: say so, keep the rest
        return None, f"VXLAN FDB not read ({type(exc).__name__}: {exc})"
    peers = []
    for e in entries:
        name, dst = by_index.get(e.get("ifindex")), e.get_attr("NDA_DST")
        if name and dst and (name, dst) not in peers:
            peers.append((name, dst))
    return tuple(peers), ""


def _read_interface(host: Host, name: str) -> Interface:
    devtype = ""
    try:
        for line in host.read_sys(f"class/net/{name}/uevent").splitlines():
            if line.startswith("DEVTYPE="):
                devtype = line.partition("=")[2].strip()
    except OSError:
        pass
    try:
        lowers = tuple(e[len("lower_"):] for e in host.list_sys_dir(f"class/net/{name}")
                       if e.startswith("lower_"))
    except OSError:
        lowers = ()
    return Interface(name, devtype, lowers)


def _read_persisted(host: Host) -> tuple[tuple[SysctlSetting, ...], tuple[str, ...]]:
    """Persisted rp_filter settings, applied in systemd-sysctl order (by file name across the
    directories, /etc masking /run masking /usr/lib), then /etc/sysctl.conf; the last setting of
    each key wins."""
    chosen: dict[str, str] = {}
    for d in SYSCTL_DIRS:
        try:
            entries = host.list_host_dir(d)
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(".conf") and entry not in chosen:
                chosen[entry] = f"{d}/{entry}"
    paths = [chosen[k] for k in sorted(chosen)] + [SYSCTL_CONF]
    effective: dict[str, SysctlSetting] = {}
    read: list[str] = []
    texts: set[str] = set()
    for path in paths:
        try:
            text = host.read_host_file(path)
        except OSError:
            continue
        if text in texts:  # /etc/sysctl.d/99-sysctl.conf is a symlink to /etc/sysctl.conf
            continue
        texts.add(text)
        read.append(path)
        for s in parse_sysctl_conf(text, path):
            if s.key.startswith("net.ipv4.conf.") and s.key.endswith(".rp_filter"):
                effective.pop(s.key, None)
                effective[s.key] = s
    return tuple(effective.values()), tuple(read)


def classify_overlay_interfaces(facts: Facts) -> dict[str, str]:
    """Overlay/CNI interface name -> why it counts as one (by name, VXLAN type, parent)."""
    found: dict[str, str] = {}
    default_iface = next((r.iface for r in facts.routes or () if r.is_default), "")
    present = {i.name for i in facts.interfaces}
    for i in facts.interfaces:
        if i.devtype == "vxlan":
            found[i.name] = "VXLAN device"
            parents = [p for p in i.lowers if p in present]
            if not parents and default_iface:
                parents = [default_iface]
            for p in parents:
                found.setdefault(p, f"parent of VXLAN {i.name}")
        elif i.name.startswith(OVERLAY_NAME_PREFIXES):
            found.setdefault(i.name, "overlay/CNI interface")
    return found


def evaluate(facts: Facts, ctx: CheckContext) -> tuple[Finding, ...]:
    return (_evaluate_live(facts, ctx), _evaluate_persisted(facts, ctx))


def reverse_path_mismatches(facts: Facts, parent: str) -> list[str]:
    """VXLAN peers whose packets arrive on `parent` (the device is bound to it with `dev`)
    while the main table routes the peer out of another interface (or not at all): a strict
    rp_filter on `parent` drops all their encapsulated traffic."""
    found = []
    bound = {i.name for i in facts.interfaces if i.devtype == "vxlan" and parent in i.lowers}
    for vxlan, peer in facts.vxlan_peers or ():
        if vxlan not in bound:
            continue
        route = lookup_route(facts.routes or (), peer)
        if route is None:
            found.append(f"no route back to VXLAN peer {peer} ({vxlan})")
        elif route.iface != parent:
            found.append(f"VXLAN peer {peer} ({vxlan} on {parent}) is routed out of "
                         f"{route.iface} ({route.destination}/{route.prefix_len})")
    return found


def _evaluate_live(facts: Facts, ctx: CheckContext) -> Finding:
    all_value = facts.value("all")
    overlay = classify_overlay_interfaces(facts)
    routed_ifaces = {r.iface for r in facts.routes or ()}
    strict: list[str] = []
    certain: list[str] = []
    for name, why in overlay.items():
        own = facts.value(name)
        if own is None:
            continue
        effective = max(own, all_value or 0)
        if effective != RP_FILTER_STRICT:
            continue
        line = (f"/proc/sys/net/ipv4/conf/{name}/rp_filter = {own} "
                f"(all = {all_value}, effective {effective}; {why})")
        if facts.routes is not None and name not in routed_ifaces:
            certain.append(name)
            line += ("; /proc/net/route has no route out of it: the reverse path of every "
                     "packet it receives leaves through another interface")
        elif facts.routes is not None:
            mismatches = reverse_path_mismatches(facts, name)
            if mismatches:
                certain.append(name)
                line += "; " + "; ".join(_capped(mismatches))
        strict.append(line)
    summary_all = f"/proc/sys/net/ipv4/conf/all/rp_filter = {all_value}"
    if not strict:
        checked = ", ".join(sorted(overlay)) or "none found"
        return SPEC.finding("sysctl.rp-filter-strict", Severity.OK, ctx.node,
                            title="rp_filter is not strict on any overlay/CNI interface",
                            evidence=f"{summary_all}; overlay/CNI interfaces checked: {checked}")
    reasons = []
    severity = Severity.WARNING
    if facts.cilium_running:
        severity = Severity.ERROR
        reasons.append("Cilium runs here (cilium-agent or cilium_* devices) and needs "
                       "net.ipv4.conf.all.rp_filter = 0")
    if certain:
        severity = Severity.ERROR
        reasons.append(f"the reverse path leaves {', '.join(sorted(certain))} through "
                       "another interface: the drop is certain")
    if facts.routes is None:
        reasons.append("/proc/net/route could not be read: whether the drop is certain was "
                       "not checked")
    if facts.vxlan_peers is None and facts.vxlan_peers_error:
        reasons.append(facts.vxlan_peers_error)
    elif severity is Severity.WARNING:
        reasons.append("every strict interface has a route out of it (main table): packets "
                       "are dropped only when their reverse route differs")
    lines = _capped(strict)
    if facts.value("default") == RP_FILTER_STRICT:
        lines.append("/proc/sys/net/ipv4/conf/default/rp_filter = 1 (new pod interfaces start "
                     "strict)")
    title = (f"Strict rp_filter (1) on {len(strict)} overlay/CNI interface"
             f"{'s' if len(strict) != 1 else ''}")
    return SPEC.finding("sysctl.rp-filter-strict", severity, ctx.node, title=title,
                        evidence="; ".join(lines + reasons))


def _evaluate_persisted(facts: Facts, ctx: CheckContext) -> Finding:
    overlay = classify_overlay_interfaces(facts)
    persisted_all = next((parse_sysctl_value(s.value) for s in facts.persisted
                          if s.key == "net.ipv4.conf.all.rp_filter"), None)
    bad = []
    for s in facts.persisted:
        if parse_sysctl_value(s.value) != RP_FILTER_STRICT:
            continue
        iface = s.key[len("net.ipv4.conf."):-len(".rp_filter")]
        relevant = (iface in ("all", "default") or iface in overlay
                    or any(c in iface for c in "*?[") or iface.startswith(OVERLAY_NAME_PREFIXES))
        if not relevant:
            continue
        if iface != "all" and persisted_all == RP_FILTER_LOOSE:
            continue  # max(all=2, iface=1) is loose
        bad.append(f"{s.source}:{s.lineno}: {s.line.strip()}")
    read = ", ".join(facts.files_read) or "no sysctl file found"
    if not bad:
        return SPEC.finding("sysctl.rp-filter-persisted", Severity.OK, ctx.node,
                            title="No strict rp_filter persisted in sysctl configuration",
                            evidence=f"read: {read}")
    return SPEC.finding("sysctl.rp-filter-persisted", Severity.WARNING, ctx.node,
                        evidence="; ".join(_capped(bad)) + " (comes back at boot / "
                                 "sysctl --system)")


def _capped(lines: list[str]) -> list[str]:
    if len(lines) <= EVIDENCE_MAX_LINES:
        return list(lines)
    return lines[:EVIDENCE_MAX_LINES] + [f"... and {len(lines) - EVIDENCE_MAX_LINES} more"]


def summarize(facts: Facts) -> dict[str, object]:
    overlay = classify_overlay_interfaces(facts)
    values = {"all": facts.value("all"), "default": facts.value("default")}
    pod_strict = 0
    for name in sorted(overlay):
        if name.startswith(PER_POD_PREFIXES):
            pod_strict += max(facts.value(name) or 0, facts.value("all") or 0) == 1
        else:
            values[name] = facts.value(name)
    return {"rp_filter": values, "rp_filter_strict_pod_ifaces": pod_strict}
