"""Paused machines, kept by id in the user's data directory until resumed or removed (blocking functions).

``paused/<id>/`` holds the machine's ``snapshot/``, whose writable disks are kept in
place rather than copied, and ``machine.json``: what its resume needs besides the
snapshot, and each kept disk's identity, so that a disk changed since is refused.
A resumed machine holds ``paused/<id>.lock`` (``flock``) while it runs: no one else
resumes or removes it meanwhile; pausing it again replaces its record, ending it
otherwise removes the record. A paused machine's volumes are its own: no other
machine attaches them until it is resumed and ends, or is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ._cache import data_root
from ._errors import DiskError, MachineInUse, PausedMachineNotFound, SnapshotError
from ._network import Network
from ._volume import Volume
from .snapshot.snapshot import Snapshot, vouch_for_memory

RECORD_NAME = "machine.json"
SNAPSHOT_NAME = "snapshot"
LOCK_SUFFIX = ".lock"
STAGING_SUFFIX = ".tmp"
STAGING_GRACE_SECONDS = 60.0
FORMAT_NAME = "asupermachine-paused"
FORMAT_VERSION = 1
logger = logging.getLogger("asupermachine")


def paused_root() -> Path:
    """Where paused machines live (``$XDG_DATA_HOME/asupermachine/paused``): kept data, not a cache."""
    return data_root() / "paused"


@dataclass(frozen=True)
class KeptDisk:
    """A writable disk a paused machine keeps in place, as it was when the machine paused."""

    path: Path
    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> KeptDisk:
        status = path.stat()
        return cls(path, status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)

    def check(self, machine_id: str) -> None:
        """Raise :class:`SnapshotError` (``disk``) if the file is gone or was written since the pause."""
        try:
            now = KeptDisk.of(self.path)
        except OSError as e:
            raise SnapshotError("disk", f"paused machine {machine_id}'s disk {self.path}: {e.strerror}") from None
        if now != self:
            raise SnapshotError(
                "disk", f"paused machine {machine_id}'s disk {self.path} was changed since it paused "
                "(resuming would corrupt it)",
            )


@dataclass(frozen=True)
class PausedMachine:
    """A machine :meth:`Machine.pause` saved: :meth:`Runtime.resume` brings it back by :attr:`id`."""

    id: str
    paused_at: datetime
    memory_mib: int
    timeout: float | None
    """Seconds its timeout had left when it paused (None: it had none); they count again once resumed."""
    network: Network | None
    """Its network, egress policy as it was at the pause; None: no NIC."""
    volumes: Mapping[str, Volume]
    """Its volumes by mount point: they stay its own while it is paused."""
    kept: tuple[KeptDisk, ...]
    path: Path
    """Its directory."""

    def disk_usage(self) -> int:
        """Bytes its files take on the host (memory and copies of disks; volumes are not counted)."""
        return sum(
            entry.stat().st_blocks * 512 for entry in self.path.rglob("*") if entry.is_file() and not entry.is_symlink()
        )

    def is_resumed(self) -> bool:
        """Whether a machine resumed from it runs now, in this process or another."""
        try:
            fd = os.open(_lock_path(self.id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def snapshot(self) -> Snapshot:
        """Its snapshot, checked, and its kept disks checked unchanged; raises :class:`SnapshotError`."""
        snapshot = Snapshot.load(self.path / SNAPSHOT_NAME)
        for disk in self.kept:
            disk.check(self.id)
        if set(snapshot.kept_disks) != {disk.path for disk in self.kept}:
            raise SnapshotError("paused", f"paused machine {self.id}'s record does not match its snapshot")
        return snapshot


def exists(machine_id: str) -> bool:
    return _is_id(machine_id) and (paused_root() / machine_id).exists()


def load(machine_id: str) -> PausedMachine:
    """The paused machine ``machine_id``.

    :raises PausedMachineNotFound: if there is none; :class:`SnapshotError` if its record is damaged.
    """
    if not _is_id(machine_id):
        raise PausedMachineNotFound(f"{machine_id!r} is not a machine id")
    path = paused_root() / machine_id
    try:
        data = (path / RECORD_NAME).read_bytes()
    except FileNotFoundError:
        raise PausedMachineNotFound(f"no paused machine {machine_id}") from None
    except OSError as e:
        raise SnapshotError("paused", f"cannot read {path / RECORD_NAME}: {e.strerror}") from None
    return _decode(data, path)


def listed() -> list[PausedMachine]:
    """Every paused machine, the oldest pause first; a damaged record is logged and left out."""
    sweep()
    found = []
    for entry in paused_root().glob("[!.]*"):
        if entry.is_dir():
            try:
                found.append(load(entry.name))
            except (PausedMachineNotFound, SnapshotError) as error:
                logger.warning("paused machine %s left out: %s", entry.name, error)
    return sorted(found, key=lambda machine: machine.paused_at)


def remove(machine_id: str) -> None:
    """Delete a paused machine, damaged or not; raises :class:`PausedMachineNotFound`, or :class:`MachineInUse`
    while it runs."""
    if not (_is_id(machine_id) and (paused_root() / machine_id).is_dir()):
        raise PausedMachineNotFound(f"no paused machine {machine_id!r}")
    with Resumption.claim(machine_id) as claim:
        claim.end(paused=False)


def claimant(volume: Path) -> str | None:
    """The id of the paused machine whose volume ``volume`` is, if any."""
    try:
        status = volume.stat()
    except OSError:
        return None  # attaching it says what is wrong
    for machine in listed():
        for owned in machine.volumes.values():
            with contextlib.suppress(OSError):
                if os.path.samestat(owned.path.stat(), status):
                    return machine.id
    return None


def check_unclaimed(volume: Path) -> None:
    """Raise :class:`DiskError` if ``volume`` belongs to a paused machine."""
    owner = claimant(volume)
    if owner is not None:
        raise DiskError(f"volume {volume} belongs to paused machine {owner}: resume it, or remove it first")


class Resumption:
    """The claim of a process on a paused machine it resumed: a lock held until :meth:`end`."""

    def __init__(self, machine_id: str, fd: int) -> None:
        self.machine_id = machine_id
        self._fd = fd

    @classmethod
    def claim(cls, machine_id: str) -> Resumption:
        """Take ``machine_id``'s lock; raises :class:`MachineInUse` if a resumed machine holds it."""
        if not _is_id(machine_id):
            raise PausedMachineNotFound(f"{machine_id!r} is not a machine id")
        paused_root().mkdir(parents=True, exist_ok=True)
        fd = os.open(_lock_path(machine_id), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            message = f"paused machine {machine_id} was resumed and runs (perhaps in another process)"
            raise MachineInUse(message) from None
        return cls(machine_id, fd)

    def __enter__(self) -> Resumption:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def end(self, *, paused: bool) -> None:
        """The machine stopped: paused again (its new record stays), or for good (its record goes)."""
        if not paused:
            shutil.rmtree(paused_root() / self.machine_id, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                _lock_path(self.machine_id).unlink()
        self.release()

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Staged:
    """A pause being written: its directory, locked (``flock``) until :meth:`close`, so that no one sweeps it."""

    def __init__(self, machine_id: str) -> None:
        self.path = paused_root() / f".{machine_id}.{uuid.uuid4().hex[:8]}{STAGING_SUFFIX}"
        self.path.mkdir(parents=True)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def close(self) -> None:
        """Let go of it: committed (the lock went with the directory) or abandoned (remove it first)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def staging(machine_id: str) -> Staged:
    """A new directory for ``machine_id``'s pause to be written into before :func:`commit`; sweeps what
    pauses cut short by a crash left (see :func:`sweep`)."""
    sweep()
    return Staged(machine_id)


def sweep() -> None:
    """Remove the directories of pauses whose process died while writing them (unlocked, and older than
    :data:`STAGING_GRACE_SECONDS`: a new one is locked a moment after it is made), or committing them."""
    now = time.time()
    for entry in paused_root().glob(".*"):  # staging and replaced directories (ids never start with ".")
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if now - os.fstat(fd).st_mtime > STAGING_GRACE_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except BlockingIOError:
            continue  # being written
        finally:
            os.close(fd)


def commit(staged: Path, machine: PausedMachine, snapshot: Snapshot) -> None:
    """Write ``machine``'s record into ``staged`` beside its ``snapshot`` and make it the paused machine
    (replacing an older pause)."""
    with (staged / RECORD_NAME).open("xb") as file:
        file.write(_encode(machine))
        file.flush()
        os.fsync(file.fileno())
    target = paused_root() / machine.id
    older = target.with_name(f".{machine.id}.{uuid.uuid4().hex[:8]}.old")
    with contextlib.suppress(FileNotFoundError):
        os.rename(target, older)  # a resumed machine's own record: it reads nothing there any more
    os.rename(staged, target)
    shutil.rmtree(older, ignore_errors=True)
    vouch_for_memory(target / SNAPSHOT_NAME, snapshot.manifest)


def _is_id(text: str) -> bool:
    return bool(text) and "/" not in text and not text.startswith(".") and "\0" not in text


def _lock_path(machine_id: str) -> Path:
    return paused_root() / f"{machine_id}{LOCK_SUFFIX}"


def _encode(machine: PausedMachine) -> bytes:
    network = machine.network
    body = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "id": machine.id,
        "paused_at": machine.paused_at.isoformat(),
        "memory_mib": machine.memory_mib,
        "timeout": machine.timeout,
        "network": None if network is None else {
            "publish": {str(host): port for host, port in network.publish.items()},
            "allow_host_loopback": network.allow_host_loopback,
            "dns": network.dns,
            "mtu": network.mtu,
            "allow_out": list(network.allow_out),
            "deny_out": list(network.deny_out),
        },
        "volumes": {
            target: {"path": str(volume.path), "read_only": volume.read_only, "fs": volume.fs}
            for target, volume in machine.volumes.items()
        },
        "kept": [
            {"path": str(disk.path), "device": disk.device, "inode": disk.inode, "size": disk.size,
             "mtime_ns": disk.mtime_ns}
            for disk in machine.kept
        ],
    }
    return json.dumps(body, indent=1).encode()


def _decode(data: bytes, path: Path) -> PausedMachine:
    try:
        body: Any = json.loads(data)
        if body["format"] != FORMAT_NAME or body["version"] != FORMAT_VERSION or body["id"] != path.name:
            raise ValueError("not a paused machine's record of this build, or not this directory's")
        network = body["network"]
        return PausedMachine(
            id=str(body["id"]),
            paused_at=datetime.fromisoformat(body["paused_at"]),
            memory_mib=int(body["memory_mib"]),
            timeout=None if body["timeout"] is None else float(body["timeout"]),
            network=None if network is None else Network(
                publish=dict(network["publish"]), allow_host_loopback=bool(network["allow_host_loopback"]),
                dns=network["dns"], mtu=int(network["mtu"]), allow_out=list(network["allow_out"]),
                deny_out=list(network["deny_out"]),
            ),
            volumes={
                str(target): Volume(Path(volume["path"]), read_only=bool(volume["read_only"]), fs=str(volume["fs"]))
                for target, volume in body["volumes"].items()
            },
            kept=tuple(
                KeptDisk(Path(disk["path"]), int(disk["device"]), int(disk["inode"]), int(disk["size"]),
                         int(disk["mtime_ns"]))
                for disk in body["kept"]
            ),
            path=path,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise SnapshotError("paused", f"{path / RECORD_NAME} is damaged: {e!r}") from None
