"""The capture: one long-lived AF_PACKET socket on the underlay interface, with a kernel BPF
filter for the VXLAN UDP port and the probe marker inside it, read by one thread.

It sees packets *before* the host firewall (AF_PACKET taps the device), so for each peer it
counts the probes that physically arrived here, even when this node's own firewall then drops
them. It also hands the peer kernels' echo replies to our own echo/MTU probes to the prober.

Needs CAP_NET_RAW; without it `start()` raises CaptureError saying so.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections import Counter
from typing import Callable

from agent.probes.bpf import (CAPTURE_SNAPLEN_BYTES, attach_filter, build_echo_reply_filter,
                              build_probe_capture_filter)
from agent.probes.frames import (MARKER_MAGIC, CapturedProbe, ProbeFrame, classify_probe_ipv4,
                                 classify_vxlan_packet, sender_id)

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
#: Packets (or connections) drained per wake-up at most, so a flood cannot starve the stop
#: check.
READ_BATCH = 256

ReplyHandler = Callable[[CapturedProbe, int], None]
StackReplyHandler = Callable[[ProbeFrame, int], None]


class CaptureError(RuntimeError):
    pass


def wait_readable(sock: socket.socket, wake_fd: int) -> bool:
    """Block until `sock` is readable (True) or `wake_fd` is (False: stop). poll(), not
    select(): a long-lived agent may hold file descriptors above select's 1024 limit."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_fd, select.POLLIN)
    while True:
        events = dict(poller.poll())
        if wake_fd in events:
            return False
        if events:
            return True


class SocketThread:
    """One non-blocking socket read by one daemon thread that sleeps in poll() until the
    socket or stop() (a wake pipe) wakes it: the lifecycle the capture, the reply listener and
    the control responders share. A subclass opens its socket, hands it to `_serve`, and reads
    one packet (or connection) per `_read_one` call."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1

    def _serve(self, sock: socket.socket, thread_name: str) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, name=thread_name, daemon=True)
        self._thread.start()

    def _read_one(self, sock: socket.socket) -> None:
        """Receive and handle one item; BlockingIOError when there is none left."""
        raise NotImplementedError

    def _loop(self) -> None:
        sock = self._sock
        assert sock is not None
        # Blocks in the kernel until something passes the socket's filter: no idle wake-ups.
        while wait_readable(sock, self._wake_r):
            for _ in range(READ_BATCH):
                try:
                    self._read_one(sock)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    return  # the socket was closed under us

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1


def missing_capability_message(what: str, exc: OSError) -> str:
    return (f"{what} needs CAP_NET_RAW, which this process lacks ({exc.strerror or exc}); "
            "run the agent privileged or add NET_RAW to its capabilities")


class SeenTally:
    """Thread-safe counts of peers' probes: (peer name, peer underlay IP, kind) -> count.
    The capture adds the VXLAN kinds, the UDP responder the udp-control probes it answered."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    def add(self, sender: str, peer_ip: str, kind: str) -> None:
        with self._lock:
            self._counts[(sender, peer_ip, kind)] += 1

    def take(self) -> dict[tuple[str, str, str], int]:
        """The counts since the last call (and start again from zero)."""
        with self._lock:
            counts = dict(self._counts)
            self._counts.clear()
        return counts


class Capture(SocketThread):
    """Counts peers' probes seen on `ifname`; calls `on_reply(probe, recv_ns)` (in the capture
    thread) for echo replies to this node's probes."""

    def __init__(self, node_name: str, ifname: str, vxlan_port: int,
                 on_reply: ReplyHandler | None = None, seen: SeenTally | None = None,
                 snaplen: int = CAPTURE_SNAPLEN_BYTES) -> None:
        super().__init__()
        self.node_name = node_name
        self.ifname = ifname
        self.vxlan_port = vxlan_port
        self.on_reply = on_reply
        self.snaplen = snaplen
        self._own_id = sender_id(node_name)
        self.seen = seen if seen is not None else SeenTally()
        self.packets = 0

    def start(self) -> None:
        try:
            # Protocol 0: no packet is queued until bind, so nothing slips in unfiltered.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError as exc:
            raise CaptureError(missing_capability_message("the capture", exc)) from None
        try:
            attach_filter(sock, build_probe_capture_filter(self.vxlan_port, MARKER_MAGIC,
                                                           self.snaplen))
            sock.bind((self.ifname, ETH_P_IP))
        except OSError as exc:
            sock.close()
            raise CaptureError(f"capture on {self.ifname}: {exc.strerror or exc}") from None
        self._serve(sock, f"netdiag-capture-{self.ifname}")

    def _read_one(self, sock: socket.socket) -> None:
        data, addr = sock.recvfrom(self.snaplen)
        if addr[2] == PACKET_OUTGOING:
            return
        self.packets += 1
        self._handle(data, time.monotonic_ns())

    def _handle(self, data: bytes, recv_ns: int) -> None:
        probe = classify_vxlan_packet(data, self.vxlan_port)
        if probe is None:
            return
        marker = probe.frame.marker
        if marker.sender_id == self._own_id:
            if probe.frame.is_reply and self.on_reply is not None:
                self.on_reply(probe, recv_ns)
            return
        if probe.frame.is_reply:
            return  # a peer kernel's reply to somebody else's probe: not ours to count
        self.seen.add(marker.sender, probe.outer_src, marker.kind)


class ReplyListener(SocketThread):
    """A raw ICMP socket (with a BPF filter: echo replies carrying our marker) that receives
    the peer kernels' replies to our echo/MTU probes *after* this node's own stack accepted
    them: decapsulated by our VXLAN device, through our firewall and rp_filter. The underlay
    capture sees the same reply earlier, at the NIC: seen there but never here = this node
    drops it (reported in the probe's `error`)."""

    def __init__(self, node_name: str, on_reply: StackReplyHandler,
                 snaplen: int = CAPTURE_SNAPLEN_BYTES) -> None:
        super().__init__()
        self.on_reply = on_reply
        self.snaplen = snaplen
        self._own_id = sender_id(node_name)

    def start(self) -> None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        except PermissionError as exc:
            raise CaptureError(missing_capability_message("receiving echo replies", exc)) \
                from None
        try:
            attach_filter(sock, build_echo_reply_filter(MARKER_MAGIC, self.snaplen))
            # Replies queued before the filter was attached arrive unfiltered: `_read_one`
            # classifies every packet anyway.
        except OSError as exc:
            sock.close()
            raise CaptureError(f"echo reply socket: {exc.strerror or exc}") from None
        self._serve(sock, "netdiag-echo-replies")

    def _read_one(self, sock: socket.socket) -> None:
        frame = classify_probe_ipv4(sock.recv(self.snaplen))
        if frame is not None and frame.is_reply and frame.marker.sender_id == self._own_id:
            self.on_reply(frame, time.monotonic_ns())
