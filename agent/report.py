"""The wire schema shared by agent and collector: `netdiag.node-report/v1`.

A Finding is the one result type everywhere (node checks, offline analysis, cross-node
diagnoses). A NodeReport is what an agent posts each round. Both are frozen dataclasses with
`to_dict()` / `from_dict()`; `from_dict` validates and raises SchemaError naming the offending
field (`probes[3].sent: expected an integer, got 'x'`), which the collector turns into a 400.

Validation is hand-written rather than a JSON-Schema library: the collector validates every
ingested report (thousands a second at scale) and the messages must name the field plainly.
`schema/node-report-v1.json` documents the same shape for other consumers; a test keeps the two
in step.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

SCHEMA_NODE_REPORT = "netdiag.node-report/v1"

#: Evidence is quoted output; cap it so one runaway check cannot bloat a report.
EVIDENCE_MAX_CHARS = 4000
TITLE_MAX_CHARS = 300
#: Facts and lists are bounded so a malicious or broken agent cannot exhaust the collector.
MAX_LIST_ITEMS = 5000


class SchemaError(ValueError):
    """Input does not match the schema; `field` is the dotted path of the offending value."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}" if field_path else message)
        self.field = field_path
        self.message = message


class Severity(enum.IntEnum):
    """Ordered so that `max()` gives the worst; the wire form is the lower-case name."""

    OK = 0
    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: Any, path: str = "severity") -> "Severity":
        if isinstance(value, Severity):
            return value
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                pass
        raise SchemaError(path, f"expected one of ok, info, warning, error; got {value!r}")


PROBE_KINDS = ("wire", "echo", "udp-control", "tcp-control", "mtu")


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"\n... [{len(text)} chars, cut]"
    return text[: limit - len(marker)] + marker


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    node: str
    title: str
    evidence: str = ""
    remediation: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity.parse(self.severity))
        object.__setattr__(self, "title", _cap(self.title, TITLE_MAX_CHARS))
        object.__setattr__(self, "evidence", _cap(self.evidence, EVIDENCE_MAX_CHARS))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity.label,
            "node": self.node,
            "title": self.title,
            "evidence": self.evidence,
            "remediation": self.remediation,
        }

    @classmethod
    def from_dict(cls, data: Any, path: str = "finding") -> "Finding":
        d = _mapping(data, path)
        return cls(
            id=_str(d, "id", path, required=True),
            severity=Severity.parse(d.get("severity"), f"{path}.severity"),
            node=_str(d, "node", path),
            title=_str(d, "title", path, required=True),
            evidence=_str(d, "evidence", path),
            remediation=_str(d, "remediation", path),
        )


@dataclass(frozen=True)
class Diagnosis(Finding):
    """A cross-node Finding: `nodes` are the nodes it blames (where the fix applies)."""

    nodes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["nodes"] = list(self.nodes)
        return d

    @classmethod
    def from_dict(cls, data: Any, path: str = "diagnosis") -> "Diagnosis":
        base = Finding.from_dict(data, path)
        nodes = _list(_mapping(data, path), "nodes", path)
        return cls(**{k: getattr(base, k) for k in ("id", "severity", "node", "title",
                                                       "evidence", "remediation")},
                   nodes=tuple(_as_str(n, f"{path}.nodes[{i}]") for i, n in enumerate(nodes)))


@dataclass(frozen=True)
class NodeInfo:
    name: str
    underlay_ip: str = ""
    kernel: str = ""
    agent_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "underlay_ip": self.underlay_ip, "kernel": self.kernel,
                "agent_version": self.agent_version}

    @classmethod
    def from_dict(cls, data: Any, path: str = "node") -> "NodeInfo":
        d = _mapping(data, path)
        name = _str(d, "name", path, required=True)
        if not name:
            raise SchemaError(f"{path}.name", "must not be empty")
        return cls(name=name, underlay_ip=_str(d, "underlay_ip", path),
                   kernel=_str(d, "kernel", path), agent_version=_str(d, "agent_version", path))


