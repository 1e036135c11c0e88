"""Guest processes on a terminal (``spawn(tty=True)``), with real guests restored from the baked image.

The pty echoes what is typed, so every marker waited for is computed by the
shell (``mark$((1+1))`` prints ``mark2``) and never appears in the typed text.
"""

from __future__ import annotations

import re
import signal

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from asupermachine import ExitStatus, Machine, Snapshot
from asupermachine._core.agent.process import Process

pytestmark = pytest.mark.anyio

# A restore, a few execs and typed commands under software KVM; a hang fails instead of stalling.
DEADLINE = 120
PROMPT = b"# "  # busybox ash's for root
SCREEN_LIMIT = 1 << 20  # bytes read looking for one marker before giving up


class Screen:
    """What a tty process has written so far, read up to markers."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self._output = BufferedByteReceiveStream(process.stdout)

    async def read_until(self, marker: bytes) -> bytes:
        """Everything up to and including the first ``marker`` not yet read."""
        try:
            return await self._output.receive_until(marker, SCREEN_LIMIT) + marker
        except anyio.IncompleteRead:
            pytest.fail(f"the terminal ended before {marker!r}; it showed {self._output.buffer!r}")

    async def type_line(self, line: bytes, marker: bytes) -> bytes:
        """Type ``line`` and Enter; the output up to ``marker`` (which ``line`` must not contain)."""
        assert marker not in line, "the echo of the typed line would match"
        await self.process.stdin.send(line + b"\n")
        return await self.read_until(marker)


async def test_an_interactive_shell_on_a_pty_sizes_resizes_takes_ctrl_c_and_exits_with_its_status(
    baked: Snapshot,
) -> None:
    with anyio.fail_after(DEADLINE):
        async with Machine.restore(baked) as vm, await vm.spawn(["sh"], tty=True, size=(30, 100)) as shell:
            screen = Screen(shell)
            await screen.read_until(PROMPT)

            shown = await screen.type_line(b"tty; stty size; echo mark$((1+1))", b"mark2")
            assert re.search(rb"/dev/pts/\d+\r\n", shown), shown
            assert b"\r\n30 100\r\n" in shown, shown

            await shell.resize(40, 120)
            shown = await screen.type_line(b"stty size; echo mark$((1+2))", b"mark3")
            assert b"\r\n40 120\r\n" in shown, shown

            await shell.stdin.send(b"sleep 100\n")
            # Ctrl-C only once sleep runs: earlier, it would reach the shell, which ignores it.
            await vm.exec(["sh", "-c", "until pidof sleep >/dev/null; do usleep 10000; done"], timeout=30)
            await shell.stdin.send(b"\x03")
            with anyio.fail_after(30):  # well before sleep 100 would end by itself
                shown = await screen.type_line(b"echo rc=$? mark$((2+2))", b"mark4")
            assert b"rc=130 " in shown, shown  # 128 + SIGINT, and the shell ran the next command
            assert (await vm.exec(["sh", "-c", "pidof sleep || echo none"])).stdout == b"none\n"

            await shell.stdin.send(b"exit 7\n")
            async for _ in shell.stdout:
                pass
            assert await shell.wait() == ExitStatus(7, None)
            with pytest.raises(anyio.EndOfStream):  # stderr went to the terminal
                await shell.stderr.receive()


async def test_a_resize_sends_sigwinch_and_a_pipe_process_cannot_be_resized(baked: Snapshot) -> None:
    script = "trap 'echo w$((1+1))nch; stty size' WINCH; echo re$((1+1))dy; while :; do sleep 1; done"
    with anyio.fail_after(DEADLINE):
        async with Machine.restore(baked) as vm:
            async with await vm.spawn(["sh", "-c", script], tty=True, size=(24, 80)) as trapper:
                screen = Screen(trapper)
                await screen.read_until(b"re2dy")
                await trapper.resize(50, 132)
                await screen.read_until(b"w2nch")  # the trap runs once the sleep in progress ends
                assert (await screen.read_until(b"\n")).strip() == b""
                assert (await screen.read_until(b"\n")).strip() == b"50 132"
                await trapper.send_signal(signal.SIGKILL)
                assert await trapper.wait() == ExitStatus(None, signal.SIGKILL)

            async with await vm.spawn(["cat"]) as piped:
                with pytest.raises(ValueError, match="tty=True"):
                    await piped.resize(24, 80)
                await piped.stdin.send(b"still fine")
                assert await piped.stdout.receive() == b"still fine"
                await piped.stdin.aclose()
                assert await piped.wait() == ExitStatus(0, None)
