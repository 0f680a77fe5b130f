"""Hand-built NodeReports for the correlation tests: a cluster and a fault, round by round.

    rounds = simulate(["n1", "n2", "n3"], rounds=2, lost=lambda s, t: {"wire", "echo"}
                      if t == "n2" else set())
    latest, history = rounds.latest, rounds.history

`lost(sender, target)` returns the probe kinds that lose every packet on that pair: "wire"
means the target's capture never sees the sender's VXLAN packets (and then the echo and MTU
probes are lost too); "echo", "udp-control", "tcp-control", "mtu" lose the answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from agent.report import Finding, NodeInfo, NodeReport, OverlayDevice, ProbeResult, SeenCount

SENT = 3
ALL_KINDS = ("wire", "echo", "udp-control", "tcp-control", "mtu")
WIRE_ONLY_KINDS = ("wire", "udp-control", "tcp-control")
BASE_FACTS = {"ip_forward": 1, "rp_filter": {"all": 0, "eth0": 2}, "kube_proxy_mode": "iptables",
              "conntrack_binary": True, "cni_config_digest": "sha256:cni1",
              "service_vips_digest": "sha256:aaaa"}

Lost = Callable[[str, str], Iterable[str]]


def no_loss(sender: str, target: str) -> set[str]:
    return set()


def vxlan(name: str, vni: int = 1, port: int = 8472, mtu: int = 1450) -> OverlayDevice:
    return OverlayDevice(name="flannel.1", vni=vni, port=port, local="", mtu=mtu,
                         addresses=("10.244.0.0/32",))


def ip_of(names: list[str], name: str) -> str:
    return f"192.168.77.{10 + names.index(name)}"


def build_round(names: list[str], at: float, lost: Lost = no_loss, interval: float = 10.0,
                peers: Callable[[str], Iterable[str]] | None = None,
                wire_only: Iterable[str] = (), facts: Mapping[str, Mapping[str, Any]] = {},
                overlay: Mapping[str, OverlayDevice] = {},
                findings: Mapping[str, tuple[Finding, ...]] = {},
                silent: Iterable[str] = ()) -> dict[str, NodeReport]:
    """One round: every node in `names` (except `silent` ones) reports at `at`."""
    wire_only = set(wire_only)
    probes: dict[str, list[ProbeResult]] = {n: [] for n in names}
    seen: dict[str, list[SeenCount]] = {n: [] for n in names}
    for s in names:
        targets = peers(s) if peers else [t for t in names if t != s]
        for t in targets:
            loss = set(lost(s, t))
            if "wire" in loss:
                loss |= {"echo", "mtu"}
            kinds = WIRE_ONLY_KINDS if (s in wire_only or t in wire_only) else ALL_KINDS
            for k in kinds:
                answered = None if k == "wire" else (0 if k in loss else SENT)
                probes[s].append(ProbeResult(t, ip_of(names, t), k, SENT, answered))
            if "wire" not in loss:
                seen[t].append(SeenCount(s, ip_of(names, s), "wire", SENT))
    out = {}
    for n in names:
        if n in set(silent):
            continue
        f = dict(BASE_FACTS)
        f.update(facts.get(n, {}))
        dev = () if n in wire_only else (overlay.get(n) or vxlan(n),)
        out[n] = NodeReport(NodeInfo(n, ip_of(names, n), "6.1.0", "0.1.0"), at,
                            interval_s=interval, overlay=dev, facts=f,
                            findings=findings.get(n, ()), probes=tuple(probes[n]),
                            seen=tuple(seen[n]))
    return out


@dataclass
class Simulation:
    rounds: list[dict[str, NodeReport]]

    @property
    def latest(self) -> dict[str, NodeReport]:
        out: dict[str, NodeReport] = {}
        for r in self.rounds:
            out.update(r)
        return out

    @property
    def history(self) -> dict[str, list[NodeReport]]:
        out: dict[str, list[NodeReport]] = {}
        for r in self.rounds:
            for n, rep in r.items():
                out.setdefault(n, []).append(rep)
        return out

    @property
    def now(self) -> float:
        return max(rep.collected_at for r in self.rounds for rep in r.values()) + 1.0


def simulate(names: list[str], rounds: int = 2, lost: Lost = no_loss, start: float = 1000.0,
             interval: float = 10.0, healthy_first: int = 0, **kw: Any) -> Simulation:
    """`healthy_first` healthy rounds, then `rounds` rounds with the fault."""
    out = []
    for i in range(healthy_first + rounds):
        fault = lost if i >= healthy_first else no_loss
        out.append(build_round(names, start + i * interval, fault, interval, **kw))
    return Simulation(out)


def nodes(n: int) -> list[str]:
    return [f"node{i}" for i in range(1, n + 1)]
