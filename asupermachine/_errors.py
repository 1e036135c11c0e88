"""Every exception asupermachine raises on purpose, in one tree.

    AsupermachineError
    ├── KVMUnavailable                  /dev/kvm missing, inaccessible or lacking a capability
    ├── AssetError                      a guest asset (kernel, init, initramfs) is unusable
    │   └── KernelImageError            the kernel file is not a loadable x86_64 Linux kernel
    ├── DiskError                       a disk image cannot be used (or is in use elsewhere)
    ├── ImageError                      an image cannot be used
    │   ├── InvalidReference            a reference that does not parse (also a ValueError)
    │   ├── DigestMismatch              content whose digest is not the one asked for
    │   ├── ManifestError               a malformed manifest, index or config
    │   ├── PlatformNotFound            no manifest for the wanted platform
    │   ├── LayerError                  a layer that cannot be applied safely
    │   └── RegistryError               a registry refused, failed or was unreachable
    │       └── AuthenticationError     credentials missing or refused
    ├── SnapshotError                   a snapshot cannot be taken, loaded or restored
    │   └── WarmupFailed                a bake's warm-up command did not succeed
    ├── GuestError                      the guest did what the VMM cannot continue from (vCPU failure)
    ├── GuestStopped                    the guest stopped (exit, power-off, panic) before or during a call
    ├── GuestUnresponsive               the guest did not answer in time (also a TimeoutError)
    ├── MachineClosed                   the handle was closed (by close(), pause(), its timeout or its runtime)
    ├── PausedMachineNotFound           no paused machine has that id (also a LookupError)
    ├── MachineInUse                    a paused machine is resumed already, in this process or another
    ├── CapacityExceeded                a runtime's machine or memory limit is reached (wait=False)
    ├── ExecError                       the agent could not start a command
    ├── ExecTimeout                     a command outlived its timeout and was killed (also a TimeoutError)
    ├── GuestFileError                  the guest could not read or write a file (also an OSError)
    ├── UnsafeGuestTree                 a tree from the guest holds an entry that would leave its target
    ├── AgentProtocolError              the guest agent broke its protocol
    ├── VsockError                      a malformed vsock packet, or a failed connection
    │   └── VsockConnectionReset        the guest refused or reset a connection (also a ConnectionResetError)
    ├── VirtqueueError                  a guest driver put something malformed on a virtqueue
    ├── NetBackendError                 the network backend (passt) failed to start, died or broke its framing
    └── GuestMemoryError                a guest-physical access outside guest RAM
"""

from __future__ import annotations

from ._outcome import CloseReason, GuestExit


class AsupermachineError(Exception):
    """Base of every error this library raises on purpose."""


class KVMUnavailable(AsupermachineError):
    """``/dev/kvm`` is missing, inaccessible, too old, or lacks a needed capability."""


class AssetError(AsupermachineError):
    """A guest asset (kernel, init, initramfs) is missing, invalid, or failed to build."""


class KernelImageError(AssetError):
    """The kernel file is not a loadable x86_64 Linux kernel (missing, truncated, wrong format)."""


class DiskError(AsupermachineError):
    """A disk image cannot be used (missing, not a regular file, not a whole number of sectors, or in use:
    a writable disk by any other VM, a read-only one by a VM that writes it)."""


class ImageError(AsupermachineError):
    """An image cannot be used: malformed, missing, or refused."""


class InvalidReference(ImageError, ValueError):
    """An image reference that does not parse."""


class DigestMismatch(ImageError):
    """Content whose digest is not the one it was asked for by."""


class ManifestError(ImageError):
    """A manifest, index or config that is malformed or of an unknown media type."""


class PlatformNotFound(ImageError):
    """An index offers no manifest for the wanted platform; ``available`` lists what it has."""

    def __init__(self, message: str, available: list[str]) -> None:
        super().__init__(message)
        self.available = available


class RegistryError(ImageError):
    """A registry refused, failed or could not be reached; ``status`` is its HTTP status, if it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationError(RegistryError):
    """A registry wants credentials that were not given or were refused."""


class LayerError(ImageError):
    """A layer that cannot be applied safely (escaping paths, bombs, bad archives)."""


class BuildError(ImageError):
    """A Dockerfile that cannot be built: its line says why, or a step that failed.

    For a failed ``RUN``, ``step`` is the instruction, ``exit_status`` its status
    and ``output`` the tail of what it printed; nothing of the build is stored.
    """

    def __init__(self, message: str, *, step: str = "", exit_status: int | None = None, output: str = "") -> None:
        super().__init__(message)
        self.step, self.exit_status, self.output = step, exit_status, output


class SnapshotError(AsupermachineError):
    """A snapshot cannot be taken, loaded or restored; ``check`` names what failed."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"snapshot refused ({check}): {message}")
        self.check = check


