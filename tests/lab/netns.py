"""Network-namespace primitives the lab and the lab tests stand on.

Every name we create starts with `NAME_PREFIX` and carries a short run id, so concurrent runs
(two test sessions, a developer's `up` beside CI) never collide, and `cleanup` can tell our
leftovers from anything else on the machine. Nothing here touches the root namespace's
firewall or sysctls: sysctls and rules are only ever set inside a namespace we created.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from typing import Iterator, Sequence

NAME_PREFIX = "nd"
COMMAND_TIMEOUT_S = 30.0


class LabError(RuntimeError):
    pass


def new_run_id() -> str:
    """4 hex chars: short enough that `nd<id>-n12-vx` stays within IFNAMSIZ (15)."""
    return secrets.token_hex(2)


def sh(argv: Sequence[str], check: bool = True, timeout: float = COMMAND_TIMEOUT_S,
       input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command in the root namespace (creating namespaces and links needs it)."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          input=input)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class NetNS:
    """One named network namespace; `exec` runs a command inside it."""

    def __init__(self, name: str) -> None:
        if not name.startswith(NAME_PREFIX):
            raise LabError(f"lab namespaces must start with {NAME_PREFIX!r}: {name}")
        self.name = name

    def create(self) -> "NetNS":
        sh(["ip", "netns", "add", self.name])
        self.exec(["ip", "link", "set", "lo", "up"])
        return self

    def delete(self) -> None:
        # Deleting the namespace deletes every link inside it (and the peers of its veths).
        sh(["ip", "netns", "del", self.name], check=False)

    def exec(self, argv: Sequence[str], check: bool = True, timeout: float = COMMAND_TIMEOUT_S,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        return sh(["ip", "netns", "exec", self.name, *argv], check=check, timeout=timeout,
                  input=input)

    def sysctl(self, key: str, value: str | int) -> None:
        """Set a sysctl inside this namespace only (never the root namespace's). Written to
        /proc/sys directly, as sysctl(8) would (`flannel/1` names the interface flannel.1), so
        CI needs no procps."""
        path = "/proc/sys/" + key.replace(".", "\0").replace("/", ".").replace("\0", "/")
        self.exec(["sh", "-c", 'echo "$1" > "$2"', "sh", str(value), path])

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], text=True,
                                **kwargs)  # type: ignore[call-overload]

    def __enter__(self) -> "NetNS":
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()


@contextlib.contextmanager
def scratch_namespace(suffix: str) -> Iterator[NetNS]:
    """A fresh `nd<run id>-<suffix>` namespace for one lab test, removed afterwards whatever
    happens; the test is skipped where namespaces cannot be made."""
    reason = require_root()
    if reason:
        import pytest

        pytest.skip(reason)
    ns = NetNS(f"{NAME_PREFIX}{new_run_id()}-{suffix}")
    try:
        yield ns.create()
    finally:
        ns.delete()


def list_lab_namespaces() -> list[str]:
    out = sh(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.strip() and line.split()[0].startswith(NAME_PREFIX)]


def require_root() -> str | None:
    """None when lab tests can run here, else the reason they cannot (for pytest.skip)."""
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces)"
    for tool in ("ip", "nft"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"lab tests need {tool}"
    return None
