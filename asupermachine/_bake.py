"""Bake an image: boot it once, let it warm up, and keep a snapshot to restore from."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import anyio

from ._cache import cache_root, content_key, exclusive, file_sha256
from ._errors import GuestError
from ._core.agent.exec import ExecResult
from .guest import resolve_assets
from .image.image import Image
from ._machine import AGENT_DEADLINE, Machine
from ._core.vsock.host import VsockConnectionReset
from .snapshot.errors import SnapshotError
from .snapshot.snapshot import Snapshot

PORT_POLL_INTERVAL = 0.05
# A finished warm-up leaves the guest kernel work (process teardown): let it finish
# before the snapshot, or every restore redoes it. Microseconds on hardware KVM.
SETTLE_SECONDS = 30.0


def snapshot_cache() -> Path:
    return cache_root() / "snapshots"


async def bake(
    image: Image,
    *,
    warmup: Sequence[str] = (),
    wait_for_port: int | None = None,
    vcpus: int = 1,
    memory_mib: int = 256,
) -> Snapshot:
    """The snapshot of ``image`` booted and ready, from the cache or made now.

    ``warmup`` runs to completion (it must exit 0) before the snapshot, so work it
    does (imports, caches) is already done in every restored VM; ``wait_for_port``
    waits until something in the guest accepts vsock connections there. The cache
    key covers the image, the guest assets and these options.
    """
    assets = await anyio.to_thread.run_sync(resolve_assets)
    options = {"warmup": list(warmup), "port": wait_for_port, "vcpus": vcpus, "memory_mib": memory_mib}
    key = content_key(
        str(image.config_digest).encode(),
        (await anyio.to_thread.run_sync(file_sha256, assets.kernel)).encode(),
        (await anyio.to_thread.run_sync(file_sha256, assets.initramfs)).encode(),
        json.dumps(options, sort_keys=True).encode(),
    )
    path = snapshot_cache() / key
    held = exclusive(snapshot_cache() / f"{key}.lock")
    await anyio.to_thread.run_sync(held.__enter__)  # one baker per key, across processes
    try:
        if path.exists():
            try:
                return await anyio.to_thread.run_sync(Snapshot.load, path)
            except SnapshotError:
                await anyio.to_thread.run_sync(shutil.rmtree, path)  # stale or damaged: bake afresh
        async with Machine.start(image, vcpus=vcpus, memory_mib=memory_mib) as vm:
            if warmup:
                result = await vm.exec(warmup)
                if result.exit_code != 0:
                    raise GuestError(f"warm-up {list(warmup)} failed ({_status(result)}): {result.stderr[-500:]!r}")
            else:
                await vm.exec(["true"])  # the agent answers: the guest is ready
            if wait_for_port is not None:
                await _wait_for_port(vm, wait_for_port)
            return await vm.snapshot(path, idle_within=SETTLE_SECONDS)
    finally:
        held.__exit__(None, None, None)


def _status(result: ExecResult) -> str:
    return f"exit {result.exit_code}" if result.exit_code is not None else f"signal {result.signal}"


async def _wait_for_port(vm: Machine, port: int) -> None:
    """Until a guest process accepts vsock connections on ``port`` (bounded by the agent deadline)."""
    with anyio.fail_after(AGENT_DEADLINE):
        while True:
            try:
                stream = await vm.connect(port)
            except VsockConnectionReset:
                await anyio.sleep(PORT_POLL_INTERVAL)
                continue
            await stream.aclose()
            return
