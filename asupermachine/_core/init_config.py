"""init's configuration for one boot, handed over as a file in a second initramfs segment (sans-IO).

Not on the kernel command line, which is capped at 2 KiB, cannot quote ``"``,
and is readable by every guest user in ``/proc/cmdline`` and the boot log. The
file has no size limit, carries any byte but NUL, is readable by root only (mode
0400), and init deletes it before anything else runs. The kernel unpacks every
cpio archive concatenated in the initrd, so the VMM appends this one to the
project's initramfs for each boot; both architectures hand init its
configuration this way.

The file (``guest/init/init.c`` reads it) is a sequence of NUL-terminated
``KEY=VALUE`` records, the first :data:`FORMAT`. Keys: ``root`` (the root
device), ``hostname``, ``net`` (see :attr:`GuestNetwork.init_option`),
``mount`` (see :attr:`GuestMount.init_option`; repeatable, mounted in order),
``changes`` (an ext4 device for the root overlay's upper, instead of memory),
``workdir``, ``user``, ``env`` (``NAME=value``, repeatable, a later one wins),
``arg`` (init's command, one record per word, in order; none: serve execs). init
hands ``workdir``, ``user`` and ``env`` on to the agent as every exec's defaults.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass

from .._environment import check_environment_name
from .cpio import CpioEntry, cpio_archive
from .recipe import GuestMount, ProcessDefaults

CONFIG_NAME = ".asupermachine-init"
"""Where init finds the file, in the initramfs root."""
FORMAT = "asupermachine-init=1"
CPIO_ALIGNMENT = 4
"""The kernel starts a concatenated uncompressed archive only at a 4-byte offset."""


@dataclass(frozen=True)
class InitConfig:
    """What init sets up before its command: the root, hostname, network, mounts, and the command's process."""

    root: str = ""
    hostname: str = ""
    network: str = ""
    """eth0's ``ADDRESS/PREFIX,GATEWAY,MTU[,DNS]``; empty: no network but ``lo``."""
    mounts: Sequence[GuestMount] = ()
    changes: str = ""
    """The ext4 device that holds the root's changes; empty: memory (tmpfs)."""
    defaults: ProcessDefaults = ProcessDefaults()
    command: Sequence[str] = ()

    def records(self) -> list[tuple[str, str]]:
        """The file's records after the format line, as (key, value); raises ``ValueError`` for a NUL."""
        records = [("root", self.root), ("changes", self.changes), ("hostname", self.hostname), ("net", self.network)]
        records += [("workdir", self.defaults.workdir), ("user", self.defaults.user)]
        records = [(key, value) for key, value in records if value]
        records += [("mount", mount.init_option) for mount in self.mounts]
        for name, value in self.defaults.env.items():
            check_environment_name(name)
            records.append(("env", f"{name}={value}"))
        records += [("arg", word) for word in self.command]
        for key, value in records:
            if "\0" in value:
                what = {"env": "environment entry", "arg": "command argument"}.get(key, f"init option {key}")
                raise ValueError(f"{what} {value!r} contains a NUL byte, which no process can be handed")
        return records

    def encode(self) -> bytes:
        """The file's bytes (UTF-8; undecodable bytes a str carries as surrogates go through as they were)."""
        lines = [FORMAT, *(f"{key}={value}" for key, value in self.records())]
        return b"".join(line.encode(errors="surrogateescape") + b"\0" for line in lines)

    def segment(self) -> bytes:
        """The cpio archive that holds the file (see :func:`initrd_with`)."""
        return cpio_archive([CpioEntry(CONFIG_NAME, stat.S_IFREG | 0o400, self.encode())])


def initrd_with(initramfs: bytes, config: InitConfig) -> bytes:
    """``initramfs`` followed by ``config``'s segment, zero-padded to where the kernel looks for it."""
    return initramfs + b"\0" * (-len(initramfs) % CPIO_ALIGNMENT) + config.segment()
