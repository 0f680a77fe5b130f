"""A small Kubernetes-style "cluster" of network namespaces on this machine.

Topology (every name carries the run id, so concurrent labs never collide)::

    nd<id>-fab          the fabric: bridge `fabric0`; one port `nd<id>n<i>` per node.
                        Cloud security groups / ACLs live here: fabric faults are nftables
                        `bridge` rules on fabric0, so they drop frames before the node sees them.
    nd<id>-n<i>         node i: `eth0` 192.168.77.(10+i)/24 on the fabric, a VXLAN device
                        (flannel: `flannel.1`, VNI 1, UDP 8472, nolearning, MAC 0e:00:00:00:HH:LL,
                        10.244.i.0/32, MTU 1450) with a route, a permanent neighbour and an FDB
                        entry for every peer, exactly as flanneld programs them; pod bridge `cni0`
                        10.244.i.1/24; ip_forward=1, rp_filter all=0 default=2 (loose).
    nd<id>-n<i>p<k>     pod k on node i: `eth0` 10.244.i.(1+k)/24 on a hairpin veth `veth<k>`
                        in cni0, default route via 10.244.i.1.

Variants: `cni="calico"` gives every node `vxlan.calico` (VNI 4096, UDP 4789);
`variants={"node4": "cilium"}` gives that node `cilium_vxlan` in collect-metadata (`external`)
mode WITHOUT an address, as Cilium does: peers still reach its pods (its routes carry the tunnel
destination as lightweight-tunnel encap), but only wire probes apply to it. Mixed VXLAN ports or
VNIs in one lab are bridged by per-peer FDB `port`/`vni`, so a healthy mixed lab works too.

Building is batched: one `ip -batch` per namespace and stage, stages run in parallel, so a
4-node lab builds in well under a second (numbers in README "See it work without a cluster").

The lab writes /run/netdiag-lab/<run id>.json (namespaces, owner pid) before creating anything,
so `python -m tests.lab cleanup` can remove what a killed run left behind while other runs'
live labs (pid still alive) survive. Nothing is created in, or changed on, the root namespace.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from tests.lab.netns import COMMAND_TIMEOUT_S, NAME_PREFIX, LabError, NetNS, new_run_id, sh

STATE_DIR = Path("/run/netdiag-lab")
NETTOOL = str(Path(__file__).with_name("nettool.py"))
PING_TIMEOUT_S = 1.0
SERVER_READY_TIMEOUT_S = 5.0
UNDERLAY_NET = "192.168.77"
UNDERLAY_HOST_OFFSET = 10
UNDERLAY_PREFIXLEN = 24
POD_NET = "10.244"
OVERLAY_MTU = 1450
MAX_NODES = 200
MAX_PODS_PER_NODE = 8
FABRIC_BRIDGE = "fabric0"
UNDERLAY_DEV = "eth0"
POD_BRIDGE = "cni0"
#: sysctls every node namespace gets before its links exist (so `default` applies to them).
NODE_SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/ipv4/conf/all/rp_filter": "0",
    "net/ipv4/conf/default/rp_filter": "2",
}


def sysctl_argv(values: Mapping[str, str]) -> list[str]:
    """argv that sets sysctls (slash form, `net/ipv4/conf/flannel.1/rp_filter`: interface
    names contain dots) in the namespace it runs in, by writing /proc/sys with `sh` (no
    dependency on procps' `sysctl`). Run it under `ip netns exec`: never in the root ns."""
    script = " && ".join(f"echo {shlex.quote(v)} > /proc/sys/{shlex.quote(k)}"
                         for k, v in values.items())
    return ["sh", "-c", script]


@dataclass(frozen=True)
class Flavour:
    """How one CNI sets up its VXLAN device."""
    name: str
    vxlan_dev: str
    vxlan_port: int
    vni: int
    addressed: bool      # the device carries the node's overlay address (flannel, Calico)
    external: bool       # collect-metadata device (Cilium): routes carry the tunnel dst


FLAVOURS: dict[str, Flavour] = {
    "flannel": Flavour("flannel", "flannel.1", 8472, 1, addressed=True, external=False),
    "calico": Flavour("calico", "vxlan.calico", 4789, 4096, addressed=True, external=False),
    # Cilium's device has no VNI of its own (collect-metadata); 1 is the VNI its routes send.
    "cilium": Flavour("cilium", "cilium_vxlan", 8472, 1, addressed=False, external=True),
}


#: The CNI config each flavour's installer writes to /etc/cni/net.d (the flannel one is
#: kube-flannel's 10-flannel.conflist, as in tests/fixtures' flannel conflist).
CNI_CONFIGS = {
    "flannel": ("10-flannel.conflist", {
        "name": "cbr0", "cniVersion": "0.3.1",
        "plugins": [{"type": "flannel",
                     "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
                    {"type": "portmap", "capabilities": {"portMappings": True}}]}),
    "calico": ("10-calico.conflist", {
        "name": "k8s-pod-network", "cniVersion": "0.3.1",
        "plugins": [{"type": "calico", "datastore_type": "kubernetes", "mtu": 1450,
                     "ipam": {"type": "calico-ipam"}},
                    {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}]}),
    "cilium": ("05-cilium.conf", {"cniVersion": "0.3.1", "name": "cilium",
                                  "type": "cilium-cni", "enable-debug": False}),
}
HOST_TOOLS = ("conntrack", "ipvsadm")
CNI_STAND_IN = ("#!/bin/sh\n# netdiag lab stand-in: the lab wires its pods itself.\n"
                "echo 'netdiag lab: CNI plugin stand-in' >&2\nexit 1\n")


@dataclass
class LabNode:
    """One node of the lab (what tests and the CLI need to talk to it)."""
    index: int
    name: str
    ns_name: str
    fabric_port: str                 # the node's veth on the fabric bridge (fabric namespace)
    underlay_dev: str
    underlay_ip: str
    flavour: Flavour
    vxlan_dev: str
    vxlan_port: int
    vni: int
    vxlan_ip: str | None             # None for Cilium-style devices without an address
    vxlan_mac: str
    vxlan_mtu: int
    pod_cidr: str
    bridge: str
    pods: list[tuple[str, str]] = field(default_factory=list)   # (pod namespace, pod ip)

    @property
    def ns(self) -> NetNS:
        return NetNS(self.ns_name)

    @property
    def gateway_ip(self) -> str:
        return f"{POD_NET}.{self.index}.1"


def vxlan_mac(index: int) -> str:
    return f"0e:00:00:00:{index >> 8:02x}:{index & 0xFF:02x}"


def run_parallel(jobs: Sequence[tuple[Sequence[str], str | None]],
                 timeout: float = COMMAND_TIMEOUT_S) -> None:
    """Run (argv, stdin) jobs at once; raise LabError naming every one that failed."""
    procs = []
    for argv, stdin in jobs:
        procs.append((argv, stdin, subprocess.Popen(
            list(argv), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    errors = []
    deadline = time.monotonic() + timeout
    for argv, stdin, proc in procs:
        try:
            _, err = proc.communicate(stdin, timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            errors.append(f"{' '.join(argv)}: timed out after {timeout}s")
            continue
        if proc.returncode != 0:
            errors.append(f"{' '.join(argv)} ({proc.returncode}): {err.strip()}")
    if errors:
        raise LabError("; ".join(errors))


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lab:
    """N node namespaces joined by a fabric bridge; `with Lab(nodes=4) as lab: ...`.

    `persistent=True` (the `up` command) records no owner pid: `cleanup` leaves it alone and
    only `down RUNID` removes it.
    """

    def __init__(self, nodes: int = 4, cni: str = "flannel",
                 variants: Mapping[str, str] | None = None, pods_per_node: int = 1,
                 run_id: str | None = None, persistent: bool = False) -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise LabError(f"nodes must be 1..{MAX_NODES}, got {nodes}")
        if not 1 <= pods_per_node <= MAX_PODS_PER_NODE:
            raise LabError(f"pods_per_node must be 1..{MAX_PODS_PER_NODE}")
        if cni not in FLAVOURS:
            raise LabError(f"unknown cni {cni!r}: choose from {', '.join(FLAVOURS)}")
        variants = dict(variants or {})
        self.variants = dict(variants)
        self.pods_per_node = pods_per_node
        for node_name, flavour in variants.items():
            if flavour not in FLAVOURS:
                raise LabError(f"unknown variant {flavour!r} for {node_name}")
        self.run_id = run_id or _free_run_id()
        self.cni = cni
        self.persistent = persistent
        self.prefix = f"{NAME_PREFIX}{self.run_id}"
        self.fabric = NetNS(f"{self.prefix}-fab")
        self.nodes: list[LabNode] = []
        for i in range(1, nodes + 1):
            name = f"node{i}"
            fl = FLAVOURS[variants.pop(name, cni)]
            node = LabNode(
                index=i, name=name, ns_name=f"{self.prefix}-n{i}",
                fabric_port=f"{self.prefix}n{i}", underlay_dev=UNDERLAY_DEV,
                underlay_ip=f"{UNDERLAY_NET}.{UNDERLAY_HOST_OFFSET + i}", flavour=fl,
                vxlan_dev=fl.vxlan_dev, vxlan_port=fl.vxlan_port, vni=fl.vni,
                vxlan_ip=f"{POD_NET}.{i}.0" if fl.addressed else None,
                vxlan_mac=vxlan_mac(i), vxlan_mtu=OVERLAY_MTU,
                pod_cidr=f"{POD_NET}.{i}.0/24", bridge=POD_BRIDGE)
            node.pods = [(f"{node.ns_name}p{k}", f"{POD_NET}.{i}.{1 + k}")
                         for k in range(1, pods_per_node + 1)]
            self.nodes.append(node)
        if variants:
            raise LabError(f"variants name unknown nodes: {', '.join(variants)}")
        ports = {n.vxlan_port for n in self.nodes}
        if any(n.flavour.external for n in self.nodes) and len(ports) > 1:
            # A route's lightweight-tunnel encap carries the VNI and destination, not the UDP
            # port: a collect-metadata device sends to its own dstport only.
            raise LabError("a cilium node (collect-metadata VXLAN) can only reach peers on its "
                           f"own port; this lab mixes ports {sorted(ports)}")
        self.build_s: float | None = None
        self.active_faults: dict[tuple[str, str], object] = {}
        self._built = False
        self._owns = False
        self._owner_pid = os.getpid()

    # ----- naming and lookup -------------------------------------------------------------
    def node(self, name: str) -> LabNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"no node {name!r} in this lab (nodes: "
                       f"{', '.join(n.name for n in self.nodes)})")

    def namespaces(self) -> list[str]:
        names = [self.fabric.name]
        for n in self.nodes:
            names.append(n.ns_name)
            names.extend(p for p, _ in n.pods)
        return names

    @property
    def state_path(self) -> Path:
        return STATE_DIR / f"{self.run_id}.json"

    # ----- running things ----------------------------------------------------------------
    def exec(self, node: str, argv: Sequence[str], check: bool = True,
             timeout: float = COMMAND_TIMEOUT_S,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv inside a node's namespace."""
        return self.node(node).ns.exec(argv, check=check, timeout=timeout, input=input)

    def pod_exec(self, node: str, argv: Sequence[str], pod: int = 1, check: bool = True,
                 timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run argv inside pod `pod` (1-based) of a node."""
        ns_name, _ = self.node(node).pods[pod - 1]
        return NetNS(ns_name).exec(argv, check=check, timeout=timeout)

    def pod_ip(self, node: str, pod: int = 1) -> str:
        return self.node(node).pods[pod - 1][1]

    def popen(self, node: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        return self.node(node).ns.popen(argv, **kwargs)

    def ns_of(self, where: str) -> NetNS:
        """`node2` -> node2's namespace; `node2/pod` or `node2/pod1` -> its first pod's."""
        node, _, pod = where.partition("/")
        if not pod:
            return self.node(node).ns
        k = int(pod[3:] or "1") if pod.startswith("pod") else 0
        pods = self.node(node).pods
        if not 1 <= k <= len(pods):
            raise LabError(f"no pod {pod!r} on {node}")
        return NetNS(pods[k - 1][0])

    def nettool(self, where: str, args: Sequence[str],
                timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run tests/lab/nettool.py (ping, tcp-connect, udp-ask, ...) in `where` (see ns_of)."""
        return self.ns_of(where).exec([sys.executable, NETTOOL, *args], check=False,
                                      timeout=timeout)

    def ping(self, where: str, dst: str, size: int = 56, df: bool = False,
             timeout: float = PING_TIMEOUT_S) -> bool:
        """One ICMP echo from `where` (`node1` or `node1/pod`) to dst; True when answered."""
        args = ["ping", dst, "-s", str(size), "-W", str(timeout)] + (["--df"] if df else [])
        return self.nettool(where, args, timeout=timeout + 10).returncode == 0

    def tcp_connect(self, where: str, ip: str, port: int,
                    timeout: float = PING_TIMEOUT_S) -> bool:
        args = ["tcp-connect", ip, str(port), "-W", str(timeout)]
        return self.nettool(where, args, timeout=timeout + 10).returncode == 0

    def udp_ask(self, where: str, ip: str, port: int, timeout: float = PING_TIMEOUT_S) -> bool:
        args = ["udp-ask", ip, str(port), "-W", str(timeout)]
        return self.nettool(where, args, timeout=timeout + 10).returncode == 0

    @contextmanager
    def server(self, where: str, proto: str, port: int,
               duration: float = 120.0) -> Iterator[subprocess.Popen[str]]:
        """A TCP accept-and-close (proto "tcp") or UDP echo ("udp") server in `where`,
        running (bound) when the block starts, killed when it ends."""
        cmd = {"tcp": "tcp-serve", "udp": "udp-echo"}[proto]
        proc = self.ns_of(where).popen([sys.executable, NETTOOL, cmd, str(port), "--for",
                                        str(duration)], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            ready, _, _ = __import__("select").select([proc.stdout], [], [],
                                                       SERVER_READY_TIMEOUT_S)
            if not ready or proc.stdout.readline().strip() != "ready":
                raise LabError(f"{cmd} {port} in {where} did not start: "
                               f"{proc.stderr.read() if proc.poll() is not None else 'timeout'}")
            yield proc
        finally:
            proc.kill()
            proc.wait(timeout=5)

    def host_root(self, node: str) -> Path:
        """A node's host files, for `netdiag check/agent --host-root`: the CNI config its
        flavour installs (/etc/cni/net.d), stand-ins for the plugin binaries it names
        (/opt/cni/bin; they only exit 1: the lab wires pods itself) and a resolv.conf with a
        non-loopback nameserver. Without it, checks in a node namespace read this machine's
        own /etc, which has no CNI. Created on first use, removed with the lab."""
        n = self.node(node)
        root = STATE_DIR / self.run_id / n.name
        if root.is_dir():
            return root
        filename, config = CNI_CONFIGS[n.flavour.name]
        (root / "etc/cni/net.d").mkdir(parents=True)
        (root / "etc/cni/net.d" / filename).write_text(json.dumps(config, indent=2) + "\n")
        (root / "etc/resolv.conf").write_text(f"nameserver {UNDERLAY_NET}.1\n")
        bin_dir = root / "opt/cni/bin"
        bin_dir.mkdir(parents=True)
        plugins = {"bridge", "host-local", "loopback", "portmap", "calico-ipam"}
        plugins |= {p["type"] for p in config.get("plugins", [config])}  # type: ignore
        for plugin in sorted(plugins):
            (bin_dir / plugin).write_text(CNI_STAND_IN)
            (bin_dir / plugin).chmod(0o755)
        # The node's own tools are this machine's. Copies, not symlinks: the agent resolves
        # absolute symlinks inside the host root, as it must for a real node's /host.
        for tool in HOST_TOOLS:
            real = shutil.which(tool)
            if real:
                (root / "usr/sbin").mkdir(parents=True, exist_ok=True)
                shutil.copy2(os.path.realpath(real), root / "usr/sbin" / tool)
        return root

    def fabric_ip(self, ip: str = f"{UNDERLAY_NET}.1") -> str:
        """Give fabric0 an underlay address (idempotent) and return it: a host every node
        reaches on its underlay (the demo runs the collector there). Traffic to it enters the
        bridge's input path, so fabric faults (forward hook, node ports) never block it."""
        sh(["ip", "-n", self.fabric.name, "addr", "replace",
            f"{ip}/{UNDERLAY_PREFIXLEN}", "dev", FABRIC_BRIDGE])
        return ip

    def add_service(self, node: str, vip: str, port: int, target_port: int,
                    pod: int = 1) -> None:
        """A Service VIP on one node as kube-proxy (iptables mode) programs it, reduced to the
        two rules that matter here: DNAT vip:port to the pod, and masquerade the pod's
        traffic to itself (hairpin). A pod reaching itself through the VIP then needs
        hairpin_mode on its bridge port (br_netfilter bridges the DNATed frame back out the
        port it came in on): the `hairpin-off` fault breaks exactly that."""
        pod_ip = self.pod_ip(node, pod)
        # kubeadm requires bridge-nf-call-iptables=1; set it in this node's namespace only.
        if self.exec(node, sysctl_argv({"net/bridge/bridge-nf-call-iptables": "1"}),
                     check=False).returncode != 0:
            raise LabError("br_netfilter is not available on this kernel: no hairpin Service")
        ipt = ["iptables", "-w", "5", "-t", "nat", "-A"]
        self.exec(node, [*ipt, "PREROUTING", "-d", vip, "-p", "tcp", "--dport", str(port),
                         "-j", "DNAT", "--to-destination", f"{pod_ip}:{target_port}"])
        self.exec(node, [*ipt, "POSTROUTING", "-s", pod_ip, "-d", pod_ip, "-j", "MASQUERADE"])

    # ----- faults ------------------------------------------------------------------------
    def inject(self, fault: str, target: str | Iterable[str]) -> None:
        from tests.lab.faults import inject
        inject(self, fault, target)

    def clear(self, fault: str, target: str | Iterable[str]) -> None:
        from tests.lab.faults import clear
        clear(self, fault, target)

    # ----- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> "Lab":
        t0 = time.monotonic()
        taken = set(_existing_namespaces()) & set(self.namespaces())
        if taken or self.state_path.exists():
            # Another lab owns this run id (4 hex digits do collide): never build into, or
            # tear down, namespaces we did not create.
            used_by = ", ".join(sorted(taken)) or str(self.state_path)
            raise LabError(f"run id {self.run_id} is in use ({used_by}); pick another")
        self._owns = True
        self._write_state()
        atexit.register(self._atexit_down)
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        self._built = True
        self.build_s = time.monotonic() - t0
        return self

    def _atexit_down(self) -> None:
        if not self.persistent and os.getpid() == self._owner_pid:
            self.down()

    def down(self) -> None:
        """Delete every namespace of this lab (their links and nft tables go with them)."""
        atexit.unregister(self._atexit_down)
        if not self._owns:      # never built (or its run id belonged to another lab)
            return
        remove_namespaces(self.namespaces())
        shutil.rmtree(STATE_DIR / self.run_id, ignore_errors=True)
        self.state_path.unlink(missing_ok=True)
        self._built = False
        self.active_faults.clear()

    def _write_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state = {
            "run_id": self.run_id,
            "pid": None if self.persistent else os.getpid(),
            "persistent": self.persistent,
            "created_at": time.time(),
            "cni": self.cni,
            "variants": self.variants,
            "pods_per_node": self.pods_per_node,
            "namespaces": self.namespaces(),
            "nodes": [{"name": n.name, "ns": n.ns_name, "underlay_ip": n.underlay_ip,
                       "vxlan_dev": n.vxlan_dev, "vxlan_ip": n.vxlan_ip,
                       "pods": [list(p) for p in n.pods]} for n in self.nodes],
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_path)

    # ----- building ----------------------------------------------------------------------
    def _build(self) -> None:
        # 1. every namespace, in one ip process.
        sh(["ip", "-batch", "-"], input="".join(f"netns add {ns}\n" for ns in self.namespaces()))
        # 2. node sysctls before any link exists there (so `default` applies to new links).
        # Also create the iptables filter table (policy ACCEPT) in every node, as any
        # Kubernetes node has one: nodes then differ only by the faults injected into them.
        setup = sysctl_argv(NODE_SYSCTLS)
        setup[-1] += (" && { ! command -v iptables >/dev/null || "
                      "iptables -w 5 -P FORWARD ACCEPT; }")
        run_parallel([(["ip", "netns", "exec", n.ns_name, *setup], None)
                      for n in self.nodes])
        # 3. the fabric: bridge + one veth per node (its peer lands in the node as eth0).
        fab = ["link set lo up",
               f"link add {FABRIC_BRIDGE} type bridge stp_state 0",
               f"link set {FABRIC_BRIDGE} up"]
        for n in self.nodes:
            fab += [f"link add {n.fabric_port} type veth peer name {n.underlay_dev} "
                    f"netns {n.ns_name}",
                    f"link set {n.fabric_port} master {FABRIC_BRIDGE} up"]
        sh(["ip", "-n", self.fabric.name, "-batch", "-"], input="\n".join(fab) + "\n")
        # 4. each node: underlay, overlay, pod bridge, pod veths.
        run_parallel([(["ip", "-n", n.ns_name, "-batch", "-"], self._node_batch(n))
                      for n in self.nodes])
        # 5. FDB entries for every peer, and each pod's addresses and routes.
        jobs: list[tuple[Sequence[str], str | None]] = []
        for n in self.nodes:
            fdb = self._fdb_batch(n)
            if fdb:
                jobs.append((["bridge", "-n", n.ns_name, "-batch", "-"], fdb))
            for k, (pod_ns, pod_ip) in enumerate(n.pods, start=1):
                jobs.append((["ip", "-n", pod_ns, "-batch", "-"],
                             "link set lo up\n"
                             f"addr add {pod_ip}/24 dev eth0\n"
                             "link set eth0 up\n"
                             f"route add default via {n.gateway_ip} dev eth0\n"))
        run_parallel(jobs)

    def _node_batch(self, n: LabNode) -> str:
        lines = ["link set lo up",
                 f"addr add {n.underlay_ip}/{UNDERLAY_PREFIXLEN} dev {n.underlay_dev}",
                 f"link set {n.underlay_dev} up"]
        lines += self.overlay_lines(n, n.vxlan_port, n.vni)
        lines += [f"link add {n.bridge} type bridge stp_state 0",
                  f"addr add {n.gateway_ip}/24 dev {n.bridge}",
                  f"link set {n.bridge} up"]
        for k, (pod_ns, _) in enumerate(n.pods, start=1):
            lines += [f"link add veth{k} type veth peer name eth0 netns {pod_ns}",
                      f"link set veth{k} master {n.bridge}",
                      f"link set veth{k} type bridge_slave hairpin on",
                      f"link set veth{k} up"]
        return "\n".join(lines) + "\n"

    def overlay_lines(self, n: LabNode, port: int, vni: int, create: bool = True) -> list[str]:
        """ip-batch lines that (re)create node n's VXLAN device and its per-peer routes and
        neighbours. Faults re-create the device with another port or VNI through this."""
        fl = n.flavour
        lines = []
        if create:
            if fl.external:
                lines.append(f"link add {n.vxlan_dev} type vxlan external dstport {port} "
                             f"dev {n.underlay_dev} local {n.underlay_ip}")
            else:
                lines.append(f"link add {n.vxlan_dev} type vxlan id {vni} dstport {port} "
                             f"dev {n.underlay_dev} local {n.underlay_ip} nolearning")
            lines.append(f"link set {n.vxlan_dev} address {n.vxlan_mac} mtu {n.vxlan_mtu}")
        lines.append(f"link set {n.vxlan_dev} up")
        if fl.addressed and create:
            lines.append(f"addr add {n.vxlan_ip}/32 dev {n.vxlan_dev}")
        for p in self.nodes:
            if p is n:
                continue
            vtep = f"{POD_NET}.{p.index}.0"
            encap = f" encap ip id {p.vni} dst {p.underlay_ip}" if fl.external else ""
            lines += [f"route replace {p.pod_cidr} via {vtep} dev {n.vxlan_dev} onlink{encap}",
                      f"neigh replace {vtep} lladdr {p.vxlan_mac} dev {n.vxlan_dev} "
                      "nud permanent"]
        return lines

    def _fdb_batch(self, n: LabNode) -> str:
        return "".join(line + "\n" for line in self.fdb_lines(n))

    def fdb_lines(self, n: LabNode) -> list[str]:
        """bridge-batch lines: one FDB entry per peer (peer MAC -> peer underlay IP). A peer
        of another flavour gets its own port/VNI on the entry, so mixed labs are healthy."""
        if n.flavour.external:
            return []
        lines = []
        for p in self.nodes:
            if p is n:
                continue
            extra = ""
            if p.flavour.vxlan_port != n.flavour.vxlan_port:
                extra += f" port {p.flavour.vxlan_port}"
            if p.flavour.vni != n.flavour.vni:
                extra += f" vni {p.flavour.vni}"
            lines.append(f"fdb replace {p.vxlan_mac} dev {n.vxlan_dev} dst {p.underlay_ip}"
                         f"{extra}")
        return lines

    def rebuild_overlay(self, node: str, port: int | None = None, vni: int | None = None) -> None:
        """Delete and re-create a node's VXLAN device (healthy port/VNI unless given)."""
        n = self.node(node)
        lines = [f"link del {n.vxlan_dev}"]
        lines += self.overlay_lines(n, port or n.vxlan_port, vni or n.vni)
        sh(["ip", "-n", n.ns_name, "-batch", "-"], input="\n".join(lines) + "\n")
        fdb = self._fdb_batch(n)
        if fdb:
            sh(["bridge", "-n", n.ns_name, "-batch", "-"], input=fdb)

    def restore_overlay_routes(self, node: str) -> None:
        """Bring the VXLAN device up and put back the routes/neighbours/FDB a `down` flushed."""
        n = self.node(node)
        sh(["ip", "-n", n.ns_name, "-batch", "-"],
           input="\n".join(self.overlay_lines(n, n.vxlan_port, n.vni, create=False)) + "\n")
        fdb = self._fdb_batch(n)
        if fdb:
            sh(["bridge", "-n", n.ns_name, "-batch", "-"], input=fdb)

    # ----- presentation ------------------------------------------------------------------
    def table(self) -> str:
        rows = [("node", "namespace", "underlay", "vxlan dev", "port", "vni", "vxlan ip",
                 "pod cidr", "pods")]
        for n in self.nodes:
            rows.append((n.name, n.ns_name, f"{n.underlay_dev} {n.underlay_ip}", n.vxlan_dev,
                         str(n.vxlan_port), str(n.vni), n.vxlan_ip or "-", n.pod_cidr,
                         " ".join(f"{ns}={ip}" for ns, ip in n.pods)))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
                         for r in rows)


def _free_run_id() -> str:
    """A run id no namespace or state file on this machine uses yet."""
    existing = _existing_namespaces()
    for _ in range(100):
        rid = new_run_id()
        prefix = f"{NAME_PREFIX}{rid}"
        if not (STATE_DIR / f"{rid}.json").exists() and \
                not any(n == prefix or n.startswith(prefix + "-") for n in existing):
            return rid
    raise LabError("no free run id after 100 tries: run `python -m tests.lab cleanup`")


def lab_from_state(state: Mapping[str, object]) -> Lab:
    """The Lab a state file describes (names are deterministic), to inject faults into or
    run commands in a lab another process built. Building it again is not needed."""
    lab = Lab(nodes=len(state["nodes"]), cni=str(state.get("cni", "flannel")),  # type: ignore
              variants=state.get("variants") or {},  # type: ignore[arg-type]
              pods_per_node=int(state.get("pods_per_node", 1)),  # type: ignore[arg-type]
              run_id=str(state["run_id"]), persistent=bool(state.get("persistent")))
    lab._built = True
    lab._owns = True
    return lab


def remove_namespaces(names: Iterable[str]) -> None:
    """Delete the given lab namespaces that exist (one ip process)."""
    existing = set(_existing_namespaces())
    todo = [n for n in names if n in existing and n.startswith(NAME_PREFIX)]
    if todo:
        sh(["ip", "-force", "-batch", "-"], check=False,
           input="".join(f"netns del {n}\n" for n in todo))


def _existing_namespaces() -> list[str]:
    out = sh(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _remove_files(state: Mapping[str, object]) -> None:
    run_id = str(state.get("run_id", ""))
    if run_id:
        shutil.rmtree(STATE_DIR / run_id, ignore_errors=True)
    Path(str(state["_path"])).unlink(missing_ok=True)


def read_states() -> list[dict]:
    states = []
    if not STATE_DIR.is_dir():
        return states
    for path in sorted(STATE_DIR.glob("*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        state["_path"] = str(path)
        states.append(state)
    return states


def cleanup(include_persistent: bool = False) -> list[str]:
    """Remove the labs whose owner process is dead (and, if asked, labs left by `up`).
    Returns the run ids removed. Live labs of other processes are never touched."""
    removed = []
    for state in read_states():
        if state.get("persistent") and not include_persistent:
            continue
        if not state.get("persistent") and pid_alive(state.get("pid")):
            continue
        remove_namespaces(state.get("namespaces", []))
        _remove_files(state)
        removed.append(state.get("run_id", "?"))
    return removed


def down(run_id: str) -> bool:
    """Remove one lab by its run id (as `up` printed it). False when there is no such lab."""
    for state in read_states():
        if state.get("run_id") == run_id:
            remove_namespaces(state.get("namespaces", []))
            _remove_files(state)
            return True
    return False


from tests.lab.faults import FAULTS  # noqa: E402  (faults needs Lab's helpers, not Lab)

__all__ = ["Lab", "LabNode", "FAULTS", "FLAVOURS", "cleanup", "down", "read_states"]