@dataclass(frozen=True)
class OverlayDevice:
    """A VXLAN device found on the node."""

    name: str
    vni: int | None = None
    port: int | None = None
    local: str = ""
    parent: str = ""
    mtu: int | None = None
    mac: str = ""
    addresses: tuple[str, ...] = ()
    up: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "vni": self.vni, "port": self.port, "local": self.local,
                "parent": self.parent, "mtu": self.mtu, "mac": self.mac,
                "addresses": list(self.addresses), "up": self.up}

    @classmethod
    def from_dict(cls, data: Any, path: str = "overlay") -> "OverlayDevice":
        d = _mapping(data, path)
        return cls(
            name=_str(d, "name", path, required=True),
            vni=_opt_int(d, "vni", path),
            port=_opt_int(d, "port", path),
            local=_str(d, "local", path),
            parent=_str(d, "parent", path),
            mtu=_opt_int(d, "mtu", path),
            mac=_str(d, "mac", path),
            addresses=tuple(_as_str(a, f"{path}.addresses[{i}]")
                            for i, a in enumerate(_list(d, "addresses", path))),
            up=_bool(d, "up", path, default=True),
        )


@dataclass(frozen=True)
class RttStats:
    min: float
    avg: float
    max: float

    def to_dict(self) -> dict[str, float]:
        return {"min": self.min, "avg": self.avg, "max": self.max}


@dataclass(frozen=True)
class ProbeResult:
    """One probe kind towards one peer in one round. `answered` is None for `wire` probes:
    only the peer's capture can confirm those (see `SeenCount`)."""

    peer: str
    peer_ip: str
    kind: str
    sent: int
    answered: int | None
    rtt_ms: RttStats | None = None
    error: str = ""

    def __post_init__(self) -> None:
        if self.kind not in PROBE_KINDS:
            raise SchemaError("kind", f"expected one of {', '.join(PROBE_KINDS)}; got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"peer": self.peer, "peer_ip": self.peer_ip, "kind": self.kind, "sent": self.sent,
                "answered": self.answered,
                "rtt_ms": self.rtt_ms.to_dict() if self.rtt_ms else None, "error": self.error}

    @classmethod
    def from_dict(cls, data: Any, path: str = "probe") -> "ProbeResult":
        d = _mapping(data, path)
        kind = _str(d, "kind", path, required=True)
        if kind not in PROBE_KINDS:
            raise SchemaError(f"{path}.kind",
                              f"expected one of {', '.join(PROBE_KINDS)}; got {kind!r}")
        rtt_raw = d.get("rtt_ms")
        rtt = None
        if rtt_raw is not None:
            r = _mapping(rtt_raw, f"{path}.rtt_ms")
            rtt = RttStats(*(_num(r, k, f"{path}.rtt_ms") for k in ("min", "avg", "max")))
        return cls(peer=_str(d, "peer", path, required=True), peer_ip=_str(d, "peer_ip", path),
                   kind=kind, sent=_int(d, "sent", path, minimum=0),
                   answered=_opt_int(d, "answered", path, minimum=0), rtt_ms=rtt,
                   error=_str(d, "error", path))


@dataclass(frozen=True)
class SeenCount:
    """How many of one peer's probes of one kind this node's capture saw arrive."""

    peer: str
    peer_ip: str
    kind: str
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"peer": self.peer, "peer_ip": self.peer_ip, "kind": self.kind, "count": self.count}

    @classmethod
    def from_dict(cls, data: Any, path: str = "seen") -> "SeenCount":
        d = _mapping(data, path)
        return cls(peer=_str(d, "peer", path, required=True), peer_ip=_str(d, "peer_ip", path),
                   kind=_str(d, "kind", path, required=True),
                   count=_int(d, "count", path, minimum=0))


