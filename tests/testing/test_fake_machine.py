"""A user's own tests, written against a Machine whose guest is a FakeAgent (no /dev/kvm)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asupermachine import (
    CloseReason,
    DiskError,
    ExecError,
    GuestExit,
    GuestStopped,
    Machine,
    MachineClosed,
    ShutdownReason,
    Volume,
)
from asupermachine.testing import CommandResult, FakeAgent, fake_machine

pytestmark = pytest.mark.anyio


# -- the code a user wants to test -----------------------------------------------------


async def installed_packages(vm: Machine) -> dict[str, str]:
    """What pip says is installed in the sandbox."""
    result = await vm.exec(["pip", "list", "--format=json"], env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"}, timeout=60)
    if result.exit_code != 0:
        raise RuntimeError(result.stderr.decode())
    return {package["name"]: package["version"] for package in json.loads(result.stdout)}


async def save_report(vm: Machine, text: str) -> bytes:
    await vm.write_file("/work/report.txt", text.encode(), mode=0o600)
    return await vm.read_file("/work/report.txt")


# -- the user's tests ----------------------------------------------------------------------


def pip(argv: list[str], env: dict[str, str], workdir: str, user: str, stdin: bytes) -> CommandResult:
    assert env == {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return 0, json.dumps([{"name": "httpx", "version": "0.27.0"}]).encode(), b""


async def test_the_code_under_test_sees_a_machine_and_the_fake_answers() -> None:
    agent = FakeAgent(commands={"pip": pip})
    async with fake_machine(agent) as vm:
        assert await installed_packages(vm) == {"httpx": "0.27.0"}
        assert await save_report(vm, "all good") == b"all good"
        assert agent.modes["/work/report.txt"] == 0o600
        with pytest.raises(ExecError, match="No such file"):
            await vm.exec(["npm", "ls"])
    assert vm.closed and vm.close_reason is CloseReason.CLOSED
    with pytest.raises(MachineClosed):
        await installed_packages(vm)


async def test_a_fake_has_no_process_to_list_or_attach_and_no_drive_for_a_volume(tmp_path: Path) -> None:
    async with fake_machine(FakeAgent()) as vm:
        assert await vm.processes() == []
        with pytest.raises(ExecError, match="no process 42 waits"):
            await vm.attach(42)
        with pytest.raises(DiskError, match="no drives"):
            await vm.mount(Volume(tmp_path / "absent.ext4"), "/data")


async def test_a_guest_that_stops_ends_the_machine_as_a_real_one_does() -> None:
    async with fake_machine(FakeAgent(commands={"pip": pip})) as vm:
        vm._backend.stop(GuestExit(ShutdownReason.PANIC))  # type: ignore[attr-defined]
        assert await vm.wait() == GuestExit(ShutdownReason.PANIC)
        with pytest.raises(GuestStopped):
            await installed_packages(vm)
