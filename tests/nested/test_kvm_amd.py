"""The guest-booting suite on the KVM users have: kvm_amd in an L1 VM (``scripts/nested-kvm``).

This host's own KVM may be software (kvm_pvm), which emulates the guest kernel
and never exercises the hardware path. QEMU's TCG emulates AMD SVM, so the suite
runs again inside an L1 whose ``/dev/kvm`` is kvm_amd, as on an AMD host.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from asupermachine._core.kvm.host import this_host
from tests.conftest import NESTED_SUMMARIES, SUMMARY_PREFIX
from tests.image.corpus import python_image
from tests.nested import beside

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from nested_kvm.run import L1_FROZE  # noqa: E402

L1_OPTIONS = ["-m", "kvm"]
L1_SUITE = [
    "tests/vm/test_machine_boot.py::test_init_reports_the_command_exit_status_zero_and_nonzero",
    "tests/vm/test_machine_boot.py::test_guest_with_two_vcpus_sees_two_cpus",
    "tests/vm/test_machine_boot.py::test_init_runs_the_command_with_the_given_env_workdir_and_user",
    "tests/image/test_pull.py::test_a_pulled_image_boots_with_its_config_and_exact_tree",
    "tests/image/test_pull.py::test_run_cold_from_the_cli_takes_quoted_arguments_and_env",
    "tests/vm/test_machine_exec.py",
    "tests/vm/test_machine_vsock.py",
    "tests/vm/test_snapshot.py::test_live_snapshot_then_restore_carries_on",
    "tests/vm/test_snapshot.py::test_clones_share_the_snapshot_but_not_their_writes",
    "tests/vm/test_snapshot.py::test_two_vcpus_are_saved_and_restored",
    "tests/vm/test_snapshot.py::test_a_writable_disk_is_frozen_and_each_restore_writes_its_own_copy",
    "tests/vm/test_volumes.py",
    "tests/vm/test_volume_slots.py",
    "tests/vm/test_pause.py",
    "tests/vm/test_interrupts.py",
    "tests/vm/test_machine_trees.py",
    "tests/vm/test_network.py::test_two_clones_reach_the_host_and_answer_on_their_own_published_ports",
    "tests/vm/test_network.py::test_16_mib_each_way_arrive_intact",
    "tests/vm/test_terminal.py::test_an_interactive_shell_on_a_pty_sizes_resizes_takes_ctrl_c_and_exits_with_its_status",
    "tests/vm/test_runtime.py::test_a_machine_made_in_one_task_is_used_and_closed_in_others",
    "tests/vm/test_runtime.py::test_a_kernel_panic_is_reported_with_the_console_while_others_serve",
    "tests/vm/test_vector_state.py::test_init_finds_vector_registers_isolated_wherever_the_guest_has_avx",
    "tests/vm/test_egress.py",
    "tests/vm/test_pip_workload.py",
    "tests/examples/test_web_service.py",
    "tests/bench",
]
"""The core set on kvm_amd: boot (one and two vCPUs), init's configuration (an image's env, quotes,
the CLI), exec and files, vsock, snapshots and clones, volumes, writable disks in snapshots, pause and
resume, a lost interrupt raised again, trees in and out (200 MiB among them),
networking (32 MiB each way) and its egress policy, pip under a locked-down policy, terminals, the
runtime, vector state, the web example and every bench's smoke test, on both of anyio's backends. On
software KVM the direct pass leaves these tests' trio variants to this pass (tests/conftest.py).
The whole guest suite takes ~40 min in the L1, too long beside the direct pass in one CI run:
``scripts/nested-kvm -- .venv/bin/python -m pytest -m kvm tests`` runs it."""


def in_the_l1_suite(node_id: str) -> bool:
    """Whether the L1 pass runs the test ``node_id``."""
    return any(node_id == entry or node_id.startswith((entry + "::", entry + "[", entry + "/"))
               for entry in L1_SUITE)


L1_TIMEOUT = 30 * 60
"""Seconds an L1 may run on its own: well past what the suite needs, short of CI's limit."""
BESIDE_TIMEOUT = 60 * 60
"""Seconds the first L1 may run beside the direct pass, sharing this machine's cores with it."""
BESIDE_VCPUS = 1
"""The first L1's vCPUs: the direct pass keeps a core (its guests run one at a time, on one vCPU each)."""
L1_TRIES = 4
"""L1s a pass may take when QEMU's TCG freezes one (docs/kvm.md): each runs only the tests not yet passed."""
QUIET_RERUNS = 1
"""Runs, in an L1 of its own once the direct pass is done, of the tests that failed in the L1 beside it:
there both passes share this machine's two cores, and a guest's network under QEMU's TCG can miss its
timeouts (a neighbour lookup gives "No route to host"). Both runs' summaries are in the report."""
PASSED = re.compile(r"^(\S+::\S+) PASSED")
"""A passed test's line in pytest's verbose output: its node id."""
OUTCOME = re.compile(r"=* ?\d+ (passed|failed)")
"""pytest's last line, with the counts of a pass."""


