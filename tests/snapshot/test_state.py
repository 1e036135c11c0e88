"""Moving a saved guest's clocks on by the time it spent in the snapshot."""

from __future__ import annotations

import struct

from asupermachine._core.arch.x86_64.msr import MSR_IA32_TSC
from asupermachine._core.devices.uart import UartState
from asupermachine._core.kvm.state import StateKind
from asupermachine._core.persist import MachineState, VcpuState, advanced

TSC_KHZ = 2_000_000  # 2 GHz


def saved(tsc: int, clock_ns: int) -> MachineState:
    vcpu = VcpuState(cpuid=(), kvm={}, msrs={MSR_IA32_TSC: tsc, 0x6E0: 5})
    clock = struct.pack("<Q", clock_ns) + bytes(40)
    uart = UartState(0, 3, 8, 0, 12, False, b"")
    return MachineState(
        (vcpu, vcpu), {StateKind.CLOCK: clock}, (), uart, captured_at_ns=0, tsc_khz=TSC_KHZ, task_vector_states={}
    )


def test_tsc_and_kvmclock_move_on_by_the_elapsed_time() -> None:
    later = advanced(saved(tsc=1000, clock_ns=7), elapsed_ns=3_000_000_000)
    assert [vcpu.msrs[MSR_IA32_TSC] for vcpu in later.vcpus] == [1000 + 6_000_000_000] * 2
    assert all(vcpu.msrs[0x6E0] == 5 for vcpu in later.vcpus)  # other MSRs untouched
    assert struct.unpack_from("<Q", later.vm[StateKind.CLOCK])[0] == 7 + 3_000_000_000
    assert later.vm[StateKind.CLOCK][8:] == bytes(40)


def test_a_host_clock_that_went_back_does_not_move_the_guest_back() -> None:
    state = saved(tsc=1000, clock_ns=7)
    assert advanced(state, elapsed_ns=-10**12) == state
