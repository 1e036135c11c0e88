"""One run of the arm64 proof (tests/nested/test_kvm_arm64.py) as a command: ``python -m
tests.nested.arm64_l1 GIC [VCPUS]`` prepares the assets here, then runs tests/nested/arm64_guest.py in an
arm64 L1 whose GIC is of version GIC, with VCPUS vCPUs (default: all cores). Its output and exit status
are the tool's.

A command of its own, not work in the test's process: queued beside the direct pass, the preparation (a
kernel build the first time) would otherwise hold fds in the process whose tests count them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from asupermachine._core.net.passt_program import ensure_fixed_passt
from asupermachine.guest.arch import ARM64
from asupermachine.guest.initramfs import ensure_initramfs
from asupermachine.guest.kernel import ensure_kernel

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from nested_kvm.arch import ARCHES  # noqa: E402
from nested_kvm.initramfs import fetch_busybox  # noqa: E402

L1_TIMEOUT = 1800
"""Seconds the L1 may take (about five minutes here), not counting its userland's preparation."""
ASSETS = ROOT / ".nested-arm64"
"""Inside the repository, which the L1 sees at its own path."""
IN_THE_L1 = (
    "set -e; for b in kvm native; do /opt/venv/bin/python asupermachine/_core/$b/_build.py >/dev/null 2>&1; done; "
    f"PATH={ASSETS / 'bin'}:$PATH PYTHONPATH=. /opt/venv/bin/python tests/nested/arm64_guest.py {ASSETS}"
)
"""Build the cffi bindings there, then run the steps with the passt built for arm64 here first on PATH."""


def busybox_root(target: Path) -> None:
    """An erofs root of Debian's arm64 busybox-static, an applet link for each of this host's busybox's."""
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch)
        for name in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
            (tree / name).mkdir()
        shutil.copy2(fetch_busybox(ARCHES["arm64"]), tree / "bin" / "busybox")
        applets = subprocess.run(["busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in set(applets) - {"busybox"}:
            (tree / "bin" / applet).symlink_to("busybox")
        (tree / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (tree / "etc" / "group").write_text("root:x:0:\n")
        subprocess.run(["mkfs.erofs", "--quiet", "--all-root", str(target), str(tree)], check=True)


def prepare_assets() -> None:
    """The arm64 kernel, initramfs and passt (built once, cached) and a busybox root, where the L1 finds them."""
    (ASSETS / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(ensure_fixed_passt(compiler=f"{ARM64.cross_compile}gcc"), ASSETS / "bin" / "passt")
    shutil.copyfile(ensure_kernel(ARM64), ASSETS / "Image")
    shutil.copyfile(ensure_initramfs(ARM64), ASSETS / "initramfs.cpio")
    (ASSETS / "root.erofs").unlink(missing_ok=True)
    busybox_root(ASSETS / "root.erofs")


def command(gic: int, vcpus: int | None = None) -> list[str]:
    """This module's run: the assets prepared, then an L1 with a GIC of version ``gic`` and ``vcpus`` vCPUs."""
    return [sys.executable, "-m", "tests.nested.arm64_l1", str(gic), *([str(vcpus)] if vcpus else [])]


def _l1_command(gic: int, vcpus: int | None) -> list[str]:
    return [
        str(ROOT / "scripts" / "nested-kvm"), "--arch", "arm64", "--gic", str(gic), "--timeout", str(L1_TIMEOUT),
        *(["--vcpus", str(vcpus)] if vcpus else []), "--", "sh", "-c", IN_THE_L1,
    ]


if __name__ == "__main__":
    gic, *vcpus = (int(word) for word in sys.argv[1:])
    prepare_assets()
    sys.stdout.flush()
    sys.stderr.flush()
    tool = _l1_command(gic, vcpus[0] if vcpus else None)
    os.execv(tool[0], tool)


