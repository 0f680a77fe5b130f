"""The thin edge between the checks and the real node: files, /proc, /sys, commands,
processes, netlink. Everything that touches the world goes through a `Host`, so checks can be
pointed at recorded trees (`Host(root=..., proc=..., sys=...)`) and unit tests can forbid the
real node (see `forbid_real_host`).

The agent only reads: nothing here writes a file, a sysctl, a rule, a link or a route.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMMAND_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 1.0
#: A runaway command (a 48 MB iptables-save is normal at 10k Services) is read in full, but
#: stderr is only ever quoted, so it is capped.
STDERR_MAX_CHARS = 2000
#: Where the host's binaries live; PATH inside a debug pod is the container's, not the host's.
HOST_BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
                 "/opt/bin")

_real_host_forbidden = False


def forbid_real_host(forbidden: bool = True) -> None:
    """Unit tests call this (autouse fixture) so a check that reaches the live node fails."""
    global _real_host_forbidden
    _real_host_forbidden = forbidden


class RealHostForbidden(RuntimeError):
    pass


class ToolMissing(Exception):
    """A command the check needs is not installed; the runner reports `skipped: ...`."""

    def __init__(self, tool: str) -> None:
        super().__init__(f"{tool} not installed")
        self.tool = tool


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class HttpResponse:
    url: str
    status: int
    body: str


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    name: str
    cmdline: tuple[str, ...]


class Host:
    """Read-only access to one node.

    `root` prefixes the host's own files (/etc, /var/lib/kubelet, /opt/cni), as when the agent
    runs in a debug pod with the host mounted at /host. `proc` and `sys` are the kernel views;
    with hostNetwork the container's /proc/sys/net and /sys/class/net already are the node's.
    """

    def __init__(self, root: str | Path = "/", proc: str | Path = "/proc",
                 sys: str | Path = "/sys") -> None:
        self.root = Path(root)
        self.proc = Path(proc)
        self.sys = Path(sys)
        if _real_host_forbidden and self._touches_live_node():
            raise RealHostForbidden(
                f"unit test built a Host on the live node (root={root}, proc={proc}, sys={sys}); "
                "point it at a fixture tree or mark the test `lab`")
        self._processes: tuple[ProcessInfo, ...] | None = None
        self._ipr: Any = None

    def _touches_live_node(self) -> bool:
        return (self.root.resolve() == Path("/") or self.proc.resolve() == Path("/proc")
                or self.sys.resolve() == Path("/sys"))

    def _guard(self, what: str) -> None:
        if _real_host_forbidden:
            raise RealHostForbidden(f"unit test tried to {what} on the live node")

    # --- files -----------------------------------------------------------------------------

    def host_path(self, path: str) -> Path:
        """The path of a host file (`/etc/sysctl.conf`) under the host root.

        Symlinks are resolved *inside* the host root: on a systemd-resolved node
        /etc/resolv.conf -> /run/systemd/resolve/stub-resolv.conf must be read as
        /host/run/..., not as the container's own /run. A missing link target is left for the
        read to report."""
        if self.root == Path("/"):
            return Path("/") / path.lstrip("/")
        return resolve_under_root(self.root, path)

    def read_host_file(self, path: str, limit: int = 4 << 20) -> str:
        return _read_text(self.host_path(path), limit)

    def list_host_dir(self, path: str) -> list[str]:
        return sorted(os.listdir(self.host_path(path)))

    def read_proc(self, rel: str, limit: int = 16 << 20) -> str:
        return _read_text(self.proc / rel, limit)

    def read_sys(self, rel: str, limit: int = 1 << 20) -> str:
        return _read_text(self.sys / rel, limit)

    def list_sys_dir(self, rel: str) -> list[str]:
        return sorted(os.listdir(self.sys / rel))

    def proc_exists(self, rel: str) -> bool:
        return (self.proc / rel).exists()

    # --- commands ----------------------------------------------------------------------------

    def which(self, tool: str) -> str | None:
        """Where `tool` is in this process's PATH (the tools the agent itself runs)."""
        return shutil.which(tool)

    def find_host_binary(self, name: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
        """Where `name` is on the *host's* PATH (under the host root), e.g. the `conntrack`
        binary kube-proxy needs; returns the host-side path or None."""
        for d in (*HOST_BIN_DIRS, *extra_dirs):
            candidate = self.host_path(f"{d}/{name}")
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return f"{d}/{name}"
        return None

    def run(self, argv: list[str] | tuple[str, ...], timeout: float = COMMAND_TIMEOUT_S,
            stdin: str | None = None) -> CommandResult:
        """Run a read-only command; raises ToolMissing when it is not installed and
        TimeoutError when it overruns (the child is killed)."""
        self._guard(f"run {argv[0]}")
        if shutil.which(argv[0]) is None:
            raise ToolMissing(argv[0])
        try:
            proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                                  errors="replace", timeout=timeout,
                                  env={**os.environ, "LC_ALL": "C"})
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"{argv[0]} did not finish within {timeout:g}s") from exc
        return CommandResult(tuple(argv), proc.returncode, proc.stdout,
                             proc.stderr[:STDERR_MAX_CHARS])

    # --- processes ----------------------------------------------------------------------------

    def processes(self) -> tuple[ProcessInfo, ...]:
        """Every process's name and command line (cached for the run: several checks ask)."""
        if self._processes is None:
            self._guard("list processes")
            import psutil

            found = []
            for p in psutil.process_iter(["pid", "name", "cmdline"]):
                info = p.info
                found.append(ProcessInfo(info["pid"], info.get("name") or "",
                                         tuple(info.get("cmdline") or ())))
            self._processes = tuple(found)
        return self._processes

    def kernel_release(self) -> str:
        """From /proc (so a recorded tree answers too); "" when it cannot be read."""
        try:
            return self.read_proc("sys/kernel/osrelease").strip()
        except OSError:
            return ""

    def hostname(self) -> str:
        self._guard("read hostname")
        return platform.node()

    # --- netlink ------------------------------------------------------------------------------

    def netlink(self) -> Any:
        """A pyroute2 IPRoute socket, opened once per Host (closed by `close`)."""
        if self._ipr is None:
            self._guard("open netlink")
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def ethtool_features(self, ifname: str) -> dict[str, bool]:
        """A device's ethtool features (`tx-checksum-ip-generic`: on/off), read with pyroute2's
        ethtool support (genetlink, ioctl fallback inside pyroute2) like `ethtool -k`."""
        self._guard(f"read ethtool features of {ifname}")
        from pyroute2.ethtool import Ethtool

        eth = Ethtool()
        try:
            features = eth.get_features(ifname).features
            return {name: bool(f.enable) for name, f in features.items()}
        finally:
            eth.close()

    def nft_generation(self) -> int | None:
        """The nf_tables ruleset generation (NFT_MSG_GETGEN): it changes whenever any rule,
        chain or table changes, so a caller can skip re-reading unchanged rules. None when
        nf_tables cannot be asked (no module, no CAP_NET_ADMIN)."""
        self._guard("query the nf_tables generation")
        from pyroute2.netlink import NLM_F_REQUEST
        from pyroute2.netlink.nfnetlink.nftsocket import NFT_MSG_GETGEN, NFTSocket, nft_gen_msg

        try:
            sock = NFTSocket()
        except OSError:
            return None
        try:
            msg = nft_gen_msg()
            msg["nfgen_family"] = 0
            for reply in sock.request_get(msg, msg_type=NFT_MSG_GETGEN,
                                          msg_flags=NLM_F_REQUEST):
                gen = reply.get_attr("NFTA_GEN_ID")
                if gen is not None:
                    return int(gen)
            return None
        except Exception:  # noqa: BLE001 - no generation: the caller just re-reads
            return None
        finally:
            sock.close()

    # --- local HTTP (component status endpoints on 127.0.0.1) --------------------------------

    def http_get(self, url: str, timeout: float = HTTP_TIMEOUT_S,
                 limit: int = 64 << 10) -> "HttpResponse":
        """GET a plain-HTTP URL (kube-proxy's /healthz, /proxyMode on 127.0.0.1), bypassing any
        proxy settings. Raises OSError (ConnectionRefusedError, TimeoutError) when nothing
        answers."""
        self._guard(f"GET {url}")
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"http_get supports http://host[:port]/path URLs, got {url!r}")
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        try:
            conn.request("GET", parts.path or "/")
            resp = conn.getresponse()
            body = resp.read(limit).decode("utf-8", errors="replace")
            return HttpResponse(url, resp.status, body)
        except http.client.HTTPException as exc:
            raise OSError(f"GET {url}: bad HTTP answer: {exc!r}") from exc
        finally:
            conn.close()

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Bounds symlink resolution like the kernel's ELOOP limit.
MAX_SYMLINK_HOPS = 40


def resolve_under_root(root: Path, path: str) -> Path:
    """`path` (absolute, as the host sees it) resolved component by component under `root`,
    absolute link targets re-rooted there and `..` never climbing above it (chroot semantics,
    without chroot). Loops stop after MAX_SYMLINK_HOPS and return the unresolved path."""
    pending = [p for p in path.split("/") if p not in ("", ".")]
    pending.reverse()
    done: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink():
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                return root / path.lstrip("/")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        done.append(part)
    return root.joinpath(*done)


#: /proc/sys handlers allocate a buffer of the size asked for: one huge read() fails with
#: ENOMEM, so files are read in modest chunks up to the limit.
READ_CHUNK_BYTES = 64 << 10


def _read_text(path: Path, limit: int) -> str:
    chunks = []
    total = 0
    with open(path, "rb", buffering=0) as fh:
        while total < limit:
            chunk = fh.read(min(READ_CHUNK_BYTES, limit - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")

