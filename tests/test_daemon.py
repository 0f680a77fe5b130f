"""The agent daemon against a local aiohttp server standing in for the collector: retries with
backoff, the newest report kept while the collector is down, --once exit codes, bad options.
No test touches the live node: checks read a tmp tree, the prober is a stub."""

from __future__ import annotations

import asyncio
import functools
import json
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent import daemon
from agent.checks import ip_forward
from agent.checks.base import CheckSpec, FindingSpec
from agent.cli import main as cli_main
from agent.daemon import (Agent, AgentConfig, NodeRound, backoff_delay, parse_collector_url,
                          peers_from_answer)
from agent.host import Host
from agent.probes import Peer
from agent.report import NodeInfo, NodeReport, ProbeResult, SeenCount, Severity


def make_report(n: int, name: str = "node1") -> NodeReport:
    return NodeReport(node=NodeInfo(name=name, underlay_ip="192.168.77.11"),
                      collected_at=1000.0 + n, interval_s=0.05)


class StubRound:
    """Stands in for NodeRound: numbered reports, records the peers and extra findings."""

    def __init__(self) -> None:
        self.n = 0
        self.calls: list[tuple[tuple[Peer, ...], list[str]]] = []

    def run(self, peers, interval_s, extra=()):  # type: ignore[no-untyped-def]
        self.n += 1
        self.calls.append((tuple(peers), [f.id for f in extra]))
        r = make_report(self.n)
        return NodeReport(node=r.node, collected_at=r.collected_at, interval_s=interval_s,
                          findings=tuple(extra))

    def close(self) -> None:
        pass


@dataclass
class FakeCollector:
    """Fails the first `fail` posts with `status` (or by hanging when status is None)."""

    fail: int = 0
    status: int | None = 503
    received: list[dict[str, Any]] = None  # type: ignore[assignment]
    attempts: int = 0

    def __post_init__(self) -> None:
        self.received = []

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.attempts <= self.fail:
            if self.status is None:
                await asyncio.sleep(10)
            return web.json_response({"error": "down"}, status=self.status or 503)
        assert request.headers["Authorization"] == "Bearer tok"
        self.received.append(await request.json())
        return web.json_response({
            "peers": [{"name": "node1", "underlay_ip": "192.168.77.11"},
                      {"name": "node2", "underlay_ip": "192.168.77.12", "vxlan_ip": "10.244.2.0",
                       "vxlan_mac": "02:00:00:00:00:02", "vxlan_port": 8472, "vni": 1,
                       "mtu": 1450}],
            "interval_s": 30, "peers_version": "v1"})


async def start_collector(aiohttp_server, fake: FakeCollector) -> str:
    app = web.Application()
    app.router.add_post("/api/v1/reports", fake.handle)

    async def peers(request: web.Request) -> web.Response:
        return web.json_response({"peers": []})

    app.router.add_get("/api/v1/peers", peers)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


def agent_config(url: str, **kw: Any) -> AgentConfig:
    base = dict(collector_url=url, node_name="node1", interval_s=0.05, token="tok",
                listen_host="127.0.0.1", listen_port=0, post_timeout_s=0.5,
                backoff_initial_s=0.01, backoff_max_s=0.04, once_attempts=3, jitter_start=False)
    base.update(kw)
    return AgentConfig(**base)


async def test_post_retries_with_backoff_until_the_collector_answers(aiohttp_server) -> None:
    fake = FakeCollector(fail=3)
    url = await start_collector(aiohttp_server, fake)
    agent = Agent(agent_config(url), StubRound())
    try:
        assert await agent.post_with_retries(make_report(1), None)
    finally:
        await agent.close()
    assert fake.attempts == 4 and len(fake.received) == 1
    assert agent.failing_since is None and agent.failed_attempts == 0
    # The peer list comes from the answer, without ourselves.
    assert [p.name for p in agent.peers] == ["node2"]
    assert agent.peers[0] == Peer("node2", "192.168.77.12", "10.244.2.0", "02:00:00:00:00:02",
                                  8472, 1, 1450)
    assert agent.peers_version == "v1"


