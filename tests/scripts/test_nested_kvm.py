"""scripts/nested-kvm: module load order and the L1's QEMU command line (pure), and a run that times out."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))

from nested_kvm.arch import X86_64  # noqa: E402
from nested_kvm.kernel import L1Kernel  # noqa: E402
from nested_kvm.modules import ModuleError, load_order, module_name  # noqa: E402
from nested_kvm.qemu import qemu_command  # noqa: E402


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
    argv = qemu_command(X86_64, kernel, tmp_path / "initrd", tmp_path / "io", memory_mib=4096, vcpus=2)
    assert argv[argv.index("-cpu") + 1] == "max"  # TCG's SVM
    shares = [argv[i + 1] for i, word in enumerate(argv) if word == "-virtfs"]
    assert any("path=/," in share and "readonly=on" in share for share in shares)
    assert any(f"path={tmp_path / 'io'}," in share and "readonly" not in share for share in shares)
    assert argv[argv.index("-m") + 1] == "4096" and argv[argv.index("-smp") + 1] == "2"


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
