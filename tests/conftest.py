from pathlib import Path

import anyio
import pytest

from asupermachine import Image, Snapshot


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
