"""Dockerfile builds: asupermachine (each RUN in a microVM) against buildah bud (vfs, chroot isolation).

Both build the same Dockerfile from the same base (the built-in busybox image,
pushed to a local Debian docker-registry): ``--steps`` RUN steps that each
write a file, and a COPY. Each peer builds it with no cache, then again with
its cache (nothing changed). buildah runs each RUN in a chroot on the host; we
boot a microVM of the step's parent for each, so the gap is what a VM per step
costs.

    .venv/bin/python bench/build.py [--runs N] [--steps N]
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
from _stats import measured_under

from asupermachine import Image
from asupermachine.image.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.image.oci import running_registry  # noqa: E402


def dockerfile(base: str, steps: int) -> str:
    runs = "".join(f"RUN echo step {step} > /step-{step}\n" for step in range(steps))
    return f"FROM {base}\nCOPY payload.txt /payload.txt\n{runs}"


def ours(context: Path, work: Path, cached: bool) -> float:
    async def once() -> float:
        start = time.perf_counter()
        await Image.build(context, tag="bench/build:1", no_cache=not cached, store=Store(work / "store"),
                          output=io.StringIO())
        return time.perf_counter() - start

    return anyio.run(once)


def buildah(context: Path, work: Path, cached: bool) -> float:
    storage = ["--root", str(work / "storage"), "--runroot", str(work / "run"), "--storage-driver", "vfs"]
    cache = ["--layers"] if cached else ["--no-cache"]
    start = time.perf_counter()
    done = subprocess.run(["buildah", *storage, "bud", "--isolation", "chroot", "--tls-verify=false", *cache,
                           "-t", "bench-build:1", str(context)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"buildah bud failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="RUN steps in the Dockerfile")
    args = parser.parse_args()
    peers: dict[str, Callable[[Path, Path, bool], float]] = {"asupermachine": ours, "buildah bud": buildah}
    results: dict[tuple[str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch, running_registry(Path(scratch) / "registry") as registry:
        base = f"{registry}/bench/base:1"

        async def push() -> None:
            await (await Image.builtin()).push(base)

        anyio.run(push)
        context = Path(scratch) / "context"
        context.mkdir()
        (context / "payload.txt").write_text("payload\n")
        (context / "Dockerfile").write_text(dockerfile(base, args.steps))
        for name, build in peers.items():
            work = Path(scratch) / name.replace(" ", "-")
            work.mkdir()
            for _ in range(args.runs):
                results.setdefault((name, False), []).append(build(context, work, False))
                results.setdefault((name, True), []).append(build(context, work, True))
    print(measured_under())
    print(f"\nbuild of FROM busybox + COPY + {args.steps} RUN steps, {args.runs} runs, seconds")
    print(f"{'peer':<16} {'no cache median':>16} {'min':>8} {'cached median':>14} {'min':>8}")
    for name in peers:
        cold, warm = results[(name, False)], results[(name, True)]
        print(f"{name:<16} {statistics.median(cold):16.2f} {min(cold):8.2f} "
              f"{statistics.median(warm):14.2f} {min(warm):8.2f}")


if __name__ == "__main__":
    main()
