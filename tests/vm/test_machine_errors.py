"""Bad kernels fail fast with a typed error and leave nothing behind (KVM is opened, no boot)."""

from pathlib import Path

import pytest

from asupermachine import KernelImageError, Machine
from asupermachine.guest.kernel import ensure_kernel
from tests.support.resources import assert_nothing_left, held

pytestmark = pytest.mark.anyio


async def _boot(kernel: Path) -> None:
    async with Machine.boot(kernel, command=["true"]):
        raise AssertionError("a bad kernel must not boot")


async def test_missing_kernel(tmp_path: Path) -> None:
    before = held()
    with pytest.raises(KernelImageError, match="does not exist"):
        await _boot(tmp_path / "no-such-vmlinux")
    assert_nothing_left(before)


async def test_file_that_is_not_a_kernel(tmp_path: Path) -> None:
    script = tmp_path / "vmlinux"
    script.write_text("#!/bin/sh\necho I am not a kernel\n")
    before = held()
    with pytest.raises(KernelImageError, match="not an ELF"):
        await _boot(script)
    assert_nothing_left(before)


async def test_truncated_kernel(tmp_path: Path) -> None:
    real = ensure_kernel().read_bytes()
    truncated = tmp_path / "vmlinux"
    truncated.write_bytes(real[: len(real) // 3])
    before = held()
    with pytest.raises(KernelImageError, match="truncated"):
        await _boot(truncated)
    assert_nothing_left(before)


async def test_impossible_machine_shapes_are_refused_before_anything_is_created() -> None:
    before = held()
    with pytest.raises(ValueError, match="vcpus"):
        async with Machine.boot(vcpus=0):
            pass
    with pytest.raises(ValueError, match="memory_mib"):
        async with Machine.boot(memory_mib=1):
            pass
    assert_nothing_left(before)