class WarmupFailed(SnapshotError):
    """A bake's warm-up command exited unsuccessfully, so no snapshot was kept."""

    def __init__(self, message: str) -> None:
        super().__init__("warmup", message)


class GuestError(AsupermachineError):
    """A vCPU stopped on something the VMM cannot continue from (emulation failure, bad state).

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


class GuestStopped(AsupermachineError):
    """The guest stopped (its command exited, it powered off or panicked) and cannot serve the call.

    ``exit`` says how it ended; ``console_tail`` is the end of what it printed.
    """

    def __init__(self, message: str, exit: GuestExit, console_tail: str = "") -> None:
        super().__init__(f"{message}\nconsole tail:\n{console_tail}" if console_tail else message)
        self.exit = exit
        self.console_tail = console_tail


class GuestUnresponsive(AsupermachineError, TimeoutError):
    """The guest did not do what was awaited (its agent listening, a port opening) in time."""


class MachineClosed(AsupermachineError):
    """The machine was closed: by :meth:`Machine.close`, by its ``timeout``, or with its runtime (``reason``)."""

    def __init__(self, machine_id: str, reason: CloseReason) -> None:
        how = {
            CloseReason.TIMEOUT: "reached its timeout and was closed",
            CloseReason.RUNTIME: "was closed with its runtime",
            CloseReason.PAUSED: "was paused: resume it by its id",
        }
        super().__init__(f"machine {machine_id} {how.get(reason, 'is closed')}")
        self.machine_id = machine_id
        self.reason = reason


class PausedMachineNotFound(AsupermachineError, LookupError):
    """No paused machine has the id asked for (it was never paused, resumed and ended, or removed)."""


class MachineInUse(AsupermachineError):
    """A paused machine runs already, resumed by this process or another: it cannot be resumed or removed."""


class CapacityExceeded(AsupermachineError):
    """A runtime cannot start another machine within its ``max_machines`` or ``max_memory_mib``."""


class ExecError(AsupermachineError):
    """The agent could not start the command (for example, no such program); ``errno`` says why."""

    def __init__(self, message: str, errno_value: int) -> None:
        super().__init__(message)
        self.errno = errno_value


class ExecTimeout(AsupermachineError, TimeoutError):
    """The command outlived its timeout; it was killed."""


class GuestFileError(AsupermachineError, OSError):
    """The guest could not open, read or write the file; ``errno`` says why."""

    def __init__(self, message: str, errno_value: int) -> None:
        AsupermachineError.__init__(self, message)
        self.errno = errno_value
        self.strerror = message


class UnsafeGuestTree(AsupermachineError):
    """A tree downloaded from the guest holds an entry that would leave its host target (an absolute
    path, ``..``, a write through a symlink, a hardlink to outside) or is a device node; nothing was
    written outside the target."""


class AgentProtocolError(AsupermachineError):
    """The guest agent sent something that breaks the protocol."""


class VsockError(AsupermachineError):
    """A malformed vsock packet from the guest, or a vsock connection that failed."""


class VsockConnectionReset(VsockError, ConnectionResetError):
    """The guest refused or reset the vsock connection."""


class VirtqueueError(AsupermachineError):
    """The guest driver put something malformed on a virtqueue (bad index, loop, address outside RAM).

    It fails the request or marks the device as needing a reset; the host carries on.
    """


class NetBackendError(AsupermachineError):
    """The host side of a VM's network, passt, would not start, died, or broke (or was sent) bad framing.

    The message carries the end of what passt printed, when it printed anything.
    """


class GuestMemoryError(AsupermachineError):
    """A guest-physical access falls outside guest RAM (often a guest-supplied address)."""

    def __init__(self, guest_phys_addr: int, length: int) -> None:
        super().__init__(f"guest-physical range [{guest_phys_addr:#x}, +{length:#x}) is outside guest RAM")
        self.guest_phys_addr = guest_phys_addr
        self.length = length
