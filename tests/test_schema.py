"""`schema/node-report-v1.json` documents the wire shape for other consumers; agent/report.py
validates by hand. These tests keep the two in step and prove `netdiag check --json` output
validates."""

import copy
import json
import subprocess
import sys
from importlib import resources

import jsonschema
import pytest

from agent.cli import main
from tests.test_report import _report

SCHEMA = json.loads(resources.files("agent").joinpath("schema/node-report-v1.json").read_text())


def _validator() -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    return jsonschema.Draft202012Validator(SCHEMA)


def test_a_full_report_validates_against_the_json_schema() -> None:
    _validator().validate(_report().to_dict())


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(schema="v0"),
    lambda d: d["node"].pop("name"),
    lambda d: d["probes"][0].update(sent="3"),
    lambda d: d["probes"][1].update(kind="ping"),
    lambda d: d["findings"][0].update(severity="fatal"),
    lambda d: d.update(facts=[1]),
    lambda d: d["seen"][0].update(count=-1),
    lambda d: d["findings"][0].pop("id"),
    lambda d: d.update(collected_at="yesterday"),
])
def test_schema_and_hand_validation_reject_the_same_reports(mutate) -> None:
    from agent.report import NodeReport, SchemaError

    d = copy.deepcopy(_report().to_dict())
    mutate(d)
    assert list(_validator().iter_errors(d)), "the JSON schema accepted a bad report"
    with pytest.raises(SchemaError):
        NodeReport.from_dict(d)


def test_check_json_on_a_recorded_tree_validates(tmp_path, capsys) -> None:
    # A minimal host: an empty root, and /proc, /sys trees holding only what ip_forward reads.
    proc = tmp_path / "proc"
    (proc / "sys/net/ipv4").mkdir(parents=True)
    (proc / "sys/net/ipv4/ip_forward").write_text("0\n")
    sysfs = tmp_path / "sys"
    sysfs.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    code = main(["check", "--json", "--node-name", "n1", "--host-root", str(root),
                 "--proc-root", str(proc), "--sys-root", str(sysfs)])
    out = json.loads(capsys.readouterr().out)
    _validator().validate(out)
    assert out["node"]["name"] == "n1"
    assert any(f["id"] == "sysctl.ip-forward-off" and f["severity"] == "error"
               for f in out["findings"])
    assert code == 2


@pytest.mark.lab
def test_check_json_on_this_machine_validates() -> None:
    """The real edge, read-only: `netdiag check --json` on the machine running the tests."""
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "check", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1, 2), proc.stderr
    assert "Traceback" not in proc.stderr
    _validator().validate(json.loads(proc.stdout))
