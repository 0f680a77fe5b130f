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
from collector.store import RECENT_PER_NODE, Store

log = logging.getLogger("netdiag.collector")


#: glibc mallopt parameter; each thread that allocates gets its own arena otherwise (up to
#: 8 per core), and with a store thread and a correlation thread the freed memory of big
#: transient structures stays in arenas it cannot be reused from.
M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def _libc():  # type: ignore[no-untyped-def]
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def limit_malloc_arenas() -> None:
    """Like MALLOC_ARENA_MAX=2 in the environment; glibc only, a no-op elsewhere."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)


#: Python's cyclic GC collects the young generation after this many allocations (default
#: 700). Each report allocates thousands of objects that live until it is digested; at 700
#: they were promoted to the older generations several times per report, which made the GC
#: re-walk the whole kept state (millions of objects at 5,000 nodes, ~150 ms) about twice a
#: second: ~30% of the collector's CPU while ingesting. At 20,000: ~2 full walks per
#: 20,000 reports. Memory is still freed by reference counting as rounds replace it.
GC_YOUNG_THRESHOLD = 20_000
#: More decode workers than this only add memory: the event loop's own core is then the limit.
MAX_DECODE_WORKERS = 16


def tune_gc() -> None:
    import gc

    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def memory_trimmer():  # type: ignore[no-untyped-def]
    """glibc's malloc_trim(0) (returns freed heap pages to the OS), or None."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return None
    return lambda: libc.malloc_trim(0)


def cmd_collector(args: argparse.Namespace) -> int:
    from collector.app import STATE, CollectorConfig, make_app

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
    limit_malloc_arenas()
    tune_gc()
    keep = getattr(args, "keep_rounds", None) or RECENT_PER_NODE
    if keep < 2:
        raise UsageError(f"--keep-rounds must be >= 2 (verdicts need two rounds), got {keep}")
    workers = getattr(args, "decode_workers", 0) or 0
    if not 0 <= workers <= MAX_DECODE_WORKERS:
        raise UsageError(f"--decode-workers must be 0..{MAX_DECODE_WORKERS}, got {workers}")
    config = CollectorConfig(db_path=args.db, token=token,
                             interval_s=getattr(args, "interval", None) or 30.0,
                             recent_per_node=keep, trim_memory=memory_trimmer(),
                             decode_workers=workers)
    if token is None:
        log.warning("no --token-file: accepting reports from anyone who can reach %s:%d",
                    host, port)
    app = make_app(config)
    # Before the event loop and its threads: forked decode workers share this process's code.
    app[STATE].decoder.prefork()
    try:
        asyncio.run(serve(app, host, port))
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
