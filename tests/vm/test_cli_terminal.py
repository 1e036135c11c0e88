"""``asupermachine run -it`` and ``run -i`` under a real terminal: tmux plays the user's, on its own server socket.

The pane runs the CLI, then prints its status and the terminal's modes, so the
test sees what a user would: the guest shell's prompt and output, a window
resize reaching the guest, the command's status as the CLI's, and the terminal
back in its cooked modes afterwards.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# The first run may bake the built-in image (about a minute) before it restores.
FIRST_PROMPT_DEADLINE = 300.0
STEP_DEADLINE = 60.0
POLL = 0.2


class Pane:
    """A detached tmux session on a private server, read and typed into through tmux's CLI."""

    def __init__(self, name: str) -> None:
        self.name = name

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.name, "-f", "/dev/null", *args], check=True, capture_output=True, text=True
        ).stdout

    def text(self) -> str:
        """The pane's history and screen, wrapped lines joined."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", self.name)

    def wait_for(self, found: Callable[[str], bool], deadline: float, what: str) -> str:
        """The pane's text once ``found(text)``; fails after ``deadline`` seconds showing the pane."""
        end = time.monotonic() + deadline
        while True:
            text = self.text()
            if found(text):
                return text
            if time.monotonic() > end:
                pytest.fail(f"no {what} after {deadline:.0f} s; the pane shows:\n{text}")
            time.sleep(POLL)

    def type_line(self, line: str) -> None:
        self.tmux("send-keys", "-t", self.name, "-l", line)
        self.tmux("send-keys", "-t", self.name, "Enter")


def prompts(text: str) -> int:
    """How many of busybox ash's root prompts (``/ # ``; tmux trims the trailing space) the pane shows."""
    return len(re.findall(r"^/ #", text, re.MULTILINE))


@pytest.fixture
def open_pane() -> Iterator[Callable[[str], Pane]]:
    """Opens panes that run ``asupermachine ARGS``, then print its status and the terminal's modes."""
    assert shutil.which("tmux") is not None, "tmux is missing: scripts/setup.sh installs it"
    opened: list[Pane] = []

    def open_running(args: str) -> Pane:
        pane = Pane(f"asm-test-{uuid.uuid4().hex[:12]}")
        opened.append(pane)
        cli = f"{shlex.quote(sys.executable)} -m asupermachine {args}"
        pane.tmux(
            "new-session", "-d", "-s", pane.name, "-x", "100", "-y", "30", "-c", str(REPO_ROOT),
            f"{cli}; echo EXITED=$?; stty -a; sleep 600",
        )
        return pane

    yield open_running
    for pane in opened:
        subprocess.run(["tmux", "-L", pane.name, "kill-server"], capture_output=True)


def exited(text: str) -> bool:
    return re.search(r"^EXITED=\d+$", text, re.MULTILINE) is not None


def test_run_it_attaches_the_terminal_forwards_resizes_and_exits_with_the_status_leaving_it_sane(
    open_pane: Callable[[str], Pane],
) -> None:
    pane = open_pane("run -it")
    pane.wait_for(lambda text: prompts(text) >= 1, FIRST_PROMPT_DEADLINE, "guest shell prompt")

    pane.type_line("echo mark$((1+1)); tty; stty size")
    shown = pane.wait_for(lambda text: prompts(text) >= 2, STEP_DEADLINE, "prompt after the first command")
    assert re.search(r"^mark2$", shown, re.MULTILINE), shown
    assert re.search(r"^/dev/pts/\d+$", shown, re.MULTILINE), shown
    assert re.search(r"^30 100$", shown, re.MULTILINE), shown

    pane.tmux("resize-window", "-t", pane.name, "-x", "120", "-y", "40")
    pane.type_line("stty size")
    pane.wait_for(lambda text: re.search(r"^40 120$", text, re.MULTILINE) is not None, STEP_DEADLINE,
                  "the new size in the guest")

    pane.type_line("exit 3")
    shown = pane.wait_for(lambda text: re.search(r"\bspeed \d+ baud\b", text) is not None, STEP_DEADLINE,
                          "stty -a after the CLI exits")
    assert re.search(r"^EXITED=3$", shown, re.MULTILINE), shown
    modes = shown.split("EXITED=3", 1)[1].replace(";", " ").split()
    for mode in ("icanon", "echo", "isig", "icrnl", "opost"):
        assert mode in modes and f"-{mode}" not in modes, f"{mode} not restored:\n{shown}"


def test_run_i_on_a_terminal_exits_when_the_command_does_without_waiting_for_a_key(
    open_pane: Callable[[str], Pane],
) -> None:
    pane = open_pane("run -i -- sh -c 'echo done$((2+3)); exit 4'")
    shown = pane.wait_for(exited, FIRST_PROMPT_DEADLINE, "the CLI's exit (no key is ever typed)")
    assert re.search(r"^done5$", shown, re.MULTILINE), shown
    assert re.search(r"^EXITED=4$", shown, re.MULTILINE), shown
