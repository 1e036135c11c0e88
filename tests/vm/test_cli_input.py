"""``asupermachine run -i``: the CLI's stdin reaches the command whatever it is, and its end is the command's.

A pipe is waited on by the event loop; a file and ``/dev/null`` cannot be, and
are read in a thread. Each run restores the built-in image's baked snapshot.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO

RUN_DEADLINE = 300.0  # the first run may bake the built-in image
PAYLOAD = b"".join(b"line %d of our stdin\n" % n for n in range(5000))  # more than a pipe buffer holds


def run_i(stdin: int | IO[bytes] | None, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "asupermachine", "run", "-i", "--", "sh", "-c", "wc -lc; echo after"],
        stdin=stdin, input=data, capture_output=True, timeout=RUN_DEADLINE, check=False,
    )


def counted(result: subprocess.CompletedProcess[bytes]) -> list[bytes]:
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.split()


def test_a_pipe_reaches_the_command_whole_then_ends() -> None:
    # input= makes stdin a pipe
    assert counted(run_i(None, PAYLOAD)) == [b"5000", str(len(PAYLOAD)).encode(), b"after"]


def test_a_file_reaches_the_command_whole_then_ends(tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    source.write_bytes(PAYLOAD)
    with source.open("rb") as file:
        assert counted(run_i(file)) == [b"5000", str(len(PAYLOAD)).encode(), b"after"]


def test_dev_null_is_an_empty_stdin() -> None:
    assert counted(run_i(subprocess.DEVNULL)) == [b"0", b"0", b"after"]
