"""kube-proxy: it programs every Service (ClusterIP, NodePort) on the node, in iptables, IPVS
or nftables mode. When it is not running, Services keep working from stale rules until the
next change, then new Services and endpoint moves are missed on this node (the "only this node
cannot reach the new Service" incident); when its healthz fails, it is running but not
syncing (a crash loop, an iptables-restore error), with the same effect, and cloud load
balancers that health-check 10256 take the node out of rotation.

Not a fault: Cilium with kube-proxy replacement (`--kube-proxy-replacement=true|strict`, on
its command line or in its config directory) does the Services itself; kube-proxy's absence
is then `info`. k3s runs kube-proxy inside its own process (no `kube-proxy` process).

The mode comes from, most authoritative first: its metrics port's `/proxyMode` (what it
actually runs), its `--config` file's `mode`, its `--proxy-mode` flag, else the built-in
default (iptables on Linux). Its endpoints are probed only while it runs (1 s timeout each),
at the bind addresses its config or flags give (default 127.0.0.1:10249 and :10256).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Mapping

from agent.checks.base import CheckContext, CheckSpec, FindingSpec
from agent.host import Host, ProcessInfo
from agent.parsers.kube_cmdline import parse_flag
from agent.parsers.kube_yaml import parse_top_level_scalars
from agent.report import Finding, Severity

KUBE_PROXY_METRICS_PORT = 10249
KUBE_PROXY_HEALTHZ_PORT = 10256
ENDPOINT_TIMEOUT_S = 1.0
KNOWN_MODES = ("iptables", "ipvs", "nftables")
DEFAULT_MODE_LINUX = "iptables"
#: Cilium kube-proxy-replacement values under which kube-proxy is not needed.
CILIUM_REPLACES_VALUES = frozenset({"true", "strict"})
CILIUM_KPR_KEY = "kube-proxy-replacement"
#: Processes that embed kube-proxy (no separate kube-proxy process).
EMBEDDING_PROCESSES = ("k3s",)
K3S_CONFIG = "/etc/rancher/k3s/config.yaml"

SPEC = CheckSpec(
    name="kube-proxy",
    findings=(
        FindingSpec(
            id="kube-proxy.not-running",
            title="kube-proxy is not running on this node",
            why="kube-proxy programs Services on each node; without it new Services, new "
                "endpoints and endpoint moves are not programmed here, so Service traffic from "
                "this node goes to stale or no backends.",
            remediation="kubectl -n kube-system get pods -o wide | grep kube-proxy for this "
                        "node; read its logs (a crash loop: missing conntrack binary, iptables "
                        "errors, a bad config); for a binary install: systemctl status "
                        "kube-proxy.",
        ),
        FindingSpec(
            id="kube-proxy.replaced-by-cilium",
            title="kube-proxy is absent because Cilium replaces it (expected)",
            why="Cilium with kube-proxy replacement implements Services in eBPF; kube-proxy is "
                "intentionally not deployed. Not a fault.",
            remediation="Nothing to do. (If kube-proxy should run, disable Cilium's "
                        "kube-proxy-replacement first.)",
        ),
        FindingSpec(
            id="kube-proxy.healthz-failing",
            title="kube-proxy runs but its healthz fails",
            why="kube-proxy answers 200 on :10256/healthz only when its last rule sync is "
                "recent; a failure means it is not programming Services (sync errors, lost "
                "API server connection), and cloud load balancers drop the node.",
            remediation="Read kube-proxy's logs on this node (iptables-restore / ipvs errors, "
                        "API server connectivity) and restart its pod once the cause is fixed.",
        ),
    ),
)


@dataclass(frozen=True)
class EndpointAnswer:
    url: str
    status: int | None  # None: nothing answered (see error)
    body: str = ""
    error: str = ""

    def text(self) -> str:
        if self.status is None:
            return f"GET {self.url}: {self.error}"
        return f"GET {self.url} -> {self.status} {self.body.strip()[:200]}".rstrip()


@dataclass(frozen=True)
class Facts:
    process: ProcessInfo | None  # the kube-proxy process (or the process embedding it)
    embedded_in: str = ""  # "k3s" when kube-proxy runs inside another process
    config_path: str = ""
    config: Mapping[str, str] | None = None  # None: no --config, or it could not be read
    config_error: str = ""
    proxy_mode: EndpointAnswer | None = None
    healthz: EndpointAnswer | None = None
    cilium: ProcessInfo | None = None
    cilium_kpr: str = ""  # Cilium's kube-proxy-replacement value, "" when not found
    cilium_kpr_source: str = ""

    @property
    def running(self) -> bool:
        return self.process is not None

    @property
    def mode_flag(self) -> str:
        if self.process is None or self.embedded_in:
            return ""
        return parse_flag(self.process.cmdline, "proxy-mode") or ""


def gather(host: Host, ctx: CheckContext) -> Facts:
    procs = host.processes()
    proxy = next((p for p in procs if _is(p, "kube-proxy")), None)
    embedded = ""
    if proxy is None:
        proxy = next((p for p in procs if any(_is(p, n) for n in EMBEDDING_PROCESSES)
                      and not _k3s_disables_kube_proxy(host, p)), None)
        embedded = _basename(proxy) if proxy else ""
    cilium = next((p for p in procs if _is(p, "cilium-agent")), None)
    kpr, kpr_source = _cilium_kpr(host, cilium) if cilium else ("", "")
    if proxy is None:
        return Facts(None, cilium=cilium, cilium_kpr=kpr, cilium_kpr_source=kpr_source)
    config_path = "" if embedded else (parse_flag(proxy.cmdline, "config") or "")
    config, config_error = None, ""
    if config_path:
        config, config_error = _read_config(host, proxy.pid, config_path)
    settings = dict(config or {})
    metrics = endpoint_url(_bind(proxy, settings, "metrics-bind-address",
                                 "metricsBindAddress"), KUBE_PROXY_METRICS_PORT, "/proxyMode")
    healthz = endpoint_url(_bind(proxy, settings, "healthz-bind-address",
                                 "healthzBindAddress"), KUBE_PROXY_HEALTHZ_PORT, "/healthz")
    return Facts(proxy, embedded, config_path, config, config_error,
                 _get(host, metrics), _get(host, healthz), cilium, kpr, kpr_source)


def _is(p: ProcessInfo, name: str) -> bool:
    return p.name == name or _basename(p) == name


def _basename(p: ProcessInfo | None) -> str:
    return posixpath.basename(p.cmdline[0]) if p and p.cmdline else ""


def _k3s_disables_kube_proxy(host: Host, k3s: ProcessInfo) -> bool:
    """k3s runs kube-proxy in-process unless `--disable-kube-proxy` (flag or its config)."""
    flag = parse_flag(k3s.cmdline, "disable-kube-proxy")
    if flag is None:
        try:
            flag = parse_top_level_scalars(host.read_host_file(K3S_CONFIG)).get(
                "disable-kube-proxy")
        except OSError:
            flag = None
    return (flag or "").strip().lower() == "true"


def _bind(proxy: ProcessInfo, settings: Mapping[str, str], flag: str, key: str) -> str:
    return settings.get(key) or parse_flag(proxy.cmdline, flag) or ""


def _read_config(host: Host, pid: int, path: str) -> tuple[Mapping[str, str] | None, str]:
    """The config as kube-proxy sees it: through its own root (/proc/PID/root, it is a file
    from a ConfigMap inside the container), else on the host (a binary install)."""
    errors = []
    for read in (lambda: host.read_proc(f"{pid}/root/{path.lstrip('/')}"),
                 lambda: host.read_host_file(path)):
        try:
            return parse_top_level_scalars(read()), ""
        except OSError as exc:
            errors.append(f"{exc.strerror or exc}")
    return None, f"--config {path} unreadable ({'; '.join(errors)})"


def _cilium_kpr(host: Host, cilium: ProcessInfo) -> tuple[str, str]:
    value = parse_flag(cilium.cmdline, CILIUM_KPR_KEY)
    if value is not None:
        return value.strip().lower(), f"cilium-agent --{CILIUM_KPR_KEY}={value}"
    config_dir = parse_flag(cilium.cmdline, "config-dir")
    if config_dir:  # the cilium-config ConfigMap, one file per key
        rel = f"{cilium.pid}/root/{config_dir.strip('/')}/{CILIUM_KPR_KEY}"
        try:
            value = host.read_proc(rel).strip()
            return value.lower(), f"{config_dir.rstrip('/')}/{CILIUM_KPR_KEY} = {value}"
        except OSError:
            pass
    return "", ""


def _get(host: Host, url: str) -> EndpointAnswer:
    try:
        resp = host.http_get(url, timeout=ENDPOINT_TIMEOUT_S)
    except (OSError, ValueError) as exc:
        return EndpointAnswer(url, None, error=_describe_error(exc))
    return EndpointAnswer(url, resp.status, resp.body)


def _describe_error(exc: Exception) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {ENDPOINT_TIMEOUT_S:g}s"
    return f"{type(exc).__name__}: {exc}"


# --- pure ---------------------------------------------------------------------------------

def endpoint_url(bind: str, default_port: int, path: str) -> str:
    """kube-proxy's bind address setting (`""`, `0.0.0.0`, `0.0.0.0:10256`, `10.0.0.5:10256`,
    `[::]:10256`) -> the URL to query from this node."""
    host, port = bind.strip(), str(default_port)
    if host.startswith("["):
        inner, _, rest = host[1:].partition("]")
        host, port = inner, rest.lstrip(":") or port
    elif host.count(":") == 1:
        host, port = host.split(":")
        port = port or str(default_port)
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}"


def proxy_mode(facts: Facts) -> tuple[str, str]:
    """(mode, where it came from)."""
    if facts.cilium_kpr in CILIUM_REPLACES_VALUES and not facts.running:
        return "replaced-by-cilium", facts.cilium_kpr_source
    if not facts.running:
        return "absent", ""
    answer = facts.proxy_mode
    if answer and answer.status == 200 and answer.body.strip() in KNOWN_MODES:
        return answer.body.strip(), f"GET {answer.url}"
    if facts.config is not None and "mode" in facts.config:
        return (_known(facts.config["mode"] or DEFAULT_MODE_LINUX),
                f"{facts.config_path}: mode: {facts.config['mode']!r}")
    if facts.mode_flag:
        return _known(facts.mode_flag), f"--proxy-mode={facts.mode_flag}"
    if facts.config_path and facts.config is None:
        return "unknown", facts.config_error
    if facts.embedded_in:
        return "unknown", f"embedded in {facts.embedded_in}; /proxyMode did not answer"
    return DEFAULT_MODE_LINUX, "no --proxy-mode and no mode in config: the Linux default"


def _known(mode: str) -> str:
    mode = mode.strip().lower()
    return mode if mode in KNOWN_MODES else "unknown"


def evaluate(facts: Facts, ctx: CheckContext) -> tuple[Finding, ...]:
    mode, source = proxy_mode(facts)
    if not facts.running:
        if facts.cilium_kpr in CILIUM_REPLACES_VALUES:
            return (SPEC.finding("kube-proxy.replaced-by-cilium", Severity.INFO, ctx.node,
                                 evidence=f"no kube-proxy process; cilium-agent (pid "
                                          f"{facts.cilium.pid if facts.cilium else '?'}) "
                                          f"runs with {facts.cilium_kpr_source}"),)
        cilium_note = ""
        if facts.cilium is not None:
            cilium_note = (f"; cilium-agent runs with {facts.cilium_kpr_source}" if
                           facts.cilium_kpr else
                           "; cilium-agent runs but no kube-proxy-replacement setting was "
                           "found (flag or --config-dir)")
        return (SPEC.finding("kube-proxy.not-running", Severity.WARNING, ctx.node,
                             evidence=f"no process named kube-proxy (nor k3s){cilium_note}"),)
    assert facts.process is not None
    who = (f"{facts.embedded_in} (pid {facts.process.pid}, embeds kube-proxy)"
           if facts.embedded_in else f"kube-proxy pid {facts.process.pid}")
    findings = []
    health = facts.healthz
    if health is not None and health.status != 200:
        findings.append(SPEC.finding("kube-proxy.healthz-failing", Severity.WARNING, ctx.node,
                                     evidence=f"{who}: {health.text()}"))
    if not findings:
        findings.append(SPEC.finding(
            "kube-proxy.not-running", Severity.OK, ctx.node,
            title=f"kube-proxy runs in {mode} mode",
            evidence=f"{who}; mode from {source}"
                     + (f"; {health.text()}" if health else "")))
    return tuple(findings)


def summarize(facts: Facts) -> dict[str, object]:
    mode, _ = proxy_mode(facts)
    return {"kube_proxy_mode": mode}
