"""Test helpers for the node checks A (rp_filter, bridge_nf, hairpin, conntrack, dns):
a Host pointed at a recorded tree whose process list is given by the test (the real edge
would list the live node's processes, which the unit-test guard forbids)."""

from __future__ import annotations

from pathlib import Path

from agent.checks.base import CheckContext
from agent.host import Host, HttpResponse, ProcessInfo

FIXTURES = Path(__file__).parent / "fixtures"
CTX = CheckContext(node="node-a")


class RecordedHost(Host):
    def __init__(self, tree: str | Path, processes: tuple[ProcessInfo, ...] = (),
                 root: str | Path | None = None) -> None:
        tree = Path(tree) if Path(tree).is_absolute() else FIXTURES / tree
        super().__init__(root=root or tree / "root", proc=tree / "proc", sys=tree / "sys")
        self._processes = processes

    def processes(self) -> tuple[ProcessInfo, ...]:
        return self._processes or ()

    def netlink(self) -> object:
        raise OSError("a recorded tree has no netlink")

    def http_get(self, url: str, timeout: float = 1.0, limit: int = 65536) -> HttpResponse:
        raise ConnectionRefusedError(111, "Connection refused")  # no kube-proxy endpoint


def proc(pid: int, *argv: str) -> ProcessInfo:
    return ProcessInfo(pid, argv[0].rsplit("/", 1)[-1][:15], tuple(argv))

