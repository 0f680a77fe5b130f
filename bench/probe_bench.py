"""Probe footprint and speed, measured (run by hand as root; never a timed test).

    sudo python -m bench.probe_bench            # from the repository root

What it measures, each in a fresh interpreter inside a lab namespace:
  1. import time and RSS of the probe modules, on a namespace with 0 and with 5,000 routes
     (scapy is not imported by the agent; its import is measured beside them for comparison,
     with and without `conf.route_autoload = False`);
  2. steady RSS of a started Prober (capture + echo-reply socket + UDP responder) after rounds;
  3. packets/s of the send path (frame build + UDP sendto), unpaced;
  4. CPU of the capture while idle, and while 20k packets/s of other UDP, or of VXLAN that
     is not a probe (pods' traffic), cross the interface (the BPF filter keeps it asleep);
  5. the duration of one round to 16 peers at the default budget (200 packets/s) in a
     17-node lab.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lab.netns import NetNS, new_run_id, sh  # noqa: E402

ROUTES = 5000
IDLE_S = 10.0
NOISE_PPS = 20000

_RSS = """
def _rss_mb():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
"""

IMPORT_PROBES = _RSS + """
import time, json
t = time.perf_counter()
import agent.probes.prober, agent.probes.oneshot, agent.probes.discover, pyroute2
print(json.dumps({"s": time.perf_counter() - t, "rss_mb": _rss_mb()}))
"""

IMPORT_PROBER_ONLY = _RSS + """
import time, json
t = time.perf_counter()
import agent.probes.prober
print(json.dumps({"s": time.perf_counter() - t, "rss_mb": _rss_mb()}))
"""

IMPORT_PYROUTE2 = _RSS + """
import time, json
t = time.perf_counter()
import pyroute2
print(json.dumps({"s": time.perf_counter() - t, "rss_mb": _rss_mb()}))
"""

IMPORT_BASELINE = _RSS + """
import json
print(json.dumps({"s": 0.0, "rss_mb": _rss_mb()}))
"""

IMPORT_SCAPY = _RSS + """
import time, json
t = time.perf_counter()
from scapy.config import conf
if {autoload_off}:
    conf.route_autoload = False
    conf.route6_autoload = False
import scapy.layers.inet, scapy.layers.vxlan
print(json.dumps({{"s": time.perf_counter() - t, "rss_mb": _rss_mb()}}))
"""

STEADY_PROBER = _RSS + """
import json, time
from agent.probes import Peer, ProberConfig
from agent.probes.prober import Prober
from agent.report import OverlayDevice
ov = OverlayDevice("vx0", vni=1, port=8472, mtu=1450, mac="0e:00:00:00:00:01",
                   addresses=("10.244.1.0/32",))
p = Prober("bench", ov, "192.168.99.1", "eth0", ProberConfig(packets_per_s=2000))
p.start()
peers = [Peer(f"peer{i}", "192.168.99.2", vxlan_ip="10.244.2.0", vxlan_mac="0e:00:00:00:00:02")
         for i in range(16)]
for _ in range(3):
    p.run_round(peers)
out = {"rss_mb": _rss_mb(), "capture": p.capture is not None,
       "listener": p.listener is not None, "error": p.capture_error}
p.stop()
print(json.dumps(out))
"""

SEND_PATH = """
import json, socket, time
from agent.probes.frames import build_marker, build_vxlan_payload, build_wire_frame, build_echo_frame
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.168.99.1", 0))
n = 100000
t = time.perf_counter()
for i in range(n):
    m = build_marker("wire", i, time.monotonic_ns(), "bench-node")
    s.sendto(build_vxlan_payload(1, build_wire_frame("0e:00:00:00:00:02", "0e:00:00:00:00:01", m)),
             ("192.168.99.2", 8472))
wire = n / (time.perf_counter() - t)
t = time.perf_counter()
for i in range(n):
    m = build_marker("echo", i, time.monotonic_ns(), "bench-node")
    s.sendto(build_vxlan_payload(1, build_echo_frame("0e:00:00:00:00:02", "0e:00:00:00:00:01",
             "10.244.1.0", "10.244.2.0", m, 1, i)), ("192.168.99.2", 8472))
echo = n / (time.perf_counter() - t)
print(json.dumps({"wire_pps": wire, "echo_pps": echo}))
"""

IDLE_CPU = """
import json, os, sys, time
from agent.probes import ProberConfig
from agent.probes.prober import Prober
from agent.report import OverlayDevice
ov = OverlayDevice("vx0", vni=1, port=8472, mtu=1450, mac="0e:00:00:00:00:01",
                   addresses=("10.244.1.0/32",))
p = Prober("bench", ov, "192.168.99.1", "eth0", ProberConfig())
p.start()
assert p.capture is not None, p.capture_error
print("ready", flush=True)
sys.stdin.readline()
rx = lambda: int(open("/sys/class/net/eth0/statistics/rx_packets").read())
t0, c0, r0 = time.monotonic(), sum(os.times()[:2]), rx()
time.sleep(float(sys.argv[1]))
t1, c1, r1 = time.monotonic(), sum(os.times()[:2]), rx()
print(json.dumps({"cpu_pct": 100 * (c1 - c0) / (t1 - t0), "packets_woken": p.capture.packets,
                  "rx_packets": r1 - r0}), flush=True)
p.stop()
"""

NOISE = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
pps, dur, port = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
# a VXLAN-shaped payload (flags 0x08, VNI 1, an inner frame that is no probe) when port 8472
payload = bytes([8, 0, 0, 0, 0, 0, 1, 0]) + bytes(12) + bytes([8, 0]) + bytes(80)
end = time.monotonic() + dur
gap = 1.0 / pps
nxt = time.monotonic()
n = 0
while time.monotonic() < end:
    s.sendto(payload, ("192.168.99.1", port))
    n += 1
    nxt += gap
    d = nxt - time.monotonic()
    if d > 0:
        time.sleep(d)
print(n)
"""


