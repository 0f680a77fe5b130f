"""The DaemonSet's privileges are enough, on a real kernel: `netdiag check` run as uid 0 with
only the capabilities deploy/agent-daemonset.yaml adds (and no_new_privs, as
allowPrivilegeEscalation: false sets) reports exactly what it reports with every capability,
inside a namespace of our own holding a small kube-proxy ruleset. A control run without
NET_ADMIN proves the comparison notices a missing capability.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab.netns import NetNS, scratch_namespace

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
RULESET_SERVICES = 20
CHECK_TIMEOUT_S = 60


def _agent_security_context() -> dict[str, Any]:
    ds = yaml.safe_load((ROOT / "deploy" / "agent-daemonset.yaml").read_text())
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    return container["securityContext"]


def _setpriv(caps: list[str]) -> list[str]:
    """Bounding set = exactly `caps`: for uid 0 that is the effective set after exec."""
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in caps)])
    return ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--no-new-privs", "--"]


#: How a finding says a check could not see something (the runner's skip reasons included).
REFUSAL_MARKERS = ("could not run", "denied", "not permitted")


def _findings(ns: NetNS, prefix: list[str]) -> list[dict[str, Any]]:
    netdiag = shutil.which("netdiag")
    argv = [netdiag] if netdiag else [sys.executable, "-m", "agent.cli"]
    proc = ns.exec([*prefix, *argv, "check", "--json", "--node-name", "cap-test"], check=False,
                   timeout=CHECK_TIMEOUT_S)
    assert proc.returncode in (0, 1, 2), proc.stderr
    return json.loads(proc.stdout)["findings"]


def _verdicts(findings: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(f["id"], f["severity"]) for f in findings}


def _refusals(findings: list[dict[str, Any]]) -> set[str]:
    return {f"{f['id']}: {f['title']}" for f in findings
            if any(m in json.dumps([f["title"], f["evidence"]]).lower()
                   for m in REFUSAL_MARKERS)}


@pytest.mark.lab
def test_the_daemonset_capabilities_are_enough_for_every_check() -> None:
    if not shutil.which("setpriv") or not shutil.which("iptables-restore"):
        pytest.skip("needs setpriv (util-linux) and iptables-restore")
    sc = _agent_security_context()
    assert sc["runAsUser"] == 0 and sc["allowPrivilegeEscalation"] is False
    caps = sc["capabilities"]["add"]

    with scratch_namespace("cap") as ns:
        dump = subprocess.run([sys.executable, str(ROOT / "bench" / "gen_kube_proxy_dump.py"),
                               "--services", str(RULESET_SERVICES), "--endpoints", "2"],
                              capture_output=True, text=True, check=True, timeout=60).stdout
        ns.exec(["iptables-restore"], input=dump)

        full = _findings(ns, [])
        capped = _findings(ns, _setpriv(caps))
        without_net_admin = _findings(ns, _setpriv([c for c in caps if c != "NET_ADMIN"]))

    # The iptables check really read the ruleset (not skipped) ...
    assert ("iptables.no-endpoints", "ok") in _verdicts(full), full
    # ... and the DaemonSet's capabilities see the same node as full root: same verdicts,
    # nothing refused that full root was not refused too.
    assert _verdicts(capped) == _verdicts(full)
    assert _refusals(capped) <= _refusals(full), _refusals(capped) - _refusals(full)
    # Control: without NET_ADMIN iptables-save is refused, and the report says so.
    assert _refusals(without_net_admin) - _refusals(full), without_net_admin
