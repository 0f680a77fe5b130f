"""Footprint of `netdiag check` and of the agent daemon: wall time and peak memory, each run
in a fresh child process, median of N runs. These numbers back the DaemonSet's and the
collector's resources in deploy/ (README, section "Benchmarks").

    python bench/footprint.py                         # `netdiag check --json` here, 5 runs
    python bench/footprint.py --services 10000        # ... in a namespace of our own holding
                                                      # a kube-proxy ruleset for 10k Services
    python bench/footprint.py --agent 60              # agent + collector on loopback, 60 s
    python bench/footprint.py --agent 60 --services 10000

Two memory numbers per run:
- `max_rss`: the largest single process of the run's process tree (os.wait4's ru_maxrss,
  exact; for the check at scale that is iptables-save or netdiag itself, whichever is larger);
- `tree_peak`: the peak of the tree's summed RSS, sampled every SAMPLE_INTERVAL_S with psutil
  (netdiag and its iptables-save child alive at once): what a container's memory cgroup is
  charged, so what the memory limit must allow. Sampling can miss a peak shorter than the
  interval; it never over-counts.

`--services` builds its own network namespace (`nd<id>-fp`), loads the generated ruleset
there with iptables-restore, runs inside it and deletes it (and every rule) afterwards: the
root namespace's firewall is never touched. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lab.netns import NetNS, new_run_id  # noqa: E402

SAMPLE_INTERVAL_S = 0.01
RUN_TIMEOUT_S = 300.0
RESTORE_TIMEOUT_S = 600.0
READY_TIMEOUT_S = 30.0
MIB = 1 << 20
#: What a user runs: the console script, as installed (falls back to the module).
#: GNU time measures a child's peak RSS without this process's own (see `measure`).
GNU_TIME = shutil.which("time", path="/usr/bin:/bin")
NETDIAG = [shutil.which("netdiag") or sys.executable, *([] if shutil.which("netdiag")
                                                          else ["-m", "agent.cli"])]


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    max_rss_mib: float
    tree_peak_mib: float
    exit_code: int


def _tree_rss(proc: psutil.Process, skip_root: bool = False) -> int:
    total = 0
    for p in ([] if skip_root else [proc]) + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


class TreeSampler:
    """Samples the summed RSS of a process and its descendants until stopped."""

    def __init__(self, pid: int, interval_s: float = SAMPLE_INTERVAL_S,
                 skip_root: bool = False) -> None:
        self.proc = psutil.Process(pid)
        self.skip_root = skip_root
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(_tree_rss(self.proc, self.skip_root))
            except psutil.Error:
                return
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


def measure(argv: list[str]) -> Run:
    """One fresh child: wall time, its peak RSS, and the sampled peak of its tree's summed RSS.

    The peak RSS comes from GNU time (`%M`, its wait4 on the child) where installed: a child
    forked straight from this Python would inherit this process's RSS as its high-water mark
    (the kernel carries the old mm's hiwater across vfork+exec), so a big bench process would
    inflate it. GNU time is a few hundred KB. Without it, os.wait4 is used (same caveat)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        wrapped = [GNU_TIME, "-f", "%M %U %S", "-o", out.name, *argv] if GNU_TIME else argv
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sampler = TreeSampler(proc.pid, skip_root=bool(GNU_TIME))
        try:
            proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        wall = time.perf_counter() - start
        sampler.stop()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.returncode not in (0, 1, 2):
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {stderr.strip()}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if GNU_TIME:
            max_rss = int(out.read().strip().splitlines()[-1].split()[0]) * 1024
        else:
            max_rss = after.ru_maxrss * 1024
    return Run(wall, cpu, max_rss / MIB, sampler.peak / MIB, proc.returncode)


def _median(runs: list[Run], field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs)


def bench_check(runs: int, prefix: list[str], extra: list[str]) -> dict[str, object]:
    argv = [*prefix, *NETDIAG, "check", "--json", *extra]
    measure(argv)  # warm the page cache (first import after install), not counted
    results = [measure(argv) for _ in range(runs)]
    return {
        "command": " ".join(argv),
        "runs": [asdict(r) for r in results],
        "median_wall_s": round(_median(results, "wall_s"), 3),
        "median_cpu_s": round(_median(results, "cpu_s"), 3),
        "median_max_rss_mib": round(_median(results, "max_rss_mib"), 1),
        "median_tree_peak_mib": round(_median(results, "tree_peak_mib"), 1),
    }


def load_ruleset(ns: NetNS, services: int, endpoints: int) -> dict[str, object]:
    """Generate a kube-proxy-shaped iptables-save dump and load it into `ns`."""
    with tempfile.NamedTemporaryFile("w+", suffix=".rules") as dump:
        subprocess.run([sys.executable, str(ROOT / "bench" / "gen_kube_proxy_dump.py"),
                        "--services", str(services), "--endpoints", str(endpoints)],
                       stdout=dump, check=True, timeout=RESTORE_TIMEOUT_S)
        dump.flush()
        dump.seek(0)
        lines = sum(1 for _ in dump)
        start = time.perf_counter()
        dump.seek(0)
        subprocess.run(["ip", "netns", "exec", ns.name, "iptables-restore"], stdin=dump,
                       check=True, timeout=RESTORE_TIMEOUT_S)
        restore_s = time.perf_counter() - start
    # Streamed to a file, never held here: this process stays small (see `measure`).
    with tempfile.TemporaryFile("w+b") as saved:
        subprocess.run(["ip", "netns", "exec", ns.name, "iptables-save"], check=True,
                       stdout=saved, timeout=RESTORE_TIMEOUT_S)
        size = saved.tell()
        saved.seek(0)
        rules = sum(1 for line in saved if line.startswith(b"-A "))
    return {"services": services, "endpoints": endpoints, "dump_lines": lines,
            "rules_loaded": rules, "iptables_save_bytes": size,
            "restore_s": round(restore_s, 1)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(prefix: list[str], url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if prefix:  # inside the namespace: ask from there
            ok = subprocess.run([*prefix, sys.executable, "-c",
                                 f"import urllib.request; urllib.request.urlopen({url!r}, "
                                 "timeout=1)"], capture_output=True, timeout=10).returncode == 0
        else:
            try:
                urllib.request.urlopen(url, timeout=1)
                ok = True
            except OSError:
                ok = False
        if ok:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready within {READY_TIMEOUT_S:g}s")


def _collector_peers(prefix: list[str], url: str) -> object:
    """The collector's peer list at the end: proof the agent really reported."""
    code = ("import urllib.request; "
            f"print(urllib.request.urlopen({url!r}, timeout=5).read().decode())")
    proc = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=30)
    return json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-300:]}


