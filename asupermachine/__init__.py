"""Run OCI/Docker images as hardware-isolated KVM microVMs from Python, anyio-native.

``async with Runtime() as rt: vm = await rt.start("python:3.12")``, or
``vm = await Machine.create(...)`` on the event loop's default runtime; then
``await vm.exec([...])``, ``vm.read_file``/``write_file``, ``vm.snapshot``, ``await vm.close()``.
"""

from ._core.agent.process import Process as Process
from ._core.agent.protocol import GuestProcess as GuestProcess
from ._core.agent.protocol import VectorState as VectorState
from ._core.console import Console as Console
from ._core.virtio.blk import Disk as Disk
from ._core.vsock.host import VsockListener as VsockListener
from ._core.vsock.host import VsockStream as VsockStream
from ._errors import AgentProtocolError as AgentProtocolError
from ._errors import AssetError as AssetError
from ._errors import AsupermachineError as AsupermachineError
from ._errors import AuthenticationError as AuthenticationError
from ._errors import BuildError as BuildError
from ._errors import CapacityExceeded as CapacityExceeded
from ._errors import DigestMismatch as DigestMismatch
from ._errors import DiskError as DiskError
from ._errors import ExecError as ExecError
from ._errors import ExecTimeout as ExecTimeout
from ._errors import GuestError as GuestError
from ._errors import GuestFileError as GuestFileError
from ._errors import GuestMemoryError as GuestMemoryError
from ._errors import GuestStopped as GuestStopped
from ._errors import GuestUnresponsive as GuestUnresponsive
from ._errors import ImageError as ImageError
from ._errors import InvalidReference as InvalidReference
from ._errors import KernelImageError as KernelImageError
from ._errors import KVMUnavailable as KVMUnavailable
from ._errors import LayerError as LayerError
from ._errors import MachineClosed as MachineClosed
from ._errors import MachineInUse as MachineInUse
from ._errors import ManifestError as ManifestError
from ._errors import NetBackendError as NetBackendError
from ._errors import PausedMachineNotFound as PausedMachineNotFound
from ._errors import PlatformNotFound as PlatformNotFound
from ._errors import RegistryError as RegistryError
from ._errors import SnapshotError as SnapshotError
from ._errors import UnsafeGuestTree as UnsafeGuestTree
from ._errors import VirtqueueError as VirtqueueError
from ._errors import VsockConnectionReset as VsockConnectionReset
from ._errors import VsockError as VsockError
from ._errors import WarmupFailed as WarmupFailed
from ._machine import Machine as Machine
from ._network import MachineNetwork as MachineNetwork
from ._network import Network as Network
from ._options import BootOptions as BootOptions
from ._options import RestoreOptions as RestoreOptions
from ._options import StartOptions as StartOptions
from ._outcome import CloseReason as CloseReason
from ._outcome import ExecResult as ExecResult
from ._outcome import ExitStatus as ExitStatus
from ._outcome import GuestExit as GuestExit
from ._outcome import ShutdownReason as ShutdownReason
from ._paused import PausedMachine as PausedMachine
from ._pool import Pool as Pool
from ._pool import PoolStats as PoolStats
from ._runtime import Runtime as Runtime
from ._volume import Volume as Volume
from .build import builder as _builder  # noqa: F401  (registers the builder Image.build runs)
from .image.image import Image as Image
from .image.registry import Credentials as Credentials
from .snapshot.snapshot import Snapshot as Snapshot


def _present_public_names() -> None:
    """Public types say ``asupermachine.X`` in reprs and tracebacks, not where they are defined."""
    for name, value in globals().items():
        if isinstance(value, type) and not name.startswith("_"):
            value.__module__ = __name__


_present_public_names()
