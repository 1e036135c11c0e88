"""The project's VMM on KVM arm64: in an arm64 L1 (``scripts/nested-kvm --arch arm64``), its Python, cffi
bindings and arm64 backend boot the project's arm64 kernel with its own loader and device tree, run init's
command (its exit status through PSCI), exec through the agent over vsock, publish a port and reach the
host through passt, write a volume, snapshot an idle guest, restore it with its clock moved on, and pause
and resume it (tests/nested/arm64_guest.py).

The L1 runs beside the direct pass, after the kvm_amd one (tests/nested/beside.py), on one vCPU; its
arm64 kernel is built and its userland prepared once, and cached (docs/kvm.md).
"""

from __future__ import annotations

import subprocess

import pytest

from tests.nested import arm64_l1, beside
from tests.nested.beside import ROOT

pytestmark = pytest.mark.arm64_l1
BESIDE_VCPUS = 1
"""The L1's vCPUs beside the direct pass, which keeps the other core."""


def start_beside(item: pytest.Item) -> None:
    """Queue ``item``'s pass beside the direct pass (the collection hook calls this)."""
    gic = item.callspec.params["gic"]  # type: ignore[attr-defined]
    beside.start(f"{__name__}[{gic}]", arm64_l1.command(gic, BESIDE_VCPUS))


def _run_alone(gic: int) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(arm64_l1.command(gic), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
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
