"""`netdiag agent`: the DaemonSet process. Every interval: run the node checks, one probe round
to the peers the collector named, post the NodeReport; serve /healthz and /metrics.

Three things run side by side and never wait on each other:
- the **round loop** runs the checks and the probe round in a worker thread (both block: files,
  commands, netlink, sockets) and puts the report in a one-slot outbox (the newest wins);
- the **poster** takes the newest report and posts it; when the collector is down or slow it
  retries with jittered exponential backoff (bounded), swapping in a newer report when one
  arrives, and logs one line when posting starts failing and one when it recovers;
- the prober's capture and UDP control responder (agent.probes) run in their own threads
  from the first round on, so peers' probes are seen even while we post or check.

How long the agent has been unable to post is a metric and, in the next report, the finding
`agent.post-failing`; a round longer than the interval adds `agent.round-overrun` (the
collector then does not use this node's probe failures as evidence against its peers).
The agent only reads the node: nothing here changes a rule, sysctl, link or route.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import random
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.cli import UsageError, default_node_name
from agent.ports import AGENT_PORT
from agent.probes import Peer
from agent.report import Finding, NodeReport, Severity

log = logging.getLogger("netdiag.agent")

POST_TIMEOUT_S = 10.0
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0
#: `--once`: attempts to post before giving up with EXIT_UNAVAILABLE.
ONCE_POST_ATTEMPTS = 4
#: At most this many peers are taken from a collector's answer.
MAX_PEERS = 20_000
#: sysexits EX_UNAVAILABLE: `--once` could not deliver its report (0/1/2 keep their meaning).
EXIT_UNAVAILABLE = 69
REPORTS_PATH = "/api/v1/reports"
PEERS_PATH = "/api/v1/peers"
PEERS_VERSION_HEADER = "X-Netdiag-Peers-Version"


class PostError(Exception):
    """Posting failed; `retry` says whether trying the same report again can help."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class AgentConfig:
    collector_url: str
    node_name: str
    interval_s: float = 30.0
    token: str | None = None
    listen_host: str = "0.0.0.0"
    listen_port: int = AGENT_PORT
    post_timeout_s: float = POST_TIMEOUT_S
    backoff_initial_s: float = BACKOFF_INITIAL_S
    backoff_max_s: float = BACKOFF_MAX_S
    once_attempts: int = ONCE_POST_ATTEMPTS
    #: Start the first round at a random point of the first interval (nodes do not fire at once).
    jitter_start: bool = True


# --- pure helpers -------------------------------------------------------------------------------

