"""Correlation and /report rendering at cluster scale (run by hand, not a test).

    python bench/correlate_bench.py [--nodes 5000] [--peers 16] [--rounds 2] [--repeat 5]

Generates synthetic NodeReports (every node probes K peers per round with all five probe kinds;
the sample rotates every round: round r uses 16 ring offsets drawn from a seeded RNG, so each
node is probed by exactly K peers per round), then times, per scenario:

- digest: `digest_report` of every latest report (the collector can do this once at ingest);
- correlate: `correlate_with_matrix` from digests (latest + history), median and min of
  --repeat;
- correlate-raw: the same from NodeReports (digesting included), once;
- json: `build_report_state` + the collector's `/report` JSON encoding
  (`collector.app.encode_report_json`: `render_report_json` + orjson);
- text: `render_report_text` (lines, widest line).

Python's GC runs with the collector's settings (`collector.main.tune_gc`: a young-generation
threshold of 20,000), as in the collector process these functions run in.

`--phased`: rounds are not synchronised (each node at its own phase of the interval, and a
receiver counts a sender's probes in its first report after them), as in a real cluster.

Scenarios: healthy; one node's inbound UDP 8472 dropped in the fabric + rp_filter drift on 3
nodes + 1 stale agent; 1% random pair loss (noise that must not blame anyone); a 50/50
partition (every pair across fails); UDP blocked between all nodes, TCP working (the all-UDP
security group of seed 004; the worst case: every probed pair fails).
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.report import (Finding, NodeInfo, NodeReport, OverlayDevice, ProbeResult,  # noqa: E402
                          RttStats, SeenCount, Severity)
from collector.correlate import correlate_with_matrix, digest_report  # noqa: E402
from collector.app import encode_report_json  # noqa: E402
from collector.main import tune_gc  # noqa: E402
from collector.render import (build_report_state,  # noqa: E402
                              render_report_text)

KINDS = ("wire", "echo", "udp-control", "tcp-control", "mtu")
SENT = 3
INTERVAL_S = 30.0
T0 = 1_700_000_000.0


def offsets_for(round_no: int, n: int, k: int) -> list[int]:
    return random.Random(1000 + round_no).sample(range(1, n), k)


def _noise(s: str, t: str, r: int) -> float:
    """A deterministic pseudo-random number per (sender, target, round)."""
    return random.Random(f"{s}|{t}|{r}").random()


def _lost(lost: Callable, s: str, t: str, r: int) -> set[str]:
    try:
        return lost(s, t, r)
    except TypeError:
        return lost(s, t)


def phase_of(i: int) -> float:
    """A node's offset within the interval (deterministic, spread evenly)."""
    return (i * 0.6180339887) % 1.0 * INTERVAL_S


def make_round(names: list[str], round_no: int, k: int,
               lost: Callable[[str, str], set[str]], facts_for: Callable[[str], dict],
               silent: set[str], phased: bool = False) -> dict[str, NodeReport]:
    """One round of reports. `phased`: every node reports at its own phase in the interval
    and a receiver's capture counts a sender's probes in its first report after them (the
    previous round's probes of senders whose phase is later than its own)."""
    n = len(names)
    offs = offsets_for(round_no, n, k)
    phase = [phase_of(i) if phased else 0.0 for i in range(n)]
    ips = {name: f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i, name in enumerate(names)}
    probes: dict[str, list[ProbeResult]] = {name: [] for name in names}
    seen: dict[str, list[SeenCount]] = {name: [] for name in names}
    rtt = RttStats(0.2, 0.3, 0.5)
    for i, s in enumerate(names):
        for o in offs:
            j = (i + o) % n
            t = names[j]
            loss = _lost(lost, s, t, round_no)
            if "wire" in loss:
                loss = loss | {"echo", "mtu"}
            plist = probes[s]
            for kind in KINDS:
                if kind == "wire":
                    plist.append(ProbeResult(t, ips[t], kind, SENT, None))
                elif kind in loss:
                    plist.append(ProbeResult(t, ips[t], kind, SENT, 0, None, "timeout"))
                else:
                    plist.append(ProbeResult(t, ips[t], kind, SENT, SENT, rtt))
            if "wire" not in loss and phase[i] <= phase[j]:
                seen[t].append(SeenCount(s, ips[s], "wire", SENT))
    if phased and round_no > 0:  # late senders' probes of the previous round land here
        for i, s in enumerate(names):
            for o in offsets_for(round_no - 1, n, k):
                j = (i + o) % n
                if phase[i] > phase[j] and "wire" not in _lost(lost, s, names[j], round_no - 1):
                    seen[names[j]].append(SeenCount(s, ips[s], "wire", SENT))
    ok_findings = tuple(Finding(f"check.{j}", Severity.OK, "", "fine") for j in range(12))
    out = {}
    for i, name in enumerate(names):
        if name in silent:
            continue
        dev = OverlayDevice("flannel.1", vni=1, port=8472, local=ips[name], parent="eth0",
                            mtu=1450, mac="aa:bb:cc:dd:ee:ff", addresses=("10.244.0.0/32",))
        at = T0 + round_no * INTERVAL_S + phase[i]
        out[name] = NodeReport(NodeInfo(name, ips[name], "6.1.0", "0.1.0"), at, INTERVAL_S,
                               (dev,), facts_for(name), ok_findings, tuple(probes[name]),
                               tuple(seen[name]))
    return out


