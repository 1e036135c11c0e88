"""Real guests on /dev/kvm: exit status, SMP, console streaming and input, how guests end.

A boot costs ~30 s under software KVM, so each test boots several VMs at once
(one process juggling them is part of what is tested) and module fixtures share
booted guests between assertions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import pytest

from asupermachine import Disk, GuestExit, Machine, ShutdownReason, VsockConnectionReset
from asupermachine.guest import READY_MARKER

BOOT_DEADLINE = 300  # seconds; a hang fails the test instead of stalling CI


@dataclass
class Transcript:
    lines: list[str]
    exit: GuestExit
    dropped: int = 0


async def _run_all(*jobs: Callable[[], Awaitable[None]]) -> None:
    with anyio.fail_after(BOOT_DEADLINE):
        async with anyio.create_task_group() as tasks:
            for job in jobs:
                tasks.start_soon(job)


ONE_BACKEND = pytest.mark.parametrize("anyio_backend", ["asyncio"])
"""For boots whose subject is the guest's (init's) side: each costs ~30 s under software KVM, and trio
drives guests that end by themselves in test_runtime and test_pool."""


@pytest.mark.anyio
@ONE_BACKEND
async def test_init_reports_the_command_exit_status_zero_and_nonzero() -> None:
    results: dict[int, Transcript] = {}

    async def run(status: int) -> None:
        async with Machine.boot(command=["sh", "-c", f"echo status-{status}; exit {status}"]) as vm:
            lines = [line async for line in vm.console.lines()]
            results[status] = Transcript(lines, await vm.wait())

    await _run_all(lambda: run(0), lambda: run(7))
    for status, transcript in results.items():
        assert transcript.exit == GuestExit(ShutdownReason.EXIT, status)
        ready = [line for line in transcript.lines if line.startswith(READY_MARKER)]
        assert len(ready) == 1 and "uptime=" in ready[0]
        assert transcript.lines.index(ready[0]) < transcript.lines.index(f"status-{status}")


SMP_SCRIPT = (
    "read word; echo got-$word; "
    "echo rng=$(cat /sys/class/misc/hw_random/rng_current); echo entropy=$(head -c 4096 /dev/hwrng | wc -c); "
    "echo cpus=$(grep -c ^processor /proc/cpuinfo); "
    "i=0; while [ $i -lt 100 ]; do echo line-$i; i=$((i+1)); done; exit 5"
)
FLOOD_SCRIPT = (
    "i=0; while [ $i -lt 60 ]; do echo flood-$i-................................................; i=$((i+1)); done"
)
FLOOD_CAPACITY = 512
CONFIGURED_SCRIPT = (
    "echo user=$(id -u):$(id -g) pwd=$(pwd) greeting=$GREETING home=$HOME; echo \"json=$JSON\"; "
    "echo cmdline-has-secret=$(grep -c s3cr3t /proc/cmdline); touch /etc/written"
)


@pytest.fixture(scope="module")
def console_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Transcript]:
    """Guests at once: a 2-vCPU one whose console is typed into and read line by
    line, one whose console nobody reads while it prints more than the buffer holds,
    one whose command runs with the host's env, workdir and user, and one whose root
    disk holds no filesystem."""
    runs: dict[str, Transcript] = {}
    blank = tmp_path_factory.mktemp("disks") / "blank.img"
    blank.write_bytes(bytes(1 << 20))

    async def smp() -> None:
        async with Machine.boot(vcpus=2, command=["sh", "-c", SMP_SCRIPT]) as vm:
            lines: list[str] = []
            async for line in vm.console.lines():
                lines.append(line)
                if line.startswith(READY_MARKER):
                    try:
                        await vm.connect(1234)
                    except VsockConnectionReset:
                        lines.append("host: vsock port 1234 refused")
                    await vm.console.send(b"hello\n")
            runs["smp"] = Transcript(lines, await vm.wait())

    async def flood() -> None:
        async with Machine.boot(command=["sh", "-c", FLOOD_SCRIPT], console_capacity=FLOOD_CAPACITY) as vm:
            exit = await vm.wait()
            rest = b"".join([chunk async for chunk in vm.console])
            runs["flood"] = Transcript(rest.decode().splitlines(), exit, vm.console.dropped)

    async def transcript(name: str, **options: object) -> None:
        async with Machine.boot(**options) as vm:  # type: ignore[arg-type]
            runs[name] = Transcript([line async for line in vm.console.lines()], await vm.wait())

    configured = transcript(
        "configured",
        command=["sh", "-c", CONFIGURED_SCRIPT],
        env={"GREETING": "hello world", "JSON": '{"token": "s3cr3t", "quoted": "a \\"b\\""}'},
        workdir="/tmp",
        user="nobody",
    )
    bad_root = transcript("bad root", root=Disk(blank), command=["true"])
    anyio.run(_run_all, smp, flood, lambda: configured, lambda: bad_root, backend="trio")
    return runs


def test_guest_with_two_vcpus_sees_two_cpus(console_runs: dict[str, Transcript]) -> None:
    assert "cpus=2" in console_runs["smp"].lines


def test_console_lines_stream_in_order(console_runs: dict[str, Transcript]) -> None:
    lines = [line for line in console_runs["smp"].lines if line.startswith("line-")]
    assert lines == [f"line-{i}" for i in range(100)]
    assert console_runs["smp"].exit == GuestExit(ShutdownReason.EXIT, 5)


def test_guest_draws_entropy_from_virtio_rng(console_runs: dict[str, Transcript]) -> None:
    """virtio-mmio with KVM ioeventfd/irqfd, served by an async task on 2 vCPUs."""
    assert "rng=virtio_rng.0" in console_runs["smp"].lines
    assert "entropy=4096" in console_runs["smp"].lines


def test_vsock_connection_to_a_closed_guest_port_is_refused_by_the_guest_kernel(
    console_runs: dict[str, Transcript],
) -> None:
    """The whole vsock path (device queues, guest driver, muxer, host stream) answers with RST."""
    assert "host: vsock port 1234 refused" in console_runs["smp"].lines


def test_console_input_reaches_the_guest(console_runs: dict[str, Transcript]) -> None:
    assert "got-hello" in console_runs["smp"].lines


def test_unread_console_drops_oldest_output_without_stalling_the_guest(console_runs: dict[str, Transcript]) -> None:
    flood = console_runs["flood"]
    assert flood.exit == GuestExit(ShutdownReason.EXIT, 0)
    assert flood.dropped > 0
    kept = [line for line in flood.lines if line.startswith("flood-")]
    assert kept[-1].startswith("flood-59-")  # the newest output survives
    assert sum(len(line) + 2 for line in flood.lines) <= FLOOD_CAPACITY + 2


def test_init_runs_the_command_with_the_given_env_workdir_and_user(console_runs: dict[str, Transcript]) -> None:
    configured = console_runs["configured"]
    assert "user=65534:65534 pwd=/tmp greeting=hello world home=/nonexistent" in configured.lines
    assert 'json={"token": "s3cr3t", "quoted": "a \\"b\\""}' in configured.lines
    assert "cmdline-has-secret=0" in configured.lines
    # The busybox root is read-only, the overlay above it is not (but only root may write /etc).
    assert any("Permission denied" in line for line in configured.lines)


def test_a_root_disk_without_a_filesystem_ends_the_vm_with_a_clear_message(
    console_runs: dict[str, Transcript],
) -> None:
    bad_root = console_runs["bad root"]
    assert bad_root.exit == GuestExit(ShutdownReason.EXIT, 125)
    assert any(line.startswith("asupermachine-init: mount root /dev/vda:") for line in bad_root.lines)


@pytest.mark.anyio
@ONE_BACKEND
async def test_guest_power_off_reboot_and_panic_end_the_vm_with_their_reason() -> None:
    ends: dict[str, GuestExit] = {}

    async def run(name: str, **options: object) -> None:
        async with Machine.boot(**options) as vm:  # type: ignore[arg-type]
            ends[name] = await vm.wait()

    await _run_all(
        lambda: run("poweroff", command=["poweroff", "-f"]),
        lambda: run("reboot", command=["reboot", "-f"]),
        lambda: run("panic", cmdline_extra="rdinit=/bin/false"),
    )
    assert ends == {
        "poweroff": GuestExit(ShutdownReason.POWER_OFF),
        "reboot": GuestExit(ShutdownReason.RESET),
        "panic": GuestExit(ShutdownReason.PANIC),
    }
