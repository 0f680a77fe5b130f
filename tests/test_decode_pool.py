"""Decode workers (collector.decode_pool): the same answers as decoding in-process, for good
and bad bodies alike; a worker that dies loses no report; forked and spawned workers both work.
These start real child processes (a few hundred milliseconds each)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from collector import decode_pool
from collector.decode import DecodedReport, ReportRejected, decode_report
from collector.decode_pool import DecodePool

sys.path.insert(0, str(Path(__file__).parent))
from test_collector_api import node_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _body(name: str = "node1", **kw) -> bytes:  # type: ignore[no-untyped-def]
    raw = node_report(name, "192.168.77.11", **kw)
    raw["probes"] = [{"peer": f"node{j}", "peer_ip": f"192.168.77.1{j}", "kind": kind,
                      "sent": 3, "answered": None if kind == "wire" else (0 if j == 3 else 3),
                      "rtt_ms": None, "error": ""}
                     for j in range(2, 6) for kind in ("wire", "echo")]
    raw["seen"] = [{"peer": f"node{j}", "peer_ip": "", "kind": "wire", "count": 3}
                   for j in range(2, 6)]
    return json.dumps(raw).encode()


def _rejection(body: bytes) -> tuple[str, str, str]:
    try:
        decode_report(body)
    except ReportRejected as exc:
        return exc.reason, exc.message, exc.field
    raise AssertionError("expected a rejection")


@pytest.fixture
async def pool():
    p = DecodePool(1)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


async def test_a_worker_decodes_like_this_process(pool: DecodePool) -> None:
    assert pool.workers and pool.workers[0].proc.pid != os.getpid()
    body = _body()
    got = await pool.decode(body)
    expected = decode_report(body)
    assert got.to_builtins() == expected.to_builtins()
    assert got.report == expected.report and got.index == expected.index
    assert got.index.lost == {"node3": ["echo"]}
    # strings every node repeats are interned, as on the in-process path
    assert got.report.findings[0].title is sys.intern(got.report.findings[0].title)


@pytest.mark.parametrize("body", [b"", b"garbage", b"[1, 2]", b'{"schema": "x"}',
                                  _body().replace(b'"sent": 3', b'"sent": -1', 1),
                                  _body().replace(b'"kind": "echo"', b'"kind": "ping"', 1),
                                  b'{"a": NaN}', b"\xff\xfe"])
async def test_a_worker_rejects_like_this_process(pool: DecodePool, body: bytes) -> None:
    with pytest.raises(ReportRejected) as info:
        await pool.decode(body)
    assert (info.value.reason, info.value.message, info.value.field) == _rejection(body)


async def test_many_bodies_at_once_come_back_in_order(pool: DecodePool) -> None:
    bodies = [_body(f"node{i}") for i in range(200)]
    got = await asyncio.gather(*(pool.decode(b) for b in bodies))
    assert [d.report.node.name for d in got] == [f"node{i}" for i in range(200)]


async def test_a_killed_worker_loses_no_report_and_is_replaced(pool: DecodePool) -> None:
    first = pool.workers[0].proc
    os.kill(first.pid, signal.SIGKILL)
    answers = await asyncio.gather(*(pool.decode(_body(f"node{i}")) for i in range(20)))
    assert [a.report.node.name for a in answers] == [f"node{i}" for i in range(20)]
    got = await pool.decode(_body("after"))
    assert got.report.node.name == "after"
    assert len(pool.workers) == 1 and pool.workers[0].proc.pid != first.pid
    assert pool.workers[0].alive


async def test_a_worker_that_keeps_dying_leaves_decoding_in_process(monkeypatch) -> None:
    monkeypatch.setattr(decode_pool, "RESTARTS_PER_MINUTE", 1)
    p = DecodePool(1)
    await p.start()
    try:
        for _ in range(3):
            for w in p.workers:
                os.kill(w.proc.pid, signal.SIGKILL)
            got = await p.decode(_body())
            assert isinstance(got, DecodedReport) and got.report.node.name == "node1"
        assert p._gave_up and not any(w.alive for w in p.workers)
    finally:
        await p.close()


async def test_no_workers_decodes_in_process() -> None:
    p = DecodePool(0)
    await p.start()
    got = await p.decode(_body())
    assert not p.workers and got.report.node.name == "node1"
    assert got.compressed is None  # the store thread compresses it
    await p.close()


def test_forked_workers_answer_and_end_with_the_collector(tmp_path) -> None:
    """prefork() in a process without threads: forked workers decode; they end when the
    collector does (EOF), leaving no process behind."""
    script = tmp_path / "forked.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, json, sys
        sys.path[:0] = [{str(ROOT)!r}, {str(Path(__file__).parent)!r}]
        from collector.decode_pool import DecodePool
        from test_decode_pool import _body
        pool = DecodePool(2)
        pool.prefork()
        pids = [child.pid for child, _ in pool._forked]

        async def main():
            await pool.start()
            got = await asyncio.gather(*(pool.decode(_body(f"n{{i}}")) for i in range(50)))
            print(json.dumps({{"pids": pids, "names": [d.report.node.name for d in got],
                              "spawned": [w.proc.__class__.__name__ for w in pool.workers]}}))
            await pool.close()

        asyncio.run(main())
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["names"] == [f"n{i}" for i in range(50)]
    assert result["spawned"] == ["_ForkedChild", "_ForkedChild"]
    for pid in result["pids"]:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


async def test_the_collector_with_a_decode_worker(aiohttp_client, tmp_path) -> None:
    from collector.app import STATE, make_app
    from test_collector_api import AUTH, config_for

    client = await aiohttp_client(make_app(config_for(tmp_path, decode_workers=1)))
    state = client.server.app[STATE]
    assert len(state.decoder.workers) == 1
    resp = await client.post("/api/v1/reports", data=_body(), headers={
        **AUTH, "Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert list(state.nodes) == ["node1"]
    assert state.nodes["node1"].latest.lost == {"node3": frozenset({"echo"})}
    bad = _body().replace(b'"sent": 3', b'"sent": "3"', 1)
    resp = await client.post("/api/v1/reports", data=bad, headers={
        **AUTH, "Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["field"] == "probes[0].sent"
    # the stored body is the worker's compression of what was posted
    rows = await state.store.call(state.store.store.load_recent)
    from collector.store import decompress_report
    assert decompress_report(rows[0][2]) == _body()