def parse_collector_url(text: str) -> str:
    """`http://collector:8080` (or https) -> the base URL without a trailing slash."""
    try:
        url = urllib.parse.urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise UsageError(f"--collector {text!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise UsageError(f"--collector: expected http(s)://HOST[:PORT], got {text!r}")
    if url.query or url.fragment:
        raise UsageError(f"--collector {text!r}: no query or fragment expected")
    del port
    return text.rstrip("/")


def parse_listen(text: str) -> tuple[str, int]:
    """`0.0.0.0:8080`, `[::]:8080`, `:8080` (all addresses) -> (host, port); UsageError if bad."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"--listen: expected HOST:PORT (e.g. 0.0.0.0:8080), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"--listen: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise UsageError(f"--listen: write IPv6 addresses in brackets, e.g. [::]:8080; "
                         f"got {text!r}")
    return host or "0.0.0.0", int(port_text)


def read_token_file(path: str | None, option: str = "--token-file") -> str | None:
    """The bearer token (surrounding whitespace stripped); UsageError when unreadable/empty."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read(64 << 10).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option} {path}: cannot read: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    if not token:
        raise UsageError(f"{option} {path}: the file is empty")
    return token


def backoff_delay(attempt: int, initial_s: float, max_s: float,
                  rand: Callable[[], float] = random.random) -> float:
    """Jittered exponential backoff: attempt 0 -> [initial/2, initial], doubling, capped."""
    ceiling = min(max_s, initial_s * (2 ** min(attempt, 30)))
    return ceiling * (0.5 + 0.5 * rand())


def peers_from_answer(items: Any, own_name: str) -> tuple[Peer, ...] | None:
    """The collector's peer list -> Peers (ourselves and malformed rows left out); None when the
    answer carries no list (unchanged since the version we sent)."""
    if not isinstance(items, list):
        return None
    out = []
    for item in items[:MAX_PEERS]:
        if not isinstance(item, dict):
            continue
        name, ip = item.get("name"), item.get("underlay_ip")
        if not isinstance(name, str) or not isinstance(ip, str) or not name or not ip:
            continue
        if name == own_name:
            continue

        def opt_int(key: str) -> int | None:
            v = item.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        def opt_str(key: str) -> str:
            v = item.get(key)
            return v if isinstance(v, str) else ""

        out.append(Peer(name=name, underlay_ip=ip, vxlan_ip=opt_str("vxlan_ip"),
                        vxlan_mac=opt_str("vxlan_mac"), vxlan_port=opt_int("vxlan_port"),
                        vni=opt_int("vni"), mtu=opt_int("mtu")))
    return tuple(out)


def post_failing_finding(node: str, url: str, failing_for_s: float, attempts: int,
                         last_error: str) -> Finding:
    return Finding(
        id="agent.post-failing", severity=Severity.WARNING, node=node,
        title=f"could not post reports to the collector for {failing_for_s:.0f}s",
        evidence=f"POST {url}{REPORTS_PATH}: {attempts} failed attempt(s) over "
                 f"{failing_for_s:.0f}s; last error: {last_error}",
        remediation="Check that the collector Service is up and reachable from this node "
                    "(kubectl -n netdiag get pods,svc; curl http://COLLECTOR/healthz from the "
                    "node), and that the agent's token matches the collector's.")


def round_overrun_finding(node: str, took_s: float, interval_s: float) -> Finding:
    return Finding(
        id="agent.round-overrun", severity=Severity.WARNING, node=node,
        title=f"the agent's round took {took_s:.1f}s, longer than its {interval_s:g}s interval",
        evidence=f"checks and probe round: {took_s:.2f}s; interval {interval_s:g}s",
        remediation="The node may be overloaded, or a check is slow (a huge iptables-save, "
                    "a hung mount): raise --interval or look at the slow check. Until then "
                    "this node's probe failures are not used as evidence against its peers.")


def probe_error_finding(node: str, error: str) -> Finding:
    return Finding(
        id="agent.probe-error", severity=Severity.INFO, node=node,
        title="probes could not run on this node", evidence=error,
        remediation="Give the agent CAP_NET_RAW and CAP_NET_ADMIN and hostNetwork, and check "
                    "that the underlay address is local.")


# --- the blocking part: checks and a probe round (runs in a worker thread) --------------------

ProberFactory = Callable[[str, Any, str, str, int], Any]


def default_prober_factory(node_name: str, overlay: Any, underlay_ip: str, underlay_dev: str,
                           control_port: int) -> Any:
    from agent.probes import ProberConfig
    from agent.probes.prober import Prober

    return Prober(node_name, overlay, underlay_ip, underlay_dev,
                  ProberConfig(control_port=control_port))


class NodeRound:
    """One round: the node checks, then a probe round to the given peers.

    The prober is started on the first round (its capture and UDP responder then run in their
    own threads) and restarted only when the overlay device or underlay changes."""

    def __init__(self, node_name: str, host_factory: Callable[[], Any],
                 checks: tuple[Any, ...] | None = None, host_root: str = "/",
                 prober_factory: ProberFactory | None = default_prober_factory,
                 control_port: int = AGENT_PORT, clock: Callable[[], float] = time.time) -> None:
        self.node_name = node_name
        self.host_factory = host_factory
        self.checks = checks
        self.host_root = host_root
        self.prober_factory = prober_factory
        self.control_port = control_port
        self.clock = clock
        self._prober: Any = None
        self._prober_key: Any = None
        self.probe_error = ""

    def run(self, peers: Sequence[Peer], interval_s: float,
            extra: Sequence[Finding] = ()) -> NodeReport:
        from agent.node import build_node_report, check_node

        with self.host_factory() as host:
            kwargs = {"checks": self.checks} if self.checks is not None else {}
            info, outcomes = check_node(host, self.node_name, host_root=self.host_root,
                                        **kwargs)
        report = build_node_report(info, outcomes, collected_at=self.clock(),
                                   interval_s=interval_s)
        probes, seen = self._probe(report, peers)
        findings = report.findings + tuple(extra)
        if self.probe_error:
            findings += (probe_error_finding(self.node_name, self.probe_error),)
        return dataclasses.replace(report, probes=probes, seen=seen, findings=findings)

    def _probe(self, report: NodeReport, peers: Sequence[Peer]) -> tuple[tuple, tuple]:
        if self.prober_factory is None:
            return (), ()
        overlay = next((o for o in report.overlay if o.up), None)
        underlay_ip = report.node.underlay_ip or (overlay.local if overlay else "")
        key = (overlay, underlay_ip, overlay.parent if overlay else "")
        try:
            if key != self._prober_key or self._prober is None:
                self.close()
                self._prober_key = key
                prober = self.prober_factory(self.node_name, overlay, underlay_ip, key[2],
                                             self.control_port)
                prober.start()
                self._prober = prober
                notes = [getattr(prober, a, "") for a in ("capture_error", "responder_error")]
                self.probe_error = "; ".join(n for n in notes if n)
                log.info("prober started (overlay %s, underlay %s on %s)%s",
                         overlay.name if overlay else "none", underlay_ip or "any",
                         key[2] or "?", f": {self.probe_error}" if self.probe_error else "")
            probes, seen = self._prober.run_round(list(peers))
            return tuple(probes), tuple(seen)
        except (OSError, RuntimeError, ValueError) as exc:
            if not self.probe_error:
                log.warning("probe round failed: %s", exc)
            self.probe_error = f"{type(exc).__name__}: {exc}"
            self.close()
            return (), ()

    def close(self) -> None:
        if self._prober is not None:
            with contextlib.suppress(Exception):
                self._prober.stop()
        self._prober = None
        self._prober_key = None


# --- the asynchronous part: schedule rounds, post, serve ----------------------------------------

class AgentMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = r = CollectorRegistry(auto_describe=True)
        self.rounds = Counter("netdiag_agent_rounds", "Rounds run (checks + probes).",
                              registry=r)
        self.round_seconds = Gauge("netdiag_agent_round_duration_seconds",
                                   "Duration of the last round.", registry=r)
        self.posts = Counter("netdiag_agent_posts", "Report posts, by result.", ["result"],
                             registry=r)
        self.post_failing = Gauge(
            "netdiag_agent_post_failing_seconds",
            "How long the agent has been unable to post a report (0 when posting works).",
            registry=r)
        self.peers = Gauge("netdiag_agent_peers", "Peers known from the collector.",
                           registry=r)
        self.findings = Gauge("netdiag_agent_findings",
                              "Findings of the last round, by severity.", ["severity"],
                              registry=r)
        self.probes_sent = Gauge("netdiag_agent_probes_sent",
                                 "Probes sent in the last round, by kind.", ["kind"], registry=r)
        self.probes_lost = Gauge(
            "netdiag_agent_probe_peers_unanswered",
            "Peers whose probes of this kind all went unanswered in the last round.",
            ["kind"], registry=r)
        for result in ("ok", "error", "rejected"):
            self.posts.labels(result)

    def observe_report(self, report: NodeReport) -> None:
        for sev in Severity:
            self.findings.labels(sev.label).set(
                sum(1 for f in report.findings if f.severity == sev))
        sent: dict[str, int] = {}
        lost: dict[str, int] = {}
        for p in report.probes:
            sent[p.kind] = sent.get(p.kind, 0) + p.sent
            if p.answered is not None and p.sent > 0 and p.answered == 0:
                lost[p.kind] = lost.get(p.kind, 0) + 1
        for kind in set(sent) | set(lost):
            self.probes_sent.labels(kind).set(sent.get(kind, 0))
            self.probes_lost.labels(kind).set(lost.get(kind, 0))


class Agent:
    def __init__(self, config: AgentConfig, node_round: NodeRound,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.node_round = node_round
        self.clock = clock
        self.metrics = AgentMetrics()
        self.peers: tuple[Peer, ...] = ()
        self.peers_version = ""
        self.outbox: NodeReport | None = None
        self._outbox_ready = asyncio.Event()
        self.failing_since: float | None = None
        self.failed_attempts = 0
        self.last_error = ""
        self._failure_state = ""
        self.last_round_end: float | None = None
        self.last_round_s = 0.0
        self.posted = 0
        self._session: Any = None
        self.metrics.post_failing.set_function(self.post_failing_for)

    # --- state ------------------------------------------------------------------------------

    def post_failing_for(self) -> float:
        return 0.0 if self.failing_since is None else self.clock() - self.failing_since

    def extra_findings(self) -> list[Finding]:
        out = []
        if self.failing_since is not None:
            out.append(post_failing_finding(self.config.node_name, self.config.collector_url,
                                            self.post_failing_for(), self.failed_attempts,
                                            self.last_error))
        if self.last_round_s > self.config.interval_s:
            out.append(round_overrun_finding(self.config.node_name, self.last_round_s,
                                             self.config.interval_s))
        return out

    def _mark_failed(self, error: str, retry: bool = True) -> None:
        """Logs once per state change: when posting starts failing, or when a failure
        turns from "retrying" to "rejected" (or back), never once per attempt."""
        self.failed_attempts += 1
        self.last_error = error
        state = "retrying" if retry else "rejected"
        if self.failing_since is None or state != self._failure_state:
            if self.failing_since is None:
                self.failing_since = self.clock()
            if retry:
                log.warning("cannot post to %s: %s; retrying with backoff, keeping the newest "
                            "report", self.config.collector_url, error)
            else:
                log.error("the collector at %s rejects our reports: %s (not retried; the "
                          "next round's report is tried)", self.config.collector_url, error)
        self._failure_state = state

    def _mark_ok(self) -> None:
        if self.failing_since is not None:
            log.info("posting to %s again after %.0fs (%d failed attempts)",
                     self.config.collector_url, self.post_failing_for(), self.failed_attempts)
        elif self.posted == 0:
            log.info("first report posted to %s", self.config.collector_url)
        self.failing_since = None
        self.failed_attempts = 0
        self.last_error = ""
        self._failure_state = ""
        self.posted += 1

    # --- HTTP to the collector ------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        if self.peers_version:
            headers[PEERS_VERSION_HEADER] = self.peers_version
        return headers

    async def _ensure_session(self) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.post_timeout_s))
        return self._session

    async def post(self, report: NodeReport) -> None:
        """One attempt; raises PostError. On success the peer list is updated."""
        import aiohttp

        session = await self._ensure_session()
        body = json.dumps(report.to_dict(), separators=(",", ":")).encode()
        url = self.config.collector_url + REPORTS_PATH
        try:
            async with session.post(url, data=body, headers=self._headers()) as resp:
                text = await resp.text()
                if resp.status != 200:
                    retry = resp.status >= 500 or resp.status in (408, 429)
                    detail = text.strip()[:200]
                    raise PostError(f"HTTP {resp.status}: {detail}", retry=retry)
                try:
                    answer = json.loads(text)
                except ValueError:
                    raise PostError("the collector answered something that is not JSON")
        except aiohttp.ClientError as exc:
            raise PostError(f"{type(exc).__name__}: {exc}") from None
        except asyncio.TimeoutError:
            raise PostError(f"no answer within {self.config.post_timeout_s:g}s") from None
        self._take_answer(answer)

    async def fetch_peers(self) -> None:
        session = await self._ensure_session()
        headers = self._headers()
        headers.pop(PEERS_VERSION_HEADER, None)
        async with session.get(self.config.collector_url + PEERS_PATH,
                               headers=headers) as resp:
            if resp.status == 200:
                self._take_answer(await resp.json())

    def _take_answer(self, answer: Any) -> None:
        if not isinstance(answer, dict):
            return
        peers = peers_from_answer(answer.get("peers"), self.config.node_name)
        if peers is not None:
            if {p.name for p in peers} != {p.name for p in self.peers}:
                log.info("peer list: %d peer(s)", len(peers))
            self.peers = peers
            self.metrics.peers.set(len(peers))
            version = answer.get("peers_version")
            self.peers_version = version if isinstance(version, str) else ""

    async def post_with_retries(self, report: NodeReport, max_attempts: int | None) -> bool:
        """Post `report` (or a newer one that arrives meanwhile) until it lands; with
        `max_attempts`, give up after that many. False when given up or rejected."""
        attempt = 0
        while True:
            try:
                await self.post(report)
            except PostError as exc:
                attempt += 1
                self._mark_failed(str(exc), exc.retry)
                self.metrics.posts.labels("error" if exc.retry else "rejected").inc()
                if not exc.retry:
                    return False
                if max_attempts is not None and attempt >= max_attempts:
                    return False
                await asyncio.sleep(backoff_delay(attempt - 1, self.config.backoff_initial_s,
                                                  self.config.backoff_max_s))
                if self.outbox is not None:  # keep only the newest report
                    report, self.outbox = self.outbox, None
                    self._outbox_ready.clear()
                continue
            self._mark_ok()
            self.metrics.posts.labels("ok").inc()
            return True

    # --- loops ----------------------------------------------------------------------------------

    async def run_round(self) -> NodeReport:
        started = self.clock()
        report = await asyncio.to_thread(self.node_round.run, self.peers,
                                         self.config.interval_s, self.extra_findings())
        self.last_round_s = self.clock() - started
        self.last_round_end = self.clock()
        self.metrics.rounds.inc()
        self.metrics.round_seconds.set(self.last_round_s)
        self.metrics.observe_report(report)
        return report

    async def round_loop(self) -> None:
        interval = self.config.interval_s
        if self.config.jitter_start:
            await asyncio.sleep(random.uniform(0, interval / 2))
        next_start = self.clock()
        while True:
            try:
                report = await self.run_round()
            except Exception as exc:  # noqa: BLE001 - one bad round never stops the agent
                log.error("round failed: %s: %s", type(exc).__name__, exc)
            else:
                self.outbox = report  # the newest replaces any report not yet posted
                self._outbox_ready.set()
            # Fixed cadence with a little jitter; an overrun round starts the next at once.
            next_start += interval * random.uniform(0.95, 1.05)
            now = self.clock()
            if next_start < now:
                next_start = now
            await asyncio.sleep(next_start - now)

    async def post_loop(self) -> None:
        while True:
            await self._outbox_ready.wait()
            report, self.outbox = self.outbox, None
            self._outbox_ready.clear()
            if report is not None:
                await self.post_with_retries(report, None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await asyncio.to_thread(self.node_round.close)

    # --- the agent's own HTTP server ------------------------------------------------------------

    def make_web_app(self) -> Any:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        async def healthz(request: web.Request) -> web.Response:
            limit = 3 * self.config.interval_s + 30.0
            if self.last_round_end is not None and self.clock() - self.last_round_end > limit:
                return web.Response(status=503, text="no round finished recently\n")
            return web.Response(text="ok\n")

        async def metrics(request: web.Request) -> web.Response:
            resp = web.Response(body=generate_latest(self.metrics.registry))
            resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return resp

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics)
        return app

    async def serve_forever(self) -> None:
        """The daemon: HTTP server, round loop and poster until cancelled."""
        from aiohttp import web

        runner = web.AppRunner(self.make_web_app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.listen_host, self.config.listen_port)
            await site.start()
            log.info("agent %s: serving /healthz and /metrics on %s:%d, reporting to %s every "
                     "%gs", self.config.node_name, self.config.listen_host,
                     self.config.listen_port, self.config.collector_url, self.config.interval_s)
            tasks = [asyncio.create_task(self.round_loop(), name="rounds"),
                     asyncio.create_task(self.post_loop(), name="poster")]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await runner.cleanup()
            await self.close()

    async def run_once(self) -> tuple[NodeReport, bool]:
        try:
            try:
                await self.fetch_peers()
            except Exception as exc:  # noqa: BLE001 - probing nobody is still a report
                log.warning("could not fetch the peer list: %s", exc)
            report = await self.run_round()
            ok = await self.post_with_retries(report, self.config.once_attempts)
            return report, ok
        finally:
            await self.close()


