"""Guests that fault or run what KVM cannot emulate end with a reason or a GuestError, never a hang.

The "kernels" here are a few bytes of machine code entered in 64-bit mode, so
these tests boot instantly.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asupermachine import GuestError, GuestExit, Machine, ShutdownReason
from asupermachine._core.arch.x86_64.cpuid import CpuModel, detect_cpu_model
from tests.support.elf_images import code_kernel
from tests.support.resources import assert_nothing_left, held

pytestmark = pytest.mark.anyio
UD2 = b"\x0f\x0b"
FWAIT = b"\x9b"
OUT_0XF4_AL = b"\xe6\xf4"
MOV_AL_42 = b"\xb0\x2a"


async def _run(tmp_path: Path, code: bytes) -> GuestExit:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(code_kernel(code))
    with anyio.fail_after(30):
        async with Machine.boot(kernel, initramfs=kernel) as vm:
            return await vm.wait()


async def test_a_port_write_from_guest_code_reports_an_exit_status(tmp_path: Path) -> None:
    before = held()
    assert await _run(tmp_path, MOV_AL_42 + OUT_0XF4_AL + UD2) == GuestExit(ShutdownReason.EXIT, 42)
    assert_nothing_left(before)


async def test_an_exception_with_no_idt_is_a_triple_fault(tmp_path: Path) -> None:
    before = held()
    assert await _run(tmp_path, UD2) == GuestExit(ShutdownReason.TRIPLE_FAULT)
    assert_nothing_left(before)


async def test_an_instruction_kvm_cannot_emulate_raises_guest_error_with_the_details(tmp_path: Path) -> None:
    """Software KVM (kvm_pvm) refuses fwait at CPL0; hardware runs it, then faults on ud2."""
    before = held()
    if detect_cpu_model() is CpuModel.HOST:
        assert await _run(tmp_path, FWAIT + UD2) == GuestExit(ShutdownReason.TRIPLE_FAULT)
    else:
        with pytest.raises(GuestError) as caught:
            await _run(tmp_path, FWAIT + UD2)
        error = caught.value
        assert error.exit_reason == "KVM_EXIT_INTERNAL_ERROR"
        assert error.rip == 0x100_0000
        assert error.instruction.startswith(FWAIT + UD2)
        assert "emulation failure" in str(error)
    assert_nothing_left(before)
