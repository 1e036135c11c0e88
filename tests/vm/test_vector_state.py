"""Guest processes keep their own vector registers, TLS and FS base across context switches.

Under software KVM the guest kernel switches only x87/SSE state, and the VMM
switches the rest (devices/vector_state.py); these run real programs that
would crash or see another process's registers if it did not.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asupermachine import Machine, Snapshot, VectorState
from tests.support.exec_output import stdout_of
from tests.support.guest_tools import build_string_stress, build_vector_stress

# One backend: what runs in the guest does not depend on the host's event loop, and it is slow here.
pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]
PIPELINE_ROUNDS = 5
# The loop from the crash report: busybox (static glibc) children reading TLS after re-exec.
PIPELINE = (
    "printf 'a\\nb\\nc\\n' > /tmp/t; bad=0; i=0; "
    f"while [ $i -lt {PIPELINE_ROUNDS} ]; do n=$(cat /tmp/t | wc -l); "
    "[ \"$n\" = 3 ] || bad=$((bad+1)); i=$((i+1)); done; "
    "echo $bad"
)


async def user_code_has_avx(vm: Machine, tool: bytes) -> bool:
    """Whether guest user code can use AVX (CPUID and XCR0 as it sees them): the stress tool says "no AVX"
    and exits 3 otherwise, as under nested SVM in QEMU's TCG, where every guest kernel turns XSAVE off."""
    await vm.write_file("/tmp/vector_stress", tool, mode=0o755)
    return (await vm.exec(["/tmp/vector_stress", "1", "1", "1"])).exit_code != 3


async def test_init_finds_vector_registers_isolated_wherever_the_guest_has_avx(
    baked: Snapshot, tmp_path: Path
) -> None:
    tool = build_vector_stress(tmp_path)
    with anyio.fail_after(300):
        async with Machine.restore(baked) as vm:
            expected = VectorState.ISOLATED if await user_code_has_avx(vm, tool) else VectorState.NO_AVX
            assert await vm.vector_state() is expected


async def test_threads_and_processes_keep_registers_tls_and_fs_base(baked: Snapshot, tmp_path: Path) -> None:
    tool = build_vector_stress(tmp_path)
    with anyio.fail_after(600):
        async with Machine.restore(baked) as vm:
            avx = await user_code_has_avx(vm, tool)
            result = await vm.exec(["/tmp/vector_stress", "2", "3", "40"])
    if not avx:  # nothing to leak: the tool says so and checks nothing
        assert result.exit_code == 3 and b"no AVX" in result.stdout, result
        return
    line = stdout_of(result).decode()
    assert "vector_leaks=0 tls_errors=0 fs_errors=0" in line, line


async def test_glibc_string_functions_across_processes_never_mix_data(baked: Snapshot, tmp_path: Path) -> None:
    tool = build_string_stress(tmp_path)
    with anyio.fail_after(600):
        async with Machine.restore(baked) as vm:
            await vm.write_file("/tmp/string_stress", tool, mode=0o755)
            line = stdout_of(await vm.exec(["/tmp/string_stress", "3", "60"])).decode()
    assert "mismatches=0 crashed=0 failed=0" in line, line


async def test_shell_pipelines_never_crash(baked: Snapshot) -> None:
    with anyio.fail_after(600):
        async with Machine.restore(baked) as vm:
            assert stdout_of(await vm.exec(["sh", "-c", PIPELINE])) == b"0\n"
