"""Lab: the iptables check through the real `iptables-save`, inside a namespace we create.

A kube-proxy-shaped rule set (a Service with endpoints, one with none, the PREROUTING/OUTPUT
hooks) is loaded with `iptables-restore` into `nd<run>-h3`, then a DROP for UDP 8472 in INPUT
and FORWARD policy DROP are added; `netdiag check --json --only iptables` run inside the
namespace must report each with the rule as evidence. Never touches the root namespace's
firewall: every iptables command runs under `ip netns exec`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.lab.netns import NetNS, scratch_namespace

pytestmark = pytest.mark.lab
ROOT = Path(__file__).parent.parent

KUBE_PROXY_RULES = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment "shop/cart:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-BBBBBBBBBBBBBBBB - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SEP-AAAAAAAAAAAAAAAA -s 10.244.1.5/32 -m comment --comment "shop/web:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-AAAAAAAAAAAAAAAA -p tcp -m comment --comment "shop/web:http" -m tcp -j DNAT --to-destination 10.244.1.5:8080
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "shop/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-BBBBBBBBBBBBBBBB
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-BBBBBBBBBBBBBBBB ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment "shop/web:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-BBBBBBBBBBBBBBBB -m comment --comment "shop/web:http -> 10.244.1.5:8080" -j KUBE-SEP-AAAAAAAAAAAAAAAA
COMMIT
"""  # noqa: E501


@pytest.fixture
def ns():
    with scratch_namespace("h3") as space:
        yield space


def check_in(ns: NetNS) -> dict:
    proc = ns.exec([sys.executable, "-m", "agent.cli", "check", "--json", "--only", "iptables",
                    "--node-name", "lab-h3"], check=False, timeout=60)
    assert proc.returncode in (0, 1, 2), proc.stderr
    return json.loads(proc.stdout)


def findings(report: dict, finding_id: str) -> list[dict]:
    return [f for f in report["findings"] if f["id"] == finding_id]


def test_check_finds_each_case_through_the_real_iptables_save(ns: NetNS) -> None:
    ns.exec(["iptables-restore"], input=KUBE_PROXY_RULES)
    before = check_in(ns)
    assert {f["severity"] for f in findings(before, "iptables.forward-drop")} == {"ok"}
    assert {f["severity"] for f in findings(before, "iptables.overlay-port-blocked")} == {"ok"}
    assert before["facts"]["service_vips"] == ["tcp/10.96.0.10:80", "tcp/10.96.0.20:80"]

    ns.exec(["iptables", "-A", "INPUT", "-p", "udp", "--dport", "8472", "-j", "DROP"])
    ns.exec(["iptables", "-P", "FORWARD", "DROP"])
    after = check_in(ns)

    (ne,) = [f for f in findings(after, "iptables.no-endpoints") if f["severity"] != "ok"]
    assert ne["severity"] == "error" and "shop/cart:http" in ne["title"]
    assert '--comment "shop/cart:http has no endpoints"' in ne["evidence"]
    (fwd,) = findings(after, "iptables.forward-drop")
    assert fwd["severity"] == "error" and ":FORWARD DROP" in fwd["evidence"]
    blocked = [f for f in findings(after, "iptables.overlay-port-blocked")
               if f["severity"] != "ok"]
    assert blocked and "-A INPUT -p udp -m udp --dport 8472 -j DROP" in blocked[0]["evidence"]
    assert after["facts"]["service_vips_digest"] == before["facts"]["service_vips_digest"]


def test_missing_service_hook_without_kube_proxy_is_not_applicable(ns: NetNS) -> None:
    """Same chains with the OUTPUT hook gone: no kube-proxy process runs on this machine, so
    `kube-proxy-chains-missing` does not apply (a Cilium kube-proxy-free node looks like this);
    the unit tests cover the case where kube-proxy runs in iptables mode."""
    import psutil

    if any(p.info["name"] == "kube-proxy" for p in psutil.process_iter(["name"])):
        pytest.skip("a kube-proxy process runs on this machine")
    rules = KUBE_PROXY_RULES.replace(
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n', "")
    ns.exec(["iptables-restore"], input=rules)
    report = check_in(ns)
    assert not findings(report, "iptables.kube-proxy-chains-missing")
    assert report["facts"]["kube_proxy_rules"] == "iptables"


def test_rules_in_both_backends_are_mixed_backends(ns: NetNS) -> None:
    """kube-proxy's rules through iptables-nft, a CNI's masquerade through iptables-legacy
    (legacy tables are per namespace: the root namespace's stay untouched)."""
    ns.exec(["iptables-nft-restore"], input=KUBE_PROXY_RULES)
    ns.exec(["iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-s", "10.244.0.0/16",
             "!", "-d", "10.244.0.0/16", "-j", "MASQUERADE"])
    report = check_in(ns)
    (f,) = findings(report, "iptables.mixed-backends")
    assert f["severity"] == "error"
    assert "iptables-legacy-save: 1 rules" in f["evidence"]
    assert "iptables-nft-save:" in f["evidence"]
    assert report["facts"]["iptables_backends"] == ["iptables-legacy-save:legacy",
                                                    "iptables-nft-save:nf_tables"]


def test_drop_of_the_local_vxlan_devices_port_is_an_error(ns: NetNS) -> None:
    """The port comes from the namespace's own VXLAN device (netlink), not a default."""
    dev = f"{ns.name.split('-')[0]}-vx"
    ns.exec(["ip", "link", "add", dev, "type", "vxlan", "id", "42", "dstport", "4789",
             "local", "127.0.0.1"])
    ns.exec(["iptables-restore"], input=KUBE_PROXY_RULES)
    ns.exec(["iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "4789", "-j", "REJECT"])
    report = check_in(ns)
    (f,) = [f for f in findings(report, "iptables.overlay-port-blocked") if f["severity"] != "ok"]
    assert f["severity"] == "error" and f"local VXLAN device {dev}" in f["evidence"]
    assert "-A OUTPUT -p udp -m udp --dport 4789 -j REJECT" in f["evidence"]
