"""The control-probe responders: a UDP echo on AGENT_PORT (answers only datagrams that carry a
probe marker, with the same bytes: no amplification, nothing for strangers) and, for one-shot
and lab use, a TCP listener on AGENT_PORT (the agent daemon's HTTP server holds TCP there).

`python -m agent.probes.responder [--listen IP] [--capture-dev DEV] [--duration S] [--json]`
runs both (and, with --capture-dev, the capture), then prints what it saw from each peer.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Sequence

from agent.ports import AGENT_PORT, VXLAN_PORT_LINUX
from agent.probes.capture import Capture, CaptureError, SeenTally, SocketThread
from agent.probes.frames import parse_marker

UDP_MAX_DATAGRAM = 2048
TCP_BACKLOG = 64


class UdpResponder(SocketThread):
    """Echoes probe markers sent to UDP `port`; counts them (udp-control) in `seen`."""

    def __init__(self, listen: str = "", port: int = AGENT_PORT,
                 seen: SeenTally | None = None) -> None:
        super().__init__()
        self.listen, self.port = listen, port
        self.seen = seen if seen is not None else SeenTally()

    def start(self) -> None:
        self._serve(_bound(socket.SOCK_DGRAM, self.listen, self.port),
                    "netdiag-udp-responder")

    def _read_one(self, sock: socket.socket) -> None:
        data, addr = sock.recvfrom(UDP_MAX_DATAGRAM)
        marker = parse_marker(data)
        if marker is None or marker.kind != "udp-control":
            return
        self.seen.add(marker.sender, addr[0], marker.kind)
        try:
            sock.sendto(data, addr)
        except OSError:
            pass


class TcpResponder(SocketThread):
    """Accepts and closes TCP connections on `port` (what the tcp-control probe connects to
    when no agent daemon serves HTTP there)."""

    def __init__(self, listen: str = "", port: int = AGENT_PORT) -> None:
        super().__init__()
        self.listen, self.port = listen, port

    def start(self) -> None:
        self._serve(_bound(socket.SOCK_STREAM, self.listen, self.port),
                    "netdiag-tcp-responder")

    def _read_one(self, sock: socket.socket) -> None:
        conn, _ = sock.accept()
        conn.close()


def _bound(kind: socket.SocketKind, listen: str, port: int) -> socket.socket:
    """An IPv4 socket bound to (listen, port), listening when it is TCP; raises OSError."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(TCP_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def seen_to_json(seen: dict[tuple[str, str, str], int]) -> list[dict[str, object]]:
    return [{"peer": p, "peer_ip": ip, "kind": k, "count": c}
            for (p, ip, k), c in sorted(seen.items())]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent.probes.responder",
        description="Answer netdiag control probes (UDP echo + TCP accept on the agent port) "
                    "and, with --capture-dev, count the VXLAN probes peers send here.")
    parser.add_argument("--listen", default="", metavar="IP")
    parser.add_argument("--port", type=int, default=AGENT_PORT)
    parser.add_argument("--no-tcp", action="store_true", help="UDP echo only")
    parser.add_argument("--capture-dev", metavar="DEV", help="capture VXLAN probes on DEV")
    parser.add_argument("--vxlan-port", type=int, default=VXLAN_PORT_LINUX)
    parser.add_argument("--node-name", default=os.environ.get("NODE_NAME")
                        or socket.gethostname())
    parser.add_argument("--duration", type=float, default=0.0, metavar="S",
                        help="stop after S seconds (default: until SIGINT/SIGTERM or stdin EOF)")
    parser.add_argument("--json", action="store_true", help="print what was seen as JSON")
    args = parser.parse_args(argv)

    seen = SeenTally()
    parts: list = []
    try:
        if args.capture_dev:
            cap = Capture(args.node_name, args.capture_dev, args.vxlan_port, seen=seen)
            cap.start()
            parts.append(cap)
        udp = UdpResponder(args.listen, args.port, seen)
        udp.start()
        parts.append(udp)
        if not args.no_tcp:
            tcp = TcpResponder(args.listen, args.port)
            tcp.start()
            parts.append(tcp)
    except (CaptureError, OSError) as exc:
        for p in parts:
            p.stop()
        print(f"responder: {exc}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    try:
        if args.duration > 0:
            time.sleep(args.duration)
        else:
            sys.stdin.read()  # until EOF (the parent closes our stdin) or a signal
    except KeyboardInterrupt:
        pass
    finally:
        for p in parts:
            p.stop()
    counts = seen.take()
    if args.json:
        print(json.dumps({"seen": seen_to_json(counts)}))
    else:
        for (peer, ip, kind), count in sorted(counts.items()):
            print(f"{peer} {ip} {kind} {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
