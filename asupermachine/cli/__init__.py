"""The ``asupermachine`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from .._bake import BakeOptions, cached
from .._errors import AsupermachineError
from .._machine import Machine
from .._network import Network, NetworkOption, chosen_network
from .._volume import DEFAULT_VOLUME_SLOTS, Volume
from .._volume_store import DEFAULT_SIZE_MIB, create_named, list_named, named_path, remove_named
from ..image.digest import Digest
from ..image.image import Image
from ..image.manifest import HOST_PLATFORM
from ..image.store import Store
from . import _build
from . import _machines as machines
from ._machines import hold
from ._streams import parse_env, print_result, say, stream_console_and_wait, stream_process


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
    run.add_argument("--cold", action="store_true", help="boot afresh instead of restoring the baked snapshot")
    _terminal_arguments(run)
    _network_arguments(run)
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    pull = commands.add_parser("pull", help="pull an image from a registry into the local store")
    pull.add_argument("reference", help="e.g. busybox, registry:5000/name:tag, name@sha256:...")
    pull.add_argument("--platform", default=str(HOST_PLATFORM))
    pull.add_argument("--insecure", action="store_true", help="plain HTTP to a non-loopback registry")
    start = commands.add_parser(
        "run", help="boot an image (default: the built-in busybox) and run its entrypoint/cmd or CMD"
    )
    start.add_argument(
        "--snapshot", metavar="DIR", help="restore this snapshot (from 'bake') and run CMD in it through the agent"
    )
    start.add_argument("--vcpus", type=int, default=1)
    start.add_argument("--memory", type=int, default=256, metavar="MIB")
    start.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    start.add_argument("-w", "--workdir", default="", help="working directory in the guest")
    start.add_argument("-u", "--user", default="", help="user in the guest: name, uid, user:group or uid:gid")
    start.add_argument("--insecure", action="store_true", help="plain HTTP to a non-loopback registry")
    start.add_argument(
        "--cold", action="store_true",
        help="boot afresh (console shown) instead of restoring the image's baked snapshot",
    )
    start.add_argument(
        "-v", "--volume", action="append", default=[], dest="volumes", metavar="SOURCE:TARGET[:ro]",
        help="mount a volume (a file, or a name from 'volume create') at TARGET",
    )
    start.add_argument(
        "--pause", action="store_true",
        help="when the command ends, pause the machine instead of ending it ('resume ID' brings it back)",
    )
    _terminal_arguments(start)
    _network_arguments(start)
    start.add_argument(
        "words", nargs=argparse.REMAINDER, metavar="[IMAGE] [-- CMD [ARG...]]",
        help="an image reference (default: the built-in busybox; pulled if not stored), "
        "then a command instead of its cmd",
    )
    bake = commands.add_parser("bake", help="boot an image once and keep a snapshot of it ready; prints its path")
    bake.add_argument("image", nargs="?", help="an image reference (default: the built-in busybox)")
    bake.add_argument("--vcpus", type=int, default=1)
    bake.add_argument("--memory", type=int, default=256, metavar="MIB")
    bake.add_argument("--warmup", metavar="SHELL", help="a shell command to run (successfully) before the snapshot")
    bake.add_argument("--wait-port", type=int, metavar="PORT", help="wait until the guest listens on this vsock port")
    bake.add_argument("--insecure", action="store_true", help="plain HTTP to a non-loopback registry")
    load = commands.add_parser("load", help="store the images of an OCI layout, OCI archive or docker archive")
    load.add_argument("path", help="an OCI layout directory, or a tar made by docker save, skopeo or buildah")
    load.add_argument("--platform", default=str(HOST_PLATFORM))
    volume = commands.add_parser("volume", help="manage named volumes").add_subparsers(dest="action", required=True)
    create = volume.add_parser("create", help="make a named volume (sparse ext4)")
    create.add_argument("name")
    create.add_argument("--size", type=int, default=DEFAULT_SIZE_MIB, metavar="MIB")
    volume.add_parser("ls", help="list the named volumes")
    remove = volume.add_parser("rm", help="remove named volumes no machine has attached")
    remove.add_argument("names", nargs="+", metavar="name")
    _machine_parsers(commands)
    _build.add_parser(commands)
    images = commands.add_parser("images", help="list the images in the local store")
    images.add_argument("--prune", action="store_true", help="remove content no image name refers to")
    return parser


def _machine_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser("ps", help="list the machines running in CLI processes and the paused ones")
    pause = commands.add_parser("pause", help="pause machines a CLI process runs ('run', 'resume'), by id")
    pause.add_argument("ids", nargs="+", metavar="ID")
    resume = commands.add_parser(
        "resume", help="resume a paused machine, run CMD in it (or wait for 'pause ID' or Ctrl-C), pause it again"
    )
    resume.add_argument("--rm", action="store_true", help="end the machine at the end instead of pausing it")
    resume.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    resume.add_argument("-w", "--workdir", default="", help="working directory in the guest")
    resume.add_argument("-u", "--user", default="", help="user in the guest: name, uid, user:group or uid:gid")
    _terminal_arguments(resume)
    resume.add_argument("words", nargs=argparse.REMAINDER, metavar="ID [-- CMD [ARG...]]")
    remove = commands.add_parser("rm", help="remove paused machines (their volumes stay)")
    remove.add_argument("ids", nargs="+", metavar="ID")
    copy = commands.add_parser(
        "cp", help="copy a file or tree between the host and a paused machine, as docker cp: ID:/PATH on one side"
    )
    copy.add_argument("source")
    copy.add_argument("target")


def _terminal_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--interactive", action="store_true", help="keep stdin open and send it to the command")
    parser.add_argument(
        "-t", "--tty", action="store_true",
        help="run the command on a terminal in the guest, attached to this one (-it: an interactive shell)",
    )


def _network_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p", "--publish", action="append", default=[], metavar="[ADDR:]HOST_PORT:GUEST_PORT",
        help="publish a host TCP port (on 127.0.0.1 unless ADDR) to a guest port, as docker run -p",
    )
    parser.add_argument(
        "--network", choices=["default", "none"], default="default",
        help="none: no network interface at all (default: egress through passt)",
    )
    parser.add_argument(
        "--allow-host-loopback", action="store_true", help="let the guest reach the host's 127.0.0.1 at host.internal"
    )
    parser.add_argument(
        "--allow-out", action="append", default=[], metavar="CIDR|ADDR|NAME",
        help="a destination the guest may connect to whatever --deny-out says (repeatable; *.example.org: names below)",
    )
    parser.add_argument(
        "--deny-out", action="append", default=[], metavar="CIDR|ADDR|NAME",
        help="a destination the guest may not connect to (repeatable; 0.0.0.0/0: all but --allow-out)",
    )


def network_option(args: argparse.Namespace) -> NetworkOption:
    """The ``network=`` that ``-p``, ``--network``, ``--allow-host-loopback`` and the egress flags ask for."""
    if args.network == "none":
        if args.publish or args.allow_host_loopback or args.allow_out or args.deny_out:
            raise SystemExit("asupermachine: --network none has no ports to publish, host to reach or egress to limit")
        return False
    publish: dict[str | int, int] = {}
    for spec in args.publish:
        host, _, guest = spec.rpartition(":")
        try:
            publish[host] = int(guest)
        except ValueError:
            raise SystemExit(f"asupermachine: -p {spec}: give [ADDR:]HOST_PORT:GUEST_PORT, e.g. 8080:80") from None
    try:
        return Network(
            publish=publish, allow_host_loopback=args.allow_host_loopback,
            allow_out=args.allow_out, deny_out=args.deny_out,
        )
    except ValueError as error:
        raise SystemExit(f"asupermachine: {error}") from None


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
        return await stream_console_and_wait(vm)


def _show_progress(done: int, total: int, blobs_done: int, blobs_total: int) -> None:
    line = f"\r{done / 2**20:8.1f} / {total / 2**20:.1f} MiB, {blobs_done} / {blobs_total} blobs"
    print(line, end="", file=sys.stderr, flush=True)


async def _pull(args: argparse.Namespace) -> int:
    progress = _show_progress if sys.stderr.isatty() else None
    image = await Image.pull(args.reference, platform=args.platform, insecure=args.insecure, progress=progress)
    if progress:
        print(file=sys.stderr)
    print(f"{image.name} {image.manifest_digest} ({len(image.manifest.layers)} layers)")
    return 0


def run_target(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """``run``'s image reference (None: the built-in one) and command override, from its words.

    ``run IMAGE CMD...``, ``run IMAGE -- CMD...`` and ``run -- CMD...`` (the built-in
    image); with ``--snapshot`` every word is the command (the snapshot has its image).
    """
    words: list[str] = args.words
    if args.snapshot or words[:1] == ["--"]:
        return None, _command(words)
    if not words:
        return None, []
    return words[0], _command(words[1:])


def volume_option(spec: str) -> tuple[str, Volume]:
    """A ``-v SOURCE:TARGET[:ro|:rw]`` word as (target, volume); a SOURCE without ``/`` names a named volume."""
    source, _, rest = spec.partition(":")
    target, _, mode = rest.partition(":")
    if not source or not target.startswith("/") or mode not in ("", "ro", "rw"):
        raise SystemExit(f"asupermachine: -v {spec}: give SOURCE:/TARGET, or SOURCE:/TARGET:ro for read-only")
    path = Path(source) if "/" in source or source.startswith(".") else named_path(source)
    return target, Volume(path.absolute(), read_only=mode == "ro")


async def _run(args: argparse.Namespace) -> int:
    reference, command = run_target(args)
    volumes = dict(map(volume_option, args.volumes))
    if args.snapshot:
        if not command:
            raise SystemExit("asupermachine run --snapshot DIR: give a command after --")
        vm = await Machine.create(args.snapshot, network=network_option(args), volumes=volumes)
        return await hold(vm, command, args, pause_after=args.pause)
    image = await Image.resolve(reference, insecure=args.insecure)
    if args.cold and (args.tty or args.interactive or args.pause or volumes):
        raise SystemExit(
            "asupermachine run: --cold runs the command on the console as the machine's own; "
            "-i, -t, --pause and -v run it through the agent"
        )
    if args.cold:
        say("booting cold")
        async with Machine.start(
            image, command=command or None, run=True, env=parse_env(args.env), workdir=args.workdir, user=args.user,
            vcpus=args.vcpus, memory_mib=args.memory, network=network_option(args),
        ) as vm:
            return await stream_console_and_wait(vm)
    argv = [*image.config.entrypoint, *command] if command else list(image.config.args)
    if not argv:
        raise SystemExit(f"asupermachine run: image {image.name} has no entrypoint or cmd; give a command")
    if len(volumes) > DEFAULT_VOLUME_SLOTS:
        say(f"booting: a baked snapshot has room for {DEFAULT_VOLUME_SLOTS} volumes, init mounts more at boot")
        vm = await Machine.create(
            image, vcpus=args.vcpus, memory_mib=args.memory, network=network_option(args), volumes=volumes
        )
    else:
        vm = await _restore_baked(image, args, volumes)
    return await hold(vm, argv, args, pause_after=args.pause)


async def _restore_baked(image: Image, args: argparse.Namespace, volumes: dict[str, Volume] | None = None) -> Machine:
    """A machine restored from ``image``'s baked snapshot (baked first when the cache has none), with ``volumes``."""
    network = network_option(args)
    options = BakeOptions(vcpus=args.vcpus, memory_mib=args.memory, network=chosen_network(network))
    snapshot = await cached(image, options)
    if snapshot is None:
        say(f"baking {image.name} once (the next runs restore it; --cold boots afresh)")
        snapshot = await image.bake(vcpus=args.vcpus, memory_mib=args.memory, network=network)
    say(f"restoring the baked snapshot {snapshot.path}")
    return await Machine.create(snapshot, network=network, volumes=volumes or {})


