"""Decoding posted reports in worker processes.

The collector's event loop runs on one core (the GIL): decoding, validating and compressing a
13 kB report took about half of its time per report. With `workers` > 0 that work runs in child
processes, `python -m collector.decode_pool FD`, each connected to the collector by a
socketpair, so the event loop only serves HTTP and keeps state.

Frames both ways are a 4-byte big-endian length, then the payload: the collector sends a posted
body as received; the worker answers, in order, with ("ok", DecodedReport.to_builtins()) or
("rejected", reason, message, field), encoded with `marshal` (builtins only: loading and
rebuilding a 16-peer report takes the collector ~31 us, against ~44 us to unpickle the
dataclasses). Only the collector's own children write what it loads; what arrives from the
network is JSON, decoded by orjson inside the child.

`netdiag collector` forks its workers before it starts any thread (`DecodePool.prefork`): a
forked worker shares the collector's imported code with it: with 5,000 nodes it added 10-12 MB
to the pair's proportional set size (ingest bench), where a freshly started interpreter is
~23 MB before any work. Workers started later (a replacement, or a pool made inside a running
event loop, as in tests) are spawned as new interpreters.

A worker that dies (killed, out of memory) fails its pending requests with `WorkerGone`; those
bodies are then decoded in the collector's own process, so no report is lost, and a new worker
is started (at most RESTARTS_PER_MINUTE; beyond that the pool decodes in-process and says so).
"""

from __future__ import annotations

import asyncio
import logging
import marshal
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from typing import Any

from collector.decode import DecodedReport, ReportRejected, decode_report

log = logging.getLogger("netdiag.collector")

FRAME = struct.Struct("!I")
#: A worker refuses frames larger than this (the collector's body limit is far below).
MAX_FRAME_BYTES = 64 << 20
RESTARTS_PER_MINUTE = 5
#: The worker's parent directory on its PYTHONPATH: it imports the same code as the collector.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class WorkerGone(Exception):
    """The worker process ended before answering."""


