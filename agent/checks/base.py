"""What a check is, and the runner that owns the cross-cutting work.

A check is a module with, in order: a docstring (what breaks, where it applies), `SPEC` (a
CheckSpec: its finding ids, titles, why, remediation — fixed data, never mutated), a `Facts`
dataclass, `gather(host, ctx) -> Facts` (edge calls and parsers only) and a pure
`evaluate(facts, ctx) -> tuple[Finding, ...]` where every decision and threshold lives.
Optionally `summarize(facts) -> dict` gives the values other nodes are compared on (the
NodeReport's `facts`).

The runner (`run_checks`) times each check, bounds it with a timeout, and turns `Skipped`,
`ToolMissing`, `PermissionError` or any other exception into an `info` finding that says why
the check could not run. Checks never print, log verdicts or exit.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Mapping

from agent.host import Host, ToolMissing
from agent.report import Finding, Severity

CHECK_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class FindingSpec:
    """One catalogue id a check can raise: the fixed text that goes with it."""

    id: str
    title: str
    why: str
    remediation: str


@dataclass(frozen=True)
class CheckSpec:
    name: str
    findings: tuple[FindingSpec, ...]
    timeout_s: float = CHECK_TIMEOUT_S

    def spec(self, finding_id: str) -> FindingSpec:
        for f in self.findings:
            if f.id == finding_id:
                return f
        raise KeyError(f"check {self.name} declares no finding {finding_id!r}")

    def finding(self, finding_id: str, severity: Severity, node: str, *, title: str = "",
                evidence: str = "", remediation: str = "") -> Finding:
        """A Finding for one of this check's ids; title and remediation default to the spec's."""
        spec = self.spec(finding_id)
        return Finding(id=finding_id, severity=severity, node=node, title=title or spec.title,
                       evidence=evidence, remediation=remediation or spec.remediation)


@dataclass(frozen=True)
class CheckContext:
    """What every check may know about the run (no I/O handles: those are on Host)."""

    node: str
    host_root: str = "/"


class Skipped(Exception):
    """The check does not apply or cannot run here; the message says why."""


@dataclass(frozen=True)
class CheckOutcome:
    check: str
    findings: tuple[Finding, ...]
    facts: Mapping[str, Any] = field(default_factory=dict)
    raw: Any = None  # the check's Facts value, for callers that need more (overlay devices)
    duration_s: float = 0.0


def skipped_finding(check: ModuleType, ctx: CheckContext, reason: str) -> Finding:
    spec: CheckSpec = check.SPEC
    return Finding(id=spec.findings[0].id, severity=Severity.INFO, node=ctx.node,
                   title=f"{spec.name}: skipped: {reason}", evidence=reason,
                   remediation="Nothing to fix if the check does not apply here; otherwise "
                               "give the agent what it lacks (tool, capability, host mount).")


def run_check(check: ModuleType, host: Host, ctx: CheckContext) -> CheckOutcome:
    spec: CheckSpec = check.SPEC
    started = time.monotonic()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            facts = check.gather(host, ctx)
            findings = tuple(check.evaluate(facts, ctx))
            summarize: Callable[[Any], Mapping[str, Any]] | None = getattr(check, "summarize",
                                                                          None)
            box["result"] = (facts, findings, dict(summarize(facts)) if summarize else {})
        except BaseException as exc:  # noqa: BLE001 - reported as a finding, never lost
            box["error"] = exc

    # A daemon thread so a check stuck in the kernel (a hung mount) cannot hang the run.
    worker = threading.Thread(target=work, name=f"check-{spec.name}", daemon=True)
    worker.start()
    worker.join(spec.timeout_s)
    duration = time.monotonic() - started
    if worker.is_alive():
        return CheckOutcome(spec.name, (skipped_finding(
            check, ctx, f"did not finish within {spec.timeout_s:g}s"),), duration_s=duration)
    if "error" in box:
        return CheckOutcome(spec.name, (skipped_finding(check, ctx, describe_error(box["error"])),),
                            duration_s=duration)
    facts, findings, summary = box["result"]
    return CheckOutcome(spec.name, findings, summary, facts, duration)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, (Skipped, ToolMissing)):
        return str(exc)
    if isinstance(exc, PermissionError):
        where = f" reading {exc.filename}" if exc.filename else ""
        return f"permission denied{where} (run as root or add the capability it needs)"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename} not found"
    return f"could not run: {type(exc).__name__}: {exc}"


def run_checks(checks: tuple[ModuleType, ...], host: Host, ctx: CheckContext,
               only: frozenset[str] = frozenset(),
               skip: frozenset[str] = frozenset()) -> list[CheckOutcome]:
    selected = [c for c in checks
                if (not only or c.SPEC.name in only) and c.SPEC.name not in skip]
    return [run_check(c, host, ctx) for c in selected]


def validate_registry(checks: tuple[ModuleType, ...]) -> None:
    """Start-up and test guard: names and ids unique, every id has text and a remediation,
    every module has the parts a check must have."""
    names: set[str] = set()
    ids: set[str] = set()
    for c in checks:
        for part in ("SPEC", "Facts", "gather", "evaluate"):
            if not hasattr(c, part):
                raise ValueError(f"check module {c.__name__} has no {part}")
        spec: CheckSpec = c.SPEC
        if spec.name in names:
            raise ValueError(f"duplicate check name {spec.name}")
        names.add(spec.name)
        if not spec.findings:
            raise ValueError(f"check {spec.name} declares no finding ids")
        for f in spec.findings:
            if f.id in ids:
                raise ValueError(f"finding id {f.id} declared twice")
            ids.add(f.id)
            if not (f.title and f.why and f.remediation):
                raise ValueError(f"finding {f.id} lacks title, why or remediation")
