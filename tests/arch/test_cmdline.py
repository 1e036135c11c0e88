from asupermachine._core.arch.x86_64.cmdline import kernel_cmdline
from asupermachine._core.arch.x86_64.cpuid import CpuModel


def test_kernel_words_only_console_first() -> None:
    line = kernel_cmdline(cpu_model=CpuModel.HOST, kernel_log=True, devices=["virtio_mmio.device=4K@0xd0000000:5"])
    assert line.startswith("console=ttyS0 ")
    assert "virtio_mmio.device=4K@0xd0000000:5" in line and "quiet" not in line and " -- " not in line


def test_quiet_by_default_and_extras_included() -> None:
    line = kernel_cmdline(cpu_model=CpuModel.CONSERVATIVE, kernel_log=False, extra="foo=bar")
    assert "quiet" in line and line.endswith(" foo=bar") and "clearcpuid=" in line
