"""Pure renderers for the human report. Golden-tested; colour only when asked (a TTY)."""

from __future__ import annotations

from typing import Iterable

from agent.report import Finding, NodeReport, Severity

_COLOURS = {Severity.ERROR: "\033[31m", Severity.WARNING: "\033[33m",
            Severity.INFO: "\033[36m", Severity.OK: "\033[32m"}
_RESET = "\033[0m"


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Worst first, then by id and node, so output is stable."""
    return sorted(findings, key=lambda f: (-f.severity, f.id, f.node, f.title))


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def render_findings(findings: Iterable[Finding], color: bool = False,
                    show_ok: bool = True) -> str:
    """One aligned line per finding (severity, id, title), then the evidence and remediation
    of everything at warning or worse, so an SRE can act without re-reading the node."""
    ordered = [f for f in sort_findings(findings) if show_ok or f.severity > Severity.OK]
    if not ordered:
        return "no findings\n"
    id_width = max(len(f.id) for f in ordered)
    lines = []
    for f in ordered:
        sev = f"{f.severity.label.upper():<7}"
        if color:
            sev = f"{_COLOURS[f.severity]}{sev}{_RESET}"
        lines.append(f"{sev} {f.id:<{id_width}}  {f.title}")
    actionable = [f for f in ordered if f.severity >= Severity.WARNING]
    if actionable:
        lines.append("")
        lines.append("Details and remediations")
        lines.append("------------------------")
        for f in actionable:
            lines.append(f"[{f.severity.label}] {f.id}: {f.title}")
            if f.evidence:
                lines.append("  evidence:")
                lines.append(_indent(f.evidence, "    "))
            if f.remediation:
                lines.append("  fix:")
                lines.append(_indent(f.remediation, "    "))
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def render_node_report(report: NodeReport, color: bool = False) -> str:
    counts = {s: sum(1 for f in report.findings if f.severity == s) for s in Severity}
    head = (f"netdiag check on {report.node.name}"
            f" (kernel {report.node.kernel or '?'}, agent {report.node.agent_version})\n"
            f"{counts[Severity.ERROR]} error(s), {counts[Severity.WARNING]} warning(s), "
            f"{counts[Severity.INFO]} info, {counts[Severity.OK]} ok\n\n")
    return head + render_findings(report.findings, color=color)


def exit_code_for(findings: Iterable[Finding]) -> int:
    """The `netdiag check` contract: 0 nothing at warning or worse, 1 warnings, 2 errors."""
    worst = max((f.severity for f in findings), default=Severity.OK)
    if worst >= Severity.ERROR:
        return 2
    if worst >= Severity.WARNING:
        return 1
    return 0
