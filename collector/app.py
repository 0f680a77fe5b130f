"""The collector's HTTP service: `make_app(config)` builds the aiohttp application.

Handlers are thin: decode + validate (`collector.decode`, in a worker process by default) ->
store -> answer; reports loaded from the database at start go through the same decoder. The
cross-node verdicts come from the pure `collector.correlate` rules and the `/report` text and
JSON from the pure `collector.render` renderers; this module only feeds them the latest reports
and the clock, caches the result per state version, and records the diagnosis timeline.

Routes (DESIGN.md "Collector HTTP API"):
    POST /api/v1/reports   a NodeReport -> {"peers": [...], "interval_s": S, "peers_version": V}
    GET  /api/v1/peers     the peer list (ETag / If-None-Match)
    GET  /report           text; ?format=json or Accept: application/json -> JSON
    GET  /metrics          Prometheus text
    GET  /healthz, /readyz

Peer answers can be large (5,000 nodes ~ 700 kB), so an agent that sends the
`X-Netdiag-Peers-Version` it already holds gets `"peers": null` while nothing changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import hmac
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.report import Diagnosis, NodeReport, Severity
from collector.correlate import DEFAULT_CONFIG, digest_report
from collector.correlate.model import ProbeIndex, digest_indexed
from collector.decode import ReportRejected, decode_report
from collector.decode_pool import DecodePool
from collector.metrics import CollectorMetrics
from collector.render import build_report_state, render_report_json, render_report_text
from collector.store import (AsyncStore, FORGET_AFTER_S, HISTORY_MAX_AGE_S, HISTORY_PER_NODE,
                             RECENT_PER_NODE, Store, StoredReport, Transition,
                             decompress_report)

log = logging.getLogger("netdiag.collector")

MAX_BODY_BYTES = 1 << 20
#: New nodes beyond this are refused (507) so garbage cannot grow the state without bound.
MAX_NODES = 20_000
DEFAULT_INTERVAL_S = 30.0
#: A cached /report is recomputed when state changed or it is older than this.
VIEW_MAX_AGE_S = 2.0
CORRELATE_PERIOD_S = 1.0
#: The background correlation sleeps at least this many times its own duration (at 5,000
#: nodes ~0.15 s: a correlation every ~1.5 s, <10% of the one core ingest runs on).
CORRELATE_DUTY = 10.0
#: Background correlation waits while reports arrive faster than this (a burst: thousands of
#: agents posting at once), for at most CORRELATE_MAX_DEFER_S. Correlating in the middle of a
#: burst took ingest CPU and left the heap fragmented: 5,000 nodes posting 3 rounds at ~2,000/s
#: ended at 136 MB RSS with it and 106 MB without (bench harness, same run otherwise). A
#: cluster's steady rate (5,000 nodes / 30 s ~ 170/s) is not a burst.
BUSY_REPORTS_PER_S = 400.0
BUSY_PROBE_S = 0.25
CORRELATE_MAX_DEFER_S = 10.0
PRUNE_PERIOD_S = 300.0
TRIM_PERIOD_S = 30.0
PEERS_VERSION_HEADER = "X-Netdiag-Peers-Version"
#: zlib level for the gzipped peer list: 1 is ~5x smaller already and cheapest to make
GZIP_LEVEL = 1
#: The peer list is re-encoded at most once per this many times its encoding took.
PEERS_REBUILD_FACTOR = 10.0


@dataclass(frozen=True)
class CollectorConfig:
    db_path: str
    token: str | None = None
    #: The report interval agents are told; staleness is judged on each report's own interval.
    interval_s: float = DEFAULT_INTERVAL_S
    max_body_bytes: int = MAX_BODY_BYTES
    max_nodes: int = MAX_NODES
    clock: Callable[[], float] = time.time
    history_per_node: int = HISTORY_PER_NODE
    history_max_age_s: float = HISTORY_MAX_AGE_S
    forget_after_s: float = FORGET_AFTER_S
    recent_per_node: int = RECENT_PER_NODE
    correlate_period_s: float = CORRELATE_PERIOD_S
    prune_period_s: float = PRUNE_PERIOD_S
    #: Background tasks (periodic correlation for the timeline, pruning); tests may turn off.
    background: bool = True
    #: Called every TRIM_PERIOD_S to return freed memory to the OS (None: never).
    trim_memory: Callable[[], None] | None = None
    #: Worker processes that decode and validate posted bodies (0: in this process).
    decode_workers: int = 0


@dataclass
class NodeEntry:
    """What the collector keeps in memory per node: its recent rounds as correlation digests
    (oldest first; only the latest keeps its whole report), its peer row, its worst finding."""

    name: str
    received_at: float
    #: a tuple (replaced, never changed: a correlation thread reads it as it is; 64 bytes for
    #: 3 rounds, a deque(maxlen=3) took 760)
    rounds: tuple[Any, ...]
    peer: dict[str, Any]
    worst: Severity

    def add_round(self, digest: Any, keep: int) -> None:
        """`digest` becomes the latest of at most `keep` rounds (the one it follows stripped)."""
        older = self.rounds[max(0, len(self.rounds) - keep + 1):]
        self.rounds = (*older[:-1], strip_report(older[-1]), digest) if older else (digest,)

    @property
    def latest(self) -> Any:
        return self.rounds[-1]


@dataclass
class Verdicts:
    """One correlation of the whole cluster, cached until the state changes or it ages."""

    version: int
    computed_at: float
    #: collector.render.ReportState: diagnoses, matrix, timelines, the latest reports
    report_state: Any
    duration_s: float = 0.0
    #: rendered forms ("json" / "text"), made on demand from this correlation
    rendered: dict[str, Any] = field(default_factory=dict)

    @property
    def diagnoses(self) -> tuple[Diagnosis, ...]:
        return tuple(self.report_state.diagnoses)


@dataclass
class CollectorState:
    config: CollectorConfig
    store: AsyncStore
    metrics: CollectorMetrics
    decoder: DecodePool = field(default_factory=lambda: DecodePool(0))
    nodes: dict[str, NodeEntry] = field(default_factory=dict)
    version: int = 0
    peers_version: str = ""
    peers_answer_full: bytes = b""
    #: peers_answer_full gzipped, made on the first request that accepts gzip (per version)
    peers_answer_gzip: bytes | None = None
    peers_answer_same: bytes = b""
    verdicts: Verdicts | None = None
    open_since: dict[str, float] = field(default_factory=dict)
    verdict_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: One thread for correlation and rendering (CPU work off the event loop; one thread,
    #: so one malloc arena and at most one core).
    cpu_executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="netdiag-correlate"))
    render_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    peers_dirty: bool = True
    peers_built_at: float = 0.0
    peers_build_s: float = 0.0
    #: reports accepted since start (the background correlation watches the rate)
    received: int = 0

    def changed(self) -> None:
        """The kept reports changed: a new state version, and the cached correlation is
        dropped (it is never served for another version, and it holds the digests it was
        computed from: while reports stream in, those are the rounds they replace)."""
        self.version += 1
        self.verdicts = None

    def rebuild_peers(self) -> None:
        started = time.perf_counter()
        peers = [self.nodes[n].peer for n in sorted(self.nodes)]
        body = json.dumps(peers, separators=(",", ":"), sort_keys=True).encode()
        self.peers_version = hashlib.blake2b(body, digest_size=8).hexdigest()
        tail = (b',"interval_s":' + json.dumps(self.config.interval_s).encode()
                + b',"peers_version":"' + self.peers_version.encode() + b'"}')
        # Both answers encoded once per version: no per-request copy of a 700 kB list.
        self.peers_answer_full = b'{"peers":' + body + tail
        self.peers_answer_gzip = None
        self.peers_answer_same = b'{"peers":null' + tail
        self.peers_dirty = False
        self.peers_built_at = time.monotonic()
        self.peers_build_s = time.perf_counter() - started

    def fresh_peers(self, force: bool = False) -> None:
        """Rebuild the encoded peer list when it changed, but (unless forced) spend at most
        ~10% of the time on it: when 5,000 agents join at once, answers may lag a few
        milliseconds behind instead of rebuilding the whole list for every new node."""
        if self.peers_dirty and (force or time.monotonic() - self.peers_built_at
                                 >= PEERS_REBUILD_FACTOR * self.peers_build_s):
            self.rebuild_peers()


STATE = web.AppKey("state", CollectorState)
CONFIG = web.AppKey("config", CollectorConfig)
TASKS = web.AppKey("tasks", list)


# --- pure helpers -------------------------------------------------------------------------------

def peer_of(report: NodeReport) -> dict[str, Any]:
    """The peer-list row for a node: what another agent needs to probe it (agent.probes.Peer's
    fields), taken from its first overlay device that is up."""
    dev = next((o for o in report.overlay if o.up), report.overlay[0] if report.overlay else None)
    vxlan_ip = ""
    if dev is not None and dev.addresses:
        vxlan_ip = dev.addresses[0].split("/")[0]
    underlay = report.node.underlay_ip or (dev.local if dev is not None else "")
    return {"name": report.node.name, "underlay_ip": underlay, "vxlan_ip": vxlan_ip,
            "vxlan_mac": dev.mac if dev else "", "vxlan_port": dev.port if dev else None,
            "vni": dev.vni if dev else None, "mtu": dev.mtu if dev else None}


def diagnosis_key(d: Diagnosis) -> str:
    return f"{d.id}|{','.join(sorted(d.nodes))}"


def diff_open(previous: Mapping[str, float], current: Iterable[Diagnosis],
              now: float) -> tuple[dict[str, float], list[Transition]]:
    """Which diagnoses appeared and which cleared since the last correlation (pure)."""
    current = list(current)
    keys = {diagnosis_key(d): d for d in current}
    events: list[Transition] = []
    open_now: dict[str, float] = {}
    for key, d in keys.items():
        if key in previous:
            open_now[key] = previous[key]
        else:
            open_now[key] = now
            events.append(Transition(now, "appeared", key, d.id, d.severity.label, d.nodes,
                                     d.title))
    for key in previous:
        if key not in keys:
            diag_id, _, nodes = key.partition("|")
            events.append(Transition(now, "cleared", key, diag_id, "",
                                     tuple(n for n in nodes.split(",") if n), ""))
    return open_now, events


def _json_error(status: int, message: str, field_path: str | None = None,
                headers: Mapping[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field_path is not None:
        body["field"] = field_path
    return web.json_response(body, status=status, headers=headers)


# --- correlation and rendering: the pure collector.correlate / collector.render -------------

def report_of(item: Any) -> NodeReport:
    return item if isinstance(item, NodeReport) else item.report


#: Values held by many digests (small peer sets, fact tuples) are shared through this cache;
#: it is cleared when it grows past SHARED_VALUES_MAX entries.
SHARED_VALUES_MAX = 10_000
#: Frozensets up to this size are shared across digests (a small cluster's peer sets).
SHARED_SET_MAX = 8
SHARED_TUPLE_MAX = 64
_shared: dict[Any, Any] = {}


def _share(value: Any) -> Any:
    try:
        return _shared.setdefault(value, value)
    except TypeError:  # unhashable inside: keep as is
        return value


def share_values(digest: Any, **changes: Any) -> Any:
    """The same digest, with `changes`, and with equal values shared across digests: small
    frozensets and tuples, and the flattened facts (most nodes report the same ones). Values
    are only replaced by equal ones, so correlation cannot tell. (`digest_indexed` already
    interns the node names and shares the probe-kind sets: 5,000 nodes x 3 rounds took
    ~310 MB before either.)"""
    if not dataclasses.is_dataclass(digest):
        return digest
    for f in dataclasses.fields(digest):
        value = getattr(digest, f.name)
        if isinstance(value, frozenset):
            if len(value) <= SHARED_SET_MAX:
                changes[f.name] = _share(value)
        elif isinstance(value, tuple) and len(value) <= SHARED_TUPLE_MAX:
            changes[f.name] = _share(value)
        elif f.name == "facts" and isinstance(value, dict) and len(value) <= SHARED_TUPLE_MAX:
            # flattened scalar facts: most nodes report the same ones (drift is the exception)
            try:
                changes[f.name] = _shared.setdefault(("facts", *value.items()), value)
            except TypeError:  # unhashable inside: keep as is
                pass
    if len(_shared) > SHARED_VALUES_MAX:
        _shared.clear()
    return replace(digest, **changes) if changes else digest


def digest_round(report: NodeReport, index: ProbeIndex | None = None) -> Any:
    """One received report as kept in memory: its correlation digest, which indexes the
    probes and seen counts and holds the facts flattened, with the report itself kept
    without those three (correlation and rendering read its node, overlay and findings;
    tests/test_collector_api.py checks the output is the same). Probes and seen counts come
    from the report, or summed up per peer when it was decoded without them (`index`,
    `collector.decode.decode_report`)."""
    d = digest_report(report) if index is None else digest_indexed(report, index)
    return share_values(d, report=replace(report, probes=(), seen=(), facts={}))


def strip_report(item: Any) -> Any:
    """An earlier round keeps only its index (probes, seen, facts): its whole report is
    dropped to save memory; rules and timelines read the latest round's report only."""
    if isinstance(item, NodeReport):
        return item
    r = item.report
    return replace(item, report=NodeReport(node=r.node, collected_at=r.collected_at,
                                           interval_s=r.interval_s))


