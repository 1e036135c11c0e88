import errno

import pytest

from asupermachine import KVMUnavailable
from asupermachine._core.kvm import Kvm
from asupermachine._core.kvm._kvm_cffi import lib


def test_missing_device_is_reported_as_kvm_unavailable() -> None:
    with pytest.raises(KVMUnavailable, match="does not exist"):
        Kvm("/nonexistent/kvm")


def test_a_device_that_is_not_kvm_is_reported_as_such() -> None:
    with pytest.raises(KVMUnavailable, match="not a KVM device"):
        Kvm("/dev/null")


def test_real_kvm_has_the_capabilities_we_rely_on_and_creates_vms_and_vcpus() -> None:
    with Kvm() as kvm:
        assert kvm.max_vcpus >= 1
        assert any(entry[0] == 0 for entry in kvm.supported_cpuid())
        vm = kvm.create_vm()
        try:
            vcpu = vm.create_vcpu(0)
            assert vcpu.run_state.immediate_exit == 0
            vcpu.kick()  # before KVM_RUN: the next run returns at once instead of entering the guest
            assert vcpu.run() == -errno.EINTR
            vcpu.close()
        finally:
            vm.close()
    assert lib.KVM_EXIT_IO > 0
