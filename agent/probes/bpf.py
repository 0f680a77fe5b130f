"""The capture's kernel filter: a classic BPF program for `ip and udp dst port <N>`.

Built in code rather than by running tcpdump on the node (the image need not carry tcpdump):
the instructions below are exactly what `tcpdump -dd -s <snaplen> 'ip and udp dst port N'`
prints (a unit test compares them when tcpdump is installed). The kernel runs it on every
packet of the underlay interface, so the agent's thread only wakes for VXLAN traffic, and
only the first `snaplen` bytes of each packet are copied to it.
"""

from __future__ import annotations

import ctypes
import struct

#: Enough for outer headers (50), inner Ethernet/IPv4/ICMP (42) and the marker (<= 90).
CAPTURE_SNAPLEN_BYTES = 256
SO_ATTACH_FILTER = 26

# Classic BPF opcodes (linux/filter.h).
BPF_LDH_ABS = 0x28   # ldh [k]
BPF_LDB_ABS = 0x30   # ldb [k]
BPF_LDH_IND = 0x48   # ldh [x + k]
BPF_LDXB_MSH = 0xB1  # ldxb 4*([k]&0xf)
BPF_JEQ_K = 0x15
BPF_JSET_K = 0x45
BPF_RET_K = 0x06
BPF_LDB_IND = 0x50   # ldb [x + k]
BPF_LDW_IND = 0x40   # ld [x + k]

Instruction = tuple[int, int, int, int]  # code, jt, jf, k


def build_udp_dst_port_filter(port: int,
                              snaplen: int = CAPTURE_SNAPLEN_BYTES) -> tuple[Instruction, ...]:
    """IPv4, UDP, not a non-first fragment, destination port `port` -> keep `snaplen` bytes."""
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    return (
        (BPF_LDH_ABS, 0, 0, 12),          # ethertype
        (BPF_JEQ_K, 0, 8, 0x0800),        # IPv4 or drop
        (BPF_LDB_ABS, 0, 0, 23),          # IP protocol
        (BPF_JEQ_K, 0, 6, 17),            # UDP or drop
        (BPF_LDH_ABS, 0, 0, 20),          # flags + fragment offset
        (BPF_JSET_K, 4, 0, 0x1FFF),       # a later fragment: drop
        (BPF_LDXB_MSH, 0, 0, 14),         # x = IP header length
        (BPF_LDH_IND, 0, 0, 16),          # UDP destination port
        (BPF_JEQ_K, 0, 1, port),
        (BPF_RET_K, 0, 0, snaplen),
        (BPF_RET_K, 0, 0, 0),
    )


#: Offsets from the outer IPv4 header's end (x = its length) + 14 (outer Ethernet): the marker
#: of a wire probe (right after the inner Ethernet header) and of an echo/MTU probe or reply
#: (after inner IPv4 without options, as we send them and Linux answers them, and ICMP).
WIRE_MARKER_OFFSET = 14 + 8 + 8 + 14          # outer UDP, VXLAN, inner Ethernet
ECHO_MARKER_OFFSET = WIRE_MARKER_OFFSET + 20 + 8  # + inner IPv4 + ICMP


def build_probe_capture_filter(port: int, magic: bytes,
                               snaplen: int = CAPTURE_SNAPLEN_BYTES) -> tuple[Instruction, ...]:
    """`ip and udp dst port <port>` (as tcpdump compiles it) narrowed to packets whose VXLAN
    payload carries a probe marker, so the pods' own overlay traffic never wakes the agent
    either: on a busy node that is many thousand packets a second."""
    if len(magic) != 4:
        raise ValueError("magic must be 4 bytes")
    head = build_udp_dst_port_filter(port, snaplen)[:9]   # up to `jeq port`
    accept, drop = 13, 14
    word = int.from_bytes(magic, "big")
    prog = [
        *head[:1], (BPF_JEQ_K, 0, drop - 2, 0x0800),
        head[2], (BPF_JEQ_K, 0, drop - 4, 17),
        head[4], (BPF_JSET_K, drop - 6, 0, 0x1FFF),
        head[6], head[7], (BPF_JEQ_K, 0, drop - 9, port),
        (BPF_LDW_IND, 0, 0, WIRE_MARKER_OFFSET),   # 9
        (BPF_JEQ_K, accept - 11, 0, word),         # 10
        (BPF_LDW_IND, 0, 0, ECHO_MARKER_OFFSET),   # 11
        (BPF_JEQ_K, accept - 13, drop - 13, word), # 12
        (BPF_RET_K, 0, 0, snaplen),                # 13 accept
        (BPF_RET_K, 0, 0, 0),                      # 14 drop
    ]
    return tuple(prog)


def build_echo_reply_filter(magic: bytes,
                            snaplen: int = CAPTURE_SNAPLEN_BYTES) -> tuple[Instruction, ...]:
    """For a raw ICMP socket (data starts at the IPv4 header): keep only echo replies whose
    payload starts with `magic` (4 bytes), so pods' own pings never wake the agent."""
    if len(magic) != 4:
        raise ValueError("magic must be 4 bytes")
    return (
        (BPF_LDXB_MSH, 0, 0, 0),          # x = IP header length
        (BPF_LDB_IND, 0, 0, 0),           # ICMP type
        (BPF_JEQ_K, 0, 3, 0),             # echo reply or drop
        (BPF_LDW_IND, 0, 0, 8),           # the first 4 payload bytes
        (BPF_JEQ_K, 0, 1, int.from_bytes(magic, "big")),
        (BPF_RET_K, 0, 0, snaplen),
        (BPF_RET_K, 0, 0, 0),
    )


def parse_tcpdump_dd(text: str) -> tuple[Instruction, ...]:
    """`tcpdump -dd` output (`{ 0x28, 0, 0, 0x0000000c },` lines) -> instructions."""
    out = []
    for line in text.splitlines():
        line = line.strip().strip("{},").strip()
        if not line or line.startswith("Warning"):
            continue
        parts = [p.strip().rstrip("}").strip() for p in line.split(",") if p.strip(" }")]
        code, jt, jf, k = (int(p, 0) for p in parts[:4])
        out.append((code, jt, jf, k))
    return tuple(out)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach_filter(sock, program: tuple[Instruction, ...]) -> None:  # type: ignore[no-untyped-def]
    """SO_ATTACH_FILTER the program to a socket (the kernel copies it; our buffer may go)."""
    raw = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = _SockFprog(len(program), ctypes.addressof(buf))
    sock.setsockopt(1, SO_ATTACH_FILTER, bytes(memoryview(fprog)))  # SOL_SOCKET = 1
