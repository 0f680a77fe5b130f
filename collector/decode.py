"""Turning a posted body into what the collector keeps (pure; no sockets, no clock).

`parse_report_body(body)` decodes and validates one report; `decode_report(body)` also does the
rest of the per-report work that does not need the collector's state (compressing the body for
the store, the history row's digests), so it can run in a worker process
(`collector.decode_pool`) while the event loop serves HTTP. Both raise `ReportRejected` and
nothing else, whatever the bytes are.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from agent.report import (Finding, NodeInfo, NodeReport, OverlayDevice, ProbeRow, SchemaError,
                          SeenRow, Severity, node_report_with_rows)
from collector.correlate.model import ProbeIndex, index_probe_rows
from collector.store import compress_report, digest_facts

_SEVERITY_BY_LABEL = {s.label: s for s in Severity}

#: Kubernetes node names are DNS subdomains: at most 253 characters.
NODE_NAME_MAX_CHARS = 253


class ReportRejected(Exception):
    """A posted body that is not a valid NodeReport; `field` names where (or "" for all)."""

    def __init__(self, reason: str, message: str, field_path: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field_path


class ReceivedReport(NamedTuple):
    """A posted report, validated: the report without its probes and seen counts, and those
    as rows for indexing (`agent.report.node_report_with_rows`)."""

    report: NodeReport
    probes: list[ProbeRow]
    seen: list[SeenRow]


@dataclass(frozen=True)
class DecodedReport:
    """Everything the collector derives from one body before it touches its state."""

    #: the report without its probes and seen counts ...
    report: NodeReport
    #: ... which are summed up per peer here (`collector.correlate.digest_indexed` reads it)
    index: ProbeIndex
    #: the body as stored (zlib), or None: the store thread compresses it
    compressed: bytes | None
    #: the history row: worst severity, ids of findings at warning or worse, fact digests
    worst: str
    finding_ids: tuple[str, ...]
    fact_digests: dict[str, str]

    def to_builtins(self) -> tuple[Any, ...]:
        """Only tuples, lists, dicts, str, int, float, bool, None and bytes: what `marshal`
        carries (from a decode worker: cheaper to load than pickled dataclasses)."""
        r = self.report
        n = r.node
        return ((r.schema, (n.name, n.underlay_ip, n.kernel, n.agent_version), r.collected_at,
                 r.interval_s,
                 [(o.name, o.vni, o.port, o.local, o.parent, o.mtu, o.mac, o.addresses, o.up)
                  for o in r.overlay],
                 r.facts,
                 [(f.id, f.severity.label, f.node, f.title, f.evidence, f.remediation)
                  for f in r.findings]),
                tuple(self.index), self.compressed, self.worst, self.finding_ids,
                self.fact_digests)

    @classmethod
    def from_builtins(cls, data: tuple[Any, ...]) -> "DecodedReport":
        """The inverse of `to_builtins` (trusted input: it comes from our own worker, which
        validated it), interning the strings every node repeats like `intern_strings`."""
        report_t, index_t, compressed, worst, finding_ids, fact_digests = data
        schema, node_t, collected_at, interval_s, overlay_t, facts, findings_t = report_t
        intern = sys.intern
        report = NodeReport(
            schema=schema,
            node=NodeInfo(intern(node_t[0]), node_t[1], intern(node_t[2]), intern(node_t[3])),
            collected_at=collected_at, interval_s=interval_s,
            overlay=tuple(OverlayDevice(o[0], o[1], o[2], o[3], o[4], o[5], o[6], tuple(o[7]),
                                        o[8]) for o in overlay_t),
            facts=facts,
            findings=tuple(Finding(intern(f[0]), _SEVERITY_BY_LABEL[f[1]], intern(f[2]),
                                   intern(f[3]), intern(f[4]), intern(f[5]))
                           for f in findings_t))
        return cls(report, ProbeIndex(*index_t), compressed, intern(worst),
                   tuple(finding_ids), fact_digests)


def intern_strings(data: Any) -> Any:
    """Share the strings that repeat across thousands of kept reports (finding ids, titles and
    remediations, node info): private copies for 5,000 nodes x 3 rounds cost MBs. Probes and
    seen counts are not kept (the digest indexes them and interns the peer names itself), so
    their strings are left alone (interning them cost ~30 us per report and, measured at
    5,000 nodes x 3 rounds, 7 MB more). Leaves anything that is not the expected shape
    untouched (validation comes after)."""
    if not isinstance(data, dict):
        return data
    findings = data.get("findings")
    if isinstance(findings, list):  # every node carries the same titles and remediations
        for item in findings:
            if isinstance(item, dict):
                for k in ("id", "title", "remediation", "evidence", "node"):
                    v = item.get(k)
                    if type(v) is str:
                        item[k] = sys.intern(v)
    node = data.get("node")
    if isinstance(node, dict):
        for k in ("name", "kernel", "agent_version"):
            if type(node.get(k)) is str:
                node[k] = sys.intern(node[k])
    return data


def parse_report_body(body: bytes) -> ReceivedReport:
    """Decode and validate one posted report."""
    try:
        # orjson: half the decode time of json.loads on a 13 kB report (measured 71 vs 148 us),
        # and it refuses NaN/Infinity, lone surrogates and nesting deeper than 1,024 itself.
        data = intern_strings(orjson.loads(body))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ReportRejected("bad_json", f"invalid JSON: {str(exc)[:200]}") from None
    try:
        received = ReceivedReport(*node_report_with_rows(data))
        if len(received.report.node.name) > NODE_NAME_MAX_CHARS:
            raise SchemaError("node.name", f"longer than {NODE_NAME_MAX_CHARS} characters")
    except SchemaError as exc:
        raise ReportRejected("schema", str(exc)[:500], exc.field) from None
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
        raise ReportRejected("schema", f"invalid report: {str(exc)[:200]}") from None
    return received


def decode_report(body: bytes, compress: bool = True) -> DecodedReport:
    """`parse_report_body` plus the store's per-report work (compressing the body only when
    `compress`: in the collector's own process the store thread does it, off the event loop's
    core)."""
    report, probes, seen = parse_report_body(body)
    return DecodedReport(
        report=report, index=index_probe_rows(probes, seen),
        compressed=compress_report(body) if compress else None, worst=report.worst.label,
        finding_ids=tuple(sorted({f.id for f in report.findings
                                  if f.severity >= Severity.WARNING})),
        fact_digests=digest_facts(report.facts))
