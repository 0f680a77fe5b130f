"""Not a check: what several node checks need to know about the Kubernetes components on
this node (kubelet's settings, kube-proxy's mode, whether Cilium's agent runs), gathered
through the Host edge and returned as plain values. Pure decisions stay in the checks, except
one they all share: kube-proxy's mode (`classify_kube_proxy_mode`, fed by
`gather_kube_proxy`), the single place it is worked out (kube_proxy, iptables, ipvs,
bridge_nf and conntrack call it)."""

from __future__ import annotations

import posixpath
import weakref
from dataclasses import dataclass, field, replace
from typing import Mapping

from agent.host import Host, ProcessInfo
from agent.parsers.kube_cmdline import parse_flag
from agent.parsers.kube_yaml import parse_top_level_list, parse_top_level_scalars

KUBELET_CONFIG_DEFAULT = "/var/lib/kubelet/config.yaml"
#: kube-proxy's mode when neither flag nor config sets it (on Linux).
KUBE_PROXY_DEFAULT_MODE = "iptables"
CONFIG_MAX_BYTES = 1 << 20


def find_process(host: Host, name: str) -> ProcessInfo | None:
    """The first process whose name or argv[0] basename is `name` (also `hyperkube <name>`)."""
    for p in host.processes():
        argv0 = posixpath.basename(p.cmdline[0]) if p.cmdline else ""
        if p.name == name or argv0 == name:
            return p
        if argv0 == "hyperkube" and len(p.cmdline) > 1 and p.cmdline[1] == name:
            return p
    return None


def read_component_file(host: Host, proc: ProcessInfo | None, path: str) -> tuple[str, str]:
    """A config file named on a component's command line: (text, where it was read). Tried
    through the process's own root first (/proc/<pid>/root: kube-proxy's config is a
    ConfigMap mounted in its container), then under the host root. Raises OSError."""
    if proc is not None and path.startswith("/"):
        try:
            return (host.read_proc(f"{proc.pid}/root{path}", CONFIG_MAX_BYTES),
                    f"/proc/{proc.pid}/root{path}")
        except OSError:
            pass
    return host.read_host_file(path, CONFIG_MAX_BYTES), path


@dataclass(frozen=True)
class KubeletSettings:
    running: bool
    config_path: str | None = None  # where the config was read from, None when not read
    config: dict[str, str] = field(default_factory=dict)
    config_error: str = ""
    flags: dict[str, str] = field(default_factory=dict)  # --hairpin-mode, --resolv-conf, ...
    cluster_dns: tuple[str, ...] = ()

    def setting(self, flag: str, key: str) -> tuple[str | None, str]:
        """The value and its source: the command-line flag wins over the config file (as in
        kubelet for these settings)."""
        if flag in self.flags:
            return self.flags[flag], f"kubelet --{flag}"
        if key in self.config:
            return self.config[key], f"{self.config_path}: {key}"
        return None, ""


KUBELET_FLAGS = ("hairpin-mode", "resolv-conf", "cluster-dns", "config")


def gather_kubelet(host: Host) -> KubeletSettings:
    proc = find_process(host, "kubelet")
    flags = {}
    if proc is not None:
        for flag in KUBELET_FLAGS:
            value = parse_flag(proc.cmdline, flag)
            if value is not None:
                flags[flag] = value
    path = flags.get("config", KUBELET_CONFIG_DEFAULT)
    try:
        text, where = read_component_file(host, proc, path)
    except OSError as exc:
        return KubeletSettings(proc is not None, None, {}, f"{path}: {exc.strerror or exc}",
                               flags, _split_dns(flags.get("cluster-dns", "")))
    dns = (_split_dns(flags["cluster-dns"]) if "cluster-dns" in flags
           else tuple(parse_top_level_list(text, "clusterDNS")))
    return KubeletSettings(proc is not None, where, parse_top_level_scalars(text), "", flags,
                           dns)


