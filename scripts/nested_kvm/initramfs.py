"""The L1's initramfs: static busybox, the modules it needs in load order, and the stage-1 init."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .arch import COMMON_MODULES, L1Arch, is_native
from .cache import cache_dir, exclusive
from .debian import DebianPackageError, package_version, unpack
from .kernel import L1Kernel
from .modules import index_modules, load_order, modinfo_depends

HOST_BUSYBOX = Path("/bin/busybox")
"""Debian's busybox-static, for an L1 of this host's architecture."""
STAGE1 = Path(__file__).with_name("stage1.sh")


def build_initramfs(arch: L1Arch, kernel: L1Kernel) -> Path:
    """The initramfs for ``kernel``, built once per content of its parts (an uncompressed newc cpio)."""
    index = index_modules(kernel.modules)
    modules = [index[name] for name in load_order((*arch.kvm_modules, *COMMON_MODULES), modinfo_depends(index))]
    busybox = HOST_BUSYBOX if is_native(arch) else fetch_busybox(arch)
    key = hashlib.sha256()
    parts = (STAGE1.read_bytes(), arch.no_kvm_hint.encode(), busybox.read_bytes(), *(str(m).encode() for m in modules))
    for part in parts:
        key.update(hashlib.sha256(part).digest())
    path = kernel.root / f"initramfs-{key.hexdigest()[:16]}.cpio"
    with exclusive(path.with_suffix(".lock")):
        if not path.is_file():
            _write(path, busybox, modules, arch.no_kvm_hint)
    return path


def fetch_busybox(arch: L1Arch) -> Path:
    """Debian's busybox-static of ``arch``, downloaded and unpacked once per version."""
    package = f"busybox-static:{arch.debian}"
    version = package_version(package)
    if version is None:
        raise DebianPackageError(f"Debian's archive offers no {package} here (dpkg --add-architecture {arch.debian})")
    root = cache_dir() / arch.name / f"busybox-static_{version}"
    with exclusive(root.with_suffix(".lock")):
        if not root.is_dir():
            unpack(package, root)
    return root / "bin" / "busybox"


def _write(path: Path, busybox: Path, modules: list[Path], no_kvm_hint: str) -> None:
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        tree = Path(scratch) / "tree"
        (tree / "bin").mkdir(parents=True)
        (tree / "modules").mkdir()
        shutil.copy2(busybox, tree / "bin" / "busybox")
        shutil.copy2(STAGE1, tree / "init")
        (tree / "init").chmod(0o755)
        (tree / "no-kvm-hint").write_text(no_kvm_hint)
        for position, module in enumerate(modules):
            shutil.copy2(module, tree / "modules" / f"{position:02d}-{module.name}")
        names = sorted(str(entry.relative_to(tree)) for entry in tree.rglob("*"))
        staging = Path(scratch) / "initramfs.cpio"
        with staging.open("wb") as out:
            subprocess.run(
                ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
                cwd=tree, input="\n".join(names).encode(), stdout=out, check=True,
            )
        os.rename(staging, path)