def correlate_entries(entries: list[tuple[str, float, list[Any]]], now: float,
                      interval_s: float = DEFAULT_INTERVAL_S) -> Any:
    """Runs off the event loop: the nodes' recent rounds -> collector.render.ReportState.
    `interval_s` is assumed for a report that does not carry its own."""
    latest = {name: rounds[-1] for name, _, rounds in entries}
    history = {name: rounds for name, _, rounds in entries}
    received = {name: at for name, at, _ in entries}
    config = replace(DEFAULT_CONFIG, default_interval_s=interval_s)
    return build_report_state(latest, now, history=history, config=config,
                              received_at=received)


def render_json(report_state: Any, open_since: Mapping[str, float],
                timeline: Mapping[str, Any]) -> dict[str, Any]:
    doc = render_report_json(report_state)
    # "since when": each diagnosis carries when it first appeared (kept across restarts).
    for d_doc, d in zip(doc.get("diagnoses", ()), report_state.diagnoses):
        if isinstance(d_doc, dict):
            d_doc["since"] = open_since.get(diagnosis_key(d), report_state.generated_at)
    doc["timeline"] = dict(timeline)
    return doc


#: /report's JSON: keys that are not strings become strings, as json.dumps makes them
REPORT_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS
#: Bodies up to this size are indented, for a person reading `curl` output; larger ones (a
#: report listing thousands of failing pairs) stay compact: indenting doubled the size (all
#: UDP blocked between 5,000 nodes: 12.6 vs 24 MB, cached per correlation).
REPORT_JSON_INDENT_MAX_BYTES = 1 << 20