async def test_a_slow_collector_times_out_and_is_retried(aiohttp_server) -> None:
    fake = FakeCollector(fail=1, status=None)
    url = await start_collector(aiohttp_server, fake)
    agent = Agent(agent_config(url, post_timeout_s=0.2), StubRound())
    try:
        assert await agent.post_with_retries(make_report(1), None)
    finally:
        await agent.close()
    assert fake.attempts == 2 and len(fake.received) == 1


async def test_keeps_the_newest_report_while_the_collector_is_down(aiohttp_server) -> None:
    fake = FakeCollector(fail=8)
    url = await start_collector(aiohttp_server, fake)
    stub = StubRound()
    agent = Agent(agent_config(url), stub)
    tasks = [asyncio.create_task(agent.round_loop()), asyncio.create_task(agent.post_loop())]
    try:
        for _ in range(200):
            await asyncio.sleep(0.02)
            if fake.received and stub.n >= 12:
                break
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await agent.close()
    assert fake.received, "never posted"
    first = fake.received[0]
    # Reports made while posting failed were replaced by newer ones: the first report that got
    # through is not the first one made, and it says how long posting has been failing.
    assert first["collected_at"] > 1001.0
    assert "agent.post-failing" in [f["id"] for f in first["findings"]]
    failing = next(f for f in first["findings"] if f["id"] == "agent.post-failing")
    assert failing["severity"] == "warning" and "HTTP 503" in failing["evidence"]
    # Nothing was posted twice and the order never went backwards.
    times = [r["collected_at"] for r in fake.received]
    assert times == sorted(set(times))
    # Once posting works again the next rounds no longer carry the finding.
    assert any(ids == [] for _, ids in stub.calls[-2:])


async def test_a_rejected_report_is_not_retried(aiohttp_server) -> None:
    fake = FakeCollector(fail=5, status=400)
    url = await start_collector(aiohttp_server, fake)
    agent = Agent(agent_config(url), StubRound())
    try:
        assert not await agent.post_with_retries(make_report(1), None)
    finally:
        await agent.close()
    assert fake.attempts == 1
    assert "HTTP 400" in agent.last_error


async def test_daemon_serves_healthz_and_metrics(aiohttp_client, aiohttp_server) -> None:
    fake = FakeCollector()
    url = await start_collector(aiohttp_server, fake)
    agent = Agent(agent_config(url), StubRound())
    client = await aiohttp_client(agent.make_web_app())
    report = await agent.run_round()
    assert await agent.post_with_retries(report, None)
    assert (await client.get("/healthz")).status == 200
    text = await (await client.get("/metrics")).text()
    assert "netdiag_agent_rounds_total 1.0" in text
    assert 'netdiag_agent_posts_total{result="ok"} 1.0' in text
    assert "netdiag_agent_post_failing_seconds 0.0" in text
    assert "netdiag_agent_peers 1.0" in text
    await agent.close()


def test_backoff_is_jittered_exponential_and_bounded() -> None:
    assert backoff_delay(0, 1.0, 60.0, rand=lambda: 0.0) == 0.5
    assert backoff_delay(0, 1.0, 60.0, rand=lambda: 1.0) == 1.0
    assert backoff_delay(3, 1.0, 60.0, rand=lambda: 1.0) == 8.0
    assert backoff_delay(50, 1.0, 60.0, rand=lambda: 1.0) == 60.0
    assert 30.0 <= backoff_delay(10, 1.0, 60.0) <= 60.0


def test_peers_from_answer_skips_garbage_and_self() -> None:
    items = [{"name": "node1", "underlay_ip": "1.1.1.1"}, "junk", {"name": 3},
             {"name": "node2", "underlay_ip": "1.1.1.2", "vni": "x", "mtu": True},
             {"name": "node3", "underlay_ip": ""}]
    assert peers_from_answer(items, "node1") == (Peer("node2", "1.1.1.2"),)
    assert peers_from_answer(None, "node1") is None


@pytest.mark.parametrize("url", ["ftp://collector", "collector:8080", "http://", "http://h:99999",
                                 "http://h/?x=1"])