async def _load(args: argparse.Namespace) -> int:
    for image in await Image.load(args.path, platform=args.platform):
        named = not Digest.is_digest(image.name)
        print(f"Loaded image: {image.name}" if named else f"Loaded image ID: {image.name}")
    return 0


async def _images(args: argparse.Namespace) -> int:
    store = await anyio.to_thread.run_sync(Store)
    if args.prune:
        freed = await anyio.to_thread.run_sync(store.prune)
        print(f"freed {freed / 2**20:.1f} MiB")
    for record in await anyio.to_thread.run_sync(store.records):
        print(f"{record.name}  {record.manifest}")
    return 0


async def _volume(args: argparse.Namespace) -> int:
    try:
        if args.action == "create":
            await create_named(args.name, args.size)
            print(args.name)
        elif args.action == "ls":
            print(f"{'NAME':<24} {'SIZE':>10} {'USED':>10}")
            for volume in await anyio.to_thread.run_sync(list_named):
                print(f"{volume.name:<24} {volume.size / 2**20:>8.0f}Mi {volume.used / 2**20:>8.1f}Mi")
        else:
            for name in args.names:
                await anyio.to_thread.run_sync(remove_named, name)
                print(name)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        raise SystemExit(f"asupermachine volume {args.action}: {error}") from None
    return 0


