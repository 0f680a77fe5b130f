"""`netdiag collector`: parse the options, open the store, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sqlite3
import sys

from agent.cli import EXIT_SOFTWARE, UsageError
from agent.daemon import parse_listen, read_token_file
from collector.store import Store

log = logging.getLogger("netdiag.collector")


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
