"""pytest fixtures for lab tests (registered in tests/conftest.py via `pytest_plugins`).

    @pytest.mark.lab
    def test_something(lab4):          # a healthy 4-node flannel lab shared by a test module
        assert lab4.ping("node1/pod", lab4.pod_ip("node2"))

    @pytest.mark.lab
    def test_other(make_lab):          # your own shape, torn down after the test
        lab = make_lab(nodes=3, cni="calico")

Tests that inject a fault into a shared lab must clear it (try/finally, or `lab_fault`).
Every lab is removed when the fixture ends, whether the test passed, failed or was
interrupted; a lab left by a killed run is removed by `python -m tests.lab cleanup`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import pytest

from tests.lab.cluster import Lab
from tests.lab.netns import require_root


def _skip_unless_root() -> None:
    reason = require_root()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def lab4() -> Iterator[Lab]:
    """A healthy 4-node flannel lab for the whole test module."""
    _skip_unless_root()
    with Lab(nodes=4) as lab:
        yield lab


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """Factory: `make_lab(nodes=3, cni="calico", variants={...})`; all torn down after."""
    _skip_unless_root()
    labs: list[Lab] = []

    def make(**kwargs: object) -> Lab:
        lab = Lab(**kwargs)  # type: ignore[arg-type]
        labs.append(lab)
        return lab.up()

    try:
        yield make
    finally:
        for lab in labs:
            lab.down()


@contextmanager
def fault(lab: Lab, name: str, target: str | Iterable[str]) -> Iterator[Lab]:
    """`with fault(lab, "vxlan-down", "node2"): ...` injects, and always clears afterwards."""
    lab.inject(name, target)
    try:
        yield lab
    finally:
        lab.clear(name, target)
