"""Shared test setup.

Unit tests never touch the real node: an autouse guard makes `Host` refuse to point at the
live /, /proc or /sys and refuse to run commands, list processes or open netlink. Tests marked
`lab` build real namespaces and may use the real edge.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.host import forbid_real_host

# scapy (the probe tests' independent dissector) caches pickles in $XDG_CACHE_HOME/scapy and
# takes an empty or relative value as the working directory, leaving an untracked scapy/ in
# the repo root. The XDG spec says to ignore such values; do so for this process and every
# child a test starts, so the cache goes to ~/.cache/scapy.
if not os.path.isabs(os.environ.get("XDG_CACHE_HOME", "/")):
    del os.environ["XDG_CACHE_HOME"]

FIXTURES = Path(__file__).parent / "fixtures"

# Lab fixtures (lab4, make_lab) for every test module: tests/lab/fixtures.py.
pytest_plugins = ("tests.lab.fixtures",)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-goldens", action="store_true",
                     help="rewrite golden outputs under tests/golden/ instead of comparing")


@pytest.fixture(autouse=True)
def _guard_real_host(request: pytest.FixtureRequest):
    forbid_real_host(request.node.get_closest_marker("lab") is None)
    yield
    forbid_real_host(False)


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens"))


def read_fixture(rel: str) -> str:
    """A fixture's body: the `# ` header lines (provenance) and the blank line after them are
    dropped, the recorded output is returned verbatim."""
    text = (FIXTURES / rel).read_text()
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and lines[i].startswith("# "):
        i += 1
    if i and i < len(lines) and not lines[i].strip():
        i += 1
    return "".join(lines[i:])
