"""`python -m tests.lab`: build the namespace "cluster" by hand, break it, watch netdiag see it.

    python -m tests.lab up --nodes 4 [--cni calico] [--variant node4=cilium]
                           [--fault fabric-drop-udp-8472-in:node2 ...]
    python -m tests.lab status
    python -m tests.lab inject RUNID NAME:NODE[,NODE...]     (clear: same arguments)
    python -m tests.lab down [RUNID]
    python -m tests.lab cleanup [--all]     remove labs whose owner died (--all: `up` labs too)
    python -m tests.lab faults              the faults and what each breaks
    python -m tests.lab bench --nodes 4 --nodes 20      build/teardown times
    python -m tests.lab demo --fault fabric-drop-udp-8472-in:node2

`up` builds the lab, prints the node table and exits; the lab stays until `down`.
Needs root (network namespaces); nothing is changed in the root namespace.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Sequence

from tests.lab import cluster
from tests.lab.cluster import FAULTS, Lab, lab_from_state
from tests.lab.netns import NAME_PREFIX, LabError, require_root


def parse_fault(text: str) -> tuple[str, list[str]]:
    name, sep, nodes = text.partition(":")
    if not sep or not nodes:
        raise argparse.ArgumentTypeError(f"expected NAME:NODE[,NODE...], got {text!r}")
    if name not in FAULTS:
        raise argparse.ArgumentTypeError(f"unknown fault {name!r}; see `python -m tests.lab "
                                         "faults`")
    return name, nodes.split(",")


def parse_variant(text: str) -> tuple[str, str]:
    node, sep, flavour = text.partition("=")
    if not sep or flavour not in cluster.FLAVOURS:
        raise argparse.ArgumentTypeError(
            f"expected NODE=FLAVOUR ({'|'.join(cluster.FLAVOURS)}), got {text!r}")
    return node, flavour


def _target(nodes: list[str]) -> str | list[str]:
    return nodes[0] if len(nodes) == 1 else nodes


def _hints(lab: Lab) -> str:
    n1 = lab.nodes[0]
    return "\n".join([
        f"run id: {lab.run_id}",
        f"exec into a node:  ip netns exec {n1.ns_name} bash",
        f"exec into a pod:   ip netns exec {n1.pods[0][0]} bash",
        f"check a node:      ip netns exec {n1.ns_name} netdiag check --node-name {n1.name} "
        f"--host-root {lab.host_root(n1.name)}",
        f"break it:          python -m tests.lab inject {lab.run_id} "
        "fabric-drop-udp-8472-in:node2",
        f"remove it:         python -m tests.lab down {lab.run_id}",
    ])


def cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(nodes=args.nodes, cni=args.cni, variants=dict(args.variant),
              pods_per_node=args.pods, persistent=True)
    lab.up()
    try:
        for name, nodes in args.fault:
            lab.inject(name, _target(nodes))
    except LabError:
        lab.down()
        raise
    for n in lab.nodes:
        lab.host_root(n.name)          # each node's /etc/cni, /opt/cni/bin for --host-root
    print(lab.table())
    print(f"\nbuilt {len(lab.nodes)} nodes in {lab.build_s:.2f}s")
    for name, nodes in args.fault:
        print(f"fault: {name} on {','.join(nodes)}: {FAULTS[name]}")
    print(_hints(lab))
    return 0


def _find_state(run_id: str | None) -> dict:
    states = cluster.read_states()
    if run_id:
        for s in states:
            if s.get("run_id") == run_id:
                return s
        raise LabError(f"no lab with run id {run_id!r} (see `python -m tests.lab status`)")
    persistent = [s for s in states if s.get("persistent")]
    if len(persistent) != 1:
        raise LabError(f"{len(persistent)} labs from `up` exist; name the run id "
                       "(see `python -m tests.lab status`)")
    return persistent[0]


def cmd_down(args: argparse.Namespace) -> int:
    state = _find_state(args.run_id)
    cluster.down(state["run_id"])
    print(f"removed lab {state['run_id']} ({len(state.get('namespaces', []))} namespaces)")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    removed = cluster.cleanup(include_persistent=args.all)
    print("removed: " + (" ".join(removed) if removed else "nothing (no dead runs)"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    states = cluster.read_states()
    present = set(cluster._existing_namespaces())
    recorded = {n for s in states for n in s.get("namespaces", [])}
    others = sorted(n for n in present - recorded if n.startswith(NAME_PREFIX))
    if others:
        # Built by NetNS directly (other lab tests) or by a lab whose state file is gone:
        # never removed automatically, since a live test may own them.
        print(f"namespaces named {NAME_PREFIX}* without a lab state file (not ours to remove):"
              f" {' '.join(others)}")
    if not states:
        print("no labs")
        return 0
    for s in states:
        if s.get("persistent"):
            owner = "kept by `up`"
        else:
            owner = (f"pid {s.get('pid')} " +
                     ("alive" if cluster.pid_alive(s.get("pid")) else "DEAD (cleanup removes)"))
        ns = s.get("namespaces", [])
        alive = sum(1 for n in ns if n in present)
        print(f"nd{s['run_id']}: {len(s.get('nodes', []))} nodes ({s.get('cni')}), "
              f"{alive}/{len(ns)} namespaces present, {owner}, "
              f"age {time.time() - s.get('created_at', time.time()):.0f}s")
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    lab = lab_from_state(_find_state(args.run_id))
    for name, nodes in args.fault:
        if args.command == "inject":
            lab.inject(name, _target(nodes))
            print(f"injected {name} on {','.join(nodes)}: {FAULTS[name]}")
        else:
            lab.clear(name, _target(nodes))
            print(f"cleared {name} on {','.join(nodes)}")
    return 0


def cmd_faults(args: argparse.Namespace) -> int:
    for name, description in FAULTS.items():
        print(f"{name}\n    {description}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    for nodes in args.nodes or [4, 20]:
        for i in range(args.repeat):
            lab = Lab(nodes=nodes, cni=args.cni)
            t0 = time.monotonic()
            lab.up()
            built = time.monotonic() - t0
            ok = lab.ping("node1/pod", lab.pod_ip(f"node{nodes}")) if nodes > 1 else True
            t1 = time.monotonic()
            lab.down()
            print(f"nodes={nodes} run={i + 1} build={built:.2f}s down={time.monotonic() - t1:.2f}s "
                  f"pod1->pod{nodes}={'ok' if ok else 'FAIL'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tests.lab.demo import run_demo
    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="build a lab and leave it running")
    up.add_argument("--nodes", type=int, default=4)
    up.add_argument("--cni", choices=sorted(cluster.FLAVOURS), default="flannel")
    up.add_argument("--variant", type=parse_variant, action="append", default=[],
                    metavar="NODE=FLAVOUR", help="e.g. node4=cilium (repeatable)")
    up.add_argument("--pods", type=int, default=1, help="pods per node")
    up.add_argument("--fault", type=parse_fault, action="append", default=[],
                    metavar="NAME:NODE", help="inject after building (repeatable)")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="remove a lab built by `up`")
    down.add_argument("run_id", nargs="?")
    down.set_defaults(func=cmd_down)

    cl = sub.add_parser("cleanup", help="remove labs whose owner process died")
    cl.add_argument("--all", action="store_true", help="also labs kept by `up`")
    cl.set_defaults(func=cmd_cleanup)

    sub.add_parser("status", help="list labs on this machine").set_defaults(func=cmd_status)
    sub.add_parser("faults", help="list the faults").set_defaults(func=cmd_faults)

    for name in ("inject", "clear"):
        f = sub.add_parser(name, help=f"{name} faults in a lab built by `up`")
        f.add_argument("run_id")
        f.add_argument("fault", type=parse_fault, nargs="+", metavar="NAME:NODE[,NODE]")
        f.set_defaults(func=cmd_fault)

    b = sub.add_parser("bench", help="measure build and teardown times")
    b.add_argument("--nodes", type=int, action="append", default=[])
    b.add_argument("--repeat", type=int, default=3)
    b.add_argument("--cni", choices=sorted(cluster.FLAVOURS), default="flannel")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="build, break, diagnose, tear down")
    d.add_argument("--nodes", type=int, default=4)
    d.add_argument("--cni", choices=sorted(cluster.FLAVOURS), default="flannel")
    d.add_argument("--fault", type=parse_fault, action="append", default=[],
                   metavar="NAME:NODE")
    d.add_argument("--interval", type=float, default=2.0, help="agent interval (s)")
    d.add_argument("--wait", type=float, default=60.0,
                   help="how long to wait for the collector's diagnosis (s)")
    d.add_argument("--no-collector", action="store_true",
                   help="only run `netdiag check` in each node, before and after the fault")
    d.set_defaults(func=cmd_demo)
    return p


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("faults",):
        reason = require_root()
        if reason:
            print(f"python -m tests.lab: {reason}", file=sys.stderr)
            return 1
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every lab and process we
    # started is torn down by the finally blocks on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except LabError as e:
        print(f"python -m tests.lab: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
