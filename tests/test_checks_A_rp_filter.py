"""rp_filter check: pure evaluate on built facts, gather on recorded namespace trees."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.checks import rp_filter
from agent.checks.rp_filter import Facts, Interface
from agent.parsers.proc_net import Route
from agent.parsers.sysctl import parse_sysctl_conf
from agent.report import Severity
from tests.checks_A_support import CTX, FIXTURES, RecordedHost, proc

BAD = "node-trees/flannel-strict-rp-hairpin-off"
GOOD = "node-trees/flannel-healthy"


def _by_id(findings):
    return {f.id: f for f in findings}


def _facts(values, interfaces=(), routes=(), cilium=False, persisted=()):
    return Facts(tuple(values.items()), tuple(interfaces), routes, cilium, tuple(persisted), ())


#: flannel.1 on top of eth0, the default route out of eth0: (interfaces, routes).
FLANNEL_OVER_ETH0 = ([Interface("flannel.1", "vxlan", ("eth0",)), Interface("eth0", "", ())],
                     (Route("eth0", "0.0.0.0", 0, "192.168.77.1", 3, 0),
                      Route("flannel.1", "10.244.1.0", 24, "10.244.1.0", 3, 0)))


def test_flags_strict_rp_filter_on_vxlan_device_as_warning_when_routes_go_back_through_it():
    facts = _facts({"all": 0, "default": 0, "flannel.1": 1, "eth0": 0}, *FLANNEL_OVER_ETH0)
    f = _by_id(rp_filter.evaluate(facts, CTX))["sysctl.rp-filter-strict"]
    assert f.severity is Severity.WARNING
    assert "/proc/sys/net/ipv4/conf/flannel.1/rp_filter = 1" in f.evidence


def test_strict_all_makes_the_vxlan_parent_strict():
    facts = _facts({"all": 1, "default": 0, "flannel.1": 0, "eth0": 0}, *FLANNEL_OVER_ETH0)
    f = _by_id(rp_filter.evaluate(facts, CTX))["sysctl.rp-filter-strict"]
    assert f.severity is Severity.WARNING
    assert "conf/eth0/rp_filter = 0 (all = 1, effective 1; parent of VXLAN flannel.1)" in f.evidence


def test_loose_rp_filter_is_fine():
    facts = _facts({"all": 2, "default": 2, "flannel.1": 2},
                   [Interface("flannel.1", "vxlan", ())], ())
    f = _by_id(rp_filter.evaluate(facts, CTX))["sysctl.rp-filter-strict"]
    assert f.severity is Severity.OK


def test_error_when_cilium_runs():
    facts = _facts({"all": 0, "default": 0, "cilium_host": 1},
                   [Interface("cilium_host", "", ())],
                   (Route("cilium_host", "10.0.0.0", 24, "10.0.0.1", 3, 0),), cilium=True)
    f = _by_id(rp_filter.evaluate(facts, CTX))["sysctl.rp-filter-strict"]
    assert f.severity is Severity.ERROR
    assert "Cilium" in f.evidence


def test_warning_only_when_routes_unreadable():
    facts = _facts({"all": 0, "default": 0, "cni0": 1}, [Interface("cni0", "bridge", ())],
                   routes=None)
    f = _by_id(rp_filter.evaluate(facts, CTX))["sysctl.rp-filter-strict"]
    assert f.severity is Severity.WARNING
    assert "could not be read" in f.evidence


def test_gather_on_recorded_tree_finds_strict_flannel_and_certain_drop_on_lxc():
    host = RecordedHost(BAD)
    facts = rp_filter.gather(host, CTX)
    assert facts.value("flannel.1") == 1 and facts.value("all") == 0
    assert {"flannel.1": "VXLAN device", "eth0": "parent of VXLAN flannel.1"}.items() <= \
        rp_filter.classify_overlay_interfaces(facts).items()
    f = _by_id(rp_filter.evaluate(facts, CTX))["sysctl.rp-filter-strict"]
    # lxc12ab34cd has no route out of it: every packet it receives fails the strict test
    assert f.severity is Severity.ERROR
    assert "/proc/sys/net/ipv4/conf/flannel.1/rp_filter = 1" in f.evidence
    assert "lxc12ab34cd" in f.evidence and "no route out of it" in f.evidence
    summary = rp_filter.summarize(facts)
    assert summary["rp_filter"] == {"all": 0, "default": 0, "cni0": 0, "eth0": 2,
                                    "flannel.1": 1}
    assert summary["rp_filter_strict_pod_ifaces"] == 1


def test_gather_on_healthy_tree_is_ok_and_debian_sysctl_conf_comments_ignored():
    host = RecordedHost(GOOD, processes=(proc(1, "/usr/bin/cilium-agent"),))
    facts = rp_filter.gather(host, CTX)
    assert facts.cilium_running
    findings = _by_id(rp_filter.evaluate(facts, CTX))
    assert findings["sysctl.rp-filter-strict"].severity is Severity.OK
    assert findings["sysctl.rp-filter-persisted"].severity is Severity.OK
    assert facts.files_read == ("/etc/sysctl.d/99-sysctl.conf",)  # the symlink read once


def _tree_with_sysctl(tmp_path: Path, edit) -> RecordedHost:
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / GOOD, tree, symlinks=True)
    conf = tree / "root/etc/sysctl.conf"
    conf.write_text(edit(conf.read_text()))
    return RecordedHost(tree)


def test_persisted_strict_rp_filter_names_file_and_line(tmp_path):
    # the incident: an admin uncomments Debian's `#net.ipv4.conf.all.rp_filter=1`
    host = _tree_with_sysctl(tmp_path, lambda t: t.replace("#net.ipv4.conf.all.rp_filter=1",
                                                           "net.ipv4.conf.all.rp_filter=1"))
    f = _by_id(rp_filter.evaluate(rp_filter.gather(host, CTX), CTX))["sysctl.rp-filter-persisted"]
    assert f.severity is Severity.WARNING
    assert f.evidence.startswith("/etc/sysctl.d/99-sysctl.conf:20: net.ipv4.conf.all.rp_filter=1")


def test_persisted_later_file_overrides_and_loose_all_masks_iface(tmp_path):
    host = _tree_with_sysctl(tmp_path, lambda t: t)
    d = Path(host.root) / "usr/lib/sysctl.d"
    d.mkdir(parents=True)
    (d / "10-strict.conf").write_text("net.ipv4.conf.default.rp_filter = 1\n")
    (d / "50-default.conf").write_text("net.ipv4.conf.all.rp_filter = 2\n")
    f = _by_id(rp_filter.evaluate(rp_filter.gather(host, CTX), CTX))["sysctl.rp-filter-persisted"]
    assert f.severity is Severity.OK  # max(all=2, default=1) is loose
    (d / "50-default.conf").write_text("-net.ipv4.conf.*.rp_filter = 1\n")
    f = _by_id(rp_filter.evaluate(rp_filter.gather(host, CTX), CTX))["sysctl.rp-filter-persisted"]
    assert f.severity is Severity.WARNING
    assert "/usr/lib/sysctl.d/10-strict.conf:1" in f.evidence
    assert "/usr/lib/sysctl.d/50-default.conf:1" in f.evidence


def test_persisted_setting_on_unrelated_interface_is_ignored():
    persisted = parse_sysctl_conf("net.ipv4.conf.eth1.rp_filter = 1\n", "/etc/sysctl.d/x.conf")
    facts = _facts({"all": 0, "default": 0}, persisted=persisted)
    f = _by_id(rp_filter.evaluate(facts, CTX))["sysctl.rp-filter-persisted"]
    assert f.severity is Severity.OK


def test_error_when_vxlan_peer_routes_back_through_another_interface():
    # flannel --iface=eth1 style: flannel.1 bound to eth1, the peer routed out of eth0
    interfaces = [Interface("flannel.1", "vxlan", ("eth1",)), Interface("eth0", "", ()),
                  Interface("eth1", "", ())]
    routes = (Route("eth0", "0.0.0.0", 0, "192.168.77.1", 3, 0),
              Route("eth0", "192.168.77.0", 24, "0.0.0.0", 1, 0),
              Route("eth1", "10.10.0.0", 16, "0.0.0.0", 1, 0),
              Route("flannel.1", "10.244.1.0", 24, "10.244.1.0", 3, 0))
    facts = Facts((("all", 0), ("default", 0), ("flannel.1", 0), ("eth1", 1), ("eth0", 0)),
                  tuple(interfaces), routes, False, (), (),
                  (("flannel.1", "10.10.3.4"), ("flannel.1", "192.168.77.12")))
    assert rp_filter.reverse_path_mismatches(facts, "eth1") == [
        "VXLAN peer 192.168.77.12 (flannel.1 on eth1) is routed out of eth0 (192.168.77.0/24)"]
    f = _by_id(rp_filter.evaluate(facts, CTX))["sysctl.rp-filter-strict"]
    assert f.severity is Severity.ERROR
    assert "/proc/sys/net/ipv4/conf/eth1/rp_filter = 1" in f.evidence
    assert "routed out of eth0" in f.evidence
    same_side = Facts(facts.values, facts.interfaces, routes, False, (), (),
                      (("flannel.1", "10.10.3.4"),))
    assert _by_id(rp_filter.evaluate(same_side, CTX))["sysctl.rp-filter-strict"].severity \
        is Severity.WARNING


def test_lookup_route_longest_prefix_then_metric():
    from agent.parsers.proc_net import lookup_route
    routes = [Route("eth0", "0.0.0.0", 0, "192.168.77.1", 3, 0),
              Route("eth1", "10.0.0.0", 8, "0.0.0.0", 1, 100),
              Route("eth2", "10.0.0.0", 8, "0.0.0.0", 1, 10),
              Route("eth3", "10.1.0.0", 16, "0.0.0.0", 1, 0)]
    assert lookup_route(routes, "10.1.2.3").iface == "eth3"
    assert lookup_route(routes, "10.2.2.3").iface == "eth2"
    assert lookup_route(routes, "8.8.8.8").iface == "eth0"
    assert lookup_route(routes[1:], "8.8.8.8") is None
    assert lookup_route(routes, "not-an-ip") is None
