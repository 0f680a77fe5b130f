"""`overlay.config-mismatch`: the VXLAN devices of the nodes disagree on VNI, UDP port or MTU
(from NodeReport.overlay, compared per device name). A different VNI or port means the peers'
VXLAN packets are dropped or never decapsulated (the capture sees them, nothing answers); a
different MTU makes one side send packets the other cannot take.

With a clear majority the minority nodes are blamed; without one (two nodes, one each) every
node is named and the title says which side is wrong cannot be told. VNI/port mismatches run
before the node rules and fold the overlay failures to and from the blamed nodes.
"""

from __future__ import annotations

from collections import Counter

from agent.report import Severity
from collector.correlate.base import (ClusterView, RuleResult, _Acc, clear_majority, diagnosis,
                                      name_list)
from collector.correlate.model import PATH_KINDS

ATTRS = (("vni", "VNI", Severity.ERROR), ("port", "UDP port", Severity.ERROR),
         ("mtu", "MTU", Severity.WARNING))
FIX = ("Make the VXLAN {what} the same on every node: it comes from the CNI configuration "
       "(flannel net-conf.json `VNI`/`Port`, Calico `vxlanVNI`/`vxlanPort`, Cilium "
       "`tunnel-port`); check `ip -d link show {dev}` on {nodes}, fix the config the CNI "
       "reads there and restart its agent on those nodes.")


def evaluate(view: ClusterView) -> RuleResult:
    acc = _Acc()
    if len({d.overlay_key for d in view.live.values()}) <= 1:
        return acc.result()  # every node has the same devices with the same settings
    by_dev: dict[str, dict[str, object]] = {}
    for name, d in view.live.items():
        for dev in d.report.overlay:
            by_dev.setdefault(dev.name, {})[name] = dev
    for dev_name in sorted(by_dev):
        devs = by_dev[dev_name]
        if len(devs) < 2:
            continue
        for attr, label, severity in ATTRS:
            values = {n: getattr(dev, attr) for n, dev in devs.items()
                      if getattr(dev, attr) is not None}
            counts = Counter(values.values())
            if len(counts) < 2:
                continue
            major = clear_majority(counts, 0.5)
            if major is not None:
                wrong = sorted(n for n, v in values.items() if v != major[0])
                title = (f"VXLAN {label} of {dev_name} differs on {name_list(wrong, 4)}: "
                         f"{', '.join(sorted({str(values[n]) for n in wrong}))} where "
                         f"{counts[major[0]]} of {len(values)} nodes use {major[0]}")
            else:
                wrong = sorted(values)
                split = ", ".join(f"{v}: {c} nodes" for v, c in counts.most_common())
                title = (f"VXLAN {label} of {dev_name} differs between nodes and no value has "
                         f"a majority ({split}): cannot tell which side is wrong")
            evidence = [f"{n}: {dev_name} {attr} {values[n]}" for n in sorted(values)]
            acc.diagnoses.append(diagnosis("overlay.config-mismatch", severity, wrong, title,
                                           evidence, FIX.format(what=label, dev=dev_name,
                                                                nodes=name_list(wrong))))
            wrong_set = set(wrong)
            for (s, t), st in view.matrix.failures.items():
                if s in wrong_set or t in wrong_set:
                    if attr != "mtu" and st.kinds & PATH_KINDS:
                        acc.explains.add((s, t))
                    elif attr == "mtu" and st.kinds <= {"mtu"}:
                        acc.explains.add((s, t))
            if attr != "mtu":
                acc.blames.update(wrong_set)
    return acc.result()