def py(ns: NetNS, code: str, *args: str, timeout: float = 120) -> dict:
    out = ns.exec([sys.executable, "-c", code, *args], timeout=timeout,
                  ).stdout.strip().splitlines()
    return json.loads(out[-1])


def build_pair(run: str) -> tuple[NetNS, NetNS]:
    a, b = NetNS(f"nd{run}-ba").create(), NetNS(f"nd{run}-bb").create()
    a.exec(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name])
    for ns, ip in ((a, "192.168.99.1"), (b, "192.168.99.2")):
        ns.exec(["ip", "addr", "add", f"{ip}/24", "dev", "eth0"])
        ns.exec(["ip", "link", "set", "eth0", "up"])
    return a, b


def add_routes(ns: NetNS, n: int) -> None:
    lines = "".join(f"route add 10.{100 + i // 65536 % 100}.{i // 256 % 256}.{i % 256}/32 "
                    f"via 192.168.99.2\n" for i in range(n))
    ns.exec(["ip", "-batch", "-"], input=lines)


def bench_imports(a: NetNS, label: str) -> dict:
    res = {"baseline": py(a, IMPORT_BASELINE), "prober_only": py(a, IMPORT_PROBER_ONLY),
           "pyroute2_only": py(a, IMPORT_PYROUTE2), "probes+pyroute2": py(a, IMPORT_PROBES),
           "scapy_autoload": py(a, IMPORT_SCAPY.format(autoload_off=False)),
           "scapy_no_autoload": py(a, IMPORT_SCAPY.format(autoload_off=True)),
           "prober_steady": py(a, STEADY_PROBER)}
    print(f"\n[{label}]")
    for k, v in res.items():
        extra = f"{v['s'] * 1000:7.0f} ms" if "s" in v else "         "
        print(f"  {k:<18} {extra}  RSS {v['rss_mb']:6.1f} MB")
    return res


def bench_idle_cpu(a: NetNS, b: NetNS) -> dict:
    out = {}
    for label, noise, port in (("idle", 0, 0),
                               (f"{NOISE_PPS} pps other UDP", NOISE_PPS, 9999),
                               (f"{NOISE_PPS} pps pod VXLAN (8472)", NOISE_PPS, 8472)):
        proc = a.popen([sys.executable, "-c", IDLE_CPU, str(IDLE_S)], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        noise_proc = None
        if noise:
            noise_proc = b.popen([sys.executable, "-c", NOISE, str(noise), str(IDLE_S + 1),
                                  str(port)],
                                 stdout=subprocess.PIPE)
            time.sleep(0.5)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        proc.wait(timeout=30)
        if noise_proc:
            noise_proc.wait(timeout=30)
        out[label] = json.loads(line)
        print(f"  capture CPU, {label:<30} {out[label]['cpu_pct']:.3f}% of a core "
              f"({out[label]['rx_packets']} packets received on eth0, "
              f"{out[label]['packets_woken']} woke the capture)")
    return out


def bench_round(run: str) -> float:
    from tests.lab.cluster import Lab

    with Lab(nodes=17, run_id=run) as lab:
        peers = [f"--peer=node{i}={lab.node(f'node{i}').underlay_ip}" for i in range(2, 18)]
        code = ("import time, json, sys\n"
                "from agent.probes.oneshot import prepare_prober\n"
                "from agent.cli import parse_peer\n"
                "from agent.host import Host\n"
                "peers=[parse_peer(a.split('=',1)[1]) for a in sys.argv[1:]]\n"
                "with Host() as h:\n"
                "    p, t = prepare_prober(h, 'node1', (), peers)\n"
                "    s = time.perf_counter(); probes, seen = p.run_round(t)\n"
                "    d = time.perf_counter() - s; p.stop()\n"
                "ans = sum(x.answered or 0 for x in probes if x.kind == 'echo')\n"
                "print(json.dumps({'s': d, 'echo_answered': ans, 'peers': len(t)}))\n")
        res = py(lab.node("node1").ns, code, *peers)
    print(f"  one round to {res['peers']} peers (default budget 200 packets/s, 3 per kind): "
          f"{res['s']:.2f} s; echo answered {res['echo_answered']}/{3 * res['peers']}")
    return res["s"]


def main() -> int:
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 1
    os.chdir(ROOT)
    # The scapy imports below cache in $XDG_CACHE_HOME/scapy and read an empty or relative
    # value as the working directory (the repo root here): ignore it, as the XDG spec says.
    if not os.path.isabs(os.environ.get("XDG_CACHE_HOME", "/")):
        del os.environ["XDG_CACHE_HOME"]
    run = new_run_id()
    a, b = build_pair(run)
    try:
        print(f"python {sys.version.split()[0]}, kernel {os.uname().release}")
        bench_imports(a, "namespace with 0 extra routes")
        add_routes(a, ROUTES)
        n = len(a.exec(["ip", "route", "show"]).stdout.splitlines())
        bench_imports(a, f"namespace with {n} routes")
        send = py(a, SEND_PATH)
        print(f"\n  send path (build + UDP sendto, unpaced): wire {send['wire_pps']:,.0f} "
              f"packets/s, echo {send['echo_pps']:,.0f} packets/s")
        print()
        bench_idle_cpu(a, b)
    finally:
        a.delete()
        b.delete()
    print()
    bench_round(new_run_id())
    return 0


if __name__ == "__main__":
    sys.exit(main())
