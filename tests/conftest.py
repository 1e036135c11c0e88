from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from asupermachine import Image, Snapshot
from asupermachine._core import running

GUESTS_BUILT: Counter[str] = Counter()
"""Guests this pytest process built, by kind: ``cold boot`` or ``restore``."""


@pytest.fixture(scope="session", autouse=True)
def count_guests() -> Iterator[None]:
    """Count every guest built in this process, since boots are what a run spends its time on."""
    build = running.build

    def counted(recipe: Any, console: Any, vsock: Any, restore: Any, pump: Any = None) -> Any:
        GUESTS_BUILT["cold boot" if restore is None else "restore"] += 1
        return build(recipe, console, vsock, restore, pump)

    running.build = counted  # type: ignore[assignment]
    yield
    running.build = build  # type: ignore[assignment]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many guests the run booted and restored (in this process; CLI and server subprocesses aside)."""
    if GUESTS_BUILT:
        counts = ", ".join(f"{GUESTS_BUILT[kind]} {kind}s" for kind in ("cold boot", "restore"))
        terminalreporter.write_line(f"guests built in the pytest process: {counts}")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on both of anyio's backends."""
    return str(request.param)


@pytest.fixture(scope="session")
def baked() -> Snapshot:
    """The built-in image baked once (the snapshot cache keeps it between runs)."""

    async def bake() -> Snapshot:
        return await (await Image.builtin()).bake()

    return anyio.run(bake)


# Tests under these folders boot guests (or drive /dev/kvm) throughout.
KVM_FOLDERS = ("vm", "examples", "kvm")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs /dev/kvm as ``kvm``, so ``pytest -m "not kvm"`` runs the pure suite."""
    here = Path(__file__).parent
    for item in items:
        folder = item.path.relative_to(here).parts[0]
        if folder in KVM_FOLDERS or "baked" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kvm)
