import importlib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from asupermachine import Image, Machine, Snapshot
from asupermachine._core import running
from asupermachine._core.kvm.host import this_host

GUESTS_BUILT: Counter[str] = Counter()
"""Guests this pytest process built, by kind: ``cold boot`` or ``restore``."""
SUMMARY_PREFIX = "test pass on "
"""How the summary's line about this run starts (the nested pass's is read back from its output)."""
NESTED_SUMMARIES: list[str] = []
"""The summary lines of passes run in an L1 (tests/nested), repeated in this run's summary."""
STARTED = time.monotonic()


@pytest.fixture(scope="session", autouse=True)
def count_guests() -> Iterator[None]:
    """Count every guest built in this process, since boots are what a run spends its time on."""
    build = running.build

    def counted(recipe: Any, console: Any, restore: Any, pump: Any = None, **options: Any) -> Any:
        GUESTS_BUILT["cold boot" if restore is None else "restore"] += 1
        return build(recipe, console, restore, pump, **options)

    running.build = counted  # type: ignore[assignment]
    yield
    running.build = build  # type: ignore[assignment]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say on which KVM the run ran, how long it took and how many guests it booted and restored
    (in this process; CLI and server subprocesses aside), and the same of any nested pass."""
    counts = ", ".join(f"{GUESTS_BUILT[kind]} {kind}s" for kind in ("cold boot", "restore"))
    terminalreporter.write_line(
        f"{SUMMARY_PREFIX}{this_host()}: {time.monotonic() - STARTED:.0f} s, "
        f"guests built in the pytest process: {counts}"
    )
    for line in NESTED_SUMMARIES:
        terminalreporter.write_line(f"nested: {line}")


@pytest.fixture
def own_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$XDG_DATA_HOME`` in the test's own directory: where pauses and named volumes go."""
    home = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on both of anyio's backends."""
    return str(request.param)


@pytest.fixture(scope="session")
def cached_bake() -> Snapshot:
    """The built-in image baked once (the snapshot cache keeps it between runs)."""

    async def bake() -> Snapshot:
        return await (await Image.builtin()).bake()

    return anyio.run(bake)


@pytest.fixture(scope="session")
def baked(cached_bake: Snapshot, tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    """:func:`cached_bake` snapshotted afresh for this session, which the guest tests restore.

    A restore moves the guest's clocks on by the snapshot's age, and the guest's
    kernel then runs the timers that fell due: on software KVM, where that kernel
    is emulated, a restore of a bake hours old took 2.7 s, of one minutes old 0.2-0.4 s.
    """

    async def young() -> Snapshot:
        async with Machine.restore(cached_bake) as vm:
            await vm.exec(["true"])
            return await vm.snapshot(tmp_path_factory.mktemp("baked") / "snapshot")

    return anyio.run(young)


# Tests under these folders boot guests (or drive /dev/kvm) throughout.
KVM_FOLDERS = ("vm", "examples", "kvm", "nested")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs /dev/kvm as ``kvm``, so ``pytest -m "not kvm"`` runs the pure suite.

    On software KVM the benches' smoke tests, the heavy workloads and the trio variants of the nested
    pass's tests are left to that pass (tests/nested), which runs them on kvm_amd, where their guests
    boot in seconds rather than half a minute and their kernel work is not emulated.
    """
    here = Path(__file__).parent
    for item in items:
        folder = item.path.relative_to(here).parts[0]
        if folder in KVM_FOLDERS or "baked" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kvm)
    if this_host().software:
        left = [item for item in items if _nested_only(item)]
        if left:
            config.hook.pytest_deselected(items=left)
            items[:] = [item for item in items if not _nested_only(item)]


L1_PASSES = {
    "tests/nested/test_kvm_amd.py::test_the_guest_suite_passes_on_kvm_amd_in_an_l1": "tests.nested.test_kvm_amd",
    "tests/nested/test_kvm_arm64.py::test_boot_exec_and_restore_under_kvm_arm64[gicv3]": "tests.nested.test_kvm_arm64",
    "tests/nested/test_kvm_arm64.py::test_boot_exec_and_restore_under_kvm_arm64[gicv2]": "tests.nested.test_kvm_arm64",
}
"""The tests whose L1 runs beside the direct pass, by node id, with their modules, in the order they run."""


def pytest_collection_finish(session: pytest.Session) -> None:
    """Queue the L1 passes the session runs now, one after the other, and run their tests last: an L1 (one
    vCPU) and the direct pass (its guests one at a time) share this machine's cores instead of taking turns."""
    items = session.items
    order = list(L1_PASSES)
    passes = sorted((item for item in items if item.nodeid in L1_PASSES), key=lambda item: order.index(item.nodeid))
    if passes and not session.config.option.collectonly:
        items[:] = [item for item in items if item.nodeid not in L1_PASSES] + passes
        for item in passes:
            importlib.import_module(L1_PASSES[item.nodeid]).start_beside(item)


def pytest_sessionfinish() -> None:
    """Stop the L1 passes whose tests the session never reached (a failure with -x, an interrupt)."""
    from tests.nested import beside

    beside.stop()


def _nested_only(item: pytest.Item) -> bool:
    """A test software KVM leaves to the nested pass: a bench, a heavy workload, or the trio variant of a
    test the nested pass runs on both backends (the guest's work is the same; its time is not)."""
    if any(item.get_closest_marker(name) for name in ("guest_bench", "guest_heavy")):
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is None or "trio" not in callspec.id.split("-"):
        return False
    from tests.nested.test_kvm_amd import in_the_l1_suite  # the test module imports this one

    return in_the_l1_suite(item.nodeid)