@dataclass(frozen=True)
class NodeReport:
    node: NodeInfo
    collected_at: float
    interval_s: float = 0.0
    overlay: tuple[OverlayDevice, ...] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    probes: tuple[ProbeResult, ...] = ()
    seen: tuple[SeenCount, ...] = ()
    schema: str = SCHEMA_NODE_REPORT

    @property
    def worst(self) -> Severity:
        return max((f.severity for f in self.findings), default=Severity.OK)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "node": self.node.to_dict(),
            "collected_at": self.collected_at,
            "interval_s": self.interval_s,
            "overlay": [o.to_dict() for o in self.overlay],
            "facts": dict(self.facts),
            "findings": [f.to_dict() for f in self.findings],
            "probes": [p.to_dict() for p in self.probes],
            "seen": [s.to_dict() for s in self.seen],
        }

    @classmethod
    def from_dict(cls, data: Any) -> "NodeReport":
        # The collector validates thousands of reports a second: well-formed JSON objects take
        # the fast path (cheap exact type checks, no field paths built); anything it does not
        # accept outright goes through the checked path below, which rejects the same inputs
        # and names the field.
        if type(data) is dict:
            try:
                return _fast_node_report(data)
            except _NotFast:
                pass
        return cls._from_dict_checked(data)

    @classmethod
    def _from_dict_checked(cls, data: Any) -> "NodeReport":
        d = _mapping(data, "")
        schema = d.get("schema")
        if schema != SCHEMA_NODE_REPORT:
            raise SchemaError("schema", f"expected {SCHEMA_NODE_REPORT!r}, got {schema!r}")
        facts = d.get("facts", {})
        if not isinstance(facts, dict):
            raise SchemaError("facts", f"expected an object, got {_type_name(facts)}")
        if any(not isinstance(k, str) for k in facts):
            raise SchemaError("facts", "keys must be strings")
        return cls(
            schema=schema,
            node=NodeInfo.from_dict(d.get("node"), "node"),
            collected_at=_num(d, "collected_at", ""),
            interval_s=_num(d, "interval_s", "", default=0.0),
            overlay=tuple(OverlayDevice.from_dict(o, f"overlay[{i}]")
                          for i, o in enumerate(_list(d, "overlay", ""))),
            facts=facts,
            findings=tuple(Finding.from_dict(f, f"findings[{i}]")
                           for i, f in enumerate(_list(d, "findings", ""))),
            probes=tuple(ProbeResult.from_dict(p, f"probes[{i}]")
                         for i, p in enumerate(_list(d, "probes", ""))),
            seen=tuple(SeenCount.from_dict(s, f"seen[{i}]")
                       for i, s in enumerate(_list(d, "seen", ""))),
        )


# --- the fast path: accepts exactly what the checked path accepts, or gives up --------------

class _NotFast(Exception):
    """Something the fast path does not accept outright; the checked path decides."""


_SEVERITY_BY_LABEL = {s.label: s for s in Severity}
_PROBE_KIND_SET = frozenset(PROBE_KINDS)


def _new(cls: type, values: dict[str, Any]) -> Any:
    """A frozen dataclass instance from already validated field values (every field given;
    only for classes without __post_init__ or whose __post_init__ the caller has done).
    ~2.5x faster than the constructor, but the instance carries a whole dict (~2x the
    memory): for short-lived objects."""
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


def _f_str(value: Any) -> str:
    """An optional string (missing or null: "")."""
    if value is None:
        return ""
    if type(value) is not str:
        raise _NotFast
    return value


def _f_req_str(value: Any) -> str:
    if type(value) is not str:
        raise _NotFast
    return value


def _f_opt_int(value: Any) -> int | None:
    if value is None or type(value) is int:
        return value
    raise _NotFast


def _f_num(value: Any) -> float:
    if type(value) is float:
        if value - value != 0.0:  # inf or nan
            raise _NotFast
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise _NotFast from None
    raise _NotFast