def test_bad_collector_url_is_a_usage_error(url, capsys) -> None:
    assert cli_main(["agent", "--collector", url, "--once"]) == 64
    assert "--collector" in capsys.readouterr().err


def test_collector_url_keeps_a_path_prefix() -> None:
    url = parse_collector_url("https://c.example:8443/netdiag/")
    assert url == "https://c.example:8443/netdiag"


def test_unreadable_token_file_is_a_clear_error(tmp_path, capsys) -> None:
    rc = cli_main(["agent", "--collector", "http://127.0.0.1:1", "--once",
                   "--token-file", str(tmp_path / "missing")])
    assert rc == 64
    assert "cannot read" in capsys.readouterr().err


# --- --once through the command line, with a real check on a recorded tree -----------------------

def stub_check(severity: Severity) -> types.ModuleType:
    mod = types.ModuleType(f"stub_{severity.label}")
    mod.SPEC = CheckSpec("stub", (FindingSpec("stub.finding", "a stub", "why", "fix it"),))

    @dataclass(frozen=True)
    class Facts:
        pass

    mod.Facts = Facts
    mod.gather = lambda host, ctx: Facts()
    mod.evaluate = lambda facts, ctx: (mod.SPEC.finding("stub.finding", severity, ctx.node),)
    return mod


def fake_tree(tmp_path: Path, ip_forward_value: str) -> list[str]:
    proc = tmp_path / "proc"
    (proc / "sys/net/ipv4").mkdir(parents=True, exist_ok=True)
    (proc / "sys/net/ipv4/ip_forward").write_text(ip_forward_value + "\n")
    (proc / "sys/kernel").mkdir(parents=True, exist_ok=True)
    (proc / "sys/kernel/osrelease").write_text("6.1.0-test\n")
    (tmp_path / "sys").mkdir(exist_ok=True)
    return ["--host-root", str(tmp_path), "--proc-root", str(proc),
            "--sys-root", str(tmp_path / "sys")]


@pytest.fixture
def run_once_cli(aiohttp_server, tmp_path, monkeypatch):
    """Runs `netdiag agent --once` in a thread (it has its own event loop) against a fake
    collector; the checks are the given modules, the prober is off."""

    async def run(checks: tuple[Any, ...], *, fail: int = 0, status: int = 503,
                  ip_forward_value: str = "1") -> tuple[int, FakeCollector]:
        fake = FakeCollector(fail=fail, status=status)
        url = await start_collector(aiohttp_server, fake)
        monkeypatch.setattr(daemon, "NodeRound",
                            functools.partial(NodeRound, checks=checks, prober_factory=None))
        monkeypatch.setattr(daemon, "ONCE_POST_ATTEMPTS", 3)
        monkeypatch.setattr(daemon, "BACKOFF_INITIAL_S", 0.01)
        token = tmp_path / "token"
        token.write_text("tok\n")
        argv = ["agent", "--collector", url, "--once", "--node-name", "node1",
                "--token-file", str(token), *fake_tree(tmp_path, ip_forward_value)]
        rc = await asyncio.to_thread(cli_main, argv)
        return rc, fake

    return run


async def test_once_exit_codes_follow_the_findings(run_once_cli) -> None:
    rc, fake = await run_once_cli((ip_forward,), ip_forward_value="1")
    assert rc == 0
    report = fake.received[0]
    assert report["node"]["name"] == "node1" and report["node"]["kernel"] == "6.1.0-test"
    assert [f["id"] for f in report["findings"]] == ["sysctl.ip-forward-off"]
    assert report["findings"][0]["severity"] == "ok"
    assert (await run_once_cli((stub_check(Severity.WARNING),)))[0] == 1
    assert (await run_once_cli((ip_forward,), ip_forward_value="0"))[0] == 2


