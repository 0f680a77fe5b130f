"""Pure renderers for the human report. Golden-tested; colour only when asked (a TTY)."""

from __future__ import annotations

from typing import Iterable

from agent.report import Finding, NodeReport, ProbeResult, Severity

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
    text = head + render_findings(report.findings, color=color)
    if report.probes:
        text += "\n" + render_probe_table(report)
    return text


def _rtt(r: ProbeResult) -> str:
    if r.rtt_ms is None:
        return ""
    return f"  rtt {r.rtt_ms.min:.2f}/{r.rtt_ms.avg:.2f}/{r.rtt_ms.max:.2f} ms"


def render_probe_table(report: NodeReport) -> str:
    """The per-peer probe table of `netdiag check --peer ...` (owner: agent/probes): one block
    per peer, one line per probe kind, then a verdict that names the fault's direction."""
    from agent.probes.verdict import classify_peer_path, probe_status

    me = report.node.name
    mtu = next((o.mtu for o in report.overlay if o.mtu), None)
    seen: dict[str, dict[str, int]] = {}
    seen_ip: dict[str, str] = {}
    for s in report.seen:
        seen.setdefault(s.peer, {})[s.kind] = seen.get(s.peer, {}).get(s.kind, 0) + s.count
        seen_ip.setdefault(s.peer, s.peer_ip)
    by_peer: dict[str, dict[str, ProbeResult]] = {}
    ips: dict[str, str] = {}
    for p in report.probes:
        by_peer.setdefault(p.peer, {})[p.kind] = p
        ips.setdefault(p.peer, p.peer_ip)
    lines = [f"Probes from {me} (answered/sent; \"seen here\" = what {me}'s capture saw "
             f"arrive from that peer)"]
    if not by_peer:
        lines.append("  no peers probed")
    for peer, results in by_peer.items():
        from_peer = seen.get(peer, {})
        lines.append(f"  {peer} ({ips[peer]})")
        for kind in ("wire", "echo", "mtu", "udp-control", "tcp-control"):
            r = results.get(kind)
            if r is None:
                why = "n/a (peer has no VXLAN address/MAC here)" if kind in ("echo", "mtu") \
                    else "not run"
                lines.append(f"    {kind:<12} {why}")
                continue
            status = probe_status(r)
            if kind == "wire":
                here = from_peer.get("wire", 0)
                detail = (f"sent {r.sent}, {peer} saw ? (needs {peer}'s capture); "
                          f"seen here from {peer}: {here}")
            else:
                lost = r.sent - (r.answered or 0)
                detail = (f"{status.upper():<7} {r.answered or 0}/{r.sent}"
                          + (f" ({lost} lost)" if lost > 0 else "") + _rtt(r))
            if r.error:
                detail += f"  [{r.error}]"
            lines.append(f"    {kind:<12} {detail}")
        lines.append("    => " + classify_peer_path(peer, results, from_peer, mtu))
    others = [p for p in seen if p not in by_peer]
    if others:
        lines.append("  Seen here from peers not probed this round:")
        for peer in others:
            counts = ", ".join(f"{k} {c}" for k, c in seen[peer].items())
            lines.append(f"    {peer} ({seen_ip[peer]}): {counts}")
    return "\n".join(lines) + "\n"


def exit_code_for(findings: Iterable[Finding]) -> int:
    """The `netdiag check` contract: 0 nothing at warning or worse, 1 warnings, 2 errors."""
    worst = max((f.severity for f in findings), default=Severity.OK)
    if worst >= Severity.ERROR:
        return 2
    if worst >= Severity.WARNING:
        return 1
    return 0
