"""``scripts/nested-kvm [--arch x86_64|arm64] [--memory MIB] [--vcpus N] -- COMMAND [ARG...]``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .arch import ARCHES, GIC_VERSIONS, is_native, with_gic
from .debian import DebianPackageError
from .root import HOST_ROOT, L1Root
from .run import L1_FAILED, Request, run
from .userland import VENV, UserlandError, prepare_userland

REPOSITORY = Path(__file__).resolve().parents[2]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/nested-kvm",
        description=(
            "Run COMMAND from the repository root inside an L1 VM (QEMU's TCG) whose /dev/kvm is the "
            "hardware-style KVM users have (kvm_amd; arm64: KVM with VHE), with this machine's root, virtualenv "
            "and environment (arm64: a root of its own, see --arch); print its output and exit with its status "
            "(124: timed out, 125: the L1 failed, 126: the L1 froze, a fault of QEMU's TCG: try again)."
        ),
    )
    parser.add_argument(
        "--arch", choices=sorted(ARCHES), default="x86_64",
        help=(
            "the L1's architecture (default x86_64). arm64 runs on a Debian arm64 root with a virtualenv of the "
            f"project's requirements at {VENV}, prepared once (a few minutes, not counted in --timeout) and "
            "cached, and the repository read-only under a tmpfs at its own path"
        ),
    )
    parser.add_argument(
        "--gic", type=int, choices=GIC_VERSIONS, default=3,
        help="an arm64 L1's GIC version (default 3); its KVM gives guests a vGIC of that version",
    )
    parser.add_argument("--memory", type=int, default=8192, metavar="MIB", help="the L1's memory (default 8192)")
    parser.add_argument("--vcpus", type=int, default=os.cpu_count() or 1, help="the L1's vCPUs (default: all cores)")
    parser.add_argument("--timeout", type=float, metavar="S", help="stop the L1 after S seconds")
    parser.add_argument("--console-log", type=Path, metavar="PATH", help="keep the L1 kernel's console there")
    parser.add_argument("command", nargs="+", metavar="COMMAND")
    args = parser.parse_args(argv)
    if args.gic != 3 and args.arch != "arm64":
        parser.error("--gic is for an arm64 L1 (--arch arm64)")
    return args


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through run(), which kills the L1's QEMU


def main(argv: list[str]) -> int:
    for terminating in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(terminating, _exit_on_signal)
    args = parse(argv)
    request = Request(
        argv=args.command, cwd=REPOSITORY, env=dict(os.environ), memory_mib=args.memory, vcpus=args.vcpus,
        timeout=args.timeout, console_log=args.console_log,
    )
    arch = ARCHES[args.arch]
    if args.gic != 3:
        arch = with_gic(arch, args.gic)
    if is_native(arch):
        return run(arch, request, HOST_ROOT)
    try:
        userland = prepare_userland(arch, REPOSITORY)
    except (UserlandError, DebianPackageError) as error:
        print(f"nested-kvm: {error}", file=sys.stderr)
        return L1_FAILED
    return run(arch, request, L1Root(userland, repository=REPOSITORY))


sys.exit(main(sys.argv[1:]))