async def _exec(args: argparse.Namespace) -> int:
    command = _command(args.command)
    if not command:
        raise SystemExit("asupermachine exec: give a command after --")
    env = parse_env(args.env)
    if args.cold:
        say("booting cold")
        vm = await Machine.create(None, vcpus=args.vcpus, memory_mib=args.memory, network=network_option(args))
    else:
        vm = await _restore_baked(await Image.builtin(), args)
    async with vm:
        if args.interactive or args.tty:
            return await stream_process(vm, command, args)
        return print_result(
            await vm.exec(command, env=env, workdir=args.workdir, user=args.user, timeout=args.timeout)
        )


async def _bake(args: argparse.Namespace) -> int:
    image = await Image.resolve(args.image, insecure=args.insecure)
    snapshot = await image.bake(
        warmup=["sh", "-c", args.warmup] if args.warmup else (),
        wait_for_port=args.wait_port,
        vcpus=args.vcpus,
        memory_mib=args.memory,
    )
    print(snapshot.path)
    return 0


SUBCOMMANDS = {
    "boot": _boot, "exec": _exec, "pull": _pull, "run": _run, "bake": _bake, "load": _load, "images": _images,
    "volume": _volume, "ps": machines.ps, "pause": machines.pause, "resume": machines.resume, "rm": machines.remove,
    "cp": machines.copy, "build": _build.build, "push": _build.push,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return anyio.run(SUBCOMMANDS[args.subcommand], args)
    except AsupermachineError as error:
        print(f"asupermachine: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
