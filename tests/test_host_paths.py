"""Host files under --host-root: symlinks resolve inside the host root, as on the node."""

import os

from agent.host import Host, resolve_under_root


def test_absolute_symlink_is_followed_under_the_host_root(tmp_path) -> None:
    # The systemd-resolved layout: /etc/resolv.conf -> /run/systemd/resolve/stub-resolv.conf
    (tmp_path / "etc").mkdir()
    (tmp_path / "run/systemd/resolve").mkdir(parents=True)
    (tmp_path / "run/systemd/resolve/stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    os.symlink("/run/systemd/resolve/stub-resolv.conf", tmp_path / "etc/resolv.conf")
    host = Host(root=tmp_path, proc=tmp_path / "proc", sys=tmp_path / "sys")
    assert host.read_host_file("/etc/resolv.conf") == "nameserver 127.0.0.53\n"


def test_relative_links_and_dotdot_never_leave_the_root(tmp_path) -> None:
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    (tmp_path / "etc/sysctl.conf").write_text("x=1\n")
    os.symlink("../sysctl.conf", tmp_path / "etc/sysctl.d/99-sysctl.conf")
    os.symlink("../../../../../etc/sysctl.conf", tmp_path / "etc/escape.conf")
    assert resolve_under_root(tmp_path, "/etc/sysctl.d/99-sysctl.conf") == tmp_path / "etc/sysctl.conf"
    assert resolve_under_root(tmp_path, "/etc/escape.conf") == tmp_path / "etc/sysctl.conf"


def test_a_symlink_loop_ends(tmp_path) -> None:
    os.symlink("/b", tmp_path / "a")
    os.symlink("/a", tmp_path / "b")
    assert resolve_under_root(tmp_path, "/a") == tmp_path / "a"
