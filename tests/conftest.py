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
