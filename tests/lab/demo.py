"""`python -m tests.lab demo --fault NAME:NODE`: the whole product on one machine.

1. build a lab (4 nodes by default);
2. when the collector exists (`collector.main` importable) and --no-collector is not given:
   start `netdiag collector` in the fabric namespace (on fabric0, 192.168.77.1:8080: reachable
   from every node's underlay, and not behind any fabric fault), and `netdiag agent` in every
   node namespace with a short interval; wait until every node has reported and print the
   healthy `/report`; inject the fault(s); wait (bounded) until `/report` names a new
   diagnosis, print it; otherwise: run `netdiag check` in every node, inject, run it again;
3. tear everything down (processes, then the lab), also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.ports import COLLECTOR_PORT
from tests.lab.cluster import FAULTS, Lab
from tests.lab.netns import LabError

FABRIC_IP = "192.168.77.1"
POLL_S = 1.0
STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
#: After a different diagnosis appears, wait this many agent intervals for the expected one.
SETTLE_ROUNDS = 4
#: The collector's diagnosis each fault should produce (DESIGN.md catalogue), where one does.
EXPECTED_DIAGNOSIS = {
    "fabric-drop-udp-8472-in": "overlay.node-inbound-blocked",
    "fabric-drop-udp-in": "overlay.udp-blocked",
    "fabric-drop-udp-8472-out": "overlay.node-outbound-blocked",
    "fabric-mtu-blackhole-in": "overlay.mtu-blackhole",
    "partition": "overlay.partition",
    "host-firewall-drop-8472": "overlay.node-inbound-blocked",
    "vxlan-port-mismatch": "overlay.config-mismatch",
    "vni-mismatch": "overlay.config-mismatch",
}


def collector_available() -> bool:
    try:
        return importlib.util.find_spec("collector.main") is not None
    except (ImportError, ValueError):
        return False


def _netdiag(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


def http_get(lab: Lab, url: str, timeout: float = 5.0) -> str | None:
    """GET url from inside the fabric namespace (where the collector is reachable)."""
    code = ("import sys, urllib.request\n"
            "try:\n"
            "    print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))"
            ".read().decode(), end='')\n"
            "except Exception as e:\n"
            "    print(e, file=sys.stderr); sys.exit(1)\n")
    proc = lab.fabric.exec([sys.executable, "-c", code, url, str(timeout)], check=False,
                           timeout=timeout + 10)
    return proc.stdout if proc.returncode == 0 else None


class Processes:
    """Processes the demo started; all stopped (TERM, then KILL) by stop_all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[str]]] = []

    def start(self, name: str, ns_name: str, argv: list[str]) -> subprocess.Popen[str]:
        log = open(self.log_dir / f"{name}.log", "w")
        proc = subprocess.Popen(["ip", "netns", "exec", ns_name, *argv], stdout=log,
                                stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        self.procs.append((name, proc))
        return proc

    def dead(self) -> list[str]:
        return [name for name, p in self.procs if p.poll() is not None]

    def stop_all(self) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for _, p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=STOP_TIMEOUT_S)

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _target(nodes: list[str]) -> str | list[str]:
    return nodes[0] if len(nodes) == 1 else nodes


def _report_json(lab: Lab, base: str) -> dict[str, Any] | None:
    text = http_get(lab, f"{base}/report?format=json")
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _diagnosis_ids(report: dict[str, Any] | None) -> set[str]:
    return {d.get("id", "") for d in (report or {}).get("diagnoses", [])}


def _node_problems(report: dict[str, Any] | None) -> set[str]:
    """`node2:iptables.forward-drop` for every warning/error node finding in /report."""
    return {f"{f.get('node', '')}:{f.get('id', '')}" for f in (report or {}).get("findings", [])
            if f.get("severity") in ("warning", "error")}


def _reported_nodes(report: dict[str, Any] | None) -> set[str]:
    return {n.get("name", "") for n in (report or {}).get("nodes", [])}


def run_checks(lab: Lab, heading: str) -> None:
    for n in lab.nodes:
        proc = lab.exec(n.name, _netdiag("check", "--node-name", n.name, "--color", "never",
                                         "--host-root", str(lab.host_root(n.name))),
                        check=False, timeout=120)
        print(f"\n===== {heading}: netdiag check on {n.name} (exit {proc.returncode}) =====")
        # the summary table; the details section repeats it with evidence (see `check`)
        print((proc.stdout.split("Details and remediations")[0] + proc.stderr).rstrip())


