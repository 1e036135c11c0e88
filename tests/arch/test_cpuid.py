from asupermachine._core.arch.x86_64.cpuid import (
    EMULATOR_REFUSED_FEATURES,
    KVM_HYPERCALL_FEATURES,
    CpuModel,
    guest_cpuid,
    kernel_arguments,
)

ALL_ONES = 0xFFFF_FFFF
SUPPORTED = [
    (0x0, 0, 0, 0x10, 1, 2, 3),
    (0x1, 0, 0, 0xA10F11, 0x01020800, ALL_ONES, ALL_ONES),
    (0x7, 0, 1, 1, ALL_ONES, ALL_ONES, ALL_ONES),
    (0xD, 0, 1, 7, 0, 0, 0),
    (0x4000_0001, 0, 0, 0x01007EFB, 0, 0, 0),
]


def _leaf(table: list[tuple[int, ...]], function: int) -> tuple[int, ...]:
    return next(entry for entry in table if entry[0] == function)


def test_host_model_passes_features_through_with_per_vcpu_apic_ids() -> None:
    table = guest_cpuid(SUPPORTED, CpuModel.HOST, vcpu=1, vcpus=2)
    leaf1 = _leaf(table, 1)
    assert leaf1[4] >> 24 == 1 and (leaf1[4] >> 16) & 0xFF == 2
    assert leaf1[5] == ALL_ONES
    assert _leaf(table, 0xD) == SUPPORTED[3]
    assert kernel_arguments(CpuModel.HOST) == []


def test_conservative_model_hides_every_refused_feature_and_xsave_state() -> None:
    table = guest_cpuid(SUPPORTED, CpuModel.CONSERVATIVE, vcpu=0, vcpus=1)
    registers = {"eax": 3, "ebx": 4, "ecx": 5, "edx": 6}
    for feature in EMULATOR_REFUSED_FEATURES:
        assert not _leaf(table, feature.leaf)[registers[feature.register]] & (1 << feature.bit), feature.name
    assert all(entry[0] != 0xD for entry in table)
    assert not _leaf(table, 0x4000_0001)[3] & KVM_HYPERCALL_FEATURES


def test_conservative_model_clears_the_same_features_on_the_command_line() -> None:
    argument, *_trims = kernel_arguments(CpuModel.CONSERVATIVE)
    assert argument.startswith("clearcpuid=")
    assert set(argument.removeprefix("clearcpuid=").split(",")) == {f.name for f in EMULATOR_REFUSED_FEATURES}
