"""Benchmark: `iptables-save` / `ipvsadm -Ln` analysis at kube-proxy scale (run by hand).

    python bench/iptables_bench.py            # 10k x 3, 10k x 10, 30k x 5, ipvs 14k x 10
    python bench/iptables_bench.py --quick    # 10k x 3 only

For each size a kube-proxy-shaped dump is generated (bench/gen_kube_proxy_dump.py), written
to a temporary file, and timed (best and median of --repeat runs, in this process):
  read+split       open(path).read().splitlines()  (the floor: Python merely reading lines)
  parse+analysis   parse_iptables_save + the kube-proxy view + the iptables check's evaluate
                   and summarize (every verdict and the VIP digest), from the text in memory
Memory is measured in a fresh child once the text is read (the text is the agent's input, not
counted): resident-set growth across the analysis, and the peak of Python allocations during
it (tracemalloc).
Targets (issue 3): 10k x 3 <= 0.5 s and <= 3x read+split; 10k x 10 <= 1.5 s and <= 100 MB;
ipvsadm 14k x 10 <= 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gen_kube_proxy_dump import generate_ipvsadm, generate_iptables_save  # noqa: E402

from agent.checks import iptables, ipvs  # noqa: E402
from agent.checks.base import CheckContext  # noqa: E402
from agent.parsers.iptables_save import parse_iptables_save  # noqa: E402
from agent.parsers.ipvsadm import parse_ipvsadm  # noqa: E402

CTX = CheckContext(node="bench")


def analyse_iptables(text: str) -> int:
    dump = parse_iptables_save(text)
    facts = iptables.Facts((iptables.SaveOutput("iptables-save", dump),))
    findings = iptables.evaluate(facts, CTX)
    summary = iptables.summarize(facts)
    return len(findings) + int(summary["service_vips_count"])  # type: ignore[call-overload]


def analyse_ipvs(text: str) -> int:
    table = parse_ipvsadm(text)
    return len(ipvs.evaluate_table(table, CTX)) + len(table.virtual_servers)


def timed(fn, repeat: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return min(runs), statistics.median(runs)


#: In a fresh child: the text is read (the agent's input), the heap is settled, then the
#: analysis runs. Reported: the peak of Python allocations during the analysis (tracemalloc)
#: and the growth of resident memory (VmHWM would also count the read's transient buffers, so
#: the current RSS is sampled right after the analysis, with the result still alive).
CHILD = """
import gc, sys, tracemalloc
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
from iptables_bench import analyse_iptables, analyse_ipvs
from agent.parsers.iptables_save import parse_iptables_save
from agent.parsers.ipvsadm import parse_ipvsadm
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6
text = open({path!r}).read()
gc.collect()
before = rss()
keep = {fn}(text)
after = rss()
tracemalloc.start()
{fn}(text)
peak = tracemalloc.get_traced_memory()[1] / 1e6
print(after - before, peak)
"""


def memory_mb(path: str, fn: str) -> tuple[float, float]:
    code = CHILD.format(root=str(ROOT), bench=str(ROOT / "bench"), path=path, fn=fn)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=600)
    rss, peak = out.stdout.split()
    return float(rss), float(peak)


def bench_one(kind: str, services: int, endpoints: int, repeat: int) -> dict[str, object]:
    lines = (generate_ipvsadm(services, endpoints) if kind == "ipvs"
             else generate_iptables_save(services, endpoints))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")
        path = fh.name
    try:
        size = os.path.getsize(path)
        with open(path) as f:
            text = f.read()
        n_lines = text.count("\n")

        def read_split() -> None:
            with open(path) as f:
                f.read().splitlines()

        fn = analyse_ipvs if kind == "ipvs" else analyse_iptables
        base_best, base_med = timed(read_split, repeat)
        best, med = timed(lambda: fn(text), repeat)
        rss, peak = memory_mb(path, fn.__name__)
    finally:
        os.unlink(path)
    return {"case": f"{kind} {services // 1000}k x {endpoints}", "lines": n_lines,
            "mb": round(size / 1e6, 1), "read_split_s": round(base_best, 3),
            "analysis_best_s": round(best, 3), "analysis_median_s": round(med, 3),
            "ratio_best": round(best / base_best, 2), "rss_growth_mb": round(rss, 1),
            "peak_alloc_mb": round(peak, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    cases = [("iptables", 10000, 3)]
    if not args.quick:
        cases += [("iptables", 10000, 10), ("iptables", 30000, 5), ("ipvs", 14000, 10)]
    rows = [bench_one(kind, s, e, args.repeat) for kind, s, e in cases]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'case':<20} {'lines':>8} {'MB':>6} {'read+split':>11} {'analysis':>9} "
          f"{'median':>7} {'ratio':>6} {'RSS +MB':>8} {'peak MB':>8}")
    for r in rows:
        print(f"{r['case']:<20} {r['lines']:>8} {r['mb']:>6} {r['read_split_s']:>10}s "
              f"{r['analysis_best_s']:>8}s {r['analysis_median_s']:>6}s {r['ratio_best']:>6} "
              f"{r['rss_growth_mb']:>8} {r['peak_alloc_mb']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
