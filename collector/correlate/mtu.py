"""(not implemented yet: returns nothing)"""

from __future__ import annotations

from collector.correlate.base import ClusterView, RuleResult


def evaluate(view: ClusterView) -> RuleResult:
    return RuleResult()
