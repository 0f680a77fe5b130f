"""parse_cni_config on every real CNI config fixture, and its errors on broken ones."""

from __future__ import annotations

import pytest

from agent.parsers.cni import (CniConfigError, choose_cni_config, parse_cni_config)
from tests.conftest import read_fixture


def parse(fixture: str, filename: str):
    return parse_cni_config(read_fixture(f"cni-config/{fixture}"), filename)


def test_flannel_conflist_delegates_to_cni0_with_hairpin_on() -> None:
    cfg = parse("flannel-conflist-hairpin-portmap-crio.txt", "10-flannel.conflist")
    assert (cfg.name, cfg.cni_version, cfg.is_list) == ("cbr0", "0.3.1", True)
    assert cfg.plugin_types() == ("flannel", "portmap")
    assert cfg.plugins[0].bridge == "cni0" and cfg.plugins[0].hairpin_mode is True
    assert cfg.plugins[1].bridge is None and cfg.plugins[1].hairpin_mode is None
    assert cfg.bridge_names() == ("cni0",)


def test_flannel_conf_without_hairpin_reports_it_unset() -> None:
    cfg = parse("cni-320-flannel-conf-no-hairpin.txt", "10-flannel.conf")
    assert (cfg.name, cfg.cni_version, cfg.is_list) == ("podnet", "", False)
    assert cfg.plugin_types() == ("flannel",)
    assert cfg.plugins[0].hairpin_mode is None
    assert cfg.bridge_names() == ("cni0",)


def test_crio_bridge_conflist_names_its_bridge() -> None:
    cfg = parse("crio-11-ipv4-bridge-hairpin-conflist.txt", "11-crio-ipv4-bridge.conflist")
    assert cfg.name == "crio" and cfg.plugin_types() == ("bridge",)
    assert cfg.plugins[0].hairpin_mode is True
    assert cfg.bridge_names() == ("cni0",)
    assert cfg.plugins[0].raw["ipam"]["type"] == "host-local"


def test_cilium_chained_on_flannel_lists_three_plugins() -> None:
    cfg = parse("cilium-04-flannel-cilium-chained-conflist.txt", "04-flannel-cilium-cni.conflist")
    assert cfg.plugin_types() == ("flannel", "portmap", "cilium-cni")
    assert cfg.plugins[0].hairpin_mode is True


def test_cilium_single_conf_has_no_bridge() -> None:
    cfg = parse("cilium-05-cilium-cni-conf.txt", "05-cilium-cni.conf")
    assert (cfg.name, cfg.plugin_types(), cfg.bridge_names()) == ("cilium", ("cilium-cni",), ())


def test_calico_conflist_with_name_last() -> None:
    cfg = parse("plugins-242-calico-etcd-portmap-bandwidth-conflist.txt", "10-calico.conflist")
    assert (cfg.name, cfg.cni_version) == ("mynet", "0.3.0")
    assert cfg.plugin_types() == ("calico", "portmap", "bandwidth")
    assert cfg.bridge_names() == ()


def test_invalid_json_names_file_line_and_column() -> None:
    text = read_fixture("cni-config/crio-11-ipv4-bridge-hairpin-conflist.txt").replace(
        '"isGateway": true,', '"isGateway": true')
    with pytest.raises(CniConfigError) as exc:
        parse_cni_config(text, "11-crio.conflist")
    msg = str(exc.value)
    assert msg.startswith("11-crio.conflist: invalid JSON at line 9 column")


@pytest.mark.parametrize("text, fragment", [
    ('{"name": "x", "plugins": [{"bridge": "cni0"}]}', 'plugins[0]: missing "type"'),
    ('{"name": "x"}', 'missing "type"'),
    ('{"name": "x", "plugins": []}', 'non-empty "plugins"'),
    ('[1, 2]', "expected a JSON object"),
    ('', "invalid JSON at line 1 column 1"),
])
def test_unusable_configs_raise_clear_errors(text: str, fragment: str) -> None:
    with pytest.raises(CniConfigError, match=None) as exc:
        parse_cni_config(text, "99-x.conf")
    assert fragment in str(exc.value) and str(exc.value).startswith("99-x.conf")


def test_runtime_uses_lexicographically_first_config_file() -> None:
    assert choose_cni_config(["200-loopback.conf", "10-flannel.conflist", "README"]) == \
        "10-flannel.conflist"
    assert choose_cni_config(["notes.txt"]) is None
