"""Cancelling a boot at any point tears the VM down and leaves nothing behind."""

from __future__ import annotations

import anyio
import pytest

from asupermachine import Machine
from asupermachine.guest import READY_MARKER, resolve_assets
from tests.support.resources import assert_nothing_left, held

pytestmark = pytest.mark.anyio
TEARDOWN_DEADLINE = 30


@pytest.fixture(scope="module", autouse=True)
def assets_built() -> None:
    resolve_assets()  # so the cancellation points below fall in the boot, not a kernel build


@pytest.mark.parametrize("delay", [0, 0.01, 0.3, 3.0])
async def test_cancel_after_a_delay_leaves_nothing(delay: float) -> None:
    before = held()
    with anyio.fail_after(TEARDOWN_DEADLINE + delay):
        with anyio.move_on_after(delay) as scope:
            async with Machine.boot(command=["sleep", "1000"]) as vm:
                await vm.wait()
    assert scope.cancelled_caught
    assert_nothing_left(before)


async def test_cancel_once_the_guest_is_running_userspace(anyio_backend: str) -> None:
    before = held()
    with anyio.fail_after(300):
        async with anyio.create_task_group() as tasks:
            async with Machine.boot(command=["sleep", "1000"]) as vm:
                async for line in vm.console.lines():
                    if line.startswith(READY_MARKER):
                        tasks.cancel_scope.cancel()
    assert vm.exit is not None and vm.exit.reason.value == "host"
    assert_nothing_left(before)


async def test_an_error_in_the_body_stops_the_vm_and_propagates_unwrapped() -> None:
    before = held()
    with pytest.raises(KeyError, match="from the body"):
        async with Machine.boot(command=["sleep", "1000"]):
            await anyio.sleep(0.5)
            raise KeyError("from the body")
    assert_nothing_left(before)
