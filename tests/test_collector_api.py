"""The collector's HTTP API through aiohttp's test client: auth, limits, bad input, the peer
list, /report, /metrics, and a restart on the same database."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.report import SCHEMA_NODE_REPORT
from collector.app import STATE, CollectorConfig, make_app, prune

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def node_report(name: str, underlay: str, *, vxlan_ip: str = "10.244.1.0",
                severity: str = "ok", collected_at: float = 1_700_000_000.0,
                facts: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "schema": SCHEMA_NODE_REPORT,
        "node": {"name": name, "underlay_ip": underlay, "kernel": "6.1.0",
                 "agent_version": "0.1.0"},
        "collected_at": collected_at,
        "interval_s": 30,
        "overlay": [{"name": "flannel.1", "vni": 1, "port": 8472, "local": underlay,
                     "parent": "eth0", "mtu": 1450, "mac": "02:00:00:00:00:01",
                     "addresses": [f"{vxlan_ip}/32"], "up": True}],
        "facts": facts if facts is not None else {"ip_forward": 1},
        "findings": [{"id": "sysctl.ip-forward-off", "severity": severity, "node": name,
                      "title": "net.ipv4.ip_forward", "evidence": "", "remediation": ""}],
        "probes": [{"peer": "node9", "peer_ip": "192.168.77.19", "kind": "udp-control",
                    "sent": 3, "answered": 3, "rtt_ms": {"min": 0.1, "avg": 0.2, "max": 0.3},
                    "error": ""}],
        "seen": [{"peer": "node9", "peer_ip": "192.168.77.19", "kind": "wire", "count": 3}],
    }


def config_for(tmp_path, clock: Clock | None = None, **kw: Any) -> CollectorConfig:
    return CollectorConfig(db_path=str(tmp_path / "collector.sqlite3"), token=TOKEN,
                           clock=clock or Clock(), background=False, **kw)


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await aiohttp_client(make_app(config_for(tmp_path)))


async def test_accepts_a_report_with_the_token_and_answers_the_peer_list(client) -> None:
    resp = await client.post("/api/v1/reports", json=node_report("node1", "192.168.77.11"),
                             headers=AUTH)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["interval_s"] == 30.0
    assert body["peers"] == [{"name": "node1", "underlay_ip": "192.168.77.11",
                              "vxlan_ip": "10.244.1.0", "vxlan_mac": "02:00:00:00:00:01",
                              "vxlan_port": 8472, "vni": 1, "mtu": 1450}]
    resp = await client.post("/api/v1/reports",
                             json=node_report("node2", "192.168.77.12", vxlan_ip="10.244.2.0"),
                             headers=AUTH)
    body = await resp.json()
    assert [p["name"] for p in body["peers"]] == ["node1", "node2"]


async def test_peer_list_is_omitted_when_the_agent_already_has_this_version(client) -> None:
    resp = await client.post("/api/v1/reports", json=node_report("node1", "192.168.77.11"),
                             headers=AUTH)
    version = (await resp.json())["peers_version"]
    resp = await client.post("/api/v1/reports", json=node_report("node1", "192.168.77.11"),
                             headers={**AUTH, "X-Netdiag-Peers-Version": version})
    body = await resp.json()
    assert body["peers"] is None and body["peers_version"] == version
    resp = await client.post("/api/v1/reports", json=node_report("node3", "192.168.77.13"),
                             headers={**AUTH, "X-Netdiag-Peers-Version": version})
    body = await resp.json()
    assert body["peers_version"] != version
    assert [p["name"] for p in body["peers"]] == ["node1", "node3"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": "Bearer"}])
async def test_rejects_missing_or_wrong_token_with_401(client, headers) -> None:
    resp = await client.post("/api/v1/reports", json=node_report("node1", "1.2.3.4"),
                             headers=headers)
    assert resp.status == 401
    assert "token" in (await resp.json())["error"]
    peers = await (await client.get("/api/v1/peers")).json()
    assert peers["peers"] == []


async def test_no_token_configured_accepts_anyone(aiohttp_client, tmp_path) -> None:
    cfg = CollectorConfig(db_path=str(tmp_path / "db"), token=None, background=False)
    client = await aiohttp_client(make_app(cfg))
    resp = await client.post("/api/v1/reports", json=node_report("node1", "1.2.3.4"))
    assert resp.status == 200


async def test_rejects_a_body_over_the_limit_with_413(aiohttp_client, tmp_path) -> None:
    client = await aiohttp_client(make_app(config_for(tmp_path, max_body_bytes=4096)))
    report = node_report("node1", "1.2.3.4", facts={"big": "x" * 10_000})
    resp = await client.post("/api/v1/reports", data=json.dumps(report), headers={
        **AUTH, "Content-Type": "application/json"})
    assert resp.status == 413


async def test_rejects_a_chunked_body_over_the_limit_with_413(aiohttp_client, tmp_path) -> None:
    client = await aiohttp_client(make_app(config_for(tmp_path, max_body_bytes=4096)))

    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    resp = await client.post("/api/v1/reports", data=chunks(), headers={
        **AUTH, "Content-Type": "application/json"})
    assert resp.status == 413


async def test_rejects_a_non_json_content_type_with_415(client) -> None:
    resp = await client.post("/api/v1/reports", data=json.dumps(node_report("n", "1.2.3.4")),
                             headers={**AUTH, "Content-Type": "text/plain"})
    assert resp.status == 415
    assert "application/json" in (await resp.json())["error"]


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00", b"", b"[" * 100_000,
                                  b'{"collected_at": NaN}'])
async def test_rejects_invalid_json_with_400(client, body) -> None:
    resp = await client.post("/api/v1/reports", data=body,
                             headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 400
    assert "invalid JSON" in (await resp.json())["error"]


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda r: r.update(schema="other/v9"), "schema"),
    (lambda r: r["node"].pop("name"), "node.name"),
    (lambda r: r["node"].update(name="n" * 300), "node.name"),
    (lambda r: r["probes"][0].update(sent="x"), "probes[0].sent"),
    (lambda r: r["probes"][0].update(kind="carrier-pigeon"), "probes[0].kind"),
    (lambda r: r["findings"][0].update(severity="fatal"), "findings[0].severity"),
    (lambda r: r.update(collected_at="yesterday"), "collected_at"),
    (lambda r: r.update(overlay={"name": "x"}), "overlay"),
])
async def test_rejects_a_wrong_schema_with_400_naming_the_field(client, mutate, field) -> None:
    report = node_report("node1", "1.2.3.4")
    mutate(report)
    resp = await client.post("/api/v1/reports", json=report, headers=AUTH)
    assert resp.status == 400
    body = await resp.json()
    assert body["field"] == field
    assert field in body["error"]


async def test_top_level_garbage_is_a_400_not_a_crash(client) -> None:
    for garbage in ([1, 2, 3], "string", 42, None, {"schema": SCHEMA_NODE_REPORT}):
        resp = await client.post("/api/v1/reports", data=json.dumps(garbage),
                                 headers={**AUTH, "Content-Type": "application/json"})
        assert resp.status == 400, garbage
    # ... and the state is intact afterwards.
    resp = await client.post("/api/v1/reports", json=node_report("node1", "1.2.3.4"),
                             headers=AUTH)
    assert resp.status == 200
    assert (await client.get("/healthz")).status == 200


async def test_peers_endpoint_supports_etag(client) -> None:
    await client.post("/api/v1/reports", json=node_report("node1", "1.2.3.4"), headers=AUTH)
    resp = await client.get("/api/v1/peers")
    assert resp.status == 200
    etag = resp.headers["ETag"]
    assert [p["name"] for p in (await resp.json())["peers"]] == ["node1"]
    resp = await client.get("/api/v1/peers", headers={"If-None-Match": etag})
    assert resp.status == 304


async def test_report_text_and_json(client) -> None:
    await client.post("/api/v1/reports", json=node_report("node1", "1.2.3.4"), headers=AUTH)
    await client.post("/api/v1/reports",
                      json=node_report("node2", "1.2.3.5", severity="error"), headers=AUTH)
    resp = await client.get("/report")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    assert "node2" in text
    for req in ({"params": {"format": "json"}}, {"headers": {"Accept": "application/json"}}):
        resp = await client.get("/report", **req)
        assert resp.content_type == "application/json"
        doc = await resp.json()
        assert {"generated_at", "nodes", "diagnoses", "findings", "matrix"} <= set(doc)
        assert sorted(n["name"] for n in doc["nodes"]) == ["node1", "node2"]
        assert any(f["node"] == "node2" and f["severity"] == "error" for f in doc["findings"])
    resp = await client.get("/report", params={"format": "yaml"})
    assert resp.status == 400


async def test_report_json_is_encoded_once_per_correlation(client) -> None:
    await client.post("/api/v1/reports", json=node_report("node1", "1.2.3.4"), headers=AUTH)
    first = await client.get("/report", params={"format": "json"})
    body = await first.read()
    assert first.headers["Content-Type"] == "application/json; charset=utf-8"
    doc = json.loads(body)
    assert doc["nodes"][0]["name"] == "node1" and body.startswith(b'{\n  "')  # indented
    state = client.server.app[STATE]
    cached = state.verdicts.rendered["json"]
    assert cached == body  # kept encoded, not as the document
    assert await (await client.get("/report", params={"format": "json"})).read() == body
    assert state.verdicts.rendered["json"] is cached


async def test_a_large_report_json_is_compact(client, monkeypatch) -> None:
    from collector import app as app_module

    await client.post("/api/v1/reports", json=node_report("node1", "1.2.3.4"), headers=AUTH)
    monkeypatch.setattr(app_module, "REPORT_JSON_INDENT_MAX_BYTES", 100)
    body = await (await client.get("/report", params={"format": "json"})).read()
    assert b"\n" not in body and json.loads(body)["nodes"][0]["name"] == "node1"


async def test_a_silent_node_becomes_agent_stale(aiohttp_client, tmp_path) -> None:
    clock = Clock()
    client = await aiohttp_client(make_app(config_for(tmp_path, clock)))
    await client.post("/api/v1/reports", json=node_report("node1", "1.2.3.4"), headers=AUTH)
    doc = await (await client.get("/report", params={"format": "json"})).json()
    assert not [d for d in doc["diagnoses"] if d["id"] == "agent.stale"]
    clock.t += 4 * 30 + 1
    doc = await (await client.get("/report", params={"format": "json"})).json()
    stale = [d for d in doc["diagnoses"] if d["id"] == "agent.stale"]
    assert stale and stale[0]["nodes"] == ["node1"]
    assert stale[0]["since"] == clock.t
    transitions = doc["timeline"]["transitions"]
    assert transitions and transitions[0]["event"] == "appeared"


async def test_metrics_parse_and_carry_per_node_verdicts(client) -> None:
    await client.post("/api/v1/reports", json=node_report("node1", "1.2.3.4"), headers=AUTH)
    await client.post("/api/v1/reports",
                      json=node_report("node2", "1.2.3.5", severity="warning"), headers=AUTH)
    await client.post("/api/v1/reports", data=b"{", headers={
        **AUTH, "Content-Type": "application/json"})
    await client.get("/report")
    resp = await client.get("/metrics")
    assert resp.status == 200
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("netdiag_reports_received_total", ())] == 2
    assert samples[("netdiag_reports_rejected_total", (("reason", "bad_json"),))] == 1
    assert samples[("netdiag_node_worst_severity", (("node", "node1"),))] == 0
    assert samples[("netdiag_node_worst_severity", (("node", "node2"),))] == 2
    # No (source, target) pair labels: series grow with N, not N*N.
    for (_, labels) in samples:
        assert not {"source", "target", "peer"} & {k for k, _ in labels}


async def test_health_and_readiness(client) -> None:
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200


async def test_restart_on_the_same_database_keeps_state(aiohttp_client, tmp_path) -> None:
    clock = Clock()
    first = await aiohttp_client(make_app(config_for(tmp_path, clock)))
    for i in (1, 2, 3):
        resp = await first.post("/api/v1/reports",
                                json=node_report(f"node{i}", f"192.168.77.1{i}"), headers=AUTH)
        assert resp.status == 200
    clock.t += 200  # node reports are now stale: a diagnosis opens
    before = await (await first.get("/report", params={"format": "json"})).json()
    await first.close()

    second = await aiohttp_client(make_app(config_for(tmp_path, clock)))
    peers = await (await second.get("/api/v1/peers")).json()
    assert [p["name"] for p in peers["peers"]] == ["node1", "node2", "node3"]
    after = await (await second.get("/report", params={"format": "json"})).json()
    assert sorted(n["name"] for n in after["nodes"]) == ["node1", "node2", "node3"]
    # Diagnoses keep their "since" across the restart (the timeline is in the database).
    since_before = {(d["id"], tuple(d["nodes"])): d["since"] for d in before["diagnoses"]}
    since_after = {(d["id"], tuple(d["nodes"])): d["since"] for d in after["diagnoses"]}
    assert since_before and since_before == since_after
    state = second.server.app[STATE]
    history = await state.store.call(state.store.store.history, "node1", 10)
    assert len(history) == 1 and history[0].worst == "ok"


async def test_restart_skips_stored_reports_that_no_longer_decode(aiohttp_client,
                                                                   tmp_path) -> None:
    import sqlite3
    import zlib

    first = await aiohttp_client(make_app(config_for(tmp_path)))
    for i in (1, 2, 3):
        resp = await first.post("/api/v1/reports",
                                json=node_report(f"node{i}", f"192.168.77.1{i}"), headers=AUTH)
        assert resp.status == 200
    await first.close()
    # one row is not JSON, another is JSON but not a NodeReport (a disk or schema accident)
    db = sqlite3.connect(tmp_path / "collector.sqlite3")
    with db:
        db.execute("UPDATE recent SET report = ? WHERE node = 'node1'",
                   (zlib.compress(b"{not json"),))
        db.execute("UPDATE recent SET report = ? WHERE node = 'node3'",
                   (zlib.compress(b'{"schema": "netdiag.io/node-report/v1"}'),))
    db.close()
    second = await aiohttp_client(make_app(config_for(tmp_path)))
    peers = await (await second.get("/api/v1/peers")).json()
    assert [p["name"] for p in peers["peers"]] == ["node2"]
    assert (await second.get("/report")).status == 200


async def test_history_is_bounded_and_silent_nodes_are_forgotten(aiohttp_client,
                                                                  tmp_path) -> None:
    clock = Clock()
    client = await aiohttp_client(make_app(config_for(
        tmp_path, clock, history_per_node=3, forget_after_s=1000.0)))
    for i in range(6):
        clock.t += 1
        report = node_report("node1", "1.2.3.4", facts={"rp_filter.eth0": i % 2})
        assert (await client.post("/api/v1/reports", json=report, headers=AUTH)).status == 200
    await client.post("/api/v1/reports", json=node_report("node2", "1.2.3.5"), headers=AUTH)
    state = client.server.app[STATE]
    clock.t += 500
    await client.post("/api/v1/reports", json=node_report("node1", "1.2.3.4"), headers=AUTH)
    clock.t += 600  # node2 now silent for 1100 s > forget_after_s
    assert await prune(state) == ["node2"]
    history = await state.store.call(state.store.store.history, "node1", 100)
    assert len(history) == 3
    peers = await (await client.get("/api/v1/peers")).json()
    assert [p["name"] for p in peers["peers"]] == ["node1"]
    changes = await state.store.call(state.store.store.fact_changes, 10)
    assert any(c["node"] == "node1" and c["fact"] == "rp_filter.eth0" for c in changes)


async def test_refuses_new_nodes_beyond_the_cap(aiohttp_client, tmp_path) -> None:
    client = await aiohttp_client(make_app(config_for(tmp_path, max_nodes=2)))
    for i in (1, 2):
        resp = await client.post("/api/v1/reports", json=node_report(f"n{i}", "1.2.3.4"),
                                 headers=AUTH)
        assert resp.status == 200
    resp = await client.post("/api/v1/reports", json=node_report("n3", "1.2.3.4"), headers=AUTH)
    assert resp.status == 507
    resp = await client.post("/api/v1/reports", json=node_report("n1", "1.2.3.4"), headers=AUTH)
    assert resp.status == 200


# --- garbage never crashes the decoder ------------------------------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from collector.decode import ReportRejected, parse_report_body  # noqa: E402

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)


def _paths(value, prefix=()):  # type: ignore[no-untyped-def]
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_mutated_report_is_accepted_or_rejected_cleanly(data) -> None:
    report = node_report("node1", "1.2.3.4")
    paths = [p for p in _paths(report) if p]
    path = data.draw(st.sampled_from(paths))
    target = report
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(JSON_VALUES)
    try:
        parsed = parse_report_body(json.dumps(report).encode())
    except ReportRejected as exc:
        assert exc.reason == "schema" and exc.message
    else:
        assert parsed.report.node.name


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes_are_rejected_cleanly(body: bytes) -> None:
    with pytest.raises(ReportRejected):
        parse_report_body(body)


def test_shared_values_leave_digests_equal_and_share_what_repeats() -> None:
    import dataclasses

    from agent.report import NodeReport
    from collector.app import share_values
    from collector.correlate import digest_report

    raw = [digest_report(NodeReport.from_dict(node_report(f"node{i}", f"1.2.3.{i}")))
           for i in (1, 2)]
    shared = [share_values(d) for d in raw]
    for before, after in zip(raw, shared):
        for f in dataclasses.fields(before):
            assert getattr(before, f.name) == getattr(after, f.name), f.name
    # Both nodes' equal flattened facts are one object afterwards (not before).
    assert raw[0].facts == raw[1].facts and raw[0].facts is not raw[1].facts
    assert shared[0].facts is shared[1].facts
    # so is the peer's name (share_values relies on digest_indexed interning it), and a small
    # cluster's peer set
    (a,), (b,) = (d.targets for d in shared)
    assert a == b == "node9" and a is b
    assert shared[0].targets is shared[1].targets


async def test_a_store_failure_is_a_503_and_changes_nothing(client, monkeypatch) -> None:
    import sqlite3

    state = client.server.app[STATE]

    def broken(rows):  # type: ignore[no-untyped-def]
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(state.store.store, "write_reports", broken)
    resp = await client.post("/api/v1/reports", json=node_report("node1", "1.2.3.4"),
                             headers=AUTH)
    assert resp.status == 503
    assert "disk is full" in (await resp.json())["error"]
    assert state.nodes == {}
    monkeypatch.undo()
    resp = await client.post("/api/v1/reports", json=node_report("node1", "1.2.3.4"),
                             headers=AUTH)
    assert resp.status == 200 and list(state.nodes) == ["node1"]


def test_kept_rounds_correlate_and_render_like_whole_reports() -> None:
    """The collector keeps digests of slimmed reports (no probes, seen, facts): correlation
    and both renderings must be the same as from the whole reports."""
    from agent.report import NodeReport
    from collector.app import NodeEntry, correlate_entries, digest_round, render_json
    from collector.correlate import digest_report
    from collector.render import render_report_text

    now = 1_700_000_100.0
    whole: dict[str, list] = {}
    kept: dict[str, NodeEntry] = {}
    for r in range(3):
        for i in range(1, 6):
            facts = {"ip_forward": 1, "rp_filter": {"all": 2 if i == 4 else 0}}
            raw = node_report(f"node{i}", f"192.168.77.1{i}", collected_at=now - 30 * (3 - r),
                              facts=facts, severity="warning" if i == 2 else "ok")
            raw["probes"] = [{"peer": f"node{j}", "peer_ip": f"192.168.77.1{j}", "kind": kind,
                              "sent": 3, "answered": None if kind == "wire" else
                              (0 if j == 3 else 3), "rtt_ms": None, "error": ""}
                             for j in range(1, 6) if j != i for kind in ("wire", "echo")]
            raw["seen"] = [{"peer": f"node{j}", "peer_ip": f"192.168.77.1{j}", "kind": "wire",
                            "count": 0 if i == 3 else 3} for j in range(1, 6) if j != i]
            report = NodeReport.from_dict(raw)
            whole.setdefault(report.node.name, []).append(digest_report(report))
            entry = kept.setdefault(report.node.name, NodeEntry(
                report.node.name, now, (), {}, report.worst))
            entry.add_round(digest_round(report), keep=3)

    def outputs(rounds: dict[str, list]) -> tuple:
        state = correlate_entries([(n, now, r) for n, r in rounds.items()], now)
        return (render_json(state, {}, {}), render_report_text(state),
                [d.to_dict() for d in state.diagnoses])

    full = outputs(whole)
    slim = outputs({n: list(e.rounds) for n, e in kept.items()})
    assert full[2], "the sample should produce diagnoses (node3 unreachable, rp_filter drift)"
    assert slim == full


def test_a_posted_body_digests_like_the_whole_report() -> None:
    """The collector digests posted bodies from per-peer sums (no probe objects): every
    digest field must equal the digest of the whole report."""
    import dataclasses

    from agent.report import NodeReport
    from collector.correlate import digest_indexed, digest_report
    from collector.decode import decode_report

    raw = node_report("node1", "192.168.77.11")
    raw["probes"] = [{"peer": f"node{j}", "peer_ip": f"192.168.77.1{j}", "kind": kind,
                      "sent": 0 if (j, kind) == (4, "mtu") else 3,
                      "answered": None if kind == "wire" else (0 if j == 3 else 2),
                      "rtt_ms": None, "error": ""}
                     for j in range(2, 6) for kind in ("wire", "echo", "mtu", "tcp-control")]
    raw["seen"] = [{"peer": f"node{j}", "peer_ip": "", "kind": kind, "count": j - 2}
                   for j in range(2, 6) for kind in ("wire", "echo")]
    decoded = decode_report(json.dumps(raw).encode())
    from_rows = digest_indexed(decoded.report, decoded.index)
    whole = digest_report(NodeReport.from_dict(raw))
    assert whole.lost and whole.tcp_answered and whole.seen_wire  # the sample exercises them
    for f in dataclasses.fields(whole):
        if f.name != "report":
            assert getattr(from_rows, f.name) == getattr(whole, f.name), f.name


async def test_the_peer_list_goes_gzipped_to_clients_that_accept_it(client) -> None:
    resp = await client.post("/api/v1/reports", json=node_report("node1", "192.168.77.11"),
                             headers={**AUTH, "Accept-Encoding": "gzip"})
    assert resp.status == 200
    assert resp.headers["Content-Encoding"] == "gzip"  # aiohttp's client unzips it
    zipped = await resp.json()
    version = resp.headers["X-Netdiag-Peers-Version"]
    assert zipped["peers_version"] == version and zipped["peers"][0]["name"] == "node1"
    resp = await client.post("/api/v1/reports", json=node_report("node1", "192.168.77.11"),
                             headers={**AUTH, "Accept-Encoding": "identity"})
    assert "Content-Encoding" not in resp.headers
    assert await resp.json() == zipped
    # the agent that holds this version gets the short answer, never zipped
    resp = await client.post("/api/v1/reports", json=node_report("node1", "192.168.77.11"),
                             headers={**AUTH, "Accept-Encoding": "gzip",
                                      "X-Netdiag-Peers-Version": version})
    assert "Content-Encoding" not in resp.headers and (await resp.json())["peers"] is None


async def test_background_correlation_waits_out_a_burst_of_reports(monkeypatch, tmp_path) -> None:
    import asyncio

    import collector.app as app_module
    from collector.app import CollectorState, wait_for_ingest_lull

    monkeypatch.setattr(app_module, "BUSY_PROBE_S", 0.02)
    monkeypatch.setattr(app_module, "CORRELATE_MAX_DEFER_S", 0.2)
    monkeypatch.setattr(app_module, "BUSY_REPORTS_PER_S", 1000.0)  # 20 per probe
    state = CollectorState(config=config_for(tmp_path), store=None, metrics=None)  # type: ignore
    assert await wait_for_ingest_lull(state) == pytest.approx(0.02)  # quiet: one probe

    async def burst(seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            state.received += 5
            await asyncio.sleep(0.001)

    busy = asyncio.create_task(burst(10.0))
    try:
        assert await wait_for_ingest_lull(state) == pytest.approx(0.2)  # gives up at the cap
    finally:
        busy.cancel()
    short = asyncio.create_task(burst(0.07))
    waited = await wait_for_ingest_lull(state)
    await short
    assert 0.06 <= waited < 0.2  # went on once the burst ended


async def test_a_new_report_drops_the_cached_correlation(aiohttp_client, tmp_path) -> None:
    # The cached correlation holds the digests it was computed from; once a report changes
    # the state it is never served again, so nothing may keep it (and them) alive: neither
    # the state nor the background loop between its runs.
    import asyncio
    import weakref

    import collector.app as app_module

    app = make_app(config_for(tmp_path, correlate_period_s=60.0))
    client = await aiohttp_client(app)
    state = app[STATE]
    await client.post("/api/v1/reports", json=node_report("node1", "1.2.3.4"), headers=AUTH)
    served = weakref.ref(await app_module.current_verdicts(state))
    assert state.verdicts is served() is await app_module.current_verdicts(state)  # cached
    state.verdicts.computed_at -= app_module.VIEW_MAX_AGE_S  # aged: the loop correlates again
    loop_task = asyncio.create_task(app_module._correlate_loop(state))
    try:
        for _ in range(500):
            await asyncio.sleep(0.01)
            if state.verdicts is not served():
                break
        background = weakref.ref(state.verdicts)
        assert served() is None and background() is not None
        await client.post("/api/v1/reports", json=node_report("node2", "1.2.3.5"),
                          headers=AUTH)
        assert state.verdicts is None and background() is None
    finally:
        loop_task.cancel()
        await asyncio.gather(loop_task, return_exceptions=True)
    doc = await (await client.get("/report", params={"format": "json"})).json()
    assert sorted(n["name"] for n in doc["nodes"]) == ["node1", "node2"]


def test_a_node_keeps_its_last_rounds_and_only_the_latest_whole() -> None:
    from agent.report import NodeReport
    from collector.app import NodeEntry, digest_round

    entry = NodeEntry("node1", 0.0, (), {}, NodeReport.from_dict(node_report("node1", "")).worst)
    for r in range(4):
        entry.add_round(digest_round(NodeReport.from_dict(
            node_report("node1", "192.168.77.11", collected_at=1_700_000_000.0 + 30 * r))),
            keep=3)
        assert len(entry.rounds) == min(r + 1, 3)
    assert [d.collected_at for d in entry.rounds] == [1_700_000_030.0 + 30 * r for r in range(3)]
    assert entry.latest is entry.rounds[-1] and entry.latest.report.findings
    assert [d.report.findings for d in entry.rounds[:-1]] == [(), ()]  # earlier rounds stripped
    assert [d.report.node.name for d in entry.rounds] == ["node1"] * 3
