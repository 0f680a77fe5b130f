"""The collector's state on disk: SQLite in WAL mode, bounded.

Three tables:
- `recent`: the newest `recent_per_node` reports per node (zlib-compressed JSON, as received
  and validated): the latest for `/report`, the rounds before it because verdicts need repeated
  failures; a restart loses nothing;
- `history`: one small row per received report (when, worst severity, finding ids, a digest of
  every fact), the last `history_per_node` rows per node and at most `history_max_age_s` old,
  so "node2's rp_filter changed at 10:02" is answerable without keeping whole reports;
- `transitions`: when each diagnosis appeared and cleared (the timeline).

`Store` is synchronous and owns one connection; it is only ever used from one thread
(`AsyncStore` runs every call on a single-thread executor, so the event loop never waits on
disk). Writes are grouped: reports that arrive while a commit is in flight are committed
together in the next transaction (group commit), which is what makes thousands of reports a
second possible with a commit per batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

#: Whole reports kept per node: the latest and the rounds before it (correlation confirms a
#: failure over consecutive rounds).
RECENT_PER_NODE = 3
#: History rows kept per node (one per report: at a 30 s interval, 2 hours).
HISTORY_PER_NODE = 240
#: History older than this is dropped whatever the count.
HISTORY_MAX_AGE_S = 24 * 3600.0
#: A node that has not reported for this long is forgotten (its latest report deleted).
FORGET_AFTER_S = 7 * 24 * 3600.0
#: Diagnosis transitions kept (appeared/cleared events).
TRANSITIONS_MAX = 10_000
ZLIB_LEVEL = 1
#: Reports per multi-row INSERT (6 parameters each; SQLite allows 32,766 per statement).
ROWS_PER_STATEMENT = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS recent (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    received_at REAL NOT NULL,
    report BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS recent_node ON recent (node, id);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    received_at REAL NOT NULL,
    collected_at REAL NOT NULL,
    worst TEXT NOT NULL,
    finding_ids TEXT NOT NULL,
    fact_digests TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_node ON history (node, id);
CREATE INDEX IF NOT EXISTS history_time ON history (received_at);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    key TEXT NOT NULL,
    diagnosis_id TEXT NOT NULL,
    severity TEXT NOT NULL,
    nodes TEXT NOT NULL,
    title TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS open_diagnoses (
    key TEXT PRIMARY KEY,
    since REAL NOT NULL
);
"""


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def compress_report(body: bytes) -> bytes:
    return zlib.compress(body, ZLIB_LEVEL)


def decompress_report(blob: bytes) -> bytes:
    return zlib.decompress(blob)


def digest_value(value: Any) -> str:
    """A short stable digest of one fact's value (for the timeline: "changed at 10:02")."""
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(raw.encode(), digest_size=6).hexdigest()


#: Digests of scalar fact values, which repeat across nodes and rounds (cleared when full).
_SCALAR_DIGESTS: dict[tuple[type, Any], str] = {}
_SCALAR_DIGESTS_MAX = 4096
_SCALAR_TYPES = (str, int, float, bool, type(None))


def digest_facts(facts: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in facts.items():
        t = type(v)
        if t in _SCALAR_TYPES:  # exact types: 1, 1.0 and True digest differently
            d = _SCALAR_DIGESTS.get((t, v))
            if d is None:
                if len(_SCALAR_DIGESTS) >= _SCALAR_DIGESTS_MAX:
                    _SCALAR_DIGESTS.clear()
                d = _SCALAR_DIGESTS[(t, v)] = digest_value(v)
            out[k] = d
        else:
            out[k] = digest_value(v)
    return out


@dataclass(frozen=True)
class StoredReport:
    """One validated report as it is kept: the JSON as received (the store thread compresses
    it: zlib drops the GIL, so that work leaves the event loop's core), or already compressed
    by a decode worker (`blob`), and the history row's fields."""

    node: str
    received_at: float
    collected_at: float
    body: bytes
    worst: str
    finding_ids: tuple[str, ...]
    fact_digests: Mapping[str, str]
    blob: bytes | None = None

    @property
    def compressed(self) -> bytes:
        return self.blob if self.blob is not None else compress_report(self.body)


@dataclass(frozen=True)
class HistoryRow:
    node: str
    received_at: float
    collected_at: float
    worst: str
    finding_ids: tuple[str, ...]
    fact_digests: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "received_at": self.received_at,
                "collected_at": self.collected_at, "worst": self.worst,
                "finding_ids": list(self.finding_ids), "fact_digests": dict(self.fact_digests)}


