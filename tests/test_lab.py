"""The namespace lab itself: healthy pods reach each other over VXLAN, and each fault breaks
exactly what it should, and clear() restores it. Real kernel networking; needs root."""

from __future__ import annotations

import pytest

from tests.lab.cluster import Lab

pytestmark = pytest.mark.lab


def test_pods_reach_each_other_across_vxlan_when_healthy(lab4: Lab) -> None:
    for dst in ("node2", "node3", "node4"):
        assert lab4.ping("node1/pod", lab4.pod_ip(dst)), f"pod1 -> pod on {dst}"
    assert lab4.ping("node3/pod", lab4.pod_ip("node1"))


def test_node_to_node_tcp_over_underlay_when_healthy(lab4: Lab) -> None:
    with lab4.server("node2", "tcp", 9100):
        assert lab4.tcp_connect("node1", lab4.node("node2").underlay_ip, 9100)
