"""Run Linux guests (and, soon, OCI images) as KVM microVMs from Python, anyio-native."""

from ._errors import AssetError as AssetError
from ._errors import AsupermachineError as AsupermachineError
from ._errors import GuestError as GuestError
from ._errors import GuestMemoryError as GuestMemoryError
from ._errors import KernelImageError as KernelImageError
from ._errors import KVMUnavailable as KVMUnavailable
from ._errors import VirtqueueError as VirtqueueError
from .agent.files import GuestFileError as GuestFileError
from .agent.process import ExecError as ExecError
from .agent.process import ExitStatus as ExitStatus
from .agent.process import Process as Process
from .agent.exec import ExecResult as ExecResult
from .agent.exec import ExecTimeout as ExecTimeout
from .console import Console as Console
from .devices.shutdown_ports import GuestExit as GuestExit
from .devices.shutdown_ports import ShutdownReason as ShutdownReason
from .machine import Machine as Machine
from .virtio.blk import Disk as Disk
from .virtio.blk import DiskError as DiskError
from .vsock.host import VsockConnectionReset as VsockConnectionReset
from .vsock.host import VsockListener as VsockListener
from .vsock.host import VsockStream as VsockStream
from .vsock.packet import VsockError as VsockError
