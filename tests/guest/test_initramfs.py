"""The project's initramfs: its members, as the kernel unpacks them."""

from __future__ import annotations

import subprocess

from asupermachine._core.cpio import cpio_archive
from asupermachine.guest.initramfs import initramfs_entries


def test_listing_includes_the_console_device_node() -> None:
    archive = cpio_archive(initramfs_entries(b"\x7fELF", b"\x7fELF"))
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=archive, capture_output=True, check=True).stdout
    console = next(line for line in listing.decode().splitlines() if line.endswith("dev/console"))
    assert console.startswith("c") and "5," in console and "1" in console
