"""One probe round for `netdiag check --peer NAME=IP ...` (and `python -m agent.probes.oneshot`).

The local overlay comes from the VXLAN check's facts when it ran (Facts.overlay_devices(),
Facts.underlay_ip), else from netlink directly; each peer's VXLAN MAC and address from the
local FDB and neighbour tables (agent.probes.peers). Never raises for a node-side problem
(no privilege, no underlay address, no route): the reason becomes the probes' `error`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import Any, Iterable, Sequence

from agent.probes import Peer, ProberConfig
from agent.probes.peers import choose_overlay, peers_from_tables
from agent.report import OverlayDevice, ProbeResult, SeenCount


def overlay_from_outcomes(outcomes: Iterable[Any]) -> tuple[tuple[OverlayDevice, ...], str]:
    """The overlay devices and underlay IP the checks found (the VXLAN check's raw facts)."""
    devices: list[OverlayDevice] = []
    underlay = ""
    for o in outcomes:
        raw = getattr(o, "raw", None)
        found = getattr(raw, "overlay_devices", None)
        if callable(found):
            devices.extend(found())
            underlay = underlay or str(getattr(raw, "underlay_ip", "") or "")
    return tuple(devices), underlay


class ProbeSetupError(Exception):
    """The node cannot probe at all (no netlink, no underlay address): the reason, plainly."""


def prepare_prober(host: Any, node_name: str, outcomes: Iterable[Any],
                   peers: Sequence[tuple[str, str]], config: ProberConfig | None = None,
                   ) -> tuple[Any, tuple[Peer, ...]]:
    """A started Prober for this node and the Peers (VXLAN MAC/IP filled from the tables)."""
    from agent.probes.discover import (discover_overlay, read_fdb, read_neighbours,
                                       underlay_for)
    from agent.probes.prober import Prober

    devices, underlay_ip = overlay_from_outcomes(outcomes)
    try:
        ipr = host.netlink()
        if not devices:
            devices = discover_overlay(ipr)
        overlay = choose_overlay(devices)
        fdb = read_fdb(ipr, overlay.name) if overlay else ()
        neighbours = read_neighbours(ipr, overlay.name) if overlay else ()
        underlay_ip, underlay_dev = underlay_for(ipr, overlay, underlay_ip,
                                                 peers[0][1] if peers else "")
    except OSError as exc:
        raise ProbeSetupError(f"cannot read the overlay over netlink: "
                              f"{exc.strerror or exc}") from None
    targets = peers_from_tables(peers, fdb, neighbours)
    cfg = config or ProberConfig(udp_responder=False)
    if cfg.peers_per_round < len(targets):
        cfg = replace(cfg, peers_per_round=len(targets))
    prober = Prober(node_name, overlay, underlay_ip, underlay_dev, cfg)
    try:
        prober.start()
    except OSError as exc:
        raise ProbeSetupError(str(exc.strerror or exc)) from None
    return prober, targets


def probe_peers(host: Any, node_name: str, outcomes: Iterable[Any],
                peers: Sequence[tuple[str, str]],
                config: ProberConfig | None = None,
                ) -> tuple[tuple[ProbeResult, ...], tuple[SeenCount, ...]]:
    if not peers:
        return (), ()
    try:
        prober, targets = prepare_prober(host, node_name, outcomes, peers, config)
    except ProbeSetupError as exc:
        return _failed(peers, str(exc)), ()
    try:
        return prober.run_round(targets)
    finally:
        prober.stop()


def _failed(peers: Sequence[tuple[str, str]], error: str) -> tuple[ProbeResult, ...]:
    return tuple(ProbeResult(peer=name, peer_ip=ip, kind="wire", sent=0, answered=None,
                             error=error) for name, ip in peers)


def main(argv: Sequence[str] | None = None) -> int:
    """Probes only (no node checks): `python -m agent.probes.oneshot --peer n2=IP [--json]`.
    With `--rounds N --serve` it behaves like the agent's probe loop (capture and UDP
    responder kept up between rounds), which the lab uses to test both sides at once."""
    from agent.cli import default_node_name, parse_peer
    from agent.host import Host
    from agent.render import render_probe_table
    from agent.report import NodeInfo, NodeReport

    parser = argparse.ArgumentParser(prog="python -m agent.probes.oneshot")
    parser.add_argument("--peer", action="append", type=parse_peer, default=[], required=True,
                        metavar="NAME=IP")
    parser.add_argument("--node-name", default=None)
    parser.add_argument("--probes-per-kind", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--interval", type=float, default=1.0, metavar="S",
                        help="seconds between round starts (with --rounds)")
    parser.add_argument("--serve", action="store_true",
                        help="answer peers' udp-control probes on the agent port meanwhile")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    name = args.node_name or default_node_name()
    cfg = ProberConfig(probes_per_kind=args.probes_per_kind, udp_responder=args.serve)
    rounds = []
    with Host() as host:
        try:
            prober, targets = prepare_prober(host, name, (), args.peer, cfg)
        except ProbeSetupError as exc:
            rounds.append((_failed(args.peer, str(exc)), ()))
        else:
            try:
                for i in range(max(1, args.rounds)):
                    started = time.monotonic()
                    rounds.append(prober.run_round(targets))
                    if i + 1 < args.rounds:
                        time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
            finally:
                prober.stop()
    if args.json:
        out = [{"probes": [p.to_dict() for p in probes], "seen": [s.to_dict() for s in seen]}
               for probes, seen in rounds]
        print(json.dumps(out[0] if len(out) == 1 else {"rounds": out}, indent=2))
    else:
        for probes, seen in rounds:
            report = NodeReport(node=NodeInfo(name=name), collected_at=0.0, probes=probes,
                                seen=seen)
            sys.stdout.write(render_probe_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
