"""L1 passes run beside the direct pass: one after another, in one worker thread, in the order asked for.

The direct pass runs its guests one at a time on one vCPU; an L1 with one vCPU
takes this machine's other core, so the passes' times overlap instead of adding
up. Each pass's test, run last, waits for its own result.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).parents[2]


class L1Queue:
    """Runs commands (each an L1, through ``scripts/nested-kvm``) one at a time, until :meth:`stop`."""

    def __init__(self) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="l1-beside")
        self._lock = threading.Lock()
        self._running: subprocess.Popen[str] | None = None
        self._stopped = False

    def submit(self, command: list[str], prepare: Callable[[], object]) -> Future[subprocess.CompletedProcess[str]]:
        """Run ``prepare()`` then ``command`` from the repository once the passes asked for before are done."""
        return self._worker.submit(self._run, command, prepare)

    def _run(self, command: list[str], prepare: Callable[[], object]) -> subprocess.CompletedProcess[str]:
        prepare()
        with tempfile.TemporaryFile(mode="w+") as output:
            with self._lock:
                if self._stopped:
                    raise RuntimeError("the passes beside the direct pass were stopped")
                self._running = subprocess.Popen(
                    command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, text=True
                )
            returncode = self._running.wait()
            output.seek(0)
            return subprocess.CompletedProcess(command, returncode, output.read(), "")

    def stop(self) -> None:
        """End the pass running (the tool takes its L1 down with it) and drop those not started."""
        with self._lock:
            self._stopped = True
            if self._running is not None and self._running.poll() is None:
                self._running.terminate()
        self._worker.shutdown(wait=True, cancel_futures=True)


_QUEUE: list[L1Queue] = []
_PASSES: dict[str, Future[subprocess.CompletedProcess[str]]] = {}


def start(name: str, command: list[str], prepare: Callable[[], object] = lambda: None) -> None:
    """Queue the pass ``name`` (the collection hook calls each pass's module, in the order the passes run)."""
    if not _QUEUE:
        _QUEUE.append(L1Queue())
    _PASSES[name] = _QUEUE[0].submit(command, prepare)


def take(name: str) -> subprocess.CompletedProcess[str] | None:
    """The result of the pass ``name`` run beside the direct pass (printed, shown with a failure or with -s),
    waited for; None if it was not queued or was taken already."""
    future = _PASSES.pop(name, None)
    if future is None:
        return None
    run = future.result()
    print(run.stdout)
    return run


def stop() -> None:
    """Stop every pass the session never took (a failure with -x, an interrupt)."""
    while _QUEUE:
        _QUEUE.pop().stop()
    _PASSES.clear()