class _Worker:
    """One child process and the requests it has not answered yet (it answers in order)."""

    def __init__(self, proc: subprocess.Popen[bytes], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.proc = proc
        self.reader = reader
        self.writer = writer
        self.pending: deque[asyncio.Future[bytes]] = deque()
        self.alive = True
        self.task = asyncio.create_task(self._read_answers())

    async def _read_answers(self) -> None:
        try:
            while True:
                (size,) = FRAME.unpack(await self.reader.readexactly(FRAME.size))
                payload = await self.reader.readexactly(size)
                fut = self.pending.popleft()
                if not fut.done():
                    fut.set_result(payload)
        except (asyncio.IncompleteReadError, ConnectionError, IndexError, OSError):
            pass  # EOF, reset or an answer nobody asked for: the worker is done
        finally:
            self.alive = False
            while self.pending:
                fut = self.pending.popleft()
                if not fut.done():
                    fut.set_exception(WorkerGone())

    async def send(self, body: bytes) -> bytes:
        if not self.alive:
            raise WorkerGone()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        try:
            self.writer.writelines((FRAME.pack(len(body)), body))
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.alive = False
        return await fut

    async def stop(self) -> None:
        self.alive = False
        self.writer.close()  # EOF: the worker exits by itself
        try:
            await asyncio.wait_for(self.task, 2.0)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self.task.cancel()
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _ForkedChild:
    """The part of subprocess.Popen the pool uses, for a child made with os.fork."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"decode worker {self.pid}", timeout or 0.0)
            time.sleep(0.01)
        return self.returncode  # type: ignore[return-value]


class DecodePool:
    """`await pool.decode(body)` -> DecodedReport (or raises ReportRejected), in a worker
    process when there is one, else in this process."""

    def __init__(self, workers: int) -> None:
        self.size = max(0, workers)
        self.workers: list[_Worker] = []
        self._forked: list[tuple[_ForkedChild, socket.socket]] = []
        self._restarts: deque[float] = deque()
        self._gave_up = False

    def prefork(self) -> None:
        """Fork the workers now (call before any thread or event loop exists; does nothing
        otherwise: `start` then spawns them)."""
        if threading.active_count() != 1 or self._forked:
            return
        import gc
        # Objects that exist now never move generation again, so neither process's collector
        # writes to their pages: the child keeps sharing them instead of copying.
        gc.freeze()
        ours_so_far: list[socket.socket] = []
        for _ in range(self.size):
            ours, theirs = socket.socketpair()
            pid = os.fork()
            if pid == 0:  # the worker
                code = 1
                try:
                    for sock in (*ours_so_far, ours):
                        sock.close()
                    code = worker_main(theirs.fileno())
                finally:
                    os._exit(code)
            theirs.close()
            ours_so_far.append(ours)
            self._forked.append((_ForkedChild(pid), ours))

    async def start(self) -> None:
        for child, ours in self._forked:
            reader, writer = await asyncio.open_connection(sock=ours)
            self.workers.append(_Worker(child, reader, writer))  # type: ignore[arg-type]
        self._forked = []
        while len(self.workers) < self.size:
            self.workers.append(await self._spawn())
        if self.size:
            log.info("decoding reports in %d worker process(es): %s", self.size,
                     ", ".join(str(w.proc.pid) for w in self.workers))

    async def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "collector.decode_pool", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        return _Worker(proc, reader, writer)

    def _pick(self) -> _Worker | None:
        alive = [w for w in self.workers if w.alive]
        return min(alive, key=lambda w: len(w.pending)) if alive else None

    async def decode(self, body: bytes) -> DecodedReport:
        worker = self._pick()
        if worker is None:
            await self._replace_dead()
            return decode_report(body, compress=False)
        try:
            payload = await worker.send(body)
        except WorkerGone:
            await self._replace_dead()
            return decode_report(body, compress=False)
        answer = marshal.loads(payload)
        if answer[0] != "ok":
            raise ReportRejected(*answer[1:])
        return DecodedReport.from_builtins(answer[1])

    async def _replace_dead(self) -> None:
        dead = [w for w in self.workers if not w.alive]
        if not dead or self._gave_up:
            return
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > 60.0:
            self._restarts.popleft()
        for w in dead:
            self.workers.remove(w)
            code = w.proc.poll()
            if code is None:
                w.proc.kill()
                code = w.proc.wait()
            if len(self._restarts) >= RESTARTS_PER_MINUTE:
                self._gave_up = True
                log.error("decode worker %d ended (exit %s); %d restarts in a minute: decoding "
                          "in the collector's process from now on", w.proc.pid, code,
                          len(self._restarts))
                return
            self._restarts.append(now)
            new = await self._spawn()
            self.workers.append(new)
            log.warning("decode worker %d ended (exit %s); started %d", w.proc.pid, code,
                        new.proc.pid)

    async def close(self) -> None:
        workers, self.workers = self.workers, []
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)


# --- the worker process ---------------------------------------------------------------------------

def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def worker_main(fd: int) -> int:
    """Answers frames on `fd` until the collector closes it."""
    # Ctrl-C in the collector's terminal reaches the whole process group: the collector shuts
    # down and closes the socket, which ends this loop; a traceback here would only be noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    while True:
        head = _read_exactly(sock, FRAME.size)
        if head is None:
            return 0
        (size,) = FRAME.unpack(head)
        if size > MAX_FRAME_BYTES:
            return 1
        body = _read_exactly(sock, size)
        if body is None:
            return 0
        try:
            answer: tuple[Any, ...] = ("ok", decode_report(body).to_builtins())
        except ReportRejected as exc:
            answer = ("rejected", exc.reason, exc.message, exc.field)
        except Exception as exc:  # noqa: BLE001 - one body must never end the worker
            answer = ("rejected", "schema", f"invalid report: {str(exc)[:200]}", "")
        out = marshal.dumps(answer)
        sock.sendall(FRAME.pack(len(out)) + out)


if __name__ == "__main__":
    sys.exit(worker_main(int(sys.argv[1])))
