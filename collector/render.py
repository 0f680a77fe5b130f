"""The collector's `/report`: plain text for `curl` and the JSON form. Pure and golden-tested.

    state = build_report_state(reports, now, history=None, config=DEFAULT_CONFIG,
                               received_at=None)      # runs correlation once
    text = render_report_text(state)                   # str, 80 columns
    data = render_report_json(state)                   # dict, json.dumps-able

`reports`: Mapping[node name, NodeReport | NodeDigest] (latest per node); `history` and
`received_at` as in `collector.correlate.correlate` (history also feeds each diagnosis'
timeline). A handler that already has diagnoses and a matrix may build `ReportState` itself.

Text: diagnoses worst first (evidence, fix, timeline), then the reachability matrix, then each
node's own findings at warning or worse. Up to `MATRIX_FULL_MAX_NODES` (20) nodes the matrix is
complete; beyond, only senders and targets with failing pairs are shown (at most 20 x 20) and
the node list keeps only nodes with findings or blame, so the report stays readable at 5,000.

JSON (DESIGN.md "Collector HTTP API"): `{generated_at, summary, nodes: [{name, underlay_ip,
kernel, agent_version, last_report_age_s, interval_s, stale, worst, findings: {severity:
count}, peers_probed, blamed_by}], diagnoses: [Diagnosis.to_dict() + timeline], findings:
[Finding.to_dict() of every finding at info or worse], matrix: {nodes, pairs_probed,
pairs_failing, failing: [{from, to, kinds, confirmed, rounds, wire_seen, wire_sent}], rows:
{sender: {target: "ok" | "fail" | "unconfirmed" | "unknown"}} (rows only up to
MATRIX_JSON_ROWS_MAX_NODES)}}`.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from agent.report import Diagnosis, Finding, NodeReport, Severity
from collector.correlate import (DEFAULT_CONFIG, CorrelationConfig, NodeDigest, PairStatus,
                                 ReachabilityMatrix, correlate_with_matrix, explain_timeline)
from collector.correlate.base import natural_key
from collector.correlate.model import PATH_KINDS, ReportLike
from collector.correlate.timeline import format_time

WIDTH = 80
MATRIX_FULL_MAX_NODES = 20
MATRIX_SUMMARY_MAX = 20
NODE_LIST_FULL_MAX = 20
NODE_LIST_SUMMARY_MAX = 50
MATRIX_JSON_ROWS_MAX_NODES = 50
#: Timelines are computed for this many diagnoses at warning or worse.
TIMELINE_MAX_DIAGNOSES = 10
LEGEND = (". ok   X fails (confirmed)   x fails (1 round, unconfirmed)   M MTU-sized "
          "lost   C control probe lost   ? not known yet (wire probes the target has not "
          "reported on)   - self   blank: not probed")


@dataclass(frozen=True)
class ReportState:
    generated_at: float
    reports: Mapping[str, NodeReport]
    diagnoses: tuple[Diagnosis, ...]
    matrix: ReachabilityMatrix
    received_at: Mapping[str, float] = field(default_factory=dict)
    #: index in `diagnoses` -> timeline lines
    timelines: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    min_failed_rounds: int = DEFAULT_CONFIG.min_failed_rounds


def build_report_state(reports: Mapping[str, ReportLike] | Sequence[ReportLike], now: float,
                       history: Mapping[str, Sequence[Any]] | None = None,
                       config: CorrelationConfig = DEFAULT_CONFIG,
                       received_at: Mapping[str, float] | None = None) -> ReportState:
    diagnoses, matrix = correlate_with_matrix(reports, now, history, config, received_at)
    timelines: dict[int, tuple[str, ...]] = {}
    if history:
        for i, d in enumerate(diagnoses[:TIMELINE_MAX_DIAGNOSES]):
            if d.severity >= Severity.WARNING:
                lines = explain_timeline({n: history.get(n, ()) for n in history}, d)
                if lines:
                    timelines[i] = lines
    plain = {n: (d.report if isinstance(d, NodeDigest) else d) for n, d in matrix.digests.items()}
    return ReportState(now, plain, diagnoses, matrix, dict(received_at or {}), timelines,
                       config.min_failed_rounds)


# --- helpers ------------------------------------------------------------------------------


def _age(state: ReportState, name: str) -> float:
    rep = state.reports[name]
    return state.generated_at - state.received_at.get(name, rep.collected_at)


def _stale(state: ReportState) -> set[str]:
    return {n for d in state.diagnoses if d.id == "agent.stale" for n in d.nodes}


def _blamed_by(state: ReportState) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for d in state.diagnoses:
        if d.severity >= Severity.WARNING:
            for n in d.nodes:
                out.setdefault(n, []).append(d.id)
    return out


_LABEL = {s: s.label for s in Severity}
_COUNT_ORDER = (Severity.ERROR, Severity.WARNING, Severity.INFO, Severity.OK)


def _counts(findings: Sequence[Finding]) -> dict[str, int]:
    out = {_LABEL[s]: 0 for s in _COUNT_ORDER}
    for f in findings:
        out[_LABEL[f.severity]] += 1
    return out


def _wrap(text: str, indent: str) -> list[str]:
    out = []
    for line in text.splitlines() or [""]:
        out += textwrap.wrap(line, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ",
                             break_long_words=True, break_on_hyphens=False) or [indent]
    return out


def _cell(st: str | PairStatus | None, min_rounds: int) -> str:
    if st is None:
        return " "
    if st == "ok":
        return "."
    if st == "unknown":
        return "?"
    assert isinstance(st, PairStatus)
    confirmed = st.rounds >= min_rounds
    if st.kinds & PATH_KINDS:
        return "X" if confirmed else "x"
    if "mtu" in st.kinds:
        return "M" if confirmed else "m"
    return "C" if confirmed else "c"


def _status_word(st: str | PairStatus | None, min_rounds: int) -> str | None:
    if st is None:
        return None
    if st in ("ok", "unknown"):
        return str(st)
    assert isinstance(st, PairStatus)
    return "fail" if st.rounds >= min_rounds else "unconfirmed"


# --- text ---------------------------------------------------------------------------------

def _render_diagnoses(state: ReportState) -> list[str]:
    lines = ["Diagnoses (worst first)", "-----------------------"]
    if not state.diagnoses:
        return lines + ["none: no cross-node problem found", ""]
    for i, d in enumerate(state.diagnoses):
        head = f"{d.severity.label.upper():<7} {d.id}"
        if d.nodes:
            shown = ", ".join(d.nodes[:6]) + (f" +{len(d.nodes) - 6}" if len(d.nodes) > 6 else "")
            head += f"  [{shown}]"
        lines += _wrap(head, "")
        lines += _wrap(d.title, "  ")
        if d.severity >= Severity.WARNING:
            if d.evidence:
                lines.append("  evidence:")
                lines += _wrap(d.evidence, "    ")
            if d.remediation:
                lines.append("  fix:")
                lines += _wrap(d.remediation, "    ")
            if i in state.timelines:
                lines.append("  timeline:")
                for t in state.timelines[i]:
                    lines += _wrap(t, "    ")
        lines.append("")
    return lines


def _render_matrix(state: ReportState) -> list[str]:
    m = state.matrix
    rounds = state.min_failed_rounds
    failing = len(m.failures)
    lines = ["Reachability (row = sender, column = target)",
             "--------------------------------------------"]
    lines += _wrap(LEGEND, "")
    lines.append(f"{m.pairs_probed} probed pairs, {failing} failing")
    names = sorted(m.nodes, key=natural_key)
    if not names:
        return lines + ["no reports yet", ""]
    if len(names) <= MATRIX_FULL_MAX_NODES:
        rows, cols = names, names
        label = {n: i + 1 for i, n in enumerate(names)}
    else:
        if not failing:
            return lines + [f"all probed pairs ok ({len(names)} nodes: matrix omitted)", ""]
        out_n = Counter(s for s, _ in m.failures)
        in_n = Counter(t for _, t in m.failures)
        senders = sorted(out_n, key=lambda n: (-out_n[n], natural_key(n)))
        targets = sorted(in_n, key=lambda n: (-in_n[n], natural_key(n)))
        lines += _wrap(f"only nodes with failing pairs: {len(senders)} sender(s), "
                       f"{len(targets)} target(s)"
                       + (f"; showing the worst {MATRIX_SUMMARY_MAX}"
                          if max(len(senders), len(targets)) > MATRIX_SUMMARY_MAX else ""), "")
        rows, cols = senders[:MATRIX_SUMMARY_MAX], targets[:MATRIX_SUMMARY_MAX]
        label = {n: i + 1 for i, n in enumerate(cols)}
    header = " " * 16 + "".join(f"{label[c]:>3}" for c in cols)
    lines.append(header.rstrip())
    for r in rows:
        tag = f"{label[r]:>2}" if r in label and len(names) <= MATRIX_FULL_MAX_NODES else "  "
        cells = "".join(f"{'-' if r == c else _cell(m.status(r, c), rounds):>3}" for c in cols)
        lines.append(f"{tag} {r[:12]:<12} {cells}".rstrip())
    if len(names) > MATRIX_FULL_MAX_NODES:
        legend = "columns: " + "  ".join(f"{label[c]}={c}" for c in cols)
        lines += _wrap(legend, "")
        rs, cs = set(rows), set(cols)
        hidden = failing - sum(1 for (s, t) in m.failures if s in rs and t in cs)
        if hidden > 0:
            lines.append(f"... and {hidden} more failing pairs (see ?format=json)")
    lines.append("")
    return lines


def _render_nodes(state: ReportState) -> list[str]:
    lines = ["Nodes", "-----"]
    stale = _stale(state)
    blamed = _blamed_by(state)
    names = sorted(state.reports, key=natural_key)
    if len(names) > NODE_LIST_FULL_MAX:
        interesting = [n for n in names if n in blamed or n in stale
                       or state.reports[n].worst >= Severity.WARNING]
        quiet = len(names) - len(interesting)
        lines.append(f"{len(names)} nodes; {quiet} without findings at warning or worse "
                     f"(not listed)")
        names = interesting
    shown = names[:NODE_LIST_SUMMARY_MAX]
    for n in shown:
        rep = state.reports[n]
        c = _counts(rep.findings)
        age = _age(state, n)
        flag = "  STALE" if n in stale else ""
        lines.append(f"{n}  {rep.node.underlay_ip or '?'}  report {age:.0f} s ago  "
                     f"{c['error']} error(s), {c['warning']} warning(s){flag}")
        for f in sorted(rep.findings, key=lambda f: (-f.severity, f.id)):
            if f.severity >= Severity.WARNING:
                lines += _wrap(f"{f.severity.label.upper():<7} {f.id}: {f.title}", "  ")
                if f.remediation:
                    lines += _wrap(f"fix: {f.remediation}", "    ")
    if len(names) > len(shown):
        lines.append(f"... and {len(names) - len(shown)} more nodes with findings "
                     f"(see ?format=json)")
    return lines


def render_report_text(state: ReportState) -> str:
    d = state.diagnoses
    errors = sum(1 for x in d if x.severity >= Severity.ERROR)
    warnings = sum(1 for x in d if x.severity == Severity.WARNING)
    stale = len(_stale(state))
    head = [f"kube-netdiag cluster report, {format_time(state.generated_at)} UTC",
            f"{len(state.reports)} nodes reporting ({stale} stale); {errors} error(s), "
            f"{warnings} warning(s) across nodes", ""]
    lines = head + _render_diagnoses(state) + _render_matrix(state) + _render_nodes(state)
    return "\n".join(lines).rstrip("\n") + "\n"


# --- JSON ---------------------------------------------------------------------------------

def render_report_json(state: ReportState) -> dict[str, Any]:
    stale = _stale(state)
    blamed = _blamed_by(state)
    m = state.matrix
    rounds = state.min_failed_rounds
    nodes = []
    findings = []
    for n in sorted(state.reports, key=natural_key):
        rep = state.reports[n]
        digest = m.digests.get(n)
        nodes.append({
            "name": n, "underlay_ip": rep.node.underlay_ip, "kernel": rep.node.kernel,
            "agent_version": rep.node.agent_version,
            "last_report_age_s": round(_age(state, n), 3), "interval_s": rep.interval_s,
            "stale": n in stale, "worst": rep.worst.label, "findings": _counts(rep.findings),
            "peers_probed": len(digest.targets) if digest else 0,
            "blamed_by": blamed.get(n, []),
        })
        findings += [f.to_dict() for f in rep.findings if f.severity >= Severity.INFO]
    diagnoses = []
    for i, d in enumerate(state.diagnoses):
        item = d.to_dict()
        item["timeline"] = list(state.timelines.get(i, ()))
        diagnoses.append(item)
    kinds_of: dict[frozenset[str], list[str]] = {}  # a handful of distinct kind sets
    failing = [{"from": st.sender, "to": st.target,
                "kinds": kinds_of.get(st.kinds) or kinds_of.setdefault(st.kinds,
                                                                       sorted(st.kinds)),
                "confirmed": st.rounds >= rounds, "rounds": st.rounds,
                "wire_seen": st.wire_seen, "wire_sent": st.wire_sent}
               for st in map(m.failures.__getitem__, sorted(m.failures))]
    matrix: dict[str, Any] = {"nodes": list(m.nodes), "pairs_probed": m.pairs_probed,
                              "pairs_failing": len(failing), "failing": failing}
    if len(m.nodes) <= MATRIX_JSON_ROWS_MAX_NODES:
        matrix["rows"] = {s: {t: w for t in m.nodes if t != s
                              for w in [_status_word(m.status(s, t), rounds)] if w}
                          for s in m.nodes}
    return {
        "generated_at": state.generated_at,
        "summary": {"nodes": len(state.reports), "stale": len(stale),
                    "errors": sum(1 for d in state.diagnoses if d.severity >= Severity.ERROR),
                    "warnings": sum(1 for d in state.diagnoses
                                    if d.severity == Severity.WARNING),
                    "pairs_probed": m.pairs_probed, "pairs_failing": len(failing)},
        "nodes": nodes,
        "diagnoses": diagnoses,
        "findings": findings,
        "matrix": matrix,
    }
