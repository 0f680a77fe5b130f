"""Tiny stand-alone network tools the lab runs inside namespaces (no ping/nc on CI images).

Run as a script (`python nettool.py ping 10.244.2.2 -s 1400 --df`), never imported by the
agent. Exit 0 = success (reply / connection / echo), 1 = no answer, 2 = usage or local error.

    ping DST [-s SIZE] [--df] [-W TIMEOUT]     ICMP echo over a raw socket, one request
    tcp-serve PORT [--for S]                   accept and close connections, "ready" on stdout
    tcp-connect IP PORT [-W TIMEOUT]
    udp-echo PORT [--for S]                    echo datagrams back, "ready" on stdout
    udp-ask IP PORT [-W TIMEOUT]               send one datagram, wait for its echo
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import sys
import time

IP_MTU_DISCOVER = 10     # linux/in.h
IP_PMTUDISC_DO = 2
ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(dst: str, size: int, df: bool, timeout: float) -> int:
    ident = os.getpid() & 0xFFFF
    payload = (b"netdiag-lab" * (size // 11 + 1))[:size]
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, 1)
    packet = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum(header + payload), ident, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        if df:
            s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        try:
            s.sendto(packet + payload, (dst, 0))
        except OSError as e:
            print(f"send: {e}")
            return 1
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([s], [], [], left)
            if not ready:
                break
            data, addr = s.recvfrom(65535)
            ihl = (data[0] & 0x0F) * 4
            typ, _, _, rid, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if typ == ICMP_ECHO_REPLY and rid == ident and seq == 1 and addr[0] == dst:
                print(f"reply from {dst}: {len(data) - ihl - 8} bytes")
                return 0
    print(f"no reply from {dst} within {timeout}s")
    return 1


def serve(kind: int, port: int, duration: float) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    if kind == socket.SOCK_STREAM:
        s.listen(16)
    print("ready", flush=True)
    deadline = time.monotonic() + duration
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([s], [], [], left)
        if not ready:
            continue
        if kind == socket.SOCK_STREAM:
            conn, _ = s.accept()
            conn.close()
        else:
            data, addr = s.recvfrom(65535)
            s.sendto(data, addr)
    return 0


def tcp_connect(ip: str, port: int, timeout: float) -> int:
    try:
        socket.create_connection((ip, port), timeout=timeout).close()
    except OSError as e:
        print(f"tcp {ip}:{port}: {e}")
        return 1
    print(f"tcp {ip}:{port}: connected")
    return 0


def udp_ask(ip: str, port: int, timeout: float) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(b"netdiag-lab", (ip, port))
        try:
            data, _ = s.recvfrom(2048)
        except OSError as e:
            print(f"udp {ip}:{port}: {e}")
            return 1
    print(f"udp {ip}:{port}: echo {data!r}")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="nettool")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ping")
    a.add_argument("dst")
    a.add_argument("-s", "--size", type=int, default=56)
    a.add_argument("--df", action="store_true")
    a.add_argument("-W", "--timeout", type=float, default=1.0)
    for name in ("tcp-serve", "udp-echo"):
        a = sub.add_parser(name)
        a.add_argument("port", type=int)
        a.add_argument("--for", dest="duration", type=float, default=60.0)
    for name in ("tcp-connect", "udp-ask"):
        a = sub.add_parser(name)
        a.add_argument("ip")
        a.add_argument("port", type=int)
        a.add_argument("-W", "--timeout", type=float, default=1.0)
    args = p.parse_args(argv)
    if args.cmd == "ping":
        return ping(args.dst, args.size, args.df, args.timeout)
    if args.cmd == "tcp-serve":
        return serve(socket.SOCK_STREAM, args.port, args.duration)
    if args.cmd == "udp-echo":
        return serve(socket.SOCK_DGRAM, args.port, args.duration)
    if args.cmd == "tcp-connect":
        return tcp_connect(args.ip, args.port, args.timeout)
    return udp_ask(args.ip, args.port, args.timeout)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(1)