def _f_list(d: dict[str, Any], key: str) -> list[Any]:
    value = d.get(key)
    if value is None:
        return []
    if type(value) is not list or len(value) > MAX_LIST_ITEMS:
        raise _NotFast
    return value


def _fast_node_report(d: dict[str, Any], as_rows: bool = False) -> Any:
    """The fast path of `NodeReport.from_dict`; with `as_rows`, the fast path of
    `node_report_with_rows` (the same checks, probes and seen counts returned as rows)."""
    if d.get("schema") != SCHEMA_NODE_REPORT:
        raise _NotFast
    facts = d.get("facts", {})
    if type(facts) is not dict:
        raise _NotFast
    for k in facts:
        if type(k) is not str:
            raise _NotFast
    n = d.get("node")
    if type(n) is not dict:
        raise _NotFast
    name = n.get("name")
    if type(name) is not str or not name:
        raise _NotFast
    # Objects a collector keeps are built by their constructors (compact instances); _new
    # is for the hundreds of probes per report, which are indexed and dropped.
    node = NodeInfo(name=name, underlay_ip=_f_str(n.get("underlay_ip")),
                    kernel=_f_str(n.get("kernel")), agent_version=_f_str(n.get("agent_version")))
    interval = d.get("interval_s")
    overlay = []
    for o in _f_list(d, "overlay"):
        if type(o) is not dict:
            raise _NotFast
        up = o.get("up", True)
        if type(up) is not bool:
            raise _NotFast
        overlay.append(OverlayDevice(
            name=_f_req_str(o.get("name")), vni=_f_opt_int(o.get("vni")),
            port=_f_opt_int(o.get("port")), local=_f_str(o.get("local")),
            parent=_f_str(o.get("parent")), mtu=_f_opt_int(o.get("mtu")), mac=_f_str(o.get("mac")),
            addresses=tuple(_f_req_str(a) for a in _f_list(o, "addresses")), up=up))
    findings = []
    for f in _f_list(d, "findings"):
        if type(f) is not dict:
            raise _NotFast
        severity = f.get("severity")
        if type(severity) is not str or severity not in _SEVERITY_BY_LABEL:
            raise _NotFast
        findings.append(Finding(id=_f_req_str(f.get("id")), severity=_SEVERITY_BY_LABEL[severity],
                                node=_f_str(f.get("node")), title=_f_req_str(f.get("title")),
                                evidence=_f_str(f.get("evidence")),
                                remediation=_f_str(f.get("remediation"))))
    probes = []
    append = probes.append
    kinds = _PROBE_KIND_SET
    for p in _f_list(d, "probes"):
        if type(p) is not dict:
            raise _NotFast
        get = p.get
        peer, peer_ip, kind = get("peer"), get("peer_ip"), get("kind")
        sent, answered, rtt, error = get("sent"), get("answered"), get("rtt_ms"), get("error")
        if (type(peer) is not str or type(kind) is not str or kind not in kinds
                or type(sent) is not int or sent < 0):
            raise _NotFast
        if peer_ip is None:
            peer_ip = ""
        elif type(peer_ip) is not str:
            raise _NotFast
        if error is None:
            error = ""
        elif type(error) is not str:
            raise _NotFast
        if answered is not None and (type(answered) is not int or answered < 0):
            raise _NotFast
        if rtt is not None:
            if type(rtt) is not dict:
                raise _NotFast
            rtt = _new(RttStats, {"min": _f_num(rtt.get("min")), "avg": _f_num(rtt.get("avg")),
                                  "max": _f_num(rtt.get("max"))})
        if as_rows:
            append((peer, kind, sent, answered))
        else:
            append(_new(ProbeResult, {"peer": peer, "peer_ip": peer_ip, "kind": kind,
                                      "sent": sent, "answered": answered, "rtt_ms": rtt,
                                      "error": error}))
    seen = []
    for s in _f_list(d, "seen"):
        if type(s) is not dict:
            raise _NotFast
        count = s.get("count")
        if type(count) is not int or count < 0:
            raise _NotFast
        peer, peer_ip, kind = _f_req_str(s.get("peer")), _f_str(s.get("peer_ip")), s.get("kind")
        if as_rows:
            seen.append((peer, _f_req_str(kind), count))
        else:
            seen.append(_new(SeenCount, {"peer": peer, "peer_ip": peer_ip,
                                         "kind": _f_req_str(kind), "count": count}))
    report = NodeReport(schema=d["schema"], node=node,
                        collected_at=_f_num(d.get("collected_at")),
                        interval_s=0.0 if interval is None else _f_num(interval),
                        overlay=tuple(overlay), facts=facts, findings=tuple(findings),
                        probes=() if as_rows else tuple(probes),
                        seen=() if as_rows else tuple(seen))
    return (report, probes, seen) if as_rows else report


