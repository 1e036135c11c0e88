"""The project's VMM on KVM arm64: in an arm64 L1 (``scripts/nested-kvm --arch arm64``), its Python, cffi
bindings and arm64 backend boot the project's arm64 kernel with its own loader and device tree, run init's
command (its exit status through PSCI), exec through the agent over vsock, and restore a snapshot.

Opt-in (``-m arm64_l1``): the L1's arm64 userland is prepared once, which takes about an hour on a 2-core
machine (docs/kvm.md); a run after that takes about three minutes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from asupermachine.guest.arch import ARM64
from asupermachine.guest.initramfs import ensure_initramfs
from asupermachine.guest.kernel import ensure_kernel

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from nested_kvm.arch import ARCHES  # noqa: E402
from nested_kvm.initramfs import fetch_busybox  # noqa: E402

pytestmark = pytest.mark.arm64_l1
ASSETS = ROOT / ".nested-arm64"
"""Inside the repository, which the L1 sees at its own path."""
IN_THE_L1 = (
    "set -e; for b in kvm native; do /opt/venv/bin/python asupermachine/_core/$b/_build.py >/dev/null 2>&1; done; "
    f"PYTHONPATH=. /opt/venv/bin/python tests/nested/arm64_guest.py {ASSETS}"
)


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


def test_boot_exec_and_restore_under_kvm_arm64() -> None:
    ASSETS.mkdir(exist_ok=True)
    shutil.copyfile(ensure_kernel(ARM64), ASSETS / "Image")
    shutil.copyfile(ensure_initramfs(ARM64), ASSETS / "initramfs.cpio")
    (ASSETS / "root.erofs").unlink(missing_ok=True)
    busybox_root(ASSETS / "root.erofs")
    run = subprocess.run(
        [str(ROOT / "scripts" / "nested-kvm"), "--arch", "arm64", "--timeout", "1800", "--", "sh", "-c", IN_THE_L1],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    print(run.stdout, run.stderr, sep="\n")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = {line.split(":")[0]: line for line in run.stdout.splitlines() if ":" in line}
    assert lines["command"].startswith("command: exit 7 ['main command on aarch64']")
    assert lines["exec"].startswith("exec: 0 ['aarch64', '2']")
    assert lines["restore 0"].startswith("restore 0: ['kept']") and lines["restore 1"].startswith("restore 1: ['kept']")
