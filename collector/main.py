"""`netdiag collector`: parse the options, open the store, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sqlite3
import sys

from agent.cli import EXIT_SOFTWARE, UsageError
from collector.store import Store

log = logging.getLogger("netdiag.collector")


def parse_listen(text: str) -> tuple[str, int]:
    """`0.0.0.0:8080`, `[::]:8080`, `:8080` (all addresses) -> (host, port); UsageError if bad."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"--listen: expected HOST:PORT (e.g. 0.0.0.0:8080), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"--listen: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise UsageError(f"--listen: write IPv6 addresses in brackets, e.g. [::]:8080; "
                         f"got {text!r}")
    return host or "0.0.0.0", int(port_text)


def read_token_file(path: str | None, option: str = "--token-file") -> str | None:
    """The bearer token (surrounding whitespace stripped); UsageError when unreadable/empty."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read(64 << 10).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option} {path}: cannot read: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    if not token:
        raise UsageError(f"{option} {path}: the file is empty")
    return token


def cmd_collector(args: argparse.Namespace) -> int:
    from collector.app import CollectorConfig, make_app

    host, port = parse_listen(args.listen)
    token = read_token_file(args.token_file)
    probe = Store(args.db)
    try:
        probe.open()
    except sqlite3.Error as exc:
        raise UsageError(f"--db {args.db}: cannot open the database: {exc}") from None
    finally:
        probe.close()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = CollectorConfig(db_path=args.db, token=token,
                             interval_s=getattr(args, "interval", None) or 30.0)
    if token is None:
        log.warning("no --token-file: accepting reports from anyone who can reach %s:%d",
                    host, port)
    try:
        asyncio.run(serve(make_app(config), host, port))
    except OSError as exc:
        print(f"netdiag collector: error: cannot listen on {host}:{port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return EXIT_SOFTWARE
    return 0


async def serve(app, host: str, port: int) -> None:  # type: ignore[no-untyped-def]
    from aiohttp import web

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("listening on %s:%d", host, port)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
