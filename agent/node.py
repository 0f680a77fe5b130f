"""Assemble one NodeReport from a run of the node checks (and, when given, probe results)."""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any, Iterable

from agent import __version__
from agent.checks import ALL_CHECKS
from agent.checks.base import CheckContext, CheckOutcome, run_checks
from agent.host import Host
from agent.report import NodeInfo, NodeReport, OverlayDevice, ProbeResult, SeenCount


def build_node_report(node: NodeInfo, outcomes: Iterable[CheckOutcome], collected_at: float,
                      interval_s: float = 0.0, probes: Iterable[ProbeResult] = (),
                      seen: Iterable[SeenCount] = ()) -> NodeReport:
    """Pure: the outcomes of one run become the wire report. A check contributes overlay
    devices by returning Facts with an `overlay_devices()` method (the VXLAN check)."""
    outcomes = list(outcomes)
    facts: dict[str, Any] = {}
    overlay: list[OverlayDevice] = []
    for o in outcomes:
        facts.update(o.facts)
        devices = getattr(o.raw, "overlay_devices", None)
        if callable(devices):
            overlay.extend(devices())
    findings = tuple(f for o in outcomes for f in o.findings)
    return NodeReport(node=node, collected_at=collected_at, interval_s=interval_s,
                      overlay=tuple(overlay), facts=facts, findings=findings,
                      probes=tuple(probes), seen=tuple(seen))


def check_node(host: Host, node_name: str, host_root: str = "/",
               checks: tuple[ModuleType, ...] = ALL_CHECKS,
               only: frozenset[str] = frozenset(), skip: frozenset[str] = frozenset(),
               ) -> tuple[NodeInfo, list[CheckOutcome]]:
    ctx = CheckContext(node=node_name, host_root=host_root)
    outcomes = run_checks(checks, host, ctx, only=only, skip=skip)
    underlay = ""
    for o in outcomes:
        underlay = underlay or str(getattr(o.raw, "underlay_ip", "") or "")
    info = NodeInfo(name=node_name, underlay_ip=underlay, kernel=host.kernel_release(),
                    agent_version=__version__)
    return info, outcomes


def now() -> float:
    return time.time()