#: (peer, kind, sent, answered) of one ProbeResult; (peer, kind, count) of one SeenCount
ProbeRow = tuple[str, str, int, "int | None"]
SeenRow = tuple[str, str, int]


def node_report_with_rows(data: Any) -> tuple[NodeReport, list[ProbeRow], list[SeenRow]]:
    """`NodeReport.from_dict` for a receiver that indexes probes instead of keeping them (the
    collector): accepts and rejects exactly the same inputs (raising the same SchemaError),
    but returns the report without probes and seen counts, and those as plain rows. A
    5,000-node collector validates thousands of reports a second; not building ~100 probe
    objects per report that it would drop right after indexing them takes validation of a
    16-peer report from ~190 to ~110 microseconds."""
    if type(data) is dict:
        try:
            return _fast_node_report(data, as_rows=True)
        except _NotFast:
            pass
    report = NodeReport._from_dict_checked(data)
    return (replace(report, probes=(), seen=()),
            [(p.peer, p.kind, p.sent, p.answered) for p in report.probes],
            [(s.peer, s.kind, s.count) for s in report.seen])


# --- validation helpers: each names the field it rejects -------------------------------------

def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _mapping(data: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise SchemaError(path or "(top level)", f"expected an object, got {_type_name(data)}")
    return data


def _as_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise SchemaError(path, f"expected a string, got {_type_name(value)}")
    return value


def _str(d: Mapping[str, Any], key: str, path: str, required: bool = False) -> str:
    if key not in d or d[key] is None:
        if required:
            raise SchemaError(_join(path, key), "is required")
        return ""
    return _as_str(d[key], _join(path, key))


def _list(d: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = d.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise SchemaError(_join(path, key), f"expected a list, got {_type_name(value)}")
    if len(value) > MAX_LIST_ITEMS:
        raise SchemaError(_join(path, key), f"too many items ({len(value)} > {MAX_LIST_ITEMS})")
    return value


def _bool(d: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        raise SchemaError(_join(path, key), f"expected true or false, got {_type_name(value)}")
    return value


def _int(d: Mapping[str, Any], key: str, path: str, minimum: int | None = None) -> int:
    if key not in d:
        raise SchemaError(_join(path, key), "is required")
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(_join(path, key), f"expected an integer, got {value!r}"[:200])
    if minimum is not None and value < minimum:
        raise SchemaError(_join(path, key), f"must be >= {minimum}, got {value}")
    return value


def _opt_int(d: Mapping[str, Any], key: str, path: str, minimum: int | None = None) -> int | None:
    if d.get(key) is None:
        return None
    return _int(d, key, path, minimum)


def _num(d: Mapping[str, Any], key: str, path: str, default: float | None = None) -> float:
    if key not in d or d[key] is None:
        if default is not None:
            return default
        raise SchemaError(_join(path, key), "is required")
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SchemaError(_join(path, key), f"expected a finite number, got {value!r}"[:200])
    return float(value)
