"""cffi API-mode bindings to ``<linux/kvm.h>``: system, VM and vCPU fds."""

from .system import Kvm as Kvm
from .vcpu import VcpuFd as VcpuFd
from .vm import VmFd as VmFd
