"""Bake an image on a runtime: boot it once, let it warm up, and keep a snapshot to restore from."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from ._cache import cache_root, content_key, exclusive, file_sha256
from ._core.kvm.host import this_host
from ._errors import SnapshotError, WarmupFailed
from ._network import Network
from ._volume import DEFAULT_VOLUME_SLOTS
from .guest import resolve_assets
from .image.image import Image
from .snapshot.snapshot import Snapshot

if TYPE_CHECKING:
    from ._runtime import Runtime

# A finished warm-up leaves the guest kernel work (process teardown): let it finish
# before the snapshot, or every restore redoes it. Microseconds on hardware KVM.
SETTLE_SECONDS = 30.0


def snapshot_cache() -> Path:
    return cache_root() / "snapshots"


async def cache_key(image: Image, options: dict[str, object]) -> str:
    """The key of ``image`` baked with ``options`` on this build's guest assets, this KVM flavour and CPU."""
    assets = await anyio.to_thread.run_sync(resolve_assets)
    return content_key(
        str(this_host()).encode(),  # hosts sharing a cache keep one snapshot each
        str(image.config_digest).encode(),
        (await anyio.to_thread.run_sync(file_sha256, assets.kernel)).encode(),
        (await anyio.to_thread.run_sync(file_sha256, assets.initramfs)).encode(),
        json.dumps(options, sort_keys=True).encode(),
    )


@dataclass(frozen=True)
class BakeOptions:
    """How an image is baked: what runs before the snapshot, and the VM's shape."""

    warmup: tuple[str, ...] = ()
    wait_for_port: int | None = None
    vcpus: int = 1
    memory_mib: int = 256
    network: Network | None = Network()
    """The network the image is started with; only its guest side (DNS, MTU) is in the snapshot."""
    volume_slots: int = DEFAULT_VOLUME_SLOTS

    def key(self) -> dict[str, object]:
        """The options as the cache key spells them."""
        guest = None if self.network is None else asdict(self.network.guest())
        return {
            "warmup": list(self.warmup), "port": self.wait_for_port, "vcpus": self.vcpus, "memory_mib": self.memory_mib,
            "network": guest, "volume_slots": self.volume_slots,
        }


async def cached(image: Image, options: BakeOptions) -> Snapshot | None:
    """The baked snapshot of ``image`` if the cache holds a sound one (without baking)."""
    path = snapshot_cache() / await cache_key(image, options.key())
    if not path.exists():
        return None
    try:
        return await anyio.to_thread.run_sync(Snapshot.load, path)
    except SnapshotError:
        return None


async def bake(runtime: Runtime, image: Image, options: BakeOptions) -> Snapshot:
    """The snapshot of ``image`` booted and ready, from the cache or made now (see :meth:`Runtime.bake`)."""
    key = await cache_key(image, options.key())
    path = snapshot_cache() / key
    held = exclusive(snapshot_cache() / f"{key}.lock")
    await anyio.to_thread.run_sync(held.__enter__)  # one baker per key, across processes
    try:
        if path.exists():
            try:
                return await anyio.to_thread.run_sync(Snapshot.load, path)
            except SnapshotError:
                await anyio.to_thread.run_sync(shutil.rmtree, path)  # stale or damaged: bake afresh
        network = False if options.network is None else options.network
        async with await runtime.start(
            image, vcpus=options.vcpus, memory_mib=options.memory_mib, network=network,
            volume_slots=options.volume_slots,
        ) as vm:
            if options.warmup:
                result = await vm.exec(options.warmup)
                if result.exit_code != 0:
                    raise WarmupFailed(
                        f"warm-up {list(options.warmup)} failed ({result.status}): {result.stderr[-500:]!r}"
                    )
            else:
                await vm.exec(["true"])  # the agent answers: the guest is ready
            if options.wait_for_port is not None:
                await vm.wait_for_port(options.wait_for_port)
            return await vm.snapshot(path, idle_within=SETTLE_SECONDS)
    finally:
        held.__exit__(None, None, None)
