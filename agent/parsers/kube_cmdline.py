"""Flags on a Kubernetes component's command line (kubelet, kube-proxy): `--flag=value` or
`--flag value`, as psutil reports argv."""

from __future__ import annotations

from typing import Sequence


def parse_flag(argv: Sequence[str], flag: str) -> str | None:
    """The value of `--flag` (given without dashes: `"proxy-mode"`); the last occurrence wins,
    as with Go's flag package; None when absent. A bare boolean flag gives "true"."""
    value: str | None = None
    long = f"--{flag}"
    short = f"-{flag}"  # Go's flag package accepts one dash too
    args = list(argv)
    for i, arg in enumerate(args):
        for prefix in (long, short):
            if arg == prefix:
                nxt = args[i + 1] if i + 1 < len(args) else None
                value = nxt if nxt is not None and not nxt.startswith("-") else "true"
            elif arg.startswith(prefix + "="):
                value = arg[len(prefix) + 1:]
    return value