def start_beside(item: pytest.Item) -> None:
    """Queue this pass beside the direct pass (the collection hook calls this with its test), where this
    host's KVM is software: on hardware KVM the direct pass runs on what users have."""
    if this_host().software:
        python_image()  # for the pip workload, built here, where it is kept
        beside.start(__name__, _command([], BESIDE_TIMEOUT, BESIDE_VCPUS))


def test_the_guest_suite_passes_on_kvm_amd_in_an_l1() -> None:
    if not this_host().software:
        pytest.skip(f"this host's own KVM is hardware ({this_host()}): the direct pass ran on it")
    passed: list[str] = []
    summaries: list[str] = []
    first = beside.take(__name__)
    reruns = QUIET_RERUNS if first is not None else 0
    for _ in range(L1_TRIES):  # a freeze is QEMU's TCG, not our code: the tool caught it within a minute
        run, first = first or _run_in_an_l1(passed), None
        lines = run.stdout.splitlines()
        passed += [found.group(1) for found in map(PASSED.match, lines) if found]
        summaries += [line for line in lines if line.startswith(SUMMARY_PREFIX)]
        NESTED_SUMMARIES.extend(line for line in lines if line.startswith(SUMMARY_PREFIX) or OUTCOME.match(line))
        if run.returncode == pytest.ExitCode.TESTS_FAILED and reruns:
            reruns -= 1
            continue
        if run.returncode != L1_FROZE:
            break
    left_nothing = passed and run.returncode == pytest.ExitCode.NO_TESTS_COLLECTED  # froze after the last test
    assert run.returncode == 0 or left_nothing, f"the L1 pass ended with status {run.returncode}"
    assert summaries and all("kvm_amd" in line for line in summaries), "the L1 pass did not run on kvm_amd"


def _command(passed: list[str], timeout: int, vcpus: int | None = None) -> list[str]:
    """The L1 suite but for the tests in ``passed``, in a new L1 (all cores' vCPUs unless ``vcpus``)."""
    return [
        str(ROOT / "scripts" / "nested-kvm"), "--timeout", str(timeout), *(["--vcpus", str(vcpus)] if vcpus else []),
        "--", sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "--durations=15", *L1_OPTIONS,
        *L1_SUITE,
        *(f"--deselect={node}" for node in passed),
    ]


def _run_in_an_l1(passed: list[str]) -> subprocess.CompletedProcess[str]:
    """The L1 suite but for the tests in ``passed``, run in a new L1 once the direct pass is done."""
    python_image()
    run = subprocess.run(_command(passed, L1_TIMEOUT), cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                         text=True)
    print(run.stdout, run.stderr, sep="\n")  # shown with the failure, or with -s
    return run
