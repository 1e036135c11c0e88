"""Which KVM this host runs and on what CPU: a snapshot fits only a host like the one it was taken on."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

MODULES = Path("/sys/module")
# Each KVM flavour is its own module; kvm_pvm (software nested virtualization) is these dev machines'.
FLAVOURS = ("kvm_pvm", "kvm_amd", "kvm_intel")


@dataclass(frozen=True)
class KvmHost:
    """The KVM flavour (``kvm_amd``, ``kvm_intel``, ``kvm_pvm``) and the CPU's model name."""

    flavour: str
    cpu: str

    def __str__(self) -> str:
        return f"{self.flavour} on {self.cpu}"

    @property
    def software(self) -> bool:
        """Whether KVM here emulates the guest kernel (kvm_pvm) rather than running it in hardware."""
        return self.flavour == "kvm_pvm"


@functools.cache
def this_host() -> KvmHost:
    """This host's KVM flavour and CPU, read once from ``/sys/module`` and ``/proc/cpuinfo``."""
    flavour = next((name for name in FLAVOURS if (MODULES / name).exists()), "kvm")
    return KvmHost(flavour, cpu_model_name(Path("/proc/cpuinfo").read_text()))


def cpu_model_name(cpuinfo: str) -> str:
    """The first CPU's name in ``/proc/cpuinfo`` text (x86's ``model name``; arm64's implementer and part)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    if "model name" in fields:
        return fields["model name"]
    return f"implementer {fields.get('CPU implementer', '?')} part {fields.get('CPU part', '?')}"