def demo_checks_only(lab: Lab, faults: list[tuple[str, list[str]]]) -> int:
    run_checks(lab, "healthy")
    for name, nodes in faults:
        lab.inject(name, _target(nodes))
        print(f"\n>>> injected {name} on {','.join(nodes)}: {FAULTS[name]}")
    if faults:
        run_checks(lab, "after the fault")
    return 0


def demo_with_collector(lab: Lab, faults: list[tuple[str, list[str]]],
                        interval: float, wait_s: float) -> int:
    fabric_ip = lab.fabric_ip(FABRIC_IP)
    base = f"http://{fabric_ip}:{COLLECTOR_PORT}"
    with tempfile.TemporaryDirectory(prefix="netdiag-demo-") as tmp:
        procs = Processes(Path(tmp))
        try:
            procs.start("collector", lab.fabric.name, _netdiag(
                "collector", "--listen", f"{fabric_ip}:{COLLECTOR_PORT}",
                "--db", str(Path(tmp) / "collector.sqlite3"), "--interval", f"{interval:g}"))
            if not _wait(lambda: http_get(lab, f"{base}/healthz") is not None,
                         STARTUP_TIMEOUT_S, procs):
                print("collector did not come up:\n" + procs.tail("collector"))
                return 1
            print(f"collector: {base} (in {lab.fabric.name})")
            for n in lab.nodes:
                procs.start(n.name, n.ns_name, _netdiag(
                    "agent", "--collector", base, "--node-name", n.name,
                    "--interval", f"{interval:g}", "--host-root", str(lab.host_root(n.name))))
            names = {n.name for n in lab.nodes}
            # Every node reported, and at least two rounds so every pair has been probed.
            if not _wait(lambda: names <= _reported_nodes(_report_json(lab, base)),
                         STARTUP_TIMEOUT_S + 3 * interval, procs):
                print("not every agent reported; agent log of node1:\n" + procs.tail("node1"))
                return 1
            time.sleep(2 * interval)
            before = _report_json(lab, base)
            print("\n===== healthy: GET /report =====")
            print(http_get(lab, f"{base}/report") or "(no answer)")
            for name, nodes in faults:
                lab.inject(name, _target(nodes))
                print(f">>> injected {name} on {','.join(nodes)}: {FAULTS[name]}")
            if not faults:
                return 0
            expected = {EXPECTED_DIAGNOSIS[f] for f, _ in faults if f in EXPECTED_DIAGNOSIS}
            old = _diagnosis_ids(before)

            old_problems = _node_problems(before)
            first_new: list[float] = []

            def news(report: dict[str, Any] | None) -> set[str]:
                """New diagnoses, and new node findings (faults inside one node)."""
                return (_diagnosis_ids(report) - old) | (_node_problems(report) - old_problems)

            def diagnosed() -> bool:
                report = _report_json(lab, base)
                ids = _diagnosis_ids(report)
                if news(report) and not first_new:
                    first_new.append(time.monotonic())
                if expected & ids or (not expected and news(report)):
                    return True
                # another diagnosis came first: give the expected one a few more rounds
                return bool(first_new) and (
                    time.monotonic() - first_new[0] > SETTLE_ROUNDS * interval)

            t0 = time.monotonic()
            _wait(diagnosed, wait_s, procs)
            took = time.monotonic() - t0
            final = _report_json(lab, base)
            ids_now = _diagnosis_ids(final)
            found = bool(expected & ids_now) if expected else bool(news(final))
            print(f"\n===== after the fault ({took:.0f}s): GET /report =====")
            print(http_get(lab, f"{base}/report") or "(no answer)")
            ids = ids_now
            if found:
                print(f"diagnosed in {took:.0f}s: {', '.join(sorted(news(final) or ids))}")
                return 0
            want = ", ".join(sorted(expected)) or "a new diagnosis"
            print(f"expected {want}; after {took:.0f}s the collector says: "
                  f"{', '.join(sorted(ids)) or 'nothing'}")
            return 1
        finally:
            procs.stop_all()


def _wait(predicate: Any, timeout_s: float, procs: Processes) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if "collector" in procs.dead():
            return False
        time.sleep(POLL_S)
    return bool(predicate())


def run_demo(args: argparse.Namespace) -> int:
    lab = Lab(nodes=args.nodes, cni=args.cni)
    try:
        lab.up()
        print(lab.table())
        print(f"\nbuilt {len(lab.nodes)} nodes in {lab.build_s:.2f}s (run id {lab.run_id})")
        if args.no_collector or not collector_available():
            if not args.no_collector:
                print("(collector not available: running `netdiag check` in each node)")
            return demo_checks_only(lab, args.fault)
        return demo_with_collector(lab, args.fault, args.interval, args.wait)
    except LabError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    finally:
        lab.down()
        print(f"\nlab {lab.run_id} removed")
