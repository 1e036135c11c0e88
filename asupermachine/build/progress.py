"""A build's output as BuildKit's plain progress writes it: ``#N [stage k/n] INSTRUCTION``, the step's
own output lines behind ``#N SECONDS``, then ``#N DONE SECONDS``, ``#N CACHED`` or ``#N ERROR: ...``."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class BuildProgress:
    """Numbers the steps of one build and writes what each does to ``out`` (stderr by default)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out if out is not None else sys.stderr
        self._number = 0
        self._started = time.monotonic()

    def step(self, title: str) -> int:
        """Start step ``title``; returns its number."""
        self._number += 1
        self._started = time.monotonic()
        self._write(f"#{self._number} {title}")
        return self._number

    def output(self, text: str) -> None:
        """Lines the current step printed (a RUN's stdout and stderr)."""
        elapsed = time.monotonic() - self._started
        for line in text.splitlines():
            self._write(f"#{self._number} {elapsed:.3f} {line}")

    def note(self, text: str) -> None:
        self._write(f"#{self._number} {text}")

    def done(self) -> None:
        self._write(f"#{self._number} DONE {time.monotonic() - self._started:.1f}s")

    def cached(self) -> None:
        self._write(f"#{self._number} CACHED")

    def error(self, why: str) -> None:
        self._write(f"#{self._number} ERROR: {why}")

    def warn(self, text: str) -> None:
        self._write(f"WARNING: {text}")

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()
