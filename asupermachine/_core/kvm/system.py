"""The ``/dev/kvm`` system fd: API version, capabilities, supported CPUID, VM creation."""

from __future__ import annotations

import errno
import os

from ..._errors import KVMUnavailable
from ._check import check
from ._flexible import new_flexible
from ._kvm_cffi import lib
from .vm import VmFd

KVM_DEVICE = "/dev/kvm"
# KVM_GET_SUPPORTED_CPUID fails with E2BIG when the buffer is short; this is ample.
_MAX_CPUID_ENTRIES = 256
# Likewise for KVM_GET_MSR_INDEX_LIST.
_MAX_MSR_INDICES = 1024

_COMMON_CAPABILITIES = ("USER_MEMORY", "IRQCHIP", "IMMEDIATE_EXIT", "IOEVENTFD", "IRQFD")
_ARCH_CAPABILITIES = {
    "x86_64": ("PIT2", "SET_TSS_ADDR", "SET_IDENTITY_MAP_ADDR", "EXT_CPUID"),
    "aarch64": ("ONE_REG", "DEVICE_CTRL", "ARM_PSCI_0_2"),
}
REQUIRED_CAPABILITIES = {
    f"KVM_CAP_{name}": int(getattr(lib, f"KVM_CAP_{name}"))
    for name in (*_COMMON_CAPABILITIES, *_ARCH_CAPABILITIES[os.uname().machine])
}


class Kvm:
    """An open ``/dev/kvm``, checked for the API version and capabilities we use."""

    def __init__(self, path: str = KVM_DEVICE) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KVMUnavailable(f"{path} does not exist: this host has no KVM (load kvm_intel/kvm_amd)") from None
        except PermissionError:
            raise KVMUnavailable(f"no permission to open {path}: add the user to the 'kvm' group") from None
        try:
            version = lib.amv_get_api_version(self.fd)
            if version < 0:
                raise KVMUnavailable(f"{path} is not a KVM device: {os.strerror(-version)}")
            if version != lib.KVM_API_VERSION:
                raise KVMUnavailable(f"{path} speaks KVM API {version}, need {lib.KVM_API_VERSION}")
            missing = [name for name, cap in REQUIRED_CAPABILITIES.items() if self.check_extension(cap) <= 0]
            if missing:
                raise KVMUnavailable(f"{path} lacks required capabilities: {', '.join(missing)}")
        except BaseException:
            os.close(self.fd)
            raise

    def check_extension(self, capability: int) -> int:
        """``KVM_CHECK_EXTENSION``: 0 when unsupported, else a capability-specific positive value."""
        result: int = lib.amv_check_extension(self.fd, capability)
        return result

    @property
    def max_vcpus(self) -> int:
        return self.check_extension(lib.KVM_CAP_MAX_VCPUS) or self.check_extension(lib.KVM_CAP_NR_VCPUS) or 4

    def vcpu_mmap_size(self) -> int:
        return check(lib.amv_get_vcpu_mmap_size(self.fd), "KVM_GET_VCPU_MMAP_SIZE")

    def supported_cpuid(self) -> list[tuple[int, int, int, int, int, int, int]]:
        """The host's supported CPUID as ``(function, index, flags, eax, ebx, ecx, edx)`` rows."""
        _owner, cpuid = new_flexible("struct kvm_cpuid2", "struct kvm_cpuid_entry2", _MAX_CPUID_ENTRIES)
        cpuid.nent = _MAX_CPUID_ENTRIES
        check(lib.amv_get_supported_cpuid(self.fd, cpuid), "KVM_GET_SUPPORTED_CPUID")
        return [
            (e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
            for e in (cpuid.entries[i] for i in range(cpuid.nent))
        ]

    def msr_index_list(self) -> list[int]:
        """The MSRs KVM saves and restores for a vCPU (``KVM_GET_MSR_INDEX_LIST``)."""
        _owner, msr_list = new_flexible("struct kvm_msr_list", "uint32_t", _MAX_MSR_INDICES)
        msr_list.nmsrs = _MAX_MSR_INDICES
        check(lib.amv_get_msr_index_list(self.fd, msr_list), "KVM_GET_MSR_INDEX_LIST")
        return [int(msr_list.indices[i]) for i in range(msr_list.nmsrs)]

    def create_vm(self) -> VmFd:
        try:
            fd = check(lib.amv_create_vm(self.fd), "KVM_CREATE_VM")
        except OSError as e:
            if e.errno in (errno.ENOMEM, errno.EMFILE, errno.ENFILE):
                raise
            raise KVMUnavailable(f"KVM_CREATE_VM failed: {e}") from e
        return VmFd(fd, self.vcpu_mmap_size())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Kvm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
