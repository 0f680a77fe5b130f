"""End to end on the namespace lab: the collector on the fabric, `netdiag agent --interval 2`
in every node namespace, real probes, real faults. For each fault the JSON /report must name
the right diagnosis and node(s) within a few intervals and nothing else at error; a healthy lab
has nothing at warning or worse; an agent that stops becomes `agent.stale`; a collector
restarted on the same database knows every node at once and the agents report how long they
could not post. Prints the time from injection to diagnosis.

Run alone: `python -m pytest tests/test_collector_e2e_lab.py -s -q` (root).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.lab.netns import require_root

pytestmark = pytest.mark.lab

INTERVAL_S = 2.0
COLLECTOR_IP = "192.168.77.1"
COLLECTOR_PORT = 18080
STARTUP_TIMEOUT_S = 30.0
#: Detection needs two failed rounds (correlation confirms over consecutive rounds), so the
#: bound is 3 intervals after the first failing round, plus a round that was already running.
DETECT_TIMEOUT_S = 4 * INTERVAL_S + 4.0
CLEAR_TIMEOUT_S = 8 * INTERVAL_S
STOP_TIMEOUT_S = 5.0
POLL_S = 0.25
REPO = Path(__file__).resolve().parent.parent

#: fault, target(s), expected diagnosis id, nodes it must blame, and whether it must be the
#: only diagnosis at warning or worse (one root cause reported once, its symptoms folded in:
#: e.g. node2's own probes whose UDP answers cannot get back into node2 are no pair failures)
FAULT_CASES = [
    ("fabric-drop-udp-8472-in", "node2", "overlay.node-inbound-blocked", ["node2"], False),
    ("host-firewall-drop-8472", "node2", "overlay.node-inbound-blocked", ["node2"], False),
    ("fabric-drop-udp-in", "node2", "overlay.udp-blocked", ["node2"], True),
    ("partition", ["node1", "node2"], "overlay.partition", ["node1", "node2", "node3", "node4"],
     False),
]


class Procs:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, ns: str, argv: list[str]) -> None:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "agent.cli", *argv],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def log(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=STOP_TIMEOUT_S)


def get_report(lab: Any) -> dict[str, Any] | None:
    proc = lab.fabric.exec(["curl", "-sf", "--max-time", "5",
                            f"http://{COLLECTOR_IP}:{COLLECTOR_PORT}/report?format=json"],
                           check=False, timeout=10)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return None


def wait_for(lab: Any, procs: Procs, what: str, timeout: float,
             ok: Callable[[dict[str, Any]], bool]) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    last: dict[str, Any] | None = None
    while time.monotonic() - started < timeout:
        assert not procs.dead(), "\n".join(f"{n} died:\n{procs.log(n)}" for n in procs.dead())
        report = get_report(lab)
        if report is not None:
            last = report
            if ok(report):
                return report, time.monotonic() - started
        time.sleep(POLL_S)
    diags = [(d["id"], d["severity"], d["nodes"]) for d in (last or {}).get("diagnoses", [])]
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}; diagnoses now: {diags}\n"
                f"collector log:\n{procs.log('collector')}\nnode2 log:\n{procs.log('node2')}")


def serious(report: dict[str, Any], at_least: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    return [(d["id"], sorted(d["nodes"])) for d in report["diagnoses"]
            if d["severity"] in at_least]


def start_collector(procs: Procs, lab: Any, tmp_path: Path) -> None:
    procs.start("collector", lab.fabric.name, [
        "collector", "--listen", f"{COLLECTOR_IP}:{COLLECTOR_PORT}",
        "--db", str(tmp_path / "collector.sqlite3"),
        "--token-file", str(tmp_path / "token"), "--interval", str(INTERVAL_S)])


@pytest.fixture
def running_lab(tmp_path):
    reason = require_root()
    if reason:
        pytest.skip(reason)
    if subprocess.run(["which", "curl"], capture_output=True).returncode != 0:
        pytest.skip("the end-to-end lab test needs curl")
    from tests.lab.cluster import Lab
    from tests.lab.netns import sh

    procs = Procs(tmp_path)
    with Lab(nodes=4) as lab:
        try:
            sh(["ip", "-n", lab.fabric.name, "addr", "replace", f"{COLLECTOR_IP}/24",
                "dev", "fabric0"])
            (tmp_path / "token").write_text("e2e-token\n")
            start_collector(procs, lab, tmp_path)
            for n in lab.nodes:
                procs.start(n.name, n.ns_name, [
                    "agent", "--collector", f"http://{COLLECTOR_IP}:{COLLECTOR_PORT}",
                    "--node-name", n.name, "--interval", str(INTERVAL_S),
                    "--token-file", str(tmp_path / "token")])
            yield lab, procs, tmp_path
        finally:
            procs.stop_all()


def test_end_to_end_faults_are_named_with_their_nodes(running_lab) -> None:
    lab, procs, tmp_path = running_lab
    names = sorted(n.name for n in lab.nodes)

    def healthy(report: dict[str, Any]) -> bool:
        nodes = {n["name"]: n for n in report["nodes"]}
        # every node reported and probed all its peers for a few rounds, nothing wrong
        return (sorted(nodes) == names
                and report["matrix"].get("pairs_probed", 0) >= len(names) * (len(names) - 1)
                and not serious(report, ("warning", "error")))

    wait_for(lab, procs, "every node reporting, healthy", STARTUP_TIMEOUT_S, healthy)
    time.sleep(3 * INTERVAL_S)  # several more rounds: still healthy (no flapping)
    report = get_report(lab)
    assert report is not None
    assert serious(report, ("warning", "error")) == [], report["diagnoses"]

    timings = []
    for fault, target, diag_id, blamed, alone in FAULT_CASES:
        lab.inject(fault, target)
        try:
            def named(r: dict[str, Any], diag_id: str = diag_id,
                      blamed: list[str] = blamed) -> bool:
                return (diag_id, blamed) in serious(r, ("warning", "error"))

            report, took = wait_for(lab, procs, f"{diag_id} {blamed} after {fault}",
                                    DETECT_TIMEOUT_S, named)
            timings.append((fault, took))
            errors = serious(report, ("error",))
            assert all(e == (diag_id, blamed) for e in errors), (fault, errors)
            if alone:
                # the report that names it, and the next round's: nothing else at warning+
                assert serious(report, ("warning", "error")) == [(diag_id, blamed)], \
                    (fault, report["diagnoses"])
                time.sleep(INTERVAL_S)
                later = get_report(lab)
                assert later is not None
                assert serious(later, ("warning", "error")) == [(diag_id, blamed)], \
                    (fault, later["diagnoses"])
        finally:
            lab.clear(fault, target)
        # Clean again: no diagnosis and no failing pair left in any kept round, so the next
        # fault is detected from scratch (its time is not shortened by this one's history).
        wait_for(lab, procs, f"the lab to be clean after {fault}", CLEAR_TIMEOUT_S,
                 lambda r: not serious(r, ("warning", "error"))
                 and r["matrix"].get("pairs_failing", 0) == 0)
        time.sleep(2 * INTERVAL_S)
    # An agent that stops reporting becomes agent.stale (3 intervals), not a silent gap.
    procs.procs["node3"].send_signal(signal.SIGTERM)
    procs.procs["node3"].wait(timeout=STOP_TIMEOUT_S)
    del procs.procs["node3"]
    report, took = wait_for(lab, procs, "agent.stale node3", 3 * INTERVAL_S + DETECT_TIMEOUT_S,
                            lambda r: ("agent.stale", ["node3"]) in serious(r, ("warning",
                                                                                 "error")))
    timings.append(("agent stopped", took))
    assert [d for d in serious(report, ("error",)) if d[0] != "agent.stale"] == []
    # The collector goes away and comes back on the same database: it still knows every
    # node at once, and the agents' first reports say how long they could not post.
    collector = procs.procs.pop("collector")
    collector.send_signal(signal.SIGTERM)
    assert collector.wait(timeout=STOP_TIMEOUT_S) == 0
    time.sleep(3 * INTERVAL_S)
    start_collector(procs, lab, tmp_path)
    report, _ = wait_for(lab, procs, "the restarted collector", STARTUP_TIMEOUT_S,
                         lambda r: len(r["nodes"]) == len(names))
    report, _ = wait_for(lab, procs, "agent.post-failing from the agents", DETECT_TIMEOUT_S,
                         lambda r: any(f["id"] == "agent.post-failing" for f in r["findings"]))
    failing = [f for f in report["findings"] if f["id"] == "agent.post-failing"]
    assert failing[0]["severity"] == "warning" and "failed attempt" in failing[0]["evidence"]
    print("\ntime to detect (interval %gs): %s" % (
        INTERVAL_S, ", ".join(f"{f} {t:.1f}s" for f, t in timings)))
