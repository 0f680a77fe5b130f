"""`netdiag collector` as a process: clear errors for bad options, serves, stops on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from agent.cli import UsageError
from agent.cli import main as cli_main
from agent.daemon import parse_listen, read_token_file

START_TIMEOUT_S = 20.0


@pytest.mark.parametrize(("text", "expected"), [
    ("0.0.0.0:8080", ("0.0.0.0", 8080)), (":9000", ("0.0.0.0", 9000)),
    ("[::]:8080", ("::", 8080)), ("127.0.0.1:0", ("127.0.0.1", 0))])
def test_parse_listen(text, expected) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", "host:", "host:http", "1.2.3.4:70000", "::1:80",
                                  "[nope]:80"])
def test_parse_listen_rejects(text) -> None:
    with pytest.raises(UsageError, match="--listen"):
        parse_listen(text)


def test_token_file_is_stripped_and_must_not_be_empty(tmp_path) -> None:
    (tmp_path / "t").write_text("  abc\n")
    assert read_token_file(str(tmp_path / "t")) == "abc"
    (tmp_path / "e").write_text("\n")
    with pytest.raises(UsageError, match="empty"):
        read_token_file(str(tmp_path / "e"))
    assert read_token_file(None) is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--listen", "nonsense"], "--listen"),
    (["--token-file", "/nonexistent/token"], "cannot read"),
    (["--db", "/nonexistent/dir/db.sqlite3"], "cannot open the database"),
    (["--keep-rounds", "1"], "--keep-rounds"),
])
def test_bad_options_exit_64_with_a_clear_message(argv, message, tmp_path, capsys) -> None:
    full = ["collector", "--db", str(tmp_path / "db.sqlite3"), *argv]
    assert cli_main(full) == 64
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serves_and_stops_gracefully_on_sigterm(tmp_path) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "collector", "--listen",
                             f"127.0.0.1:{port}", "--db", str(tmp_path / "db.sqlite3")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "collector did not become ready"
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, out
        assert "shutting down" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "db.sqlite3").exists()
