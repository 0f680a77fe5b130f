"""Collector ingest benchmark: reports/s with validation and persistence, and the collector's
memory with 5,000 nodes. Run by hand (numbers go in README "bench"), never as a timed test.

    python bench/ingest_bench.py                      # 5,000 nodes, then 3 more rounds each
    python bench/ingest_bench.py --nodes 1000 --rounds 2 --concurrency 32

What it does:
1. starts `netdiag collector` (its own process, loopback, a fresh SQLite file, a token);
2. in a separate client process (`--concurrency` keep-alive connections; `--client raw`, a
   minimal HTTP/1.1 client, or `--client aiohttp`) posts one synthetic
   report per node ("join": each new node changes the peer list, so answers carry it), then
   `--rounds` more rounds per node in steady state (the agent sends the peer-list version it
   holds, so answers are small), each report validated by the collector, digested and
   committed to SQLite before it answers;
3. prints reports/s of both phases and the collector's CPU time per report (its capacity per
   core, whatever else the machine is doing; the client's CPU per report too: on a 2-core
   machine the two share the cores), its RSS after them, the /report latency at
   that size, and the database size.

The synthetic reports are shaped like the agent's: 16 sampled peers x 5 probe kinds x 3
probes, a seen count per peer, a VXLAN device, the facts the checks summarise, a few findings.
`--udp-blocked`: every pair fails (all UDP between the nodes dropped, TCP working), to time
/report and the memory of the worst case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.report import PROBE_KINDS, SCHEMA_NODE_REPORT  # noqa: E402

PEERS_PER_NODE = 16
PROBES_PER_KIND = 3
READY_TIMEOUT_S = 30.0
TOKEN = "bench-token"
MIB = 1 << 20
TRIM_WAIT_S = 31.0


def node_name(i: int) -> str:
    return f"node-{i:05d}"


def node_ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


#: probe kinds answered over UDP (lost when UDP between the nodes is blocked)
UDP_ANSWERED_KINDS = ("echo", "mtu", "udp-control")


def synthetic_report(i: int, n: int, round_no: int, udp_blocked: bool = False) -> bytes:
    """`udp_blocked`: all UDP between the nodes is dropped (seed 004's security group): the
    VXLAN probes are never seen, UDP answers never come, TCP control works."""
    # Node i probes i+1+k*step (+ the round, so the sample rotates); so the nodes whose
    # probes i's capture sees are i-1-k*step (- the round).
    step = max(1, n // PEERS_PER_NODE)
    peers = sorted({(i + 1 + k * step + round_no) % n for k in range(PEERS_PER_NODE)} - {i})
    senders = sorted({(i - 1 - k * step - round_no) % n for k in range(PEERS_PER_NODE)} - {i})
    probes, seen = [], []
    for p in peers:
        for kind in PROBE_KINDS:
            wire = kind == "wire"
            lost = udp_blocked and kind in UDP_ANSWERED_KINDS
            probes.append({"peer": node_name(p), "peer_ip": node_ip(p), "kind": kind,
                           "sent": PROBES_PER_KIND,
                           "answered": None if wire else 0 if lost else PROBES_PER_KIND,
                           "rtt_ms": None if wire or lost else
                           {"min": 0.21, "avg": 0.34, "max": 0.61},
                           "error": "timeout" if lost else ""})
    for p in senders if not udp_blocked else ():
        seen.append({"peer": node_name(p), "peer_ip": node_ip(p), "kind": "wire",
                     "count": PROBES_PER_KIND})
    name = node_name(i)
    report = {
        "schema": SCHEMA_NODE_REPORT,
        "node": {"name": name, "underlay_ip": node_ip(i), "kernel": "6.1.0-27-amd64",
                 "agent_version": "0.1.0"},
        "collected_at": time.time(), "interval_s": 30.0,
        "overlay": [{"name": "flannel.1", "vni": 1, "port": 8472, "local": node_ip(i),
                     "parent": "eth0", "mtu": 1450, "mac": f"0e:00:00:00:{(i >> 8) & 255:02x}:"
                     f"{i & 255:02x}", "addresses": [f"10.{128 + (i >> 8) % 128}.{i & 255}.0/32"],
                     "up": True}],
        "facts": {"ip_forward": 1, "rp_filter": {"all": 0, "default": 2, "eth0": 2,
                                                  "flannel.1": 0},
                  "bridge_nf_call_iptables": 1, "conntrack_binary": True,
                  "kube_proxy_mode": "iptables", "cni_config_digest": "3f2a9c1b",
                  "service_vips_digest": "9d41e2aa"},
        "findings": [
            {"id": "sysctl.ip-forward-off", "severity": "ok", "node": name,
             "title": "IPv4 forwarding is on", "evidence": "/proc/sys/net/ipv4/ip_forward = 1",
             "remediation": ""},
            {"id": "sysctl.rp-filter-strict", "severity": "ok", "node": name,
             "title": "rp_filter is not strict on the overlay path",
             "evidence": "net.ipv4.conf.all.rp_filter = 0", "remediation": ""},
            {"id": "conntrack.table-near-full", "severity": "info", "node": name,
             "title": "conntrack table 3% full", "evidence": "nf_conntrack_count 4012 / 131072",
             "remediation": ""}],
        "probes": probes, "seen": seen,
    }
    return json.dumps(report, separators=(",", ":")).encode()


# --- the client process -------------------------------------------------------------------------

def process_tree(pid: int) -> list[int]:
    """The collector and its decode workers."""
    import psutil
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the collector and its workers have used (from /proc)."""
    total = 0.0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:  # a worker that just ended
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class RawHttpClient:
    """A minimal HTTP/1.1 keep-alive client for POSTing reports (like wrk): one connection per
    worker, Content-Length bodies only. The aiohttp client costs 0.2-0.45 ms of CPU per request,
    as much as a third of what the collector spends; on a 2-core machine that CPU is taken from
    the collector being measured. `--client aiohttp` keeps the old client."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlsplit
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.peers_version = ""

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.conn
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n{head}"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status_and_headers = await reader.readuntil(b"\r\n\r\n")
        lines = status_and_headers.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(line.split(b":", 1)[1]) for line in lines[1:]
                      if line.lower().startswith(b"content-length:"))
        answer = await reader.readexactly(length)
        if any(line.lower() == b"connection: close" for line in lines[1:]):
            writer.close()
            self.conn = None
        self.peers_version = next((line.split(b":", 1)[1].strip().decode() for line in lines[1:]
                                   if line.lower().startswith(b"x-netdiag-peers-version:")), "")
        return status, answer

    async def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None


def client_main(url: str, nodes: int, rounds: int, concurrency: int, server_pid: int,
                out: "multiprocessing.Queue[dict]", client_kind: str = "raw",
                udp_blocked: bool = False) -> None:
    import aiohttp

    async def run() -> dict:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        results: dict = {}
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as session:
            versions: dict[int, str] = {}

            async def post(raw: RawHttpClient | None, body: bytes,
                           h: dict[str, str]) -> tuple[int, bytes, str]:
                """-> status, answer as received, the peer-list version it names."""
                if raw is not None:
                    # gzip accepted like the agent's aiohttp client; the answer is not unzipped
                    # (that is the agent's CPU, on its own node): the version is a header
                    status, answer = await raw.post("/api/v1/reports", body,
                                                    {**h, "Accept-Encoding": "gzip"})
                    return status, answer, raw.peers_version
                async with session.post(url + "/api/v1/reports", data=body,
                                        headers=h) as resp:
                    answer = await resp.read()
                    # {"peers":...,"interval_s":...,"peers_version":"<hex>"}
                    version = (answer[answer.rindex(b'"peers_version":"') + 17:-2].decode()
                               if resp.status == 200 else "")
                    return resp.status, answer, version

            async def phase(name: str, round_no: int) -> None:
                bodies = [synthetic_report(i, nodes, round_no, udp_blocked)
                          for i in range(nodes)]
                queue = list(range(nodes))
                errors = 0
                answer_bytes = 0

                async def worker() -> None:
                    nonlocal errors, answer_bytes
                    raw = RawHttpClient(url) if client_kind == "raw" else None
                    try:
                        while queue:
                            i = queue.pop()
                            h = dict(headers)
                            if i in versions:
                                h["X-Netdiag-Peers-Version"] = versions[i]
                            status, body, version = await post(raw, bodies[i], h)
                            answer_bytes += len(body)
                            if status != 200:
                                errors += 1
                                continue
                            versions[i] = version
                    finally:
                        if raw is not None:
                            await raw.close()

                cpu0, client_cpu0 = cpu_seconds(server_pid), time.process_time()
                started = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                took = time.perf_counter() - started
                server_cpu = cpu_seconds(server_pid) - cpu0
                client_cpu = time.process_time() - client_cpu0
                results[name] = {"reports": nodes, "seconds": round(took, 2),
                                 "reports_per_s": round(nodes / took),
                                 "server_cpu_us_per_report": round(server_cpu / nodes * 1e6),
                                 "client_cpu_us_per_report": round(client_cpu / nodes * 1e6),
                                 "errors": errors, "report_bytes": len(bodies[0]),
                                 "answer_mb": round(answer_bytes / MIB, 1)}

            await phase("join", 0)
            steady = []
            for r in range(1, rounds + 1):
                await phase(f"round{r}", r)
                steady.append(results[f"round{r}"])
            if steady:
                total = sum(x["reports"] for x in steady)
                secs = sum(x["seconds"] for x in steady)
                cpu_us = sum(x["server_cpu_us_per_report"] * x["reports"] for x in steady) / total
                client_us = sum(x["client_cpu_us_per_report"] * x["reports"]
                                for x in steady) / total
                results["steady"] = {"reports": total, "seconds": round(secs, 2),
                                     "reports_per_s": round(total / secs),
                                     "server_cpu_us_per_report": round(cpu_us),
                                     "client_cpu_us_per_report": round(client_us),
                                     "server_capacity_per_core": round(1e6 / cpu_us)}
        return results

    out.put(asyncio.run(run()))


# --- the collector process ----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of the collector process alone."""
    with open(f"/proc/{pid}/status") as fh:
        return next((int(line.split()[1]) / 1024 for line in fh
                     if line.startswith("VmRSS:")), 0.0)


def pss_mb(pid: int) -> float:
    """Proportional set size of the collector and its decode workers: the memory they use
    together, pages they share counted once (what the pod's memory limit sees; adding up
    RSS would count the code a forked worker shares with the collector twice)."""
    total = 0.0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                total += next((int(line.split()[1]) / 1024 for line in fh
                               if line.startswith("Pss:")), 0.0)
        except OSError:
            continue
    return total


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"collector not ready at {url} within {READY_TIMEOUT_S:g}s")