def _stop(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """SIGTERM, then the ru_maxrss of the whole tree and its CPU seconds, from wait4."""
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime
        time.sleep(0.05)
    proc.kill()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def bench_agent(seconds: float, interval: float, prefix: list[str]) -> dict[str, object]:
    """The collector and one agent (short interval) on loopback for `seconds`; RSS sampled
    every 0.1 s. steady = median of the samples after the first report round."""
    with tempfile.TemporaryDirectory(prefix="nd-fp-") as tmp:
        token = Path(tmp) / "token"
        token.write_text("footprint-bench-token")
        port = _free_port()
        collector = subprocess.Popen(
            [*prefix, *NETDIAG, "collector", "--listen",
             f"127.0.0.1:{port}", "--db", f"{tmp}/nd.sqlite3", "--token-file", str(token)],
            stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/collector.log", "wb"))
        agent = None
        try:
            _wait_ready(prefix, f"http://127.0.0.1:{port}/readyz")
            collector_sampler = TreeSampler(collector.pid, 0.1)
            agent = subprocess.Popen(
                [*prefix, *NETDIAG, "agent", "--collector",
                 f"http://127.0.0.1:{port}", "--token-file", str(token), "--interval",
                 str(interval), "--node-name", "footprint"],
                stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/agent.log", "wb"))
            agent_sampler = TreeSampler(agent.pid, 0.1)
            time.sleep(seconds)
            alive = agent.poll() is None
            reports = _collector_peers(prefix, f"http://127.0.0.1:{port}/api/v1/peers")
            agent_sampler.stop()
            collector_sampler.stop()
            agent_max_rss, agent_cpu = _stop(agent)
            collector_max_rss, collector_cpu = _stop(collector)
        finally:
            for p in (agent, collector):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
        agent_log = Path(f"{tmp}/agent.log").read_text(errors="replace")[-2000:]
        warm = agent_sampler.samples[int(interval / 0.1) + 10:] or agent_sampler.samples
        cwarm = collector_sampler.samples[10:] or collector_sampler.samples
        return {
            "seconds": seconds, "interval_s": interval, "agent_survived": alive,
            "agent_steady_mib": round(statistics.median(warm) / MIB, 1),
            "agent_tree_peak_mib": round(agent_sampler.peak / MIB, 1),
            "agent_max_rss_mib": round(agent_max_rss / MIB, 1),
            "agent_avg_cpu_millicores": round(1000 * agent_cpu / seconds),
            "collector_steady_mib": round(statistics.median(cwarm) / MIB, 1),
            "collector_max_rss_mib": round(collector_max_rss / MIB, 1),
            "collector_avg_cpu_millicores": round(1000 * collector_cpu / seconds),
            "collector_peers": reports,
            "agent_log_tail": agent_log if not alive else "",
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--services", type=int, default=0,
                        help="load a kube-proxy ruleset for this many Services (own netns)")
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--agent", type=float, default=0, metavar="SECONDS",
                        help="instead of `check`: run collector + agent this long")
    parser.add_argument("--interval", type=float, default=5.0, help="agent --interval")
    parser.add_argument("check_args", nargs="*", help="extra `netdiag check` arguments")
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    result: dict[str, object] = {"machine": {"cpus": os.cpu_count(),
                                             "kernel": os.uname().release}}
    ns = None
    prefix: list[str] = []
    try:
        if args.services or args.agent:
            ns = NetNS(f"nd{new_run_id()}-fp").create()
            prefix = ["ip", "netns", "exec", ns.name]
        if args.services:
            result["ruleset"] = load_ruleset(ns, args.services, args.endpoints)
            # The child the iptables check runs, alone: charged to the agent's cgroup too.
            save = [measure([*prefix, "iptables-save"]) for _ in range(args.runs)]
            result["iptables_save"] = {
                "median_wall_s": round(_median(save, "wall_s"), 3),
                "median_max_rss_mib": round(_median(save, "max_rss_mib"), 1)}
        if args.agent:
            result["agent"] = bench_agent(args.agent, args.interval, prefix)
        else:
            result["check"] = bench_check(args.runs, prefix, args.check_args)
    finally:
        if ns is not None:
            ns.delete()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
