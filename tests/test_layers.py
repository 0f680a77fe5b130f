"""The functional core stays pure: parsers and correlation import no I/O modules."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PURE_PACKAGES = ("agent/parsers", "collector/correlate")
FORBIDDEN = {"subprocess", "socket", "os", "shutil", "pathlib", "time", "datetime", "random",
             "pyroute2", "psutil", "scapy", "aiohttp", "sqlite3", "urllib", "http", "asyncio",
             "threading", "agent.host"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "open":
            names.add("open()")
    return names


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_packages_do_no_io(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    for path in files:
        bad = {n for n in _imports(path)
               if n == "open()" or n in FORBIDDEN or n.split(".")[0] in FORBIDDEN - {"agent"}
               or n.startswith("agent.host")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: keep I/O in the edge"


def test_fixture_trees_hold_no_empty_directory() -> None:
    """git does not keep empty directories: a recorded sysfs tree whose `bridge/` or `lower_*`
    directory is empty passes here and fails on a fresh clone. Such directories carry a
    `.gitkeep`."""
    root = Path(__file__).parent / "fixtures"
    empty = [str(d.relative_to(root)) for d in root.rglob("*") if d.is_dir() and not any(d.iterdir())]
    assert not empty, f"empty fixture directories (add a .gitkeep): {empty}"
