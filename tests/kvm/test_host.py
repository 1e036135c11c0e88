"""This host's KVM flavour and CPU name, which snapshots and the bake cache are keyed by."""

from __future__ import annotations

from pathlib import Path

from asupermachine._core.kvm.host import FLAVOURS, cpu_model_name, this_host

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu vme

processor\t: 1
model name\t: Another CPU
"""
ARM64_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


def test_the_first_cpus_model_name_is_read() -> None:
    assert cpu_model_name(X86_CPUINFO) == "AMD EPYC 7B13 64-Core Processor"
    assert cpu_model_name(ARM64_CPUINFO) == "implementer 0x41 part 0xd0c"


def test_this_host_names_the_kvm_module_that_is_loaded() -> None:
    host = this_host()
    assert Path("/sys/module", host.flavour).exists()
    assert host.flavour in FLAVOURS
    assert host.software == (host.flavour == "kvm_pvm")
