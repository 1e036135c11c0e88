"""The project's VMM on KVM arm64: in an arm64 L1 (``scripts/nested-kvm --arch arm64``), its Python, cffi
bindings and arm64 backend boot the project's arm64 kernel with its own loader and device tree, run init's
command (its exit status through PSCI), exec through the agent over vsock, publish a port and reach the
host through passt, write a volume, snapshot an idle guest, restore it with its clock moved on, and pause
and resume it (tests/nested/arm64_guest.py).

The L1 runs beside the direct pass, after the kvm_amd one (tests/nested/beside.py), on one vCPU; its
arm64 kernel is built and its userland prepared once, and cached (docs/kvm.md).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from asupermachine._core.net.passt_program import ensure_fixed_passt
from asupermachine.guest.arch import ARM64
from asupermachine.guest.initramfs import ensure_initramfs
from asupermachine.guest.kernel import ensure_kernel

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from nested_kvm.arch import ARCHES  # noqa: E402
from nested_kvm.initramfs import fetch_busybox  # noqa: E402

from tests.nested import beside  # noqa: E402

pytestmark = pytest.mark.arm64_l1
L1_TIMEOUT = 1800
"""Seconds the L1 may take (about five minutes here), not counting its userland's preparation."""
BESIDE_VCPUS = 1
"""The L1's vCPUs beside the direct pass, which keeps the other core."""
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


def _command(gic: int, vcpus: int | None = None) -> list[str]:
    return [
        str(ROOT / "scripts" / "nested-kvm"), "--arch", "arm64", "--gic", str(gic), "--timeout", str(L1_TIMEOUT),
        *(["--vcpus", str(vcpus)] if vcpus else []), "--", "sh", "-c", IN_THE_L1,
    ]


def start_beside(item: pytest.Item) -> None:
    """Queue ``item``'s pass beside the direct pass (the collection hook calls this)."""
    gic = item.callspec.params["gic"]  # type: ignore[attr-defined]
    beside.start(f"{__name__}[{gic}]", _command(gic, BESIDE_VCPUS), prepare=prepare_assets)


def _run_alone(gic: int) -> subprocess.CompletedProcess[str]:
    prepare_assets()
    run = subprocess.run(_command(gic), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    print(run.stdout)
    return run


@pytest.mark.parametrize("gic", [3, 2], ids=["gicv3", "gicv2"])
def test_boot_exec_and_restore_under_kvm_arm64(gic: int) -> None:
    """On an arm64 host with a GICv3, and on one with a GICv2 (whose vGIC the VMM falls back to)."""
    run = beside.take(f"{__name__}[{gic}]") or _run_alone(gic)
    assert run.returncode == 0, run.stdout[-3000:]
    lines = {line.split(":")[0]: line for line in run.stdout.splitlines() if ":" in line}
    assert lines["command"].startswith("command: exit 7 ['main command on aarch64']")
    interrupt_chip = {3: "GICv3", 2: "GIC-0"}[gic]  # as the guest's GIC driver names itself
    assert lines["exec"].startswith(f"exec: 0 ['aarch64', '2', '{interrupt_chip}', 'kept']")
    assert lines["network"].startswith("network: 0 from-guest from-host")
    assert lines["snapshot when idle"]
    for clone in ("restore 0", "restore 1"):
        assert lines[clone].startswith(f"{clone}: ['kept'] clock right"), lines[clone]
    assert lines["pause and resume"].startswith("pause and resume: ['kept', 'kept']")