def _split_dns(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


# --- kube-proxy: the one place its mode is worked out ------------------------------------

KUBE_PROXY_METRICS_PORT = 10249
ENDPOINT_TIMEOUT_S = 1.0
KNOWN_PROXY_MODES = ("iptables", "ipvs", "nftables")
#: Cilium kube-proxy-replacement values under which kube-proxy is not needed.
CILIUM_REPLACES_VALUES = frozenset({"true", "strict"})
CILIUM_KPR_KEY = "kube-proxy-replacement"
#: Processes that embed kube-proxy (no separate kube-proxy process).
EMBEDDING_PROCESSES = ("k3s",)
K3S_CONFIG = "/etc/rancher/k3s/config.yaml"


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
class KubeProxyFacts:
    """What the node shows about kube-proxy: its process (or the one embedding it), its
    config, its /proxyMode answer, and Cilium's kube-proxy replacement setting."""

    process: ProcessInfo | None  # the kube-proxy process (or the process embedding it)
    embedded_in: str = ""  # "k3s" when kube-proxy runs inside another process
    config_path: str = ""  # its --config, "" when none
    config_source: str = ""  # where the config was read (/proc/PID/root/...), "" when not
    config: Mapping[str, str] | None = None  # None: no --config, or it could not be read
    config_error: str = ""
    proxy_mode: EndpointAnswer | None = None  # GET /proxyMode on its metrics address
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

    def bind_address(self, flag: str, key: str) -> str:
        """A bind address setting: the config file's `key`, else the `--flag`, else ""."""
        if self.process is None:
            return ""
        return (self.config or {}).get(key) or parse_flag(self.process.cmdline, flag) or ""


@dataclass(frozen=True)
class KubeProxyMode:
    """The verdict on kube-proxy's mode that every check shares."""

    running: bool | None  # None: not known (offline analysis)
    #: iptables | ipvs | nftables | unknown while it runs; absent | replaced-by-cilium when
    #: it does not; "" when not known.
    mode: str = ""
    source: str = ""  # where the mode came from


#: gather_kube_proxy's answer per Host (a Host lives for one run, like its process list):
#: five checks ask, and a hung kube-proxy costs ENDPOINT_TIMEOUT_S once, not five times.
_GATHERED: weakref.WeakKeyDictionary[Host, KubeProxyFacts] = weakref.WeakKeyDictionary()


def gather_kube_proxy(host: Host) -> KubeProxyFacts:
    """The edge: processes, kube-proxy's config (through its own root first) and its
    /proxyMode endpoint (asked only while it runs, ENDPOINT_TIMEOUT_S); once per Host."""
    got = _GATHERED.get(host)
    if got is None:
        got = _GATHERED[host] = _gather_kube_proxy(host)
    return got


def _gather_kube_proxy(host: Host) -> KubeProxyFacts:
    proxy = find_process(host, "kube-proxy")
    embedded = ""
    if proxy is None:
        for name in EMBEDDING_PROCESSES:
            p = find_process(host, name)
            if p is not None and not _k3s_disables_kube_proxy(host, p):
                proxy, embedded = p, name
                break
    cilium = find_process(host, "cilium-agent")
    kpr, kpr_source = _cilium_kpr(host, cilium) if cilium else ("", "")
    if proxy is None:
        return KubeProxyFacts(None, cilium=cilium, cilium_kpr=kpr, cilium_kpr_source=kpr_source)
    config_path = "" if embedded else (parse_flag(proxy.cmdline, "config") or "")
    config, config_source, config_error = None, "", ""
    if config_path:
        try:
            text, config_source = read_component_file(host, proxy, config_path)
            config = parse_top_level_scalars(text)
        except OSError as exc:
            config_error = (f"--config {config_path} unreadable (could not be read through "
                            f"/proc/{proxy.pid}/root nor on the host: {exc.strerror or exc})")
    facts = KubeProxyFacts(proxy, embedded, config_path, config_source, config, config_error,
                           None, cilium, kpr, kpr_source)
    url = endpoint_url(facts.bind_address("metrics-bind-address", "metricsBindAddress"),
                       KUBE_PROXY_METRICS_PORT, "/proxyMode")
    return replace(facts, proxy_mode=query_endpoint(host, url))


def gather_kube_proxy_mode(host: Host) -> KubeProxyMode:
    """What the checks that depend on kube-proxy's mode call in their gather."""
    return classify_kube_proxy_mode(gather_kube_proxy(host))


def query_endpoint(host: Host, url: str) -> EndpointAnswer:
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


# --- pure -----------------------------------------------------------------------------------

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


def classify_kube_proxy_mode(facts: KubeProxyFacts) -> KubeProxyMode:
    """kube-proxy's mode and where it came from, most authoritative first: what its
    /proxyMode endpoint says it runs, its --config file's `mode` (an empty one is the
    default), its --proxy-mode flag, else the Linux default. A mode it cannot have is
    "unknown"; so is an unreadable --config, and k3s whose /proxyMode did not answer."""
    if not facts.running:
        if facts.cilium_kpr in CILIUM_REPLACES_VALUES:
            return KubeProxyMode(False, "replaced-by-cilium", facts.cilium_kpr_source)
        return KubeProxyMode(False, "absent", "no kube-proxy process")
    answer = facts.proxy_mode
    if answer and answer.status == 200 and answer.body.strip() in KNOWN_PROXY_MODES:
        return KubeProxyMode(True, answer.body.strip(), f"GET {answer.url}")
    if facts.config is not None and "mode" in facts.config:
        value = facts.config["mode"]
        return KubeProxyMode(True, _known_mode(value or KUBE_PROXY_DEFAULT_MODE),
                             f"{facts.config_source}: mode: {value or '(empty: the default)'}")
    if facts.mode_flag:
        return KubeProxyMode(True, _known_mode(facts.mode_flag),
                             f"kube-proxy --proxy-mode={facts.mode_flag}")
    if facts.config_error:
        return KubeProxyMode(True, "unknown", facts.config_error)
    if facts.embedded_in:
        return KubeProxyMode(True, "unknown",
                             f"embedded in {facts.embedded_in}; /proxyMode did not answer")
    return KubeProxyMode(True, KUBE_PROXY_DEFAULT_MODE,
                         f"assumed {KUBE_PROXY_DEFAULT_MODE}: kube-proxy runs and neither "
                         "/proxyMode, --proxy-mode nor a config file sets a mode (the Linux "
                         "default)")


def _known_mode(mode: str) -> str:
    mode = mode.strip().lower()
    return mode if mode in KNOWN_PROXY_MODES else "unknown"


def cilium_agent_running(host: Host) -> bool:
    return find_process(host, "cilium-agent") is not None
