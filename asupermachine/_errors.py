"""The exceptions asupermachine raises: one small hierarchy."""

from __future__ import annotations


class AsupermachineError(Exception):
    """Base of every error this library raises on purpose."""


class KVMUnavailable(AsupermachineError):
    """``/dev/kvm`` is missing, inaccessible, too old, or lacks a needed capability."""


class AssetError(AsupermachineError):
    """A guest asset (kernel, init, initramfs) is missing, invalid, or failed to build."""


class KernelImageError(AssetError):
    """The kernel file is not a loadable x86_64 Linux kernel (missing, truncated, wrong format)."""


class GuestError(AsupermachineError):
    """The guest did something the VMM cannot continue from (emulation failure, bad state).

    Carries what is known: the KVM exit reason, the guest RIP, the instruction
    bytes at RIP, and the tail of the serial console.
    """

    def __init__(
        self,
        message: str,
        *,
        exit_reason: str | None = None,
        rip: int | None = None,
        instruction: bytes = b"",
        console_tail: str = "",
    ) -> None:
        details = [message]
        if exit_reason is not None:
            details.append(f"exit reason: {exit_reason}")
        if rip is not None:
            details.append(f"rip: {rip:#x}")
        if instruction:
            details.append(f"instruction bytes: {instruction.hex(' ')}")
        if console_tail:
            details.append("console tail:\n" + console_tail)
        super().__init__("\n".join(details))
        self.exit_reason = exit_reason
        self.rip = rip
        self.instruction = instruction
        self.console_tail = console_tail


class GuestMemoryError(AsupermachineError):
    """A guest-physical access falls outside guest RAM (often a guest-supplied address)."""

    def __init__(self, guest_phys_addr: int, length: int) -> None:
        super().__init__(f"guest-physical range [{guest_phys_addr:#x}, +{length:#x}) is outside guest RAM")
        self.guest_phys_addr = guest_phys_addr
        self.length = length


class VirtqueueError(AsupermachineError):
    """The guest driver put something malformed on a virtqueue (bad index, loop, address outside RAM).

    It fails the request or marks the device as needing a reset; the host carries on.
    """
