"""Pull + unpack + root disk of a Debian-with-python image: asupermachine vs skopeo + umoci + mkfs.erofs.

The image is built once by the benchmark (debootstrap bookworm minbase with
python3-minimal, one gzip layer), pushed to a local Debian docker-registry, then
each peer turns the registry's image into an erofs root disk, cold (empty
store) and warm (everything fetched before).

    .venv/bin/python bench/pull.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from asupermachine import Image
from asupermachine._cache import build_once, cache_root
from asupermachine.image.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.image.oci import ImageSpec, running_registry, skopeo_copy, write_layout  # noqa: E402

SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
TAG = "1"


def debian_python_layout() -> Path:
    """The benchmark image as an OCI layout, built once (debootstrap needs root and the mirror)."""
    index = cache_root() / "bench" / f"debian-{SUITE}-python" / "index.json"

    def build(staging: Path) -> None:
        rootfs = staging.parent / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "--include=python3-minimal", SUITE, str(rootfs), MIRROR],
                       check=True, capture_output=True)
        layer = subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-c", "."],
                               check=True, capture_output=True).stdout
        config = {"Cmd": ["python3"], "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]}
        write_layout(staging, TAG, ImageSpec([layer], config))

    return build_once(index, build).parent


def ours(reference: str, work: Path) -> float:
    async def once() -> float:
        start = time.perf_counter()
        image = await Image.pull(reference, store=Store(work / "store"))
        await image.root_disk()
        return time.perf_counter() - start

    return anyio.run(once)


def peer(reference: str, work: Path) -> float:
    start = time.perf_counter()
    layout, bundle = work / "oci", work / f"bundle-{time.monotonic_ns()}"
    skopeo_copy(f"docker://{reference}", f"oci:{layout}:{TAG}", "--src-tls-verify=false")
    subprocess.run(["umoci", "--log", "error", "unpack", "--image", f"{layout}:{TAG}", str(bundle)], check=True)
    subprocess.run(["mkfs.erofs", "--quiet", str(work / "root.erofs"), str(bundle / "rootfs")], check=True)
    elapsed = time.perf_counter() - start
    shutil.rmtree(bundle)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    layout = debian_python_layout()
    peers: dict[str, Callable[[str, Path], float]] = {
        "asupermachine": ours, "skopeo+umoci+mkfs.erofs": peer,
    }
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch, running_registry(Path(scratch) / "registry") as registry:
        reference = f"{registry}/bench/debian-python:{TAG}"
        skopeo_copy(f"oci:{layout}:{TAG}", f"docker://{reference}", "--dest-tls-verify=false")
        for run in range(args.runs):
            for name, pull in peers.items():
                work = Path(scratch) / f"{name}-{run}"
                work.mkdir()
                results.setdefault((name, "cold"), []).append(pull(reference, work))
                results.setdefault((name, "warm"), []).append(pull(reference, work))
    size = sum(p.stat().st_size for p in (layout / "blobs").rglob("*") if p.is_file()) / 2**20
    print(f"\npull + unpack + erofs root disk, Debian {SUITE} + python3 ({size:.0f} MiB compressed), "
          f"{args.runs} runs, seconds")
    print(f"{'peer':<26} {'cold median':>12} {'cold min':>9} {'warm median':>12} {'warm min':>9}")
    for name in peers:
        cold, warm = results[(name, "cold")], results[(name, "warm")]
        print(f"{name:<26} {statistics.median(cold):12.2f} {min(cold):9.2f} "
              f"{statistics.median(warm):12.2f} {min(warm):9.2f}")


if __name__ == "__main__":
    main()