def timed_get(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as resp:
        size = len(resp.read())
    return time.perf_counter() - started, size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3, help="steady-state rounds after joining")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--keep-rounds", type=int, default=3)
    ap.add_argument("--decode-workers", type=int, default=1,
                    help="the collector's --decode-workers (default 1, its default)")
    ap.add_argument("--client", choices=("raw", "aiohttp"), default="raw",
                    help="raw: a minimal keep-alive HTTP/1.1 client (default; leaves the CPU to "
                         "the collector); aiohttp: aiohttp's client")
    ap.add_argument("--udp-blocked", action="store_true",
                    help="every report shows all UDP between the nodes blocked (TCP works): "
                         "the /report of the worst case, ~80,000 failing pairs at 5,000 nodes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="netdiag-ingest-"))
    (tmp / "token").write_text(TOKEN + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # This checkout's collector (not whichever `netdiag` is installed: a non-editable install
    # elsewhere on PATH would be measured instead of the code under test).
    netdiag = [sys.executable, "-m", "agent.cli"]
    log = open(tmp / "collector.log", "wb")
    collector = subprocess.Popen([*netdiag, "collector", "--listen", f"127.0.0.1:{port}",
                                  "--db", str(tmp / "db.sqlite3"),
                                  "--token-file", str(tmp / "token"),
                                  "--keep-rounds", str(args.keep_rounds),
                                  "--decode-workers", str(args.decode_workers)],
                                 stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_ready(url)
        rss_idle = rss_mb(collector.pid)
        out: multiprocessing.Queue[dict] = multiprocessing.Queue()
        client = multiprocessing.Process(target=client_main, args=(
            url, args.nodes, args.rounds, args.concurrency, collector.pid, out, args.client,
            args.udp_blocked))
        client.start()
        results = out.get()
        client.join()
        rss_peak = rss_mb(collector.pid)
        time.sleep(TRIM_WAIT_S)  # the collector hands freed memory back every 30 s
        rss_after = rss_mb(collector.pid)
        report_json_s, json_bytes = timed_get(url + "/report?format=json")
        report_text_s, text_bytes = timed_get(url + "/report")
        report_cached_s, _ = timed_get(url + "/report")
        with urllib.request.urlopen(url + "/report?format=json", timeout=120) as resp:
            diagnoses = sorted(f"{d['id']} ({len(d['nodes'])} nodes)"
                               for d in json.loads(resp.read())["diagnoses"])
        rss_report = rss_mb(collector.pid)
        pss_report = pss_mb(collector.pid)
        db_mb = sum(p.stat().st_size for p in tmp.glob("db.sqlite3*")) / MIB
        summary = {
            "nodes": args.nodes, "keep_rounds": args.keep_rounds, "concurrency": args.concurrency,
            "client": args.client, "decode_workers": args.decode_workers, "cpus": os.cpu_count(),
            **results,
            "collector_rss_mb": {"idle": round(rss_idle, 1),
                                 "right_after_ingest": round(rss_peak, 1),
                                 f"after_{args.nodes}_nodes": round(rss_after, 1),
                                 "after_report": round(rss_report, 1)},
            "decode_workers_rss_mb": [round(rss_mb(p), 1) for p in process_tree(collector.pid)[1:]],
            "collector_and_workers_pss_mb": round(pss_report, 1),
            "report_json_s": round(report_json_s, 2), "report_json_kb": json_bytes // 1024,
            "report_text_s": round(report_text_s, 2), "report_text_kb": text_bytes // 1024,
            "report_cached_s": round(report_cached_s, 3),
            "diagnoses": diagnoses,
            "db_mb": round(db_mb, 1),
        }
    finally:
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(timeout=10)
        except subprocess.TimeoutExpired:
            collector.kill()
            collector.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
