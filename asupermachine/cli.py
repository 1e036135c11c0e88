"""The ``asupermachine`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import anyio

from ._errors import AsupermachineError
from .devices.shutdown_ports import ShutdownReason
from .machine import Machine

# Shell convention for "ended by something other than a normal exit".
STATUS_ABNORMAL_END = 128


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asupermachine", description="KVM microVMs from Python.")
    commands = parser.add_subparsers(dest="subcommand", required=True)
    boot = commands.add_parser(
        "boot", help="boot the project's guest, stream its console, exit with the command's status"
    )
    boot.add_argument("--kernel", help="a vmlinux to boot instead of the project's own")
    boot.add_argument("--initramfs", help="an initramfs instead of the project's own")
    boot.add_argument("--vcpus", type=int, default=1)
    boot.add_argument("--memory", type=int, default=256, metavar="MIB")
    boot.add_argument("--kernel-log", action="store_true", help="show the kernel's boot messages")
    boot.add_argument("--cmdline", default="", help="extra kernel command-line arguments")
    boot.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...] to run in the guest")
    run = commands.add_parser(
        "exec", help="boot the project's guest, run a command through its agent, print its output"
    )
    run.add_argument("--vcpus", type=int, default=1)
    run.add_argument("--memory", type=int, default=256, metavar="MIB")
    run.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("-w", "--workdir", default="", help="working directory in the guest")
    run.add_argument("-u", "--user", default="", help="user in the guest: name, uid, user:group or uid:gid")
    run.add_argument("--timeout", type=float, help="seconds before the command is killed")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    return parser


def _command(words: list[str]) -> list[str]:
    return words[1:] if words[:1] == ["--"] else words


async def _boot(args: argparse.Namespace) -> int:
    command = _command(args.command)
    async with Machine.boot(
        args.kernel,
        initramfs=args.initramfs,
        command=command,
        cmdline_extra=args.cmdline,
        vcpus=args.vcpus,
        memory_mib=args.memory,
        kernel_log=args.kernel_log,
    ) as vm:
        out = sys.stdout.buffer
        async for chunk in vm.console:
            out.write(chunk)
            out.flush()
        result = await vm.wait()
    if result.reason is ShutdownReason.EXIT and result.status is not None:
        return result.status
    print(f"asupermachine: guest ended by {result.reason.value}", file=sys.stderr)
    return 0 if result.reason is ShutdownReason.POWER_OFF else STATUS_ABNORMAL_END


async def _exec(args: argparse.Namespace) -> int:
    command = _command(args.command)
    if not command:
        raise SystemExit("asupermachine exec: give a command after --")
    env = dict(item.split("=", 1) for item in args.env if "=" in item)
    async with Machine.boot(vcpus=args.vcpus, memory_mib=args.memory) as vm:
        result = await vm.exec(command, env=env, cwd=args.workdir, user=args.user, timeout=args.timeout)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    if result.exit_code is not None:
        return result.exit_code
    return STATUS_ABNORMAL_END + (result.signal or 0)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return anyio.run(_boot if args.subcommand == "boot" else _exec, args)
    except AsupermachineError as error:
        print(f"asupermachine: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
