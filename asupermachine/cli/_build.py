"""``asupermachine build``: an image from a Dockerfile, as ``docker build`` makes one."""

from __future__ import annotations

import argparse
import os

from ..image.image import Image


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    build = commands.add_parser("build", help="build an image from a Dockerfile, each RUN in a microVM")
    build.add_argument("context", help="the build context: the directory COPY and ADD read")
    build.add_argument("-t", "--tag", help="name the image (e.g. app:1, registry:5000/app:1)")
    build.add_argument("-f", "--file", help="the Dockerfile (default: CONTEXT/Dockerfile)")
    build.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE", dest="build_args")
    build.add_argument("--target", help="build this stage (default: the last)")
    build.add_argument("--no-cache", action="store_true", help="run every step, reusing nothing from earlier builds")
    build.add_argument("--network", choices=["default", "none"], default="default", help="none: no RUN has a network")
    build.add_argument("--memory", type=int, default=1024, metavar="MIB", help="each RUN's VM's memory")
    push = commands.add_parser("push", help="send a stored image to a registry")
    push.add_argument("image", help="the image's name in the local store (as built, pulled or loaded)")
    push.add_argument("reference", nargs="?", help="where to (default: the image's own name)")
    push.add_argument("--insecure", action="store_true", help="plain HTTP to a non-loopback registry")


async def build(args: argparse.Namespace) -> int:
    build_args = {}
    for word in args.build_args:
        name, has_value, value = word.partition("=")
        if not name:
            raise SystemExit(f"asupermachine build: --build-arg {word}: give KEY=VALUE")
        build_args[name] = value if has_value else _environment_value(name)
    image = await Image.build(
        args.context, dockerfile=args.file, tag=args.tag, build_args=build_args, target=args.target,
        no_cache=args.no_cache, network=args.network == "default", memory_mib=args.memory,
    )
    print(image.name if args.tag else image.manifest_digest)
    return 0


async def push(args: argparse.Namespace) -> int:
    image = Image.local(args.image)
    if image is None:
        raise SystemExit(f"asupermachine push: no image {args.image!r} in the local store")
    digest = await image.push(args.reference or image.name, insecure=args.insecure)
    print(f"{args.reference or image.name}@{digest}")
    return 0


def _environment_value(name: str) -> str:
    """``--build-arg NAME`` alone takes NAME's value from this environment, as docker's does."""
    return os.environ.get(name, "")
