"""The CLI's commands on machines by id: ``ps``, ``pause``, ``resume``, ``rm`` and ``cp``, and how it holds one.

The CLI has no daemon: a machine runs in the process that started or resumed it,
which answers ``pause`` from other terminals (see :mod:`._control`). Between
commands a machine lives paused, so ``resume ID -- CMD`` pauses it again afterwards.
"""

from __future__ import annotations

import argparse

import anyio

from .. import _paused
from .._errors import MachineClosed
from .._machine import Machine
from .._outcome import CloseReason
from .._runtime import default_runtime
from ._control import PAUSE, ask, controlled, running_ids
from ._streams import STATUS_ABNORMAL_END, say, stream_process


async def hold(vm: Machine, argv: list[str], args: argparse.Namespace, *, pause_after: bool) -> int:
    """Run ``argv`` on ``vm`` through its agent and end it, or pause it with ``pause_after``; the exit code.

    Meanwhile ``asupermachine pause ID`` from elsewhere pauses it (so do SIGINT and
    SIGTERM with ``pause_after``), and the command's status is then 128. Without
    ``argv`` the machine runs until then, and that is a success.
    """
    async with vm, controlled(vm, pause_on_signal=pause_after) as control:
        if not argv:
            say(f"machine {vm.id} runs; 'asupermachine pause {vm.id}'{' (or Ctrl-C)' if pause_after else ''} pauses it")
        status = STATUS_ABNORMAL_END if argv else 0
        paused = False
        with control.scope:
            try:
                status = await stream_process(vm, argv, args) if argv else await _forever()
            except MachineClosed as closed:
                if closed.reason is not CloseReason.PAUSED:
                    raise
                paused = True  # from outside, which may still be finishing
        if pause_after and not (paused or control.paused):
            await vm.pause()
        if paused or control.paused or pause_after:
            say(f"machine {vm.id} is paused: 'asupermachine resume {vm.id} -- CMD' runs CMD in it")
        return status


async def _forever() -> int:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def resume(args: argparse.Namespace) -> int:
    if not args.words or args.words[0] == "--":
        raise SystemExit("asupermachine resume: give the id of a paused machine ('asupermachine ps' lists them)")
    machine_id, argv = args.words[0], args.words[1:]
    argv = argv[1:] if argv[:1] == ["--"] else argv
    vm = await (await default_runtime()).resume(machine_id)
    return await hold(vm, argv, args, pause_after=not args.rm)


async def pause(args: argparse.Namespace) -> int:
    status = 0
    for machine_id in args.ids:
        answer = await ask(machine_id, PAUSE)
        if answer == "paused":
            print(machine_id)
            continue
        status = 1
        if answer is not None:
            say(f"pause {machine_id}: {answer.removeprefix('error ')}")
        elif _paused.exists(machine_id):
            say(f"pause {machine_id}: it is paused already")
        else:
            say(f"pause {machine_id}: no machine runs with that id (a library's machines pause with vm.pause())")
    return status


async def ps(args: argparse.Namespace) -> int:
    running = await running_ids()
    paused = await anyio.to_thread.run_sync(_paused.listed)
    print(f"{'ID':<10} {'STATE':<8} {'PAUSED AT':<20} {'MEMORY':>7} {'DISK':>9}  VOLUMES")
    for machine_id in running:
        print(f"{machine_id:<10} {'running':<8}")
    for machine in paused:
        if machine.id in running:
            continue
        state = "running" if machine.is_resumed() else "paused"
        when = machine.paused_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        volumes = ", ".join(f"{volume.path}:{target}" for target, volume in machine.volumes.items())
        usage = await anyio.to_thread.run_sync(machine.disk_usage)
        print(f"{machine.id:<10} {state:<8} {when:<20} {machine.memory_mib:>5}Mi {usage / 2**20:>7.1f}Mi  {volumes}")
    return 0


async def remove(args: argparse.Namespace) -> int:
    runtime = await default_runtime()
    for machine_id in args.ids:
        await runtime.remove_paused(machine_id)
        print(machine_id)
    return 0


async def copy(args: argparse.Namespace) -> int:
    """``cp SRC DST``, one of them ``ID:PATH``: a paused machine is resumed for the copy and paused again."""
    source, target = args.source, args.target
    guest_source, guest_target = _in_guest(source), _in_guest(target)
    if (guest_source is None) == (guest_target is None):
        raise SystemExit("asupermachine cp: give one side as ID:PATH (a machine's) and the other as a host path")
    machine_id, _ = guest_source or guest_target or ("", "")
    vm = await (await default_runtime()).resume(machine_id)
    async with vm:
        if guest_source is not None:
            await vm.download(guest_source[1], target)
        elif guest_target is not None:
            await vm.upload(source, guest_target[1])
        await vm.pause()
    return 0


def _in_guest(word: str) -> tuple[str, str] | None:
    """``ID:PATH`` as (id, guest path), if ``word`` names a paused machine's path; else None (a host path)."""
    machine_id, colon, path = word.partition(":")
    if colon and path.startswith("/") and "/" not in machine_id and machine_id:
        return machine_id, path
    return None
