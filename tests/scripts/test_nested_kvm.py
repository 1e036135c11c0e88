"""The pure parts of scripts/nested-kvm: module load order and the L1's QEMU command line."""

from __future__ import annotations

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