# --- the command ------------------------------------------------------------------------------

def config_from_args(args: argparse.Namespace) -> AgentConfig:
    url = parse_collector_url(args.collector)
    if not (args.interval > 0):
        raise UsageError(f"--interval must be > 0, got {args.interval:g}")
    host, port = parse_listen(getattr(args, "listen", None) or f"0.0.0.0:{AGENT_PORT}")
    return AgentConfig(collector_url=url, node_name=args.node_name or default_node_name(),
                       interval_s=float(args.interval), token=read_token_file(args.token_file),
                       listen_host=host, listen_port=port, backoff_initial_s=BACKOFF_INITIAL_S,
                       backoff_max_s=BACKOFF_MAX_S, once_attempts=ONCE_POST_ATTEMPTS)


def cmd_agent(args: argparse.Namespace) -> int:
    from agent.host import Host
    from agent.render import exit_code_for

    config = config_from_args(args)
    host_root = getattr(args, "host_root", "/") or "/"
    proc_root = getattr(args, "proc_root", "/proc")
    sys_root = getattr(args, "sys_root", "/sys")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    node_round = NodeRound(config.node_name,
                           lambda: Host(root=host_root, proc=proc_root, sys=sys_root),
                           host_root=host_root, control_port=config.listen_port)
    agent = Agent(config, node_round)
    if args.once:
        report, ok = asyncio.run(agent.run_once())
        if not ok:
            print(f"netdiag agent: error: could not post the report to {config.collector_url}"
                  f": {agent.last_error}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        print(f"netdiag agent: posted {config.node_name}'s report to {config.collector_url}: "
              f"{len(report.findings)} finding(s), worst {report.worst.label}, "
              f"{len(report.probes)} probe result(s), {len(agent.peers)} peer(s) known",
              file=sys.stderr)
        return exit_code_for(report.findings)
    return _run_daemon(agent)


def _run_daemon(agent: Agent) -> int:
    import signal

    async def main() -> None:
        task = asyncio.create_task(agent.serve_forever())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("agent stopped")

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"netdiag agent: error: cannot listen on {agent.config.listen_host}:"
              f"{agent.config.listen_port}: {exc.strerror or exc}", file=sys.stderr)
        return 70
    return 0
