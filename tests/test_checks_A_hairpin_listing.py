"""parse_hairpin_listing on the four real pastes in tests/fixtures/bridge-hairpin/."""

from __future__ import annotations

from agent.parsers.hairpin_listing import parse_hairpin_listing
from tests.conftest import read_fixture


def _summary(rel):
    return [(p.bridge, p.port, p.hairpin) for p in parse_hairpin_listing(read_fixture(rel))]


def test_path_equals_value_form():
    assert _summary("bridge-hairpin/k8s-43966-kubelet16-cni0-hairpin-off.txt") == [
        ("cni0", "veth4bfbfe74", False), ("cni0", "vethfc2a18c5", False)]


def test_path_then_value_form():
    assert _summary("bridge-hairpin/kube-router-189-docker0-hairpin-on-ipvs-still-fails.txt") == [
        ("docker0", "veth11fcc5b", True), ("docker0", "veth5b58d34", True),
        ("docker0", "vethdbb6624", True)]


def test_bare_values_take_the_bridge_from_the_command_line():
    assert _summary("bridge-hairpin/zalando-1470-flannel-cni0-hairpin-zero.txt") == [
        ("cni0", None, False)] * 3


def test_ip_detail_form():
    ports = parse_hairpin_listing(read_fixture(
        "bridge-hairpin/flannel-cni0-veth-bridge-slave-hairpin-on.txt"))
    assert [(p.bridge, p.port, p.hairpin) for p in ports] == [("cni0", "vethf39c65e7", True)]
    assert "hairpin on" in ports[0].line


def test_garbage_gives_nothing():
    assert parse_hairpin_listing("") == []
    assert parse_hairpin_listing("0\n1\nhairpin on\n/sys/class/net/x\n") == []