async def test_once_retries_then_fails_clearly_when_the_collector_stays_down(
        run_once_cli, capsys) -> None:
    rc, fake = await run_once_cli((ip_forward,), fail=10)
    assert rc == daemon.EXIT_UNAVAILABLE
    assert fake.attempts == 3 and not fake.received
    err = capsys.readouterr().err
    assert "could not post the report" in err and "HTTP 503" in err
    rc, fake = await run_once_cli((ip_forward,), fail=2)
    assert rc == 0 and fake.attempts == 3 and len(fake.received) == 1


# --- NodeRound: checks, then a probe round with the prober started once ---------------------------

class FakeProber:
    started = 0

    def __init__(self, node_name: str, overlay: Any, underlay_ip: str, underlay_dev: str,
                 port: int) -> None:
        self.args = (node_name, overlay, underlay_ip, underlay_dev, port)
        self.capture_error = ""
        self.responder_error = ""
        self.rounds: list[list[Peer]] = []

    def start(self) -> None:
        FakeProber.started += 1

    def run_round(self, peers):  # type: ignore[no-untyped-def]
        self.rounds.append(list(peers))
        return ((ProbeResult(p.name, p.underlay_ip, "udp-control", 3, 3) for p in peers),
                (SeenCount(p.name, p.underlay_ip, "wire", 3) for p in peers))

    def stop(self) -> None:
        pass


def test_node_round_runs_checks_then_probes_the_peers(tmp_path) -> None:
    args = fake_tree(tmp_path, "1")
    made: list[FakeProber] = []

    def factory(*a):  # type: ignore[no-untyped-def]
        made.append(FakeProber(*a))
        return made[-1]

    FakeProber.started = 0
    node_round = NodeRound("node1", lambda: Host(root=args[1], proc=args[3], sys=args[5]),
                           checks=(ip_forward,), host_root=args[1], prober_factory=factory,
                           control_port=19476, clock=lambda: 1234.0)
    peers = [Peer("node2", "192.168.77.12")]
    r1 = node_round.run(peers, 2.0)
    r2 = node_round.run(peers, 2.0)
    assert FakeProber.started == 1 and len(made[0].rounds) == 2  # started once, reused
    assert made[0].args[4] == 19476
    assert r1.collected_at == 1234.0 and r1.interval_s == 2.0
    assert [p.peer for p in r2.probes] == ["node2"] and r2.seen[0].count == 3
    assert [f.id for f in r1.findings] == ["sysctl.ip-forward-off"]
    json.dumps(r1.to_dict())


def test_node_round_reports_a_prober_that_cannot_start(tmp_path) -> None:
    args = fake_tree(tmp_path, "1")

    def factory(*a):  # type: ignore[no-untyped-def]
        p = FakeProber(*a)
        p.start = lambda: (_ for _ in ()).throw(OSError(99, "cannot bind to underlay address"))
        return p

    node_round = NodeRound("node1", lambda: Host(root=args[1], proc=args[3], sys=args[5]),
                           checks=(ip_forward,), prober_factory=factory)
    report = node_round.run([Peer("node2", "1.2.3.4")], 2.0)
    assert report.probes == ()
    report = node_round.run([Peer("node2", "1.2.3.4")], 2.0)
    errors = [f for f in report.findings if f.id == "agent.probe-error"]
    assert errors and errors[0].severity == Severity.INFO
    assert "cannot bind" in errors[0].evidence


def test_agent_parser_accepts_listen_and_rejects_a_bad_one(capsys) -> None:
    rc = cli_main(["agent", "--collector", "http://127.0.0.1:1", "--listen", "nonsense"])
    assert rc == 64
    assert "--listen" in capsys.readouterr().err


async def test_logs_one_line_per_state_change_not_per_retry(aiohttp_server, caplog) -> None:
    fake = FakeCollector(fail=6)
    url = await start_collector(aiohttp_server, fake)
    agent = Agent(agent_config(url), StubRound())
    caplog.set_level("INFO", logger="netdiag.agent")
    try:
        assert await agent.post_with_retries(make_report(1), None)
        assert await agent.post_with_retries(make_report(2), None)
    finally:
        await agent.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "netdiag.agent"]
    assert sum("cannot post" in m for m in messages) == 1
    assert sum("again after" in m for m in messages) == 1
    assert fake.attempts == 8
