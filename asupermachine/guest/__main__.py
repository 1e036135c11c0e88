"""``python -m asupermachine.guest [--arch ARCH]``: build (or find) the guest assets and print their paths.

For the host's architecture (the default) that is the kernel, the initramfs and the
default root; for another (``--arch arm64`` on an x86_64 host) the kernel and the
initramfs, cross-built.
"""

import argparse

from . import resolve_assets
from .arch import GUEST_ARCHES, guest_arch, host_arch
from .initramfs import ensure_initramfs
from .kernel import ensure_kernel

parser = argparse.ArgumentParser(prog="python -m asupermachine.guest", description=__doc__.splitlines()[0])
parser.add_argument("--arch", choices=sorted(GUEST_ARCHES), default=host_arch().name, help="default: this host's")
arch = guest_arch(parser.parse_args().arch)
if arch == host_arch():
    assets = resolve_assets(default_root=True)
    print(f"kernel:    {assets.kernel}")
    print(f"initramfs: {assets.initramfs}")
    print(f"root:      {assets.default_root}")
else:
    print(f"kernel:    {ensure_kernel(arch)}")
    print(f"initramfs: {ensure_initramfs(arch)}")
