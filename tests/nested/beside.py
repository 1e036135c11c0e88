"""L1 passes run beside the direct pass: one after another, in one worker thread, in the order asked for.

The direct pass runs its guests one at a time on one vCPU; an L1 with one vCPU
takes this machine's other core, so the passes' times overlap instead of adding
up. Each pass's test, run last, waits for its own result.

The direct pass's tests check that this process holds the same fds before and
after them, so the queue holds steady ones: each pass's output file and stdin
are opened when it is queued and closed when its result is taken, and the
worker does nothing but start and wait for processes (a pass's preparation is
its command's own work).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).parents[2]


@dataclass
class _Pass:
    command: list[str]
    output: IO[str] = field(default_factory=lambda: tempfile.TemporaryFile(mode="w+"))
    stdin: IO[bytes] = field(default_factory=lambda: open(os.devnull, "rb"))

    def close(self) -> None:
        self.output.close()
        self.stdin.close()


class L1Queue:
    """Runs commands (each an L1, through ``scripts/nested-kvm``) one at a time, until :meth:`stop`."""

    def __init__(self) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="l1-beside")
        self._lock = threading.Lock()
        self._running: subprocess.Popen[str] | None = None
        self._stopped = False

    def submit(self, command: list[str]) -> tuple[_Pass, Future[int]]:
        """Run ``command`` from the repository once the passes asked for before are done; its exit status."""
        queued = _Pass(command)
        return queued, self._worker.submit(self._run, queued)

    def _run(self, queued: _Pass) -> int:
        with self._lock:
            if self._stopped:
                raise RuntimeError("the passes beside the direct pass were stopped")
            self._running = subprocess.Popen(
                queued.command, cwd=ROOT, stdin=queued.stdin, stdout=queued.output, stderr=subprocess.STDOUT,
                text=True,
            )
        return self._running.wait()

    def stop(self) -> None:
        """End the pass running (the tool takes its L1 down with it) and drop those not started."""
        with self._lock:
            self._stopped = True
            if self._running is not None and self._running.poll() is None:
                self._running.terminate()
        self._worker.shutdown(wait=True, cancel_futures=True)


_QUEUE: list[L1Queue] = []
_PASSES: dict[str, tuple[_Pass, Future[int]]] = {}


def start(name: str, command: list[str]) -> None:
    """Queue the pass ``name`` (the collection hook calls each pass's module, in the order the passes run)."""
    if not _QUEUE:
        _QUEUE.append(L1Queue())
    _PASSES[name] = _QUEUE[0].submit(command)


def take(name: str) -> subprocess.CompletedProcess[str] | None:
    """The result of the pass ``name`` run beside the direct pass (printed, shown with a failure or with -s),
    waited for; None if it was not queued or was taken already."""
    if name not in _PASSES:
        return None
    queued, returncode = _PASSES.pop(name)
    try:
        status = returncode.result()
        queued.output.seek(0)
        run = subprocess.CompletedProcess(queued.command, status, queued.output.read(), "")
    finally:
        queued.close()
    print(run.stdout)
    return run


def stop() -> None:
    """Stop every pass the session never took (a failure with -x, an interrupt)."""
    while _QUEUE:
        _QUEUE.pop().stop()
    while _PASSES:
        _PASSES.popitem()[1][0].close()
