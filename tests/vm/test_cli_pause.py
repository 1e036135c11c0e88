"""``asupermachine run --pause``, ``ps``, ``resume``, ``pause``, ``cp``, ``rm`` and ``run -v``, run as a user runs them.

Each command is its own process, as from a shell; paused machines and the
control sockets go to the test's own directories.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

DEADLINE = 300.0  # seconds for one command: the first run may bake the built-in image


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    return {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_RUNTIME_DIR": str(runtime)}


def cli(env: dict[str, str], *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asupermachine", *words], env=env, capture_output=True, text=True, timeout=DEADLINE
    )


def ok(env: dict[str, str], *words: str) -> str:
    result = cli(env, *words)
    assert result.returncode == 0, result.stderr
    return result.stdout


def started(env: dict[str, str], *words: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "asupermachine", *words], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def states(env: dict[str, str]) -> dict[str, str]:
    """``ps``'s rows as id -> state."""
    return {row.split()[0]: row.split()[1] for row in ok(env, "ps").splitlines()[1:]}


def test_run_pause_resume_copy_and_remove_from_the_shell(env: dict[str, str], tmp_path: Path) -> None:
    result = cli(env, "run", "--pause", "--", "sh", "-c", "echo kept > /root/note; echo ran")
    assert result.returncode == 0 and result.stdout == "ran\n", result.stderr
    (machine_id, state), = states(env).items()
    assert state == "paused" and f"machine {machine_id} is paused" in result.stderr

    assert ok(env, "resume", machine_id, "--", "cat", "/root/note") == "kept\n"
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "file").write_text("in a tree\n")
    (tree / "link").symlink_to("sub/file")
    ok(env, "cp", str(tree), f"{machine_id}:/root/")
    ok(env, "cp", f"{machine_id}:/root/tree", str(tmp_path / "back"))
    assert (tmp_path / "back" / "link").read_text() == "in a tree\n"
    assert os.readlink(tmp_path / "back" / "link") == "sub/file"

    # A resumed machine runs until 'pause ID' from another shell (its command then ends with 128).
    holder = started(env, "resume", machine_id, "--", "sh", "-c", "echo waiting; sleep 1000")
    assert holder.stdout is not None and holder.stdout.readline() == "waiting\n"
    assert ok(env, "pause", machine_id) == f"{machine_id}\n"
    out, err = holder.communicate(timeout=DEADLINE)
    assert (holder.returncode, out) == (128, ""), err
    assert states(env) == {machine_id: "paused"}

    # Ctrl-C pauses it too: nothing is lost to a keystroke.
    holder = started(env, "resume", machine_id)
    assert holder.stderr is not None
    while "(or Ctrl-C) pauses it" not in holder.stderr.readline():  # said once signals pause it
        assert holder.poll() is None
    holder.send_signal(signal.SIGINT)
    _, err = holder.communicate(timeout=DEADLINE)
    assert holder.returncode == 0 and "is paused" in err, err

    refused = cli(env, "pause", machine_id)
    assert refused.returncode == 1 and "paused already" in refused.stderr
    assert ok(env, "resume", "--rm", machine_id, "--", "cat", "/root/tree/sub/file") == "in a tree\n"
    assert states(env) == {}
    gone = cli(env, "resume", machine_id, "--", "true")
    assert gone.returncode == 1 and f"no paused machine {machine_id}" in gone.stderr


def test_rm_removes_a_paused_machine_and_refuses_an_unknown_one(env: dict[str, str]) -> None:
    cli(env, "run", "--pause", "--", "true")
    (machine_id, _), = states(env).items()
    assert ok(env, "rm", machine_id) == f"{machine_id}\n"
    assert states(env) == {}
    unknown = cli(env, "rm", "feedbeef")
    assert unknown.returncode == 1 and "no paused machine 'feedbeef'" in unknown.stderr


def test_run_mounts_named_volumes_in_the_machine_it_restores(env: dict[str, str]) -> None:
    ok(env, "volume", "create", "work", "--size", "16")
    ok(env, "run", "-v", "work:/data", "--", "sh", "-c", "echo kept > /data/note")
    result = cli(env, "run", "-v", "work:/data:ro", "--", "sh", "-c", "cat /data/note; touch /data/x")
    assert (result.returncode, result.stdout) == (1, "kept\n"), result.stderr
    assert "Read-only file system" in result.stderr and "restoring the baked snapshot" in result.stderr
