"""(not implemented yet)"""

from __future__ import annotations

from typing import Any


def explain_timeline(history: Any, diagnosis: Any) -> tuple[str, ...]:
    return ()
