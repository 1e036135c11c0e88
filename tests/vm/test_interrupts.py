"""Interrupts on /dev/kvm: one lost on its way to the guest is raised again, and the guest takes it."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asupermachine import Machine, Snapshot
from asupermachine._core.microvm import block_device, block_id
from asupermachine._core.running import RunningVm
from asupermachine._core.virtio.blk import Disk
from tests.support.exec_output import shell

pytestmark = pytest.mark.anyio


async def test_an_interrupt_lost_on_its_way_is_raised_again_and_the_guest_takes_it(
    baked: Snapshot, tmp_path: Path
) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    with anyio.fail_after(600):
        async with Machine.restore(baked) as vm:
            assert isinstance(vm._backend, RunningVm)
            microvm = vm._backend.microvm
            drive = microvm.devices[block_id(len(microvm.recipe.disks))]  # the first empty one
            transport = drive.transport
            raise_interrupt = transport._interrupt
            transport._interrupt = lambda: None  # the config-change interrupt is lost on its way
            try:
                index = await anyio.to_thread.run_sync(microvm.fill_spare_drive, Disk(image), vm.id)
            finally:
                transport._interrupt = raise_interrupt
            # Nothing else interrupts on an empty drive's line: only the repeat tells the guest.
            name = block_device(index).removeprefix("/dev/")
            await shell(vm, f"until [ $(cat /sys/class/block/{name}/size) -gt 0 ]; do sleep 0.1; done")
            assert drive.raised_again >= 1
