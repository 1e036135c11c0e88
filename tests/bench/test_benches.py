"""Every benchmark runs in its smallest mode and prints its table, its peer's row included, so none can rot.

Timings are printed, never asserted. On software KVM the benches that boot guests
run in the nested pass (tests/nested) on kvm_amd.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"
QEMU_PEER = "qemu"

GUEST_BENCHES = {
    "boot": (["--runs", "1"], QEMU_PEER),
    "blk": (["--runs", "1", "--mib", "4"], QEMU_PEER),
    "restore": (["--runs", "2", "--echo-runs", "1", "--parallel", "2", "--clones", "1,2"], QEMU_PEER),
    "pause": (["--runs", "1"], QEMU_PEER),
    "vector_state": (["--rounds", "2", "--pipelines", "1"], QEMU_PEER),
    "net": (["--quick"], QEMU_PEER),
    "exec": (["--runs", "3", "--spawns", "10"], "spawn"),
    "vsock": (["--mib", "1", "--runs", "1"], "pipe"),
    "density": (["--counts", "2", "--parallel", "2"], "restore/s"),
    "terminal": (["--count", "5"], "cat"),
    "devices": (["--quick"], "exit"),
    "build": (["--runs", "1", "--steps", "1"], "buildah"),
}
HOST_BENCHES = {"pull": (["--runs", "1"], "skopeo+umoci")}


def run_bench(name: str, arguments: list[str]) -> str:
    run = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *arguments], capture_output=True, text=True, cwd=BENCH.parent
    )
    assert run.returncode == 0, f"bench/{name}.py failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    print(run.stdout)
    return run.stdout


@pytest.mark.kvm
@pytest.mark.guest_bench
@pytest.mark.parametrize("name", GUEST_BENCHES)
def test_guest_bench_prints_its_table_with_its_peer(name: str) -> None:
    arguments, peer_row = GUEST_BENCHES[name]
    assert peer_row in run_bench(name, arguments).lower()


@pytest.mark.parametrize("name", HOST_BENCHES)
def test_host_bench_prints_its_table_with_its_peer(name: str) -> None:
    arguments, peer_row = HOST_BENCHES[name]
    assert peer_row in run_bench(name, arguments).lower()
