"""Vector state across guest context switches: asupermachine vs QEMU ``-M microvm`` on the same guest.

Both boot the same kernel, initramfs, root disk, command line and CPU model,
with a read-only disk of test programs, and run, in one guest command:
``vector_stress`` (threads and processes checking ymm/zmm/k registers, TLS and
FS base after switches), ``string_stress`` (glibc's AVX string functions across
processes) and the busybox pipeline loop from the crash report. QEMU ignores
the ports through which our kernel asks the VMM to switch extended state, so
it shows what the guest gets without them. For ours, the host time spent in
those port writes is measured too.

    .venv/bin/python bench/vector_state.py [--rounds N] [--pipelines N]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from _qemu import exit_status, qemu_command
from _stats import measured_under

from asupermachine import Disk, Machine
from asupermachine._core.arch.x86_64.cpuid import detect_cpu_model
from asupermachine._core.devices.vector_state import VectorStatePorts
from asupermachine.guest import resolve_assets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.guest_tools import build_string_stress, build_vector_stress  # noqa: E402

MEMORY_MIB = 256
RESULT = re.compile(r"^(vector_stress|string_stress|without AVX-free settings|pipelines|seconds):.*$", re.M)


# The guest command (kernel command-line words cannot hold quotes): the script is on the tools disk.
GUEST_COMMAND = [
    "sh", "-c", "mkdir -p /tmp/tools; mount -t erofs -o ro /dev/vdb /tmp/tools || exit 99; sh /tmp/tools/run.sh"
]


def guest_script(rounds: int, pipelines: int) -> str:
    return (
        "printf 'a\\nb\\nc\\n' > /tmp/t; "
        "start=$(cut -d' ' -f1 /proc/uptime); "
        f"/tmp/tools/vector_stress 3 4 {rounds}; /tmp/tools/string_stress 3 {rounds}; "
        f"echo -n 'without AVX-free settings: '; env -u GLIBC_TUNABLES /tmp/tools/string_stress 3 {rounds}; "
        "now=$(cut -d' ' -f1 /proc/uptime); echo \"seconds: stress $start $now\"; "
        f"bad=0; i=0; while [ $i -lt {pipelines} ]; do n=$(cat /tmp/t | wc -l); "
        "[ \"$n\" = 3 ] || bad=$((bad+1)); i=$((i+1)); done; "
        f"echo \"pipelines: runs={pipelines} bad=$bad\""
    )


def tools_disk(directory: Path, script: str) -> Path:
    tree = directory / "tools"
    tree.mkdir()
    (tree / "run.sh").write_text(script)
    for name, build in (("vector_stress", build_vector_stress), ("string_stress", build_string_stress)):
        (tree / name).write_bytes(build(directory))
        (tree / name).chmod(0o755)
    image = directory / "tools.erofs"
    subprocess.run(["mkfs.erofs", "--quiet", str(image), str(tree)], check=True)
    return image


def run_asupermachine(disk: Path) -> tuple[str, int, float]:
    """The guest's output, and the count and host seconds of extended-state port writes."""
    writes: list[float] = []
    original = VectorStatePorts.write

    def timed(self: VectorStatePorts, offset: int, size: int, value: int) -> None:
        start = time.perf_counter()
        original(self, offset, size, value)
        writes.append(time.perf_counter() - start)

    VectorStatePorts.write = timed  # type: ignore[method-assign]

    async def once() -> str:
        output: list[str] = []
        async with Machine.boot(command=GUEST_COMMAND, disks=[Disk(disk)]) as vm:
            async for line in vm.console.lines():
                output.append(line)
            await vm.wait()
        return "\n".join(output)

    try:
        return anyio.run(once), len(writes), sum(writes)
    finally:
        VectorStatePorts.write = original  # type: ignore[method-assign]


def run_qemu(disk: Path) -> str:
    command = qemu_command(
        resolve_assets(default_root=True), vcpus=1, memory_mib=MEMORY_MIB, model=detect_cpu_model(),
        command=GUEST_COMMAND, disks=[disk],
    )
    result = subprocess.run(command, capture_output=True, timeout=3600)
    if exit_status(result.returncode) == 99:
        raise RuntimeError("the QEMU guest could not mount the tools disk")
    return result.stdout.decode(errors="replace")


def summary(output: str) -> list[str]:
    lines = [match.group(0) for match in RESULT.finditer(output.replace("\r", ""))]
    for index, line in enumerate(lines):
        if line.startswith("seconds: stress"):
            _, _, start, end = line.split()
            lines[index] = f"seconds: stress {float(end) - float(start):.1f} (guest clock)"
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--pipelines", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        disk = tools_disk(Path(scratch), guest_script(args.rounds, args.pipelines))
        ours, writes, seconds = run_asupermachine(disk)
        qemu = run_qemu(disk)
    print(measured_under())
    print(f"\nvector state across context switches, CPU model {detect_cpu_model().value}, 1 vCPU")
    for name, output in (("asupermachine", ours), ("qemu -M microvm", qemu)):
        print(f"{name}:")
        for line in summary(output) or ["(no result lines: the guest output was)\n" + output[-2000:]]:
            print(f"  {line}")
    if writes:
        print(f"asupermachine extended-state port writes: {writes}, host time {seconds * 1e6 / writes:.1f} us each")


if __name__ == "__main__":
    main()
