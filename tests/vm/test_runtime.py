"""Runtime: machines that outlive the task that made them, closed by anyone, by time, or with the runtime.

Every machine here is restored from the baked built-in image (a second or two
under software KVM), except the code "kernels" that fail at once and one boot
whose kernel panics.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asupermachine import (
    CapacityExceeded,
    GuestError,
    GuestExit,
    GuestStopped,
    Machine,
    MachineClosed,
    Runtime,
    ShutdownReason,
    Snapshot,
)
from asupermachine._core.arch.x86_64.cpuid import CpuModel, detect_cpu_model
from tests.support.elf_images import code_kernel
from tests.support.exec_output import stdout_of
from tests.support.resources import assert_nothing_left, held

pytestmark = pytest.mark.anyio
UD2 = b"\x0f\x0b"
FWAIT = b"\x9b"
DEADLINE = 300


async def until(condition: object, *, poll: float = 0.05) -> None:
    assert callable(condition)
    while not condition():
        await anyio.sleep(poll)


async def test_a_machine_made_in_one_task_is_used_and_closed_in_others(baked: Snapshot) -> None:
    before = held()
    made: list[Machine] = []
    with anyio.fail_after(DEADLINE):
        async with Runtime() as rt:

            async def make() -> None:
                made.append(await rt.restore(baked))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(make)
            (vm,) = made  # the task that made it has ended; the machine has not
            assert rt.machines() == [vm] and rt.get(vm.id) is vm

            outputs: list[bytes] = []

            async def use(word: str) -> None:
                outputs.append(stdout_of(await vm.exec(["echo", word])))

            async with anyio.create_task_group() as tasks:
                for word in ("one", "two"):
                    tasks.start_soon(use, word)
            assert sorted(outputs) == [b"one\n", b"two\n"]

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(vm.close)
            await vm.close()  # idempotent
            assert vm.closed and vm.close_reason == "closed" and rt.machines() == []
            with pytest.raises(MachineClosed) as caught:
                await vm.exec(["true"])
            assert caught.value.machine_id == vm.id and caught.value.reason == "closed"
            with pytest.raises(KeyError):
                rt.get(vm.id)
    assert_nothing_left(before)


async def test_each_machine_has_a_short_unique_id_that_is_its_hostname(baked: Snapshot) -> None:
    with anyio.fail_after(DEADLINE):
        async with Runtime() as rt:
            first, second = await rt.restore(baked), await rt.restore(baked)
            assert first.id != second.id and len(first.id) == 8
            for vm in (first, second):
                assert stdout_of(await vm.exec(["hostname"])) == vm.id.encode() + b"\n"


async def test_leaving_the_runtime_closes_every_machine_it_holds(baked: Snapshot) -> None:
    before = held()
    with anyio.fail_after(DEADLINE):
        async with Runtime() as rt:
            machines = [await rt.restore(baked) for _ in range(2)]
            sleeper = await machines[0].spawn(["sleep", "1000"])
        assert all(vm.closed and vm.close_reason == "runtime" for vm in machines)
        with pytest.raises(MachineClosed, match="closed with its runtime"):
            await sleeper.wait()
        with pytest.raises(RuntimeError, match="not running"):
            await rt.restore(baked)
    assert_nothing_left(before)


async def test_a_call_in_flight_when_the_machine_closes_raises_machine_closed(baked: Snapshot) -> None:
    with anyio.fail_after(DEADLINE):
        async with Runtime() as rt:
            vm = await rt.restore(baked)
            errors: list[BaseException] = []

            async def long_exec() -> None:
                try:
                    await vm.exec(["sleep", "1000"])
                except MachineClosed as error:
                    errors.append(error)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(long_exec)
                process = await vm.spawn(["true"])  # the agent is up, so the sleep is running soon
                await process.wait()
                await vm.close()
            assert len(errors) == 1


async def test_a_failing_guest_leaves_the_runtime_and_other_machines_serving(
    baked: Snapshot, tmp_path: Path
) -> None:
    before = held()
    triple_fault, unemulated = tmp_path / "triple-fault", tmp_path / "fwait"
    triple_fault.write_bytes(code_kernel(UD2))
    unemulated.write_bytes(code_kernel(FWAIT + UD2))
    with anyio.fail_after(DEADLINE):
        async with Runtime() as rt:
            healthy = await rt.restore(baked)
            faulted = await rt.boot(triple_fault, initramfs=triple_fault)
            assert await faulted.wait() == GuestExit(ShutdownReason.TRIPLE_FAULT)
            with pytest.raises(GuestStopped) as stopped:
                await faulted.exec(["true"])
            assert stopped.value.exit.reason is ShutdownReason.TRIPLE_FAULT
            if detect_cpu_model() is not CpuModel.HOST:  # hardware runs fwait; software KVM refuses it
                failed = await rt.boot(unemulated, initramfs=unemulated)
                with pytest.raises(GuestError, match="emulation failure"):
                    await failed.wait()
                with pytest.raises(GuestError, match="emulation failure"):
                    await failed.exec(["true"])
            await until(lambda: rt.machines() == [healthy])  # the stopped ones are freed
            assert stdout_of(await healthy.exec(["echo", "still here"])) == b"still here\n"
            assert faulted.closed and faulted.close_reason == "stopped"
    assert_nothing_left(before)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # one cold boot is enough
async def test_a_kernel_panic_is_reported_with_the_console_while_others_serve(baked: Snapshot) -> None:
    with anyio.fail_after(DEADLINE):
        async with Runtime() as rt:
            healthy = await rt.restore(baked)
            panicking = await rt.boot(cmdline_extra="rdinit=/bin/false")
            served = 0
            while panicking.running:
                assert stdout_of(await healthy.exec(["true"])) == b""
                served += 1
            assert await panicking.wait() == GuestExit(ShutdownReason.PANIC)
            with pytest.raises(GuestStopped) as caught:
                await panicking.exec(["true"])
            assert "Kernel panic" in caught.value.console_tail
            assert served > 0
            assert stdout_of(await healthy.exec(["echo", "ok"])) == b"ok\n"


async def test_a_machine_past_its_timeout_is_closed_and_says_so(baked: Snapshot) -> None:
    with anyio.fail_after(DEADLINE):
        async with Runtime() as rt:
            vm = await rt.restore(baked, timeout=1.0)
            await vm.set_timeout(120)  # replaces the first timeout: it outlives it
            await anyio.sleep(1.5)
            assert stdout_of(await vm.exec(["echo", "alive"])) == b"alive\n"
            await vm.set_timeout(0.2)
            with pytest.raises(MachineClosed, match="timeout"):
                await vm.exec(["sleep", "600"])  # cut short by the timeout
            # The error comes once the machine is freed, not while it is being torn down.
            assert vm.closed and vm.close_reason == "timeout" and rt.machines() == []
            with pytest.raises(MachineClosed, match="timeout") as caught:
                await vm.exec(["true"])
            assert caught.value.reason == "timeout"
            with pytest.raises(MachineClosed):
                await vm.set_timeout(10)


async def test_max_machines_makes_a_start_wait_for_room_or_refuse(baked: Snapshot) -> None:
    with anyio.fail_after(DEADLINE):
        async with Runtime(max_machines=1) as rt:
            first = await rt.restore(baked)
            with pytest.raises(CapacityExceeded, match="max_machines=1"):
                await rt.restore(baked, wait=False)
            later: list[Machine] = []

            async def start_later() -> None:
                later.append(await rt.restore(baked))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(start_later)
                await anyio.sleep(1.0)
                assert later == [] and rt.machines() == [first]  # still waiting for room
                await first.close()
            assert rt.machines() == later
            assert stdout_of(await later[0].exec(["echo", "in"])) == b"in\n"


async def test_max_memory_bounds_what_is_alive_and_refuses_a_machine_that_never_fits(baked: Snapshot) -> None:
    memory = baked.manifest.recipe.memory_mib
    with anyio.fail_after(DEADLINE):
        async with Runtime(max_memory_mib=memory + memory // 2) as rt:
            await rt.restore(baked)
            with pytest.raises(CapacityExceeded, match="max_memory_mib"):
                await rt.restore(baked, wait=False)
        async with Runtime(max_memory_mib=memory - 1) as small:
            with pytest.raises(CapacityExceeded, match="exceeds"):
                await small.restore(baked)


@pytest.mark.parametrize("delay", [0, 0.01, 0.1, 0.5])
async def test_cancelling_a_restore_at_any_point_leaves_nothing(baked: Snapshot, delay: float) -> None:
    before = held()
    with anyio.fail_after(DEADLINE):
        async with Runtime(max_machines=1) as rt:
            with anyio.move_on_after(delay):
                await rt.restore(baked)
            await until(lambda: rt.machines() == [] or rt.machines()[0].running)
            for vm in rt.machines():  # it may have finished restoring before the cancellation
                await vm.close()
            assert rt.machines() == []
            # The cancelled start gave its room back.
            again = await rt.restore(baked, wait=False)
            await again.close()
    assert_nothing_left(before)


async def test_machine_create_outlives_its_task_on_the_loops_default_runtime(baked: Snapshot) -> None:
    before = held()
    made: list[Machine] = []
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:

            async def make() -> None:
                made.append(await Machine.create(baked))

            tasks.start_soon(make)
        (vm,) = made
        assert stdout_of(await vm.exec(["hostname"])) == vm.id.encode() + b"\n"
        async with vm:
            pass
        assert vm.closed
    assert_nothing_left(before)
