"""Parser for CNI network configuration files (`/etc/cni/net.d/*.conf`, `*.conflist`,
`*.json`), as the container runtime (libcni) reads them.

A `.conflist` has a top-level `name`, `cniVersion` and a `plugins` list; a `.conf` (and a
`.json`) is a single plugin: the top-level object itself carries `type`. Both become one
`CniConfig` with a tuple of `CniPlugin`s, so callers never care which form the file used.

The bridge a plugin puts pods on, and its `hairpinMode`, are read where each plugin keeps them:
the `bridge` plugin at top level (default bridge `cni0`, as the plugin's own default); flannel
in its `delegate` stanza (flannel delegates to the bridge plugin, bridge `cni0` unless the
delegate names another). `hairpin_mode` is None when the config does not set it (the bridge
plugin's default is off).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

#: The bridge plugin's default bridge name (containernetworking/plugins, plugins/main/bridge).
CNI_DEFAULT_BRIDGE = "cni0"
#: Plugin types whose pods sit on a Linux bridge (directly or by delegation).
BRIDGE_PLUGIN_TYPES = frozenset({"bridge"})
DELEGATING_PLUGIN_TYPES = frozenset({"flannel"})
#: File name endings libcni loads from the config directory.
CNI_CONFIG_SUFFIXES = (".conf", ".conflist", ".json")


class CniConfigError(ValueError):
    """The file is not a usable CNI config; the message names the file and the place."""


@dataclass(frozen=True)
class CniPlugin:
    type: str
    bridge: str | None = None  # the Linux bridge pods land on, when the plugin uses one
    hairpin_mode: bool | None = None  # None: not set in the config
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class CniConfig:
    filename: str
    name: str
    cni_version: str
    plugins: tuple[CniPlugin, ...]
    is_list: bool  # the .conflist form (a `plugins` list)

    def bridge_names(self) -> tuple[str, ...]:
        """The bridges this network's plugins put pods on, in plugin order, without repeats."""
        names: list[str] = []
        for p in self.plugins:
            if p.bridge and p.bridge not in names:
                names.append(p.bridge)
        return tuple(names)

    def plugin_types(self) -> tuple[str, ...]:
        return tuple(p.type for p in self.plugins)


def parse_cni_config(text: str, filename: str) -> CniConfig:
    """One CNI config file's text -> CniConfig. Raises CniConfigError (file, line, column)
    on invalid JSON, a top level that is not an object, or a plugin without a `type`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CniConfigError(
            f"{filename}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(data, dict):
        raise CniConfigError(f"{filename}: expected a JSON object at top level, "
                             f"got {type(data).__name__}")
    is_list = "plugins" in data or filename.endswith(".conflist")
    if is_list:
        raw_plugins = data.get("plugins")
        if not isinstance(raw_plugins, list) or not raw_plugins:
            raise CniConfigError(f"{filename}: a network config list needs a non-empty "
                                 f"\"plugins\" list")
    else:
        raw_plugins = [data]
    plugins = tuple(_plugin(p, filename, i if is_list else None)
                    for i, p in enumerate(raw_plugins))
    return CniConfig(filename=filename, name=_text(data.get("name")),
                     cni_version=_text(data.get("cniVersion")), plugins=plugins,
                     is_list=is_list)


def _plugin(raw: Any, filename: str, index: int | None) -> CniPlugin:
    where = f"{filename}: plugins[{index}]" if index is not None else filename
    if not isinstance(raw, dict):
        raise CniConfigError(f"{where}: expected an object, got {type(raw).__name__}")
    ptype = raw.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise CniConfigError(f"{where}: missing \"type\" (the plugin binary to run)")
    bridge: str | None = None
    hairpin: bool | None = None
    if ptype in BRIDGE_PLUGIN_TYPES:
        bridge = _text(raw.get("bridge")) or CNI_DEFAULT_BRIDGE
        hairpin = _flag(raw.get("hairpinMode"))
    elif ptype in DELEGATING_PLUGIN_TYPES:
        delegate = raw.get("delegate")
        delegate = delegate if isinstance(delegate, dict) else {}
        if _text(delegate.get("type")) in ("", *BRIDGE_PLUGIN_TYPES):
            bridge = _text(delegate.get("bridge")) or CNI_DEFAULT_BRIDGE
            hairpin = _flag(delegate.get("hairpinMode"))
    return CniPlugin(type=ptype, bridge=bridge, hairpin_mode=hairpin, raw=raw)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def is_cni_config_name(filename: str) -> bool:
    return filename.endswith(CNI_CONFIG_SUFFIXES)


def choose_cni_config(filenames: list[str] | tuple[str, ...]) -> str | None:
    """The config file the runtime uses: the lexicographically first config file name."""
    candidates = sorted(f for f in filenames if is_cni_config_name(f))
    return candidates[0] if candidates else None