def encode_report_json(report_state: Any, open_since: Mapping[str, float],
                       timeline: Mapping[str, Any]) -> bytes:
    """`/report`'s JSON body, as cached per correlation: encoded once (the document itself
    took twice the memory, 5.7 vs 2.8 MB at 5,000 nodes, and was encoded again per request),
    by orjson: when all UDP between 5,000 nodes is blocked the body lists ~80,000 failing
    pairs, which json.dumps took ~0.6 s to encode."""
    doc = render_json(report_state, open_since, timeline)
    body = orjson.dumps(doc, option=REPORT_JSON_OPTIONS)
    if len(body) <= REPORT_JSON_INDENT_MAX_BYTES:
        body = orjson.dumps(doc, option=REPORT_JSON_OPTIONS | orjson.OPT_INDENT_2)
    return body


async def current_verdicts(state: CollectorState) -> Verdicts:
    """The cached correlation, redone when the state changed or it aged (staleness is timed);
    records the diagnoses that appeared or cleared and updates the verdict metrics."""
    async with state.verdict_lock:
        now = state.config.clock()
        v = state.verdicts
        max_age = max(VIEW_MAX_AGE_S, 2 * v.duration_s) if v else 0.0
        if v is not None and v.version == state.version and now - v.computed_at < max_age:
            return v
        version = state.version
        entries = [(e.name, e.received_at, list(e.rounds)) for e in state.nodes.values()]
        worst = {e.name: e.worst for e in state.nodes.values()}
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        with state.metrics.correlation_seconds.time():
            report_state = await loop.run_in_executor(state.cpu_executor, correlate_entries,
                                                      entries, now, state.config.interval_s)
        v = Verdicts(version, now, report_state, time.perf_counter() - started)
        state.open_since, events = diff_open(state.open_since, v.diagnoses, now)
        if events:
            await state.store.call(state.store.store.record_transitions, events)
            for e in events:
                log.info("diagnosis %s %s%s", e.event, e.diagnosis_id,
                         f" ({', '.join(e.nodes)})" if e.nodes else "")
        state.metrics.set_verdicts(worst, v.diagnoses)
        state.verdicts = v
        return v


