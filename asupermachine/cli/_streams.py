"""The CLI's streams: a guest command's stdio to this terminal, its status as an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO

import anyio
import anyio.abc

from .._machine import Machine
from .._outcome import ExecResult, ExitStatus, ShutdownReason
from .._terminal import attach, raw_mode, send_input, terminal_size

# Shell convention for "ended by something other than a normal exit".
STATUS_ABNORMAL_END = 128
STDIN = 0


async def stream_process(vm: Machine, argv: list[str], args: argparse.Namespace) -> int:
    """Run ``argv`` through the agent with the CLI's env, workdir, user and -i/-t; its status.

    With ``-t`` and a terminal on stdin the command runs on a guest pty attached to
    it; with ``-i`` stdin goes to the command, else the command's stdin is empty.
    """
    on_terminal = args.tty and os.isatty(STDIN)
    if args.tty and not on_terminal:
        say("-t: stdin is not a terminal, so the command runs with plain pipes")
    size = terminal_size(STDIN) if on_terminal else (24, 80)
    async with await vm.spawn(
        argv, env=parse_env(args.env), workdir=args.workdir, user=args.user, tty=on_terminal, size=size
    ) as process:
        if on_terminal:
            with raw_mode(STDIN):
                return exit_code(await attach(process, stdin=STDIN, stdout=sys.stdout.buffer))
        async with anyio.create_task_group() as tasks:
            if args.interactive:
                tasks.start_soon(send_input, process, STDIN)
            else:
                await process.stdin.aclose()
            async with anyio.create_task_group() as output:
                output.start_soon(_copy, process.stdout, sys.stdout.buffer)
                output.start_soon(_copy, process.stderr, sys.stderr.buffer)
            tasks.cancel_scope.cancel()  # the command is done with its input
        return exit_code(await process.wait())


async def _copy(source: anyio.abc.ByteReceiveStream, target: BinaryIO) -> None:
    async for chunk in source:
        target.write(chunk)
        target.flush()


def say(message: str) -> None:
    print(f"asupermachine: {message}", file=sys.stderr, flush=True)


def parse_env(items: list[str]) -> dict[str, str]:
    """``-e KEY=VALUE`` words as a mapping; a later KEY wins. Exits on a word without ``=``."""
    env: dict[str, str] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals:
            raise SystemExit(f"asupermachine: -e {item}: give KEY=VALUE (a value may be empty: {item}=)")
        env[key] = value
    return env


async def stream_console_and_wait(vm: Machine) -> int:
    out = sys.stdout.buffer
    async for chunk in vm.console:
        out.write(chunk)
        out.flush()
    result = await vm.wait()
    if result.reason is ShutdownReason.EXIT and result.exit_code is not None:
        return result.exit_code
    print(f"asupermachine: guest ended by {result.reason.value}", file=sys.stderr)
    return 0 if result.reason is ShutdownReason.POWER_OFF else STATUS_ABNORMAL_END


def print_result(result: ExecResult) -> int:
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    return exit_code(result.status)


def exit_code(status: ExitStatus) -> int:
    if status.exit_code is not None:
        return status.exit_code
    return STATUS_ABNORMAL_END + (status.signal or 0)
