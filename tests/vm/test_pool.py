"""Pool: VMs restored from one snapshot kept warm, handed out, reset on release, and all ended on exit."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from asupermachine import Machine, Pool, Snapshot
from tests.support.exec_output import stdout_of
from tests.support.resources import assert_nothing_left, held

pytestmark = pytest.mark.anyio


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await anyio.sleep(0.05)


async def marker(vm: Machine) -> bytes:
    return stdout_of(await vm.exec(["sh", "-c", "cat /root/marker 2>/dev/null; echo ."]))


async def test_pool_keeps_vms_warm_and_resets_them_on_release(baked: Snapshot) -> None:
    before = held()
    with anyio.fail_after(600):
        async with Pool(baked, min=2, max=3) as pool:
            await until(lambda: pool.stats().idle == 2)
            async with pool.acquire() as vm:
                assert pool.stats().in_use == 1
                await vm.write_file("/root/marker", b"dirty ")
                assert await marker(vm) == b"dirty .\n"
                await until(lambda: pool.stats().idle == 2)  # a replacement was restored meanwhile
            async with pool.acquire() as vm:
                assert await marker(vm) == b".\n"  # a fresh restore, not the VM written to
            stats = pool.stats()
            assert (stats.in_use, stats.recycled) == (0, 2)
    assert_nothing_left(before)


async def test_pool_without_reset_hands_back_the_same_vm(baked: Snapshot) -> None:
    with anyio.fail_after(600):
        async with Pool(baked, min=1, max=1, restore_on_release=False) as pool:
            async with pool.acquire() as vm:
                await vm.write_file("/root/marker", b"kept ")
            async with pool.acquire() as again:
                assert again is vm
                assert await marker(again) == b"kept .\n"
            assert pool.stats().recycled == 0


async def test_cancelled_acquire_leaves_nothing_behind(baked: Snapshot) -> None:
    before = held()
    with anyio.fail_after(600):
        async with Pool(baked, min=0, max=1) as pool:
            async with pool.acquire() as vm:
                with anyio.move_on_after(0.5) as waiting:
                    async with pool.acquire():
                        pytest.fail("a second VM beyond max=1")
                assert waiting.cancelled_caught
                assert (await vm.exec(["true"])).exit_code == 0
            with anyio.CancelScope() as scope:
                scope.cancel()  # cancelled before a restore could finish
                async with pool.acquire():
                    pytest.fail("acquired in a cancelled scope")
            assert pool.stats().in_use == 0
    assert_nothing_left(before)
