"""CNI configuration: the container runtime reads `/etc/cni/net.d` and uses the
lexicographically first `*.conf` / `*.conflist` / `*.json` file; it runs each plugin of that
config from `/opt/cni/bin`. With no config the node stays NotReady ("cni plugin not
initialized") and no pod gets a network; with invalid JSON the runtime skips the file; with
several configs a leftover (CRI-O's 10-crio bridge, an old flannel file after a Calico
migration) can sort first and silently win; a plugin binary missing from /opt/cni/bin fails
every pod sandbox on the node. Applies to every CNI.

Files are read under `--host-root` (a debug pod sees the host at /host).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from agent.checks.base import CheckContext, CheckSpec, FindingSpec
from agent.host import Host
from agent.parsers.cni import CniConfig, CniConfigError, choose_cni_config, is_cni_config_name, \
    parse_cni_config
from agent.report import Finding, Severity

KUBELET_DIR = "/var/lib/kubelet"
CNI_CONF_DIR = "/etc/cni/net.d"
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONFIG_MAX_BYTES = 1 << 20
#: A config whose only plugin is one of these is a harmless companion (CRI-O's
#: 200-loopback.conf), not a competing network, as long as it does not sort first.
COMPANION_ONLY_TYPES = frozenset({"loopback"})
DIGEST_CHARS = 16

SPEC = CheckSpec(
    name="cni",
    findings=(
        FindingSpec(
            id="cni.no-config",
            title=f"No CNI config in {CNI_CONF_DIR}: pods on this node get no network",
            why="The container runtime needs a network config to set up every pod sandbox; "
                "without one the node stays NotReady ('cni plugin not initialized').",
            remediation="Check that the CNI DaemonSet (flannel, Calico, Cilium, ...) runs on "
                        "this node and can write its config to /etc/cni/net.d (hostPath mount); "
                        "its logs say why it did not.",
        ),
        FindingSpec(
            id="cni.invalid-config",
            title="A CNI config file is not valid",
            why="The runtime skips a config it cannot parse (or fails every sandbox with it), "
                "so pods get no network or another file's network.",
            remediation="Fix the JSON (the evidence names line and column) or let the CNI "
                        "DaemonSet rewrite it (delete the file and restart the CNI pod).",
        ),
        FindingSpec(
            id="cni.multiple-configs",
            title="Several CNI configs: the runtime uses only the first",
            why="The runtime picks the lexicographically first file; a leftover from another "
                "CNI (a default bridge config, the CNI you migrated away from) can win and give "
                "pods addresses outside the cluster's pod CIDR.",
            remediation="Remove the config files of CNIs that are not in use from "
                        "/etc/cni/net.d, then restart the runtime (or recreate affected pods).",
        ),
        FindingSpec(
            id="cni.plugin-binary-missing",
            title=f"A CNI plugin binary is missing from {CNI_BIN_DIR}",
            why="The runtime runs every plugin of the chosen config from /opt/cni/bin; a "
                "missing binary fails every pod sandbox ('failed to find plugin').",
            remediation="Install the CNI plugins (containernetworking/plugins release, or the "
                        "CNI's init container that copies them) into /opt/cni/bin.",
        ),
    ),
)


@dataclass(frozen=True)
class CniFile:
    filename: str
    digest: str  # sha256 of the file's bytes, hex
    config: CniConfig | None
    error: str = ""  # the parser's message when config is None


@dataclass(frozen=True)
class Facts:
    conf_dir_exists: bool
    files: tuple[CniFile, ...]  # the config files (by suffix), sorted by name
    bin_dir_exists: bool
    binaries: frozenset[str]
    #: /var/lib/kubelet exists under the host root: this is a Kubernetes node (kubelet's state
    #: directory outlives a stopped kubelet), so a missing CNI config is a fault, not "n/a".
    kubelet_dir_exists: bool = True

    @property
    def chosen(self) -> CniFile | None:
        name = choose_cni_config([f.filename for f in self.files])
        return next((f for f in self.files if f.filename == name), None)


def gather(host: Host, ctx: CheckContext) -> Facts:
    try:
        names = host.list_host_dir(CNI_CONF_DIR)
        conf_dir_exists = True
    except (FileNotFoundError, NotADirectoryError):
        names, conf_dir_exists = [], False
    files = []
    for name in sorted(n for n in names if is_cni_config_name(n)):
        text = host.read_host_file(f"{CNI_CONF_DIR}/{name}", limit=CNI_CONFIG_MAX_BYTES)
        digest = hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()
        try:
            files.append(CniFile(name, digest, parse_cni_config(text, name)))
        except CniConfigError as exc:
            files.append(CniFile(name, digest, None, str(exc)))
    try:
        binaries = frozenset(host.list_host_dir(CNI_BIN_DIR))
        bin_dir_exists = True
    except (FileNotFoundError, NotADirectoryError):
        binaries, bin_dir_exists = frozenset(), False
    kubelet_dir_exists = host.host_path(KUBELET_DIR).is_dir()
    return Facts(conf_dir_exists, tuple(files), bin_dir_exists, binaries, kubelet_dir_exists)


def evaluate(facts: Facts, ctx: CheckContext) -> tuple[Finding, ...]:
    chosen = facts.chosen
    if chosen is None:
        where = (f"{CNI_CONF_DIR} does not exist" if not facts.conf_dir_exists
                 else f"{CNI_CONF_DIR} holds no *.conf, *.conflist or *.json file")
        if not facts.kubelet_dir_exists:
            return (SPEC.finding(
                "cni.no-config", Severity.INFO, ctx.node,
                title="No CNI config and no kubelet state: not a Kubernetes node?",
                evidence=f"{where}; {KUBELET_DIR} does not exist",
                remediation="Nothing to fix if this host is not a Kubernetes node; in a debug "
                            "pod, pass --host-root with the node's filesystem mounted."),)
        return (SPEC.finding("cni.no-config", Severity.ERROR, ctx.node, evidence=where),)
    findings: list[Finding] = []
    for f in facts.files:
        if f.config is None:
            used = f is chosen
            findings.append(SPEC.finding(
                "cni.invalid-config", Severity.ERROR if used else Severity.WARNING, ctx.node,
                title=(f"The CNI config the runtime uses ({f.filename}) is not valid" if used
                       else f"CNI config {f.filename} is not valid (not the one in use)"),
                evidence=f.error))
    others = [f for f in facts.files if f is not chosen and not _companion_only(f)]
    if others:
        findings.append(SPEC.finding(
            "cni.multiple-configs", Severity.WARNING, ctx.node,
            title=f"{len(others) + 1} CNI configs in {CNI_CONF_DIR}; the runtime uses "
                  f"{chosen.filename}",
            evidence=f"in use (first by name): {_describe(chosen)}; also present: "
                     + "; ".join(_describe(f) for f in others)))
    if chosen.config is not None:
        missing = [t for t in dict.fromkeys(chosen.config.plugin_types())
                   if t not in facts.binaries]
        if missing:
            where = ("" if facts.bin_dir_exists else f" ({CNI_BIN_DIR} does not exist)")
            findings.append(SPEC.finding(
                "cni.plugin-binary-missing", Severity.ERROR, ctx.node,
                title=f"CNI plugin binar{'y' if len(missing) == 1 else 'ies'} "
                      f"{', '.join(missing)} missing from {CNI_BIN_DIR}",
                evidence=f"{chosen.filename} runs plugins {', '.join(chosen.config.plugin_types())}"
                         f"; not in {CNI_BIN_DIR}{where}: {', '.join(missing)}"))
    if not findings:
        findings.append(SPEC.finding("cni.no-config", Severity.OK, ctx.node,
                                     title=f"CNI config {chosen.filename} in use",
                                     evidence=_describe(chosen)))
    return tuple(findings)


def _companion_only(f: CniFile) -> bool:
    return f.config is not None and set(f.config.plugin_types()) <= COMPANION_ONLY_TYPES


def _describe(f: CniFile) -> str:
    if f.config is None:
        return f"{f.filename} (invalid)"
    return f"{f.filename} (network {f.config.name or '?'}: {', '.join(f.config.plugin_types())})"


def summarize(facts: Facts) -> dict[str, object]:
    chosen = facts.chosen
    return {"cni_config": chosen.filename if chosen else "",
            "cni_config_digest": chosen.digest[:DIGEST_CHARS] if chosen else ""}


def evaluate_config_text(text: str, filename: str, node: str = "") -> tuple[Finding, ...]:
    """`netdiag analyze` on one pasted CNI config: `cni.invalid-config` with the parser's
    message (file, line, column), else an ok finding naming the network and its plugins.
    (Binaries and sibling files cannot be judged from a paste.)"""
    try:
        config = parse_cni_config(text, filename)
    except CniConfigError as exc:
        return (SPEC.finding("cni.invalid-config", Severity.ERROR, node,
                             title=f"CNI config {filename} is not valid", evidence=str(exc)),)
    return (SPEC.finding("cni.invalid-config", Severity.OK, node,
                         title=f"CNI config {filename} is valid",
                         evidence=_describe(CniFile(filename, "", config))),)