async def rendered(state: CollectorState, fmt: str) -> Any:
    """`/report` in one format ("json": the encoded body, or "text"), rendered once per
    correlation."""
    v = await current_verdicts(state)
    async with state.render_lock:
        if fmt not in v.rendered:
            loop = asyncio.get_running_loop()
            if fmt == "json":
                store = state.store.store
                transitions = await state.store.call(store.transitions, 50)
                changes = await state.store.call(store.fact_changes, 50)
                timeline = {"transitions": [t.to_dict() for t in transitions],
                            "fact_changes": changes}
                v.rendered[fmt] = await loop.run_in_executor(
                    state.cpu_executor, encode_report_json, v.report_state,
                    dict(state.open_since), timeline)
            else:
                v.rendered[fmt] = await loop.run_in_executor(state.cpu_executor,
                                                             render_report_text,
                                                             v.report_state)
        return v.rendered[fmt]


# --- handlers -----------------------------------------------------------------------------------

async def post_report(request: web.Request) -> web.Response:
    state = request.app[STATE]
    config = state.config
    metrics = state.metrics
    if config.token is not None:
        auth = request.headers.get("Authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), config.token.encode()):
            metrics.rejected("unauthorized")
            return _json_error(401, "missing or wrong bearer token",
                               headers={"WWW-Authenticate": 'Bearer realm="netdiag"'})
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        metrics.rejected("media_type")
        return _json_error(415, f"expected Content-Type application/json, got {ctype!r}")
    if request.content_length is not None and request.content_length > config.max_body_bytes:
        metrics.rejected("too_large")
        return _json_error(413, f"report larger than {config.max_body_bytes} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        metrics.rejected("too_large")
        return _json_error(413, f"report larger than {config.max_body_bytes} bytes")
    try:
        decoded = await state.decoder.decode(body)
    except ReportRejected as exc:
        metrics.rejected(exc.reason)
        return _json_error(400, exc.message, exc.field)

    report = decoded.report
    name = report.node.name
    if name not in state.nodes and len(state.nodes) >= config.max_nodes:
        return _json_error(507, f"refusing a new node: already {config.max_nodes} nodes")
    now = config.clock()
    stored = StoredReport(
        node=name, received_at=now, collected_at=report.collected_at, body=body,
        worst=decoded.worst, finding_ids=decoded.finding_ids,
        fact_digests=decoded.fact_digests, blob=decoded.compressed)
    try:
        await state.store.write_report(stored)
    except sqlite3.Error as exc:  # disk full, locked by another process: the agent retries
        log.error("cannot store the report of %s: %s", name, exc)
        return _json_error(503, f"cannot store the report: {exc}")
    _remember(state, report, now, decoded.index)
    state.received += 1
    metrics.observe_report(name, now)
    return _peers_response(state, request.headers.get(PEERS_VERSION_HEADER),
                           accepts_gzip=_accepts_gzip(request))


def _remember(state: CollectorState, report: NodeReport, received_at: float,
              index: ProbeIndex | None = None) -> None:
    """Keep a validated report in memory: digest it (its probes and seen counts from the
    report or from `index`, see `digest_round`), update the node's peer row."""
    name = report.node.name
    peer = peer_of(report)
    entry = state.nodes.get(name)
    changed = entry is None or entry.peer != peer
    if entry is None:
        entry = state.nodes[name] = NodeEntry(name, received_at, (), peer, report.worst)
    entry.add_round(digest_round(report, index), state.config.recent_per_node)
    entry.received_at, entry.peer, entry.worst = received_at, peer, report.worst
    state.changed()
    if changed:
        state.peers_dirty = True


def _accepts_gzip(request: web.Request) -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "")


def _peers_response(state: CollectorState, known_version: str | None,
                    force: bool = False, accepts_gzip: bool = False) -> web.Response:
    """The peer list, or `"peers": null` for an agent that holds this version. The version is
    also a response header. The whole list goes gzipped to clients that accept it (aiohttp's
    client, so every agent): 5,000 nodes' 718 kB is then 59 kB (1.6 ms to make, once per version),
    and after a node joins all 5,000 agents fetch it once (3.4 GB of answers unzipped)."""
    state.fresh_peers(force)
    headers = {PEERS_VERSION_HEADER: state.peers_version, "Vary": "Accept-Encoding"}
    if bool(known_version) and known_version == state.peers_version:
        body = state.peers_answer_same
    elif accepts_gzip:
        if state.peers_answer_gzip is None:
            state.peers_answer_gzip = gzip.compress(state.peers_answer_full, GZIP_LEVEL)
        body = state.peers_answer_gzip
        headers["Content-Encoding"] = "gzip"
    else:
        body = state.peers_answer_full
    return web.Response(body=body, content_type="application/json", headers=headers)


async def get_peers(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.fresh_peers(force=True)
    etag = f'"{state.peers_version}"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    resp = _peers_response(state, None, accepts_gzip=_accepts_gzip(request))
    resp.headers["ETag"] = etag
    return resp


def _wants_json(request: web.Request) -> bool:
    fmt = request.query.get("format")
    if fmt is not None:
        return fmt == "json"
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/plain" not in accept


async def get_report(request: web.Request) -> web.Response:
    fmt = request.query.get("format")
    if fmt not in (None, "json", "text"):
        return _json_error(400, f"format must be json or text, got {fmt!r}")
    state = request.app[STATE]
    if _wants_json(request):
        body = await rendered(state, "json")
        return web.Response(body=body, content_type="application/json", charset="utf-8")
    text = await rendered(state, "text")
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def get_metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    # 5,000 nodes: ~10,000 per-node samples, ~0.25 s to render: not on the event loop
    body = await asyncio.get_running_loop().run_in_executor(
        state.cpu_executor, generate_latest, state.metrics.registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    if not request.app[STATE].store.is_open:
        return web.Response(status=503, text="store not open\n")
    return web.Response(text="ready\n")


# --- lifecycle ----------------------------------------------------------------------------------

async def _on_startup(app: web.Application) -> None:
    state = app[STATE]
    await state.store.open()
    await state.decoder.start()
    rows = await state.store.call(state.store.store.load_recent)
    for name, received_at, blob in rows:
        try:  # validated as a posted body is (the same decoder)
            decoded = decode_report(decompress_report(blob), compress=False)
        except Exception as exc:  # noqa: BLE001 - a bad row is skipped, never fatal
            log.warning("skipping stored report of %s: %s", name, exc)
            continue
        _remember(state, decoded.report, received_at, decoded.index)
        state.metrics.node_reported(name, received_at)
    state.open_since = await state.store.call(state.store.store.open_diagnoses)
    state.rebuild_peers()
    state.changed()
    if rows:
        log.info("loaded the latest reports of %d node(s) from %s", len(state.nodes),
                 state.config.db_path)
    if state.config.background:
        app[TASKS].append(asyncio.create_task(_correlate_loop(state)))
        app[TASKS].append(asyncio.create_task(_prune_loop(state)))
        app[TASKS].append(asyncio.create_task(_trim_loop(state)))


async def _correlate_loop(state: CollectorState) -> None:
    """Keeps the timeline current even when nobody asks for /report."""
    while True:
        try:
            # (only its duration is kept: the next report drops the correlation itself)
            took = (await current_verdicts(state)).duration_s
            # At most ~1/(1+CORRELATE_DUTY) of a core goes to background correlation.
            await asyncio.sleep(max(state.config.correlate_period_s, CORRELATE_DUTY * took))
            await wait_for_ingest_lull(state)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - logged; the next round tries again
            log.exception("correlation failed")
            await asyncio.sleep(max(state.config.correlate_period_s, 5.0))


async def wait_for_ingest_lull(state: CollectorState) -> float:
    """Returns once reports arrive slower than BUSY_REPORTS_PER_S (measured over BUSY_PROBE_S),
    or after CORRELATE_MAX_DEFER_S; -> the seconds waited."""
    probes = max(1, round(CORRELATE_MAX_DEFER_S / BUSY_PROBE_S))
    for n in range(1, probes + 1):
        before = state.received
        await asyncio.sleep(BUSY_PROBE_S)
        if state.received - before < BUSY_REPORTS_PER_S * BUSY_PROBE_S:
            break
    return n * BUSY_PROBE_S


async def _trim_loop(state: CollectorState) -> None:
    """Hands memory freed by transient peaks (thousands of agents joining at once) back to
    the OS; `config.trim_memory` is glibc's malloc_trim where available (collector.main)."""
    trim = state.config.trim_memory
    if trim is None:
        return
    while True:
        await asyncio.sleep(TRIM_PERIOD_S)
        await state.store.call(trim)


async def _prune_loop(state: CollectorState) -> None:
    while True:
        await asyncio.sleep(state.config.prune_period_s)
        try:
            await prune(state)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("pruning the store failed")


async def prune(state: CollectorState) -> list[str]:
    forgotten = await state.store.call(state.store.store.prune, state.config.clock())
    for name in forgotten:
        state.nodes.pop(name, None)
    if forgotten:
        state.peers_dirty = True
        state.changed()
        log.info("forgot %d node(s) silent for %.0f s: %s", len(forgotten),
                 state.config.forget_after_s, ", ".join(forgotten[:10]))
    return forgotten


async def _on_cleanup(app: web.Application) -> None:
    for task in app[TASKS]:
        task.cancel()
    for task in app[TASKS]:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await app[STATE].decoder.close()
    await app[STATE].store.close()
    app[STATE].cpu_executor.shutdown(wait=True)


def make_app(config: CollectorConfig) -> web.Application:
    app = web.Application(client_max_size=config.max_body_bytes)
    store = AsyncStore(Store(config.db_path, config.history_per_node, config.history_max_age_s,
                             config.forget_after_s, config.recent_per_node))
    app[CONFIG] = config
    app[STATE] = CollectorState(config=config, store=store, metrics=CollectorMetrics(),
                                decoder=DecodePool(config.decode_workers))
    app[TASKS] = []
    app.router.add_post("/api/v1/reports", post_report)
    app.router.add_get("/api/v1/peers", get_peers)
    app.router.add_get("/report", get_report)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.on_startup.append(_on_startup)
    app.on_cleanup.append(_on_cleanup)
    return app