def base_facts(name: str) -> dict:
    return {"ip_forward": 1, "rp_filter": {"all": 0, "default": 1, "eth0": 0, "flannel.1": 0},
            "bridge_nf_call_iptables": 1, "conntrack_binary": True, "kube_proxy_mode": "iptables",
            "cni_config_digest": "sha256:1111", "service_vips_digest": "sha256:2222",
            "hairpin": {"cni0": True}, "conntrack_count": hash(name) % 5000,
            "iptables_input_digest": "sha256:3333"}


def scenarios(names: list[str]) -> dict[str, dict]:
    n = len(names)
    victim = names[n // 3]
    drifted = set(names[10:13])
    half = set(names[: n // 2])
    noisy = set()
    return {
        "healthy": dict(lost=lambda s, t: set(), facts=base_facts, silent=set()),
        "inbound+drift+stale": dict(
            lost=lambda s, t: {"wire"} if t == victim else set(),
            facts=lambda name: {**base_facts(name), "rp_filter": {"all": 1}}
            if name in drifted else base_facts(name),
            silent={names[-1]}),
        "1% pair noise": dict(
            lost=lambda s, t, r=0: {"wire"} if _noise(s, t, r) < 0.01 else set(),
            facts=base_facts, silent=noisy),
        "partition 50/50": dict(
            lost=lambda s, t: {"wire"} if (s in half) != (t in half) else set(),
            facts=base_facts, silent=set()),
        "UDP blocked, all pairs": dict(
            lost=lambda s, t: {"wire", "udp-control"}, facts=base_facts, silent=set()),
    }


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--peers", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default="", help="run only scenarios whose name contains this")
    ap.add_argument("--phased", action="store_true",
                    help="unsynchronised rounds: every node at its own phase of the interval")
    args = ap.parse_args(argv)
    # the collector's GC settings (collector.main.tune_gc): correlation and /report run there
    tune_gc()
    names = [f"node-{i:05d}" for i in range(args.nodes)]
    print(f"{args.nodes} nodes, {args.peers} peers/round, {len(KINDS)} probe kinds, "
          f"{args.rounds} rounds of history, {'phased' if args.phased else 'synchronised'} "
          f"rounds, Python {sys.version.split()[0]}")
    print(f"{'scenario':<22}{'gen s':>7}{'digest ms':>11}{'us/rep':>8}{'corr ms':>9}"
          f"{'min ms':>8}{'raw ms':>8}{'json ms':>9}{'json MB':>9}{'text ms':>9}{'lines':>7}"
          f"{'width':>7}  diagnoses")
    for label, sc in scenarios(names).items():
        if args.only and args.only not in label:
            continue
        gen, rounds = timed(lambda: [make_round(names, r, args.peers, sc["lost"], sc["facts"],
                                                sc["silent"] if r == args.rounds - 1 else set(),
                                                args.phased)
                                     for r in range(args.rounds)])
        if sc["silent"]:  # the silent node stopped reporting long ago
            old = rounds[0][next(iter(sc["silent"]))]
            rounds[0][old.node.name] = NodeReport(old.node, T0 - 10 * INTERVAL_S, INTERVAL_S,
                                                  old.overlay, old.facts, old.findings,
                                                  old.probes, old.seen)
        latest: dict[str, NodeReport] = {}
        history: dict[str, list[NodeReport]] = {}
        for r in rounds:
            latest.update(r)
            for name, rep in r.items():
                history.setdefault(name, []).append(rep)
        now = T0 + args.rounds * INTERVAL_S if not args.phased else \
            max(r.collected_at for r in latest.values()) + 1.0
        t_dig, dig_latest = timed(lambda: {n: digest_report(r) for n, r in latest.items()})
        dig_hist = {n: [dig_latest[n] if r is latest[n] else digest_report(r) for r in rs]
                    for n, rs in history.items()}
        times = []
        for _ in range(args.repeat):
            t, (diags, matrix) = timed(lambda: correlate_with_matrix(dig_latest, now, dig_hist))
            times.append(t)
        t_raw, _ = timed(lambda: correlate_with_matrix(latest, now, history))
        t_state, state = timed(lambda: build_report_state(dig_latest, now, dig_hist))
        t_json, body = timed(lambda: encode_report_json(state, {}, {}))
        t_text, text = timed(lambda: render_report_text(state))
        lines = text.splitlines()
        summary = ", ".join(sorted({f"{d.id}x{sum(1 for e in diags if e.id == d.id)}"
                                    for d in diags})) or "none"
        print(f"{label:<22}{gen:>7.1f}{t_dig * 1e3:>11.1f}{t_dig / len(latest) * 1e6:>8.1f}"
              f"{statistics.median(times) * 1e3:>9.1f}{min(times) * 1e3:>8.1f}{t_raw * 1e3:>8.0f}"
              f"{(t_state + t_json) * 1e3:>9.0f}{len(body) / 1e6:>9.2f}{t_text * 1e3:>9.1f}"
              f"{len(lines):>7}{max(map(len, lines)):>7}  {summary}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"load average at the end: {open('/proc/loadavg').read().split()[0]} "
          f"(a shared 2-vCPU VM: other work inflates the numbers)")
    print(f"peak RSS of this process (all scenarios, reports kept in memory): {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
