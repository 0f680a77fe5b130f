"""The prober: sends one bounded round of probes to a sample of peers and tallies the answers.

Sending needs no privilege: every VXLAN probe (wire, echo, mtu) is the payload of a plain UDP
socket bound to this node's underlay address (VXLAN header + inner frame; the kernel adds outer
IP/UDP), sent to the peer's underlay IP and VXLAN port. The UDP socket sets DF
(IP_PMTUDISC_DO), so an MTU probe is never fragmented on the way. The control probes are a UDP
datagram to the peer's agent port (echoed by its responder) and a TCP connect to it.

Seeing answers to echo/mtu probes needs the capture (CAP_NET_RAW): the peer kernel's reply
comes back VXLAN-encapsulated to our VXLAN port. Without the capability those kinds are
reported with sent 0 and an error naming the capability.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from agent.ports import VXLAN_PORT_LINUX
from agent.probes import Peer, ProberConfig
from agent.probes.capture import Capture, CaptureError, ReplyListener, SeenTally
from agent.probes.frames import (VXLAN_OVERHEAD_BYTES, CapturedProbe, ProbeFrame,
                                 build_echo_frame, build_marker, build_vxlan_payload,
                                 build_wire_frame, parse_marker, sender_id)
from agent.probes.responder import UdpResponder
from agent.probes.sampling import select_peers, send_interval_s
from agent.probes.tally import ProbeTally, results_from_tallies, seen_counts
from agent.report import OverlayDevice, ProbeResult, SeenCount

IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2
DEFAULT_VNI = 1
DEFAULT_OVERLAY_MTU = 1450


@dataclass
class _Outstanding:
    tally: ProbeTally
    send_ns: int
    #: echo/mtu: when the reply reached our NIC (underlay capture) and our stack (listener).
    nic_ns: int = 0
    stack_ns: int = 0


@dataclass
class _TcpAttempt:
    sock: socket.socket
    tally: ProbeTally
    start_ns: int


@dataclass
class _UdpControl:
    sock: socket.socket
    peer: Peer
    tally: ProbeTally
    #: the peer's kernel refused the port (no responder): nothing more to wait for
    refused: bool = False


@dataclass
class _RoundPlan:
    peer: Peer
    kinds: list[str] = field(default_factory=list)


class Prober:
    """See the package docstring for the contract."""

    def __init__(self, node_name: str, overlay: OverlayDevice | None, underlay_ip: str,
                 underlay_dev: str, config: ProberConfig | None = None) -> None:
        self.node_name = node_name
        self.overlay = overlay
        self.underlay_ip = underlay_ip
        self.underlay_dev = underlay_dev
        self.config = config or ProberConfig()
        self.vxlan_port = (overlay.port if overlay and overlay.port else VXLAN_PORT_LINUX)
        self.seen = SeenTally()
        self.capture: Capture | None = None
        self.listener: ReplyListener | None = None
        #: Why the capture or the echo-reply socket is not running (the daemon reports it).
        self.capture_error = ""
        #: Why echo/mtu cannot be answered here (no echo-reply socket), shown as their error.
        self.echo_error = ""
        self.responder_error = ""
        self._responder: UdpResponder | None = None
        self._send_sock: socket.socket | None = None
        #: This round's udp-control sockets, one connected socket per peer, so an ICMP port
        #: unreachable (no responder there) comes back as ECONNREFUSED: UDP reached the peer.
        self._udp_socks: dict[str, _UdpControl] = {}
        self._own_id = sender_id(node_name)
        self._ident = int.from_bytes(self._own_id[:2], "big")
        self._seq = 0
        self._round_no = 0
        self._lock = threading.Lock()
        self._outstanding: dict[tuple[str, int], _Outstanding] = {}

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        bind_ip = self.underlay_ip or ""
        self._send_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._send_sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        try:
            self._send_sock.bind((bind_ip, 0))
        except OSError as exc:
            self.stop()
            raise OSError(exc.errno, f"cannot bind to underlay address {bind_ip}: "
                                     f"{exc.strerror}") from None
        if self.config.capture and not self.underlay_dev and self.underlay_ip:
            self.underlay_dev = _device_holding(self.underlay_ip)
        if self.config.capture:
            errors = []
            listener = ReplyListener(self.node_name, self._on_stack_reply)
            try:
                listener.start()
                self.listener = listener
            except CaptureError as exc:
                self.echo_error = str(exc)
                errors.append(str(exc))
            if not self.underlay_dev:
                errors.append("no underlay interface known: capture not started")
            else:
                cap = Capture(self.node_name, self.underlay_dev, self.vxlan_port,
                              on_reply=self._on_reply, seen=self.seen)
                try:
                    cap.start()
                    self.capture = cap
                except CaptureError as exc:
                    if str(exc) not in errors:
                        errors.append(str(exc))
            self.capture_error = "; ".join(errors)
        else:
            self.echo_error = "capture disabled (ProberConfig.capture=False)"
        if self.config.udp_responder:
            responder = UdpResponder(bind_ip, self.config.control_port, self.seen)
            try:
                responder.start()
                self._responder = responder
            except OSError as exc:
                self.responder_error = (f"UDP responder on port {self.config.control_port}: "
                                        f"{exc.strerror or exc}")

    def stop(self) -> None:
        for part in (self.capture, self.listener, self._responder):
            if part is not None:
                part.stop()
        self.capture = self.listener = self._responder = None
        if self._send_sock is not None:
            self._send_sock.close()
        self._send_sock = None

    def __enter__(self) -> "Prober":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- one round -----------------------------------------------------------------------------

    def plan(self, peers: Sequence[Peer]) -> list[_RoundPlan]:
        """The peers of this round and, for each, the kinds that apply."""
        chosen = select_peers(self.node_name, [p for p in peers if p.name != self.node_name],
                              self._round_no, self.config.peers_per_round)
        ours = self.overlay
        can_echo = bool(ours and ours.addresses and ours.mac)
        plans = []
        for peer in chosen:
            kinds = []
            for kind in self.config.kinds:
                if kind in ("echo", "mtu") and not (can_echo and peer.vxlan_ip
                                                     and peer.vxlan_mac):
                    continue  # nothing to answer an echo (Cilium-style device, no address)
                kinds.append(kind)
            plans.append(_RoundPlan(peer, kinds))
        return plans

    def run_round(self, peers: Sequence[Peer]) -> tuple[tuple[ProbeResult, ...],
                                                         tuple[SeenCount, ...]]:
        if self._send_sock is None:
            raise RuntimeError("Prober.run_round before start()")
        plans = self.plan(peers)
        self._round_no += 1
        tallies: list[ProbeTally] = []
        actions: list[tuple[Peer, ProbeTally]] = []
        for plan in plans:
            for kind in plan.kinds:
                t = ProbeTally(plan.peer.name, plan.peer.underlay_ip, kind,
                               answered=None if kind == "wire" else 0)
                tallies.append(t)
                if kind in ("echo", "mtu") and self.listener is None:
                    t.errors.append(self.echo_error or "echo reply socket not running")
        by_key = {(t.peer, t.kind): t for t in tallies}
        for i in range(self.config.probes_per_kind):
            for plan in plans:
                for kind in plan.kinds:
                    t = by_key[(plan.peer.name, kind)]
                    if kind in ("echo", "mtu") and self.listener is None:
                        continue
                    actions.append((plan.peer, t))

        sel = selectors.DefaultSelector()
        udp_pending: dict[int, _Outstanding] = {}
        tcp_pending: list[_TcpAttempt] = []
        gap = send_interval_s(self.config.packets_per_s)
        next_send = time.monotonic()
        try:
            for peer, t in actions:
                while True:
                    wait = next_send - time.monotonic()
                    if wait <= 0:
                        break
                    self._service(sel, udp_pending, tcp_pending, wait)
                self._send_one(peer, t, sel, udp_pending, tcp_pending)
                # never catch up in a burst after a stall: the budget is a ceiling
                next_send = max(next_send, time.monotonic()) + gap
            deadline = time.monotonic() + self.config.reply_timeout_s
            while time.monotonic() < deadline:
                if not udp_pending and not tcp_pending and not self._waiting_echoes():
                    break
                self._service(sel, udp_pending, tcp_pending,
                              min(0.02, max(0.0, deadline - time.monotonic())))
        finally:
            for attempt in tcp_pending:
                sel.unregister(attempt.sock)
                attempt.sock.close()
            for ctl in self._udp_socks.values():
                sel.unregister(ctl.sock)
                ctl.sock.close()
            self._udp_socks.clear()
            sel.close()
            with self._lock:
                self._settle_echoes()
                self._outstanding.clear()
        seen = seen_counts(self.seen.take())
        return results_from_tallies(tallies), seen

    # --- sending ---------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _send_one(self, peer: Peer, t: ProbeTally, sel: selectors.BaseSelector,
                  udp_pending: dict[int, _Outstanding],
                  tcp_pending: list[_TcpAttempt]) -> None:
        if ":" in peer.underlay_ip:
            t.errors.append(f"{t.kind}: IPv6 underlay addresses are not probed yet")
            return
        seq = self._next_seq()
        now_ns = time.monotonic_ns()
        marker = build_marker(t.kind, seq, now_ns, self.node_name)
        try:
            if t.kind == "tcp-control":
                tcp_pending.append(self._start_tcp(peer, t, sel, now_ns))
            elif t.kind == "udp-control":
                ctl = self._udp_control(peer, t, sel)
                if not ctl.refused:
                    udp_pending[seq] = _Outstanding(t, now_ns)
                try:
                    ctl.sock.send(marker)
                except ConnectionRefusedError:
                    # an earlier probe's ICMP port unreachable, reported on this send
                    ctl.refused = True
                    for q in [q for q, out in udp_pending.items() if out.tally is t]:
                        del udp_pending[q]
                    t.errors.append(self._udp_refused(peer))
                    return
            else:
                payload = self._vxlan_payload(peer, t.kind, seq, marker)
                if t.kind != "wire":
                    with self._lock:
                        self._outstanding[(t.kind, seq)] = _Outstanding(t, now_ns)
                assert self._send_sock is not None
                self._send_sock.sendto(payload, (peer.underlay_ip, self._peer_port(peer)))
            t.sent += 1
        except OSError as exc:
            udp_pending.pop(seq, None)
            with self._lock:
                self._outstanding.pop((t.kind, seq), None)
            t.errors.append(_send_error(t.kind, exc, peer, self._mtu()))

    def _peer_port(self, peer: Peer) -> int:
        return peer.vxlan_port or self.vxlan_port

    def _mtu(self) -> int:
        if self.overlay and self.overlay.mtu:
            return self.overlay.mtu
        return DEFAULT_OVERLAY_MTU

    def _vxlan_payload(self, peer: Peer, kind: str, seq: int, marker: bytes) -> bytes:
        ours = self.overlay
        vni = peer.vni if peer.vni is not None else (ours.vni if ours and ours.vni is not None
                                                       else DEFAULT_VNI)
        src_mac = ours.mac if ours and ours.mac else "02:00:00:00:00:01"
        if kind == "wire":
            frame = build_wire_frame(peer.vxlan_mac, src_mac, marker)
        else:
            assert ours is not None
            src_ip = ours.addresses[0].split("/")[0]
            frame = build_echo_frame(peer.vxlan_mac, src_mac, src_ip, peer.vxlan_ip, marker,
                                     ident=self._ident, seq=seq,
                                     ip_total_len=self._mtu() if kind == "mtu" else None)
        return build_vxlan_payload(vni, frame)

    def _start_tcp(self, peer: Peer, t: ProbeTally, sel: selectors.BaseSelector,
                   now_ns: int) -> _TcpAttempt:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            if self.underlay_ip:
                sock.bind((self.underlay_ip, 0))
            rc = sock.connect_ex((peer.underlay_ip, self.config.control_port))
            if rc not in (0, errno.EINPROGRESS):
                raise OSError(rc, errno.errorcode.get(rc, str(rc)))
        except OSError:
            sock.close()
            raise
        attempt = _TcpAttempt(sock, t, now_ns)
        sel.register(sock, selectors.EVENT_WRITE, attempt)
        return attempt

    # --- answers -------------------------------------------------------------------------------

    def _waiting_echoes(self) -> bool:
        """Some echo reply has not arrived yet where we can see it (NIC and stack)."""
        with self._lock:
            return any((self.capture is not None and not out.nic_ns)
                       or (self.listener is not None and not out.stack_ns)
                       for out in self._outstanding.values())

    def _settle_echoes(self) -> None:
        """Echo/MTU answers at the end of a round (lock held). `answered` counts replies that
        reached this node (its NIC, as the capture sees it; or its stack when there is no
        capture), the same vantage point as every node's `seen`: the peer's firewall and
        rp_filter are on the path, this node's own inbound filtering is not (the peers' probes
        to this node and its `seen` show that). Replies the NIC got but the stack never did
        are reported in `error` (this node drops them)."""
        for out in self._outstanding.values():
            t = out.tally
            arrived = [ns for ns in (out.nic_ns, out.stack_ns) if ns]
            if not arrived:
                continue
            t.answered = (t.answered or 0) + 1
            t.rtts_ms.append((min(arrived) - out.send_ns) / 1e6)
            if out.nic_ns:
                t.replies_at_nic += 1
            if out.stack_ns:
                t.replies_in_stack += 1
            elif self.listener is not None:
                t.replies_dropped_here += 1

    def _service(self, sel: selectors.BaseSelector, udp_pending: dict[int, _Outstanding],
                 tcp_pending: list[_TcpAttempt], timeout: float) -> None:
        for key, _ in sel.select(timeout):
            if isinstance(key.data, _UdpControl):
                self._drain_udp(key.data, udp_pending)
                continue
            attempt: _TcpAttempt = key.data
            err = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            t = attempt.tally
            if err == 0:
                t.answered = (t.answered or 0) + 1
                t.rtts_ms.append((time.monotonic_ns() - attempt.start_ns) / 1e6)
            elif err == errno.ECONNREFUSED:
                t.errors.append(f"connection refused: {t.peer_ip} answered, but nothing "
                                f"listens on TCP {self.config.control_port}")
            else:
                t.errors.append(f"connect: {errno.errorcode.get(err, err)}")
            sel.unregister(attempt.sock)
            attempt.sock.close()
            tcp_pending.remove(attempt)

    def _udp_control(self, peer: Peer, t: ProbeTally,
                     sel: selectors.BaseSelector) -> "_UdpControl":
        ctl = self._udp_socks.get(peer.underlay_ip)
        if ctl is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                if self.underlay_ip:
                    sock.bind((self.underlay_ip, 0))
                sock.connect((peer.underlay_ip, self.config.control_port))
            except OSError:
                sock.close()
                raise
            ctl = _UdpControl(sock, peer, t)
            self._udp_socks[peer.underlay_ip] = ctl
            sel.register(sock, selectors.EVENT_READ, ctl)
        return ctl

    def _udp_refused(self, peer: Peer) -> str:
        return (f"port unreachable: {peer.underlay_ip} answered (UDP reaches it), but nothing "
                f"listens on UDP {self.config.control_port}")

    def _drain_udp(self, ctl: "_UdpControl", udp_pending: dict[int, _Outstanding]) -> None:
        for _ in range(64):
            try:
                data = ctl.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                ctl.tally.errors.append(self._udp_refused(ctl.peer))
                ctl.refused = True
                for seq in [q for q, out in udp_pending.items() if out.tally is ctl.tally]:
                    del udp_pending[seq]
                continue
            except OSError as exc:
                ctl.tally.errors.append(f"udp-control: {exc.strerror or exc}")
                return
            recv_ns = time.monotonic_ns()
            marker = parse_marker(data)
            if marker is None or marker.sender_id != self._own_id:
                continue
            out = udp_pending.pop(marker.seq, None)
            if out is None or out.tally is not ctl.tally:
                continue
            out.tally.answered = (out.tally.answered or 0) + 1
            out.tally.rtts_ms.append((recv_ns - out.send_ns) / 1e6)

    def _on_reply(self, probe: CapturedProbe, recv_ns: int) -> None:
        """Capture thread: a peer kernel's reply to our echo/mtu probe reached our NIC."""
        marker = probe.frame.marker
        with self._lock:
            out = self._outstanding.get((marker.kind, marker.seq))
            if out is not None and not out.nic_ns:
                out.nic_ns = recv_ns

    def _on_stack_reply(self, frame: ProbeFrame, recv_ns: int) -> None:
        """Reply-listener thread: the reply made it through our own stack."""
        marker = frame.marker
        with self._lock:
            out = self._outstanding.get((marker.kind, marker.seq))
            if out is not None and not out.stack_ns:
                out.stack_ns = recv_ns


def _device_holding(ip: str) -> str:
    """The interface that holds `ip` (the capture's interface when the caller knows only the
    underlay address, e.g. a Cilium device without a parent)."""
    from pyroute2 import IPRoute

    from agent.probes.discover import underlay_for

    try:
        with IPRoute() as ipr:
            return underlay_for(ipr, None, ip, "")[1]
    except OSError:
        return ""


def _send_error(kind: str, exc: OSError, peer: Peer, mtu: int) -> str:
    if exc.errno == errno.EMSGSIZE:
        return (f"{kind}: the local route to {peer.underlay_ip} cannot carry "
                f"{mtu + VXLAN_OVERHEAD_BYTES} bytes unfragmented (VXLAN MTU {mtu} + "
                f"{VXLAN_OVERHEAD_BYTES}): message too long")
    if exc.errno == errno.EPERM:
        return f"{kind}: send blocked by this node's firewall (EPERM)"
    return f"{kind}: {exc.strerror or exc}"


__all__ = ["Prober"]
