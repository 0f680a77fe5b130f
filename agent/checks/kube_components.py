"""Not a check: what several node checks need to know about the Kubernetes components on
this node (kubelet's settings, kube-proxy's mode, whether Cilium's agent runs), gathered once
through the Host edge and returned as plain values. Pure decisions stay in the checks."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class KubeProxyMode:
    running: bool
    mode: str = ""  # iptables | ipvs | nftables | ...; "" when kube-proxy does not run
    source: str = ""  # where the mode came from; "default" when nothing set it


def gather_kube_proxy_mode(host: Host) -> KubeProxyMode:
    proc = find_process(host, "kube-proxy")
    if proc is None:
        return KubeProxyMode(False)
    flag = parse_flag(proc.cmdline, "proxy-mode")
    if flag:
        return KubeProxyMode(True, flag, f"kube-proxy --proxy-mode={flag}")
    config = parse_flag(proc.cmdline, "config")
    if config:
        try:
            text, where = read_component_file(host, proc, config)
        except OSError as exc:
            return KubeProxyMode(True, KUBE_PROXY_DEFAULT_MODE,
                                 f"assumed {KUBE_PROXY_DEFAULT_MODE}: its --config {config} "
                                 f"could not be read ({exc.strerror or exc})")
        mode = parse_top_level_scalars(text).get("mode", "")
        if mode:
            return KubeProxyMode(True, mode, f"{where}: mode: {mode}")
    return KubeProxyMode(True, KUBE_PROXY_DEFAULT_MODE,
                         f"assumed {KUBE_PROXY_DEFAULT_MODE}: kube-proxy runs and neither "
                         "--proxy-mode nor a config file sets a mode (the Linux default)")


def cilium_agent_running(host: Host) -> bool:
    return find_process(host, "cilium-agent") is not None
