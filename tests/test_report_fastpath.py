"""NodeReport.from_dict's fast path (well-formed JSON objects) must accept exactly what the
checked path accepts, build equal objects, and leave every rejection to the checked path (same
message, same field). `node_report_with_rows` (the collector's: probes and seen counts as rows)
must accept and reject the same inputs and give the same report and probes. Every leaf and
container of a realistic report is replaced, in turn, by each of a set of awkward values; the
two paths must agree on all of them."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from typing import Any, Iterator

import pytest

from agent.report import NodeReport, SCHEMA_NODE_REPORT, node_report_with_rows

REPORT: dict[str, Any] = {
    "schema": SCHEMA_NODE_REPORT,
    "node": {"name": "node-00007", "underlay_ip": "10.0.0.7", "kernel": "6.1.0-27-amd64",
             "agent_version": "0.1.0"},
    "collected_at": 1700000000.5, "interval_s": 30,
    "overlay": [{"name": "flannel.1", "vni": 1, "port": 8472, "local": "10.0.0.7",
                 "parent": "eth0", "mtu": 1450, "mac": "0e:00:00:00:00:07",
                 "addresses": ["10.244.7.0/32"], "up": True}],
    "facts": {"ip_forward": 1, "rp_filter": {"all": 0}, "kube_proxy_mode": "iptables"},
    "findings": [{"id": "sysctl.ip-forward-off", "severity": "ok", "node": "node-00007",
                  "title": "IPv4 forwarding is on", "evidence": "ip_forward = 1",
                  "remediation": ""}],
    "probes": [{"peer": "node-00008", "peer_ip": "10.0.0.8", "kind": "echo", "sent": 3,
                "answered": 3, "rtt_ms": {"min": 0.2, "avg": 0.3, "max": 1}, "error": ""},
               {"peer": "node-00008", "peer_ip": "10.0.0.8", "kind": "wire", "sent": 3,
                "answered": None, "rtt_ms": None, "error": ""}],
    "seen": [{"peer": "node-00006", "peer_ip": "10.0.0.6", "kind": "wire", "count": 3}],
}

MISSING = object()
AWKWARD: list[Any] = [MISSING, None, True, False, 0, -1, 7, 2 ** 64, 10 ** 400, 1.5, -0.0,
                      math.inf, -math.inf, math.nan, "", "x", "ok", "OK", "wire", "node-1",
                      [], ["a"], [1], {}, {"min": 1, "avg": 2, "max": 3}, SCHEMA_NODE_REPORT]


def _paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


def _with(path: tuple, new: Any) -> Any:
    data = copy.deepcopy(REPORT)
    if not path:
        return {} if new is MISSING else new
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if new is MISSING:
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    else:
        parent[path[-1]] = new
    return data


def _outcome(fn: Any, data: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(data)
    except Exception as exc:  # noqa: BLE001 - comparing whatever each path raises
        return type(exc).__name__, (str(exc), getattr(exc, "field", None))


def _same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "ok":
        # NaN != NaN: compare the wire form as text
        return json.dumps(a[1].to_dict(), sort_keys=True) == json.dumps(b[1].to_dict(),
                                                                        sort_keys=True)
    return a[1] == b[1]


def test_valid_report_fast_equals_checked():
    data = copy.deepcopy(REPORT)
    fast, checked = NodeReport.from_dict(data), NodeReport._from_dict_checked(data)
    assert fast == checked
    assert fast.probes[1].rtt_ms is None and fast.probes[0].rtt_ms.max == 1.0
    assert type(fast.probes[0].rtt_ms.max) is float and type(fast.interval_s) is float


@pytest.mark.parametrize("path", list(_paths(REPORT)), ids=lambda p: ".".join(map(str, p)))
def test_fast_and_checked_paths_agree(path):
    for new in AWKWARD:
        data = _with(path, new)
        fast = _outcome(NodeReport.from_dict, copy.deepcopy(data))
        checked = _outcome(NodeReport._from_dict_checked, copy.deepcopy(data))
        assert _same(fast, checked), (path, new, fast, checked)


def test_too_many_items_still_rejected_by_name():
    data = copy.deepcopy(REPORT)
    data["seen"] = data["seen"] * 5001
    assert _outcome(NodeReport.from_dict, data) == _outcome(NodeReport._from_dict_checked, data)
    assert _outcome(NodeReport.from_dict, data)[1][1] == "seen"


@pytest.mark.parametrize("path", list(_paths(REPORT)), ids=lambda p: ".".join(map(str, p)))
def test_rows_path_accepts_and_rejects_like_from_dict(path):
    for new in AWKWARD:
        data = _with(path, new)
        whole = _outcome(NodeReport.from_dict, copy.deepcopy(data))
        rows = _outcome(node_report_with_rows, copy.deepcopy(data))
        assert whole[0] == rows[0], (path, new, whole, rows)
        if whole[0] != "ok":
            assert whole[1] == rows[1], (path, new)  # same message, same field
            continue
        report, probes, seen = rows[1]
        expected = whole[1]
        assert report.probes == () and report.seen == ()
        assert _same(("ok", report), ("ok", replace(expected, probes=(), seen=())))
        assert probes == [(p.peer, p.kind, p.sent, p.answered) for p in expected.probes]
        assert seen == [(s.peer, s.kind, s.count) for s in expected.seen]


def test_rows_path_on_a_report_only_the_checked_path_takes():
    # a subclass of dict is not the fast path's exact `dict`: the checked path must give rows
    class Mapping(dict):
        pass

    data = Mapping(copy.deepcopy(REPORT))
    report, probes, seen = node_report_with_rows(data)
    assert report.node.name == "node-00007" and report.probes == ()
    assert probes == [("node-00008", "echo", 3, 3), ("node-00008", "wire", 3, None)]
    assert seen == [("node-00006", "wire", 3)]