@dataclass(frozen=True)
class Transition:
    at: float
    event: str  # "appeared" | "cleared"
    key: str
    diagnosis_id: str
    severity: str
    nodes: tuple[str, ...]
    title: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "event": self.event, "id": self.diagnosis_id,
                "severity": self.severity, "nodes": list(self.nodes), "title": self.title}


class Store:
    """Synchronous SQLite access; one instance per thread (see AsyncStore)."""

    def __init__(self, path: str, history_per_node: int = HISTORY_PER_NODE,
                 history_max_age_s: float = HISTORY_MAX_AGE_S,
                 forget_after_s: float = FORGET_AFTER_S,
                 recent_per_node: int = RECENT_PER_NODE) -> None:
        self.path = path
        self.recent_per_node = recent_per_node
        self.history_per_node = history_per_node
        self.history_max_age_s = history_max_age_s
        self.forget_after_s = forget_after_s
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal" and self.path != ":memory:":
                raise sqlite3.OperationalError(f"could not switch {self.path} to WAL ({mode})")
            # WAL + NORMAL: a commit survives a process crash; only an OS crash can lose the
            # last transactions, which the next report round replaces anyway.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        self._db = db

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- reports ---------------------------------------------------------------------------

    def write_reports(self, reports: Iterable[StoredReport]) -> None:
        """One transaction for the whole batch: each report joins its node's recent reports
        (the oldest beyond `recent_per_node` dropped), plus one history row each."""
        db = self.db
        rows = list(reports)
        # A few multi-row statements per batch rather than three per report: sqlite3 drops and
        # retakes the GIL around every statement step, and each retake can wait out the event
        # loop's switch interval (5 ms), so per-row statements made this thread crawl.
        db.execute("BEGIN")
        try:
            for chunk in _chunks(rows, ROWS_PER_STATEMENT):
                db.execute("INSERT INTO recent (node, received_at, report) VALUES "
                           + ", ".join(["(?, ?, ?)"] * len(chunk)),
                           [v for r in chunk
                            for v in (r.node, r.received_at, r.compressed)])
                db.execute("INSERT INTO history (node, received_at, collected_at, worst, "
                           "finding_ids, fact_digests) VALUES "
                           + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)),
                           [v for r in chunk for v in (
                               r.node, r.received_at, r.collected_at, r.worst,
                               json.dumps(r.finding_ids),
                               json.dumps(r.fact_digests, sort_keys=True))])
            for names in _chunks(sorted({r.node for r in rows}), ROWS_PER_STATEMENT):
                db.execute(
                    "DELETE FROM recent WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() "
                    "OVER (PARTITION BY node ORDER BY id DESC) AS rn FROM recent WHERE node IN "
                    f"({', '.join(['?'] * len(names))})) WHERE rn > ?)",
                    [*names, self.recent_per_node])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def load_recent(self) -> list[tuple[str, float, bytes]]:
        """Every node's recent reports, oldest first per node."""
        return [(n, t, bytes(b)) for n, t, b in self.db.execute(
            "SELECT node, received_at, report FROM recent ORDER BY node, id")]

    def history(self, node: str | None = None, limit: int = 100) -> list[HistoryRow]:
        if node is None:
            cur = self.db.execute(
                "SELECT node, received_at, collected_at, worst, finding_ids, fact_digests "
                "FROM history ORDER BY id DESC LIMIT ?", (limit,))
        else:
            cur = self.db.execute(
                "SELECT node, received_at, collected_at, worst, finding_ids, fact_digests "
                "FROM history WHERE node = ? ORDER BY id DESC LIMIT ?", (node, limit))
        return [HistoryRow(n, r, c, w, tuple(json.loads(f)), json.loads(d))
                for n, r, c, w, f, d in cur]

    def fact_changes(self, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent fact changes per node: consecutive history rows whose digests differ
        (newest first), e.g. {"node": "node2", "fact": "iptables.input_digest", "at": ...}."""
        changes: list[dict[str, Any]] = []
        cur = self.db.execute(
            "SELECT node, received_at, fact_digests FROM history ORDER BY node, id")
        prev_node, prev = None, None
        for node, at, digests_json in cur:
            digests = json.loads(digests_json)
            if node == prev_node and prev is not None:
                for fact in sorted(set(digests) | set(prev)):
                    if digests.get(fact) != prev.get(fact):
                        changes.append({"node": node, "fact": fact, "at": at})
            prev_node, prev = node, digests
        changes.sort(key=lambda c: c["at"], reverse=True)
        return changes[:limit]

    # --- diagnosis timeline -------------------------------------------------------------------

    def record_transitions(self, events: Iterable[Transition]) -> None:
        db = self.db
        rows = list(events)
        if not rows:
            return
        db.execute("BEGIN")
        try:
            for t in rows:
                db.execute(
                    "INSERT INTO transitions (at, event, key, diagnosis_id, severity, nodes, "
                    "title) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (t.at, t.event, t.key, t.diagnosis_id, t.severity, json.dumps(t.nodes),
                     t.title))
                if t.event == "appeared":
                    db.execute("INSERT OR REPLACE INTO open_diagnoses (key, since) VALUES (?, ?)",
                               (t.key, t.at))
                else:
                    db.execute("DELETE FROM open_diagnoses WHERE key = ?", (t.key,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def open_diagnoses(self) -> dict[str, float]:
        """Diagnosis key -> since when it has been open (survives a restart)."""
        return {k: s for k, s in self.db.execute("SELECT key, since FROM open_diagnoses")}

    def transitions(self, limit: int = 100) -> list[Transition]:
        cur = self.db.execute(
            "SELECT at, event, key, diagnosis_id, severity, nodes, title FROM transitions "
            "ORDER BY id DESC LIMIT ?", (limit,))
        return [Transition(a, e, k, d, s, tuple(json.loads(n)), t) for a, e, k, d, s, n, t in cur]

    # --- retention ---------------------------------------------------------------------------

    def prune(self, now: float) -> list[str]:
        """Apply retention; returns the nodes forgotten (no report for `forget_after_s`)."""
        db = self.db
        db.execute("BEGIN")
        try:
            forgotten = [n for (n,) in db.execute(
                "SELECT node FROM recent GROUP BY node HAVING MAX(received_at) < ?",
                (now - self.forget_after_s,))]
            db.executemany("DELETE FROM recent WHERE node = ?", [(n,) for n in forgotten])
            db.execute("DELETE FROM history WHERE received_at < ?",
                       (now - self.history_max_age_s,))
            db.execute(
                "DELETE FROM history WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER "
                "(PARTITION BY node ORDER BY id DESC) AS rn FROM history) WHERE rn > ?)",
                (self.history_per_node,))
            db.execute(
                "DELETE FROM transitions WHERE id <= (SELECT MAX(id) FROM transitions) - ?",
                (TRANSITIONS_MAX,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return forgotten

    def count(self, table: str) -> int:
        if table not in ("recent", "history", "transitions"):
            raise ValueError(table)
        return int(self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


class AsyncStore:
    """Runs a `Store` on one dedicated thread; reports are committed in groups."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netdiag-store")
        self._pending: list[tuple[StoredReport, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.is_open = False

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        await self.call(self.store.open)
        self.is_open = True

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self.is_open:
            await self.call(self.store.close)
        self.is_open = False
        self._executor.shutdown(wait=True)

    async def write_report(self, report: StoredReport) -> None:
        """Resolves once the report is committed (possibly together with others)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((report, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self.call(self.store.write_reports, [r for r, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiter gets the error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
