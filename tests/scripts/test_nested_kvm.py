"""scripts/nested-kvm: module order, the L1's QEMU command line, freeze detection (pure), a run that times out."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))

from nested_kvm.arch import ARM64, X86_64, with_gic  # noqa: E402
from nested_kvm.freeze import FreezeWatch  # noqa: E402
from nested_kvm.kernel import L1Kernel  # noqa: E402
from nested_kvm.modules import ModuleError, load_order, module_name  # noqa: E402
from nested_kvm.qemu import qemu_command  # noqa: E402
from nested_kvm.root import HOST_ROOT, L1Root  # noqa: E402


def test_modules_load_after_their_dependencies_and_once() -> None:
    depends = {"kvm_amd": ["kvm", "ccp"], "kvm": ["irqbypass"], "ccp": [], "irqbypass": [], "9p": ["9pnet"],
               "9pnet": []}
    assert load_order(["kvm_amd", "9p", "kvm"], depends.__getitem__) == [
        "irqbypass", "kvm", "ccp", "kvm_amd", "9pnet", "9p"
    ]


def test_a_circle_of_module_dependencies_is_refused() -> None:
    with pytest.raises(ModuleError, match="circle"):
        load_order(["a"], {"a": ["b"], "b": ["a"]}.__getitem__)


def test_module_files_are_named_as_the_kernel_names_them() -> None:
    assert module_name(Path("arch/x86/kvm/kvm-amd.ko")) == "kvm_amd"
    assert module_name(Path("fs/overlayfs/overlay.ko.xz")) == "overlay"


def test_the_l1_gets_svm_the_host_root_read_only_and_the_run_directory_writable(tmp_path: Path) -> None:
    kernel = L1Kernel("6.1.0-57-amd64", tmp_path, tmp_path / "vmlinuz")
    argv = qemu_command(X86_64, kernel, tmp_path / "initrd", tmp_path / "io", HOST_ROOT, memory_mib=4096, vcpus=2)
    assert argv[argv.index("-cpu") + 1] == "max"  # TCG's SVM
    shares = [argv[i + 1] for i, word in enumerate(argv) if word == "-virtfs"]
    assert any("path=/," in share and "readonly=on" in share for share in shares)
    assert any(f"path={tmp_path / 'io'}," in share and "readonly" not in share for share in shares)
    assert argv[argv.index("-m") + 1] == "4096" and argv[argv.index("-smp") + 1] == "2"


def _shares(argv: list[str]) -> dict[str, str]:
    """Each 9p share of a QEMU command line, by its mount tag."""
    shares = [argv[i + 1] for i, word in enumerate(argv) if word == "-virtfs"]
    return {share.split("mount_tag=")[1].split(",")[0]: share for share in shares}


def test_an_arm64_l1_gets_its_own_root_and_the_repository_read_only(tmp_path: Path) -> None:
    kernel = L1Kernel("6.1.0-57-arm64", tmp_path, tmp_path / "vmlinuz")
    root = L1Root(tmp_path / "userland", repository=tmp_path / "repo")
    shares = _shares(qemu_command(ARM64, kernel, tmp_path / "initrd", tmp_path / "io", root, memory_mib=512, vcpus=1))
    assert f"path={tmp_path / 'userland'}," in shares["hostroot"] and "readonly=on" in shares["hostroot"]
    assert f"path={tmp_path / 'repo'}," in shares["repository"] and "readonly=on" in shares["repository"]
    assert "readonly" not in shares["nestedio"]
    assert root.stage1_config() == f"REPOSITORY={tmp_path / 'repo'}\n"


def test_a_run_past_its_timeout_is_stopped_and_says_where_the_l1_vcpus_were() -> None:
    """A real L1 (QEMU's TCG, no KVM needed): an L1 that stops answering ends with status 124, not a hang."""
    tool = Path(__file__).parents[2] / "scripts" / "nested-kvm"
    run = subprocess.run(
        [str(tool), "--timeout", "20", "--", "sleep", "600"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 124, run.stderr[-2000:]
    assert "outlived its timeout of 20 s" in run.stderr
    assert re.search(r"CPU#0 RIP=[0-9a-f]{16} ", run.stderr), run.stderr[-2000:]


# vCPU lines QEMU's monitor printed during a real freeze on 2026-12-05, and from healthy L1s.
FROZEN_AT_POKE = "CPU#0 RIP=ffffffff9065267b RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0"
FROZEN_IN_HANDLER = "CPU#0 RIP=ffffffff90800ba3 RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0"
IDLE = "CPU#1 RIP=ffffffffa54592eb RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1"
BUSY_WITH_INTERRUPTS_OFF = "CPU#1 RIP=ffffffff8fc79c{:02x} RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0"


def test_a_vcpu_caught_at_the_same_spot_with_interrupts_off_four_times_is_frozen() -> None:
    watch = FreezeWatch()
    readings = [[FROZEN_AT_POKE, IDLE], [FROZEN_IN_HANDLER, IDLE], [FROZEN_AT_POKE, IDLE], [FROZEN_IN_HANDLER, IDLE]]
    verdicts = [watch.observe(reading) for reading in readings]
    assert verdicts == [None, None, None, FROZEN_IN_HANDLER]


def test_a_busy_or_idle_l1_and_a_mute_monitor_are_not_called_frozen() -> None:
    watch = FreezeWatch()
    for step in range(8):  # interrupts off now and then, somewhere new each time
        assert watch.observe([IDLE if step % 2 else BUSY_WITH_INTERRUPTS_OFF.format(step)]) is None
    for reading in ([FROZEN_AT_POKE], [FROZEN_AT_POKE], [], [FROZEN_AT_POKE], [FROZEN_AT_POKE]):
        assert watch.observe(reading) is None  # the mute reading started the count again
    for reading in ([FROZEN_AT_POKE], [FROZEN_AT_POKE.replace("00000046", "00000246")]):
        assert watch.observe(reading) is None  # interrupts came back on: it moves


def test_an_arm64_l1_with_a_gicv2_asks_qemu_for_one_and_only_arm64_has_that_choice() -> None:
    gicv2 = with_gic(ARM64, 2)
    assert "virt,virtualization=on,gic-version=2" in gicv2.machine and gicv2.name == ARM64.name
    assert "virt,virtualization=on,gic-version=3" in ARM64.machine
    with pytest.raises(ValueError, match="arm64"):
        with_gic(X86_64, 2)
